"""Start strategies: how each (map, init) pair gets its start image and ascent, and `create_oips`.

A strategy turns (maps, seed) into OIPs: it makes start images, runs the compiled ascent, and says per
pair which strategy produced the result. `create_oips(ascent, maps, strategy, ...)` is the easy entry
point; `STRATEGIES` names the strategies:

- `random`, `fourier`, `coarse_to_fine` (`start_images`): from one random start image per pair.
- `precursor` (`precursor_strategy`, the scan in `precursor`, ranked in `ranking`): the full ascent
  from the best coarse grid patterns of a per-map scan; maps that still do not fire are scanned again
  on a 4x4 grid.
- `preactivation` (`preactivation_strategy`, the wake-up in `preactivation`): random starts moved by
  ascent on the peak of the map's pre-activation until the map fires, then the full ascent.
- `auto` (`auto`, the shared screen in `screening`): random for every pair; pairs without an OIP go
  on to a precursor stage that screens the patterns once for all their maps, then to preactivation,
  within a time budget planned by `budget`.

What every strategy takes and returns (`StrategySettings`, `OIPRun`, `StageRecord`) and the batched
ascent call (`run_in_batches`) are in `runs`. A new strategy is one module plus one line in `registry`.

Imports `oipgraph.ascent`, `oipgraph.starts`, `oipgraph.objectives`, `oipgraph.models` and `oipgraph.core`.
"""

from oipgraph.strategies.precursor_strategy import DEFAULT_PRECURSOR_STEPS
from oipgraph.strategies.registry import STRATEGIES, create_oips, parse_maps
from oipgraph.strategies.runs import (
    DEFAULT_AUTO_PRECURSOR_STARTS,
    DEFAULT_AUTO_SCREEN_KEEP,
    DEFAULT_BATCH_SIZE,
    DEFAULT_COARSE_TO_FINE_STEPS,
    DEFAULT_PRECURSOR_FALLBACKS,
    OIPRun,
    StageRecord,
    StrategySettings,
    run_in_batches,
)
from oipgraph.strategies.start_images import DEFAULT_COARSE_TO_FINE_FINAL_STEPS

__all__ = [
    "DEFAULT_AUTO_PRECURSOR_STARTS",
    "DEFAULT_AUTO_SCREEN_KEEP",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_COARSE_TO_FINE_FINAL_STEPS",
    "DEFAULT_COARSE_TO_FINE_STEPS",
    "DEFAULT_PRECURSOR_FALLBACKS",
    "DEFAULT_PRECURSOR_STEPS",
    "STRATEGIES",
    "OIPRun",
    "StageRecord",
    "StrategySettings",
    "create_oips",
    "parse_maps",
    "run_in_batches",
]
