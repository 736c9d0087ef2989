"""The registry of strategies and the layer-wide entry point `create_oips`.

A strategy is a function `(ascent, map_index int32 [B], init_index int32 [B], seed, settings) -> OIPRun`
in a module of its own; `STRATEGIES` names them. A new strategy is one module plus one line here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from oipgraph.ascent import OIPAscent
from oipgraph.core.errors import OIPGraphError
from oipgraph.strategies.auto import auto_strategy
from oipgraph.strategies.preactivation_strategy import preactivation_strategy
from oipgraph.strategies.precursor_strategy import precursor_strategy
from oipgraph.strategies.runs import OIPRun, StrategySettings
from oipgraph.strategies.start_images import coarse_to_fine_strategy, fourier_strategy, random_strategy

# name -> fn(ascent, map_index [B], init_index [B], seed, settings) -> OIPRun
STRATEGIES: dict[str, Callable[..., OIPRun]] = {
    "random": random_strategy,
    "fourier": fourier_strategy,
    "coarse_to_fine": coarse_to_fine_strategy,
    "precursor": precursor_strategy,
    "preactivation": preactivation_strategy,
    "auto": auto_strategy,
}


def parse_maps(spec: str, num_maps: int, layer_name: str, kind: str = "map") -> list[int]:
    """Parses a `--maps` text: 'all' or comma-separated indices and ranges like '0-7,12'.

    Shared by the CLI and the benchmarks; duplicates are dropped, order is kept.
    `kind` names the targets in messages: `map`, or `unit` for a non-spatial layer.

    Raises:
        OIPGraphError: malformed text, a reversed range or an index out of range.
    """
    if spec.strip() == "all":
        return list(range(num_maps))
    maps: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise OIPGraphError(f"--maps={spec!r} is malformed: expected 'all' or a list like '0-7,12'")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise OIPGraphError(f"--maps={spec!r}: range {first}-{last} runs backwards")
        for map_index in range(first, last + 1):
            if map_index >= num_maps:
                raise OIPGraphError(
                    f"--maps={spec!r}: {kind} {map_index} out of range,"
                    f" layer {layer_name} has {kind}s 0..{num_maps - 1}"
                )
            if map_index not in maps:
                maps.append(map_index)
    return maps


def create_oips(
    ascent: OIPAscent,
    maps: Sequence[int] | None = None,
    strategy: str = "random",
    seed: int = 0,
    inits_per_map: int = 1,
    settings: StrategySettings | None = None,
) -> OIPRun:
    """OIPs for maps of the ascent's layer: the easy entry point.

    Args:
        ascent: The compiled ascent for one layer (see `OIPAscent.from_file`).
        maps: Map indices; None for every map of the layer.
        strategy: One of `STRATEGIES` (random, fourier, coarse_to_fine, precursor, preactivation, auto).
        seed: Seed of all start images; same seed, same results.
        inits_per_map: Start images (and OIPs) per map.
        settings: Steps, epsilon, convergence criterion, batch size, progress.

    Returns:
        An `OIPRun` with pairs ordered map by map, init by init.
    """
    settings = settings or StrategySettings()
    settings.check()
    if strategy not in STRATEGIES:
        raise OIPGraphError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if inits_per_map < 1:
        raise OIPGraphError(f"inits_per_map must be >= 1, got {inits_per_map}")
    maps = list(range(ascent.num_maps)) if maps is None else [int(k) for k in maps]
    if not maps:
        raise OIPGraphError("maps must name at least one map, got an empty list")
    bad = [k for k in maps if not 0 <= k < ascent.num_maps]
    if bad:
        raise OIPGraphError(
            f"map index {bad[0]} out of range: layer {ascent.layer_name} has maps 0..{ascent.num_maps - 1}"
        )
    map_index = np.repeat(np.asarray(maps, np.int32), inits_per_map)
    init_index = np.tile(np.arange(inits_per_map, dtype=np.int32), len(maps))
    return STRATEGIES[strategy](ascent, map_index, init_index, seed, settings)
