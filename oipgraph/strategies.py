"""Start strategies and the layer-wide entry point `create_oips`.

A strategy turns (maps, seed) into OIPs: it makes start images, runs the
compiled ascent, and says per pair which strategy produced the result.

- `random`, `fourier`: one start image per pair, then the full ascent
  (`settings.steps`, default 600).
- `coarse_to_fine` (the articles' "strategy 1"): start from the coarsest scale
  of the multi-scale fluctuations alone, optimize a few steps, add the next
  finer scale (same seeds), optimize longer, ... and finish with the full
  ascent (`settings.steps`, default 400).
- `precursor`: scan all coarse grid patterns for the map (`PrecursorScan`),
  then run the full ascent (`settings.steps`, default 1200) from the best N;
  maps that still do not fire are scanned again on a 4x4 grid.
- `preactivation`: the random start, moved by ascent on the peak of the map's
  pre-activation until the map fires (`PreActivationWakeUp`, at most
  `settings.wake_steps` steps), then the full ascent (`settings.steps`,
  default 600). For maps that no start image excites.
- `auto` (`oipgraph.auto`): random for every pair; pairs without an OIP go
  on to a precursor stage that screens the patterns once for all their maps,
  then to preactivation (where the layer has a pre-activation: a Conv2D); it
  stops once every pair has an OIP.

Their settings, the run they return and the batched ascent call are in `oipgraph.runs`
(importable from here too).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from oipgraph import starts
from oipgraph.ascent import STATUS_NO_ACTIVATION, AscentResult, OIPAscent
from oipgraph.ascent.domain import STANDARDIZED
from oipgraph.ascent.results import replace_pairs, select_pairs
from oipgraph.core.errors import OIPGraphError
from oipgraph.preactivation import PreActivationWakeUp
from oipgraph.precursor import PrecursorScan
from oipgraph.runs import (
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
    "auto_strategy",
    "coarse_to_fine_strategy",
    "create_oips",
    "fourier_strategy",
    "parse_maps",
    "preactivation_strategy",
    "precursor_strategy",
    "random_strategy",
    "run_in_batches",
]

# The final stage of coarse_to_fine (all scales) runs `settings.steps` or this many steps.
DEFAULT_COARSE_TO_FINE_FINAL_STEPS = 400
DEFAULT_PRECURSOR_STEPS = 1200


def _start_image_strategy(
    make_starts: Callable[[np.ndarray, tuple[int, int, int], StrategySettings], tf.Tensor], name: str
):
    def run(
        ascent: OIPAscent, map_index: np.ndarray, init_index: np.ndarray, seed: int, settings: StrategySettings
    ) -> OIPRun:
        streams = starts.pair_stream(map_index, init_index)
        seeds = starts.start_seeds(seed, streams)
        images = np.asarray(ascent.domain.from_standardized(make_starts(seeds, ascent.image_shape, settings)))
        result = run_in_batches(ascent, images, map_index, settings, seeds=seeds)
        return OIPRun(result, images, init_index, seed, streams, [name] * len(map_index))

    run.__doc__ = f"The {name} strategy: {name} start images, then the full ascent."
    return run


random_strategy = _start_image_strategy(
    lambda seeds, shape, settings: starts.multiscale(seeds, shape, *settings.scales(shape[0])), "random"
)
fourier_strategy = _start_image_strategy(lambda seeds, shape, settings: starts.fourier(seeds, shape), "fourier")


def coarse_to_fine_strategy(
    ascent: OIPAscent, map_index: np.ndarray, init_index: np.ndarray, seed: int, settings: StrategySettings
) -> OIPRun:
    """The coarse-to-fine strategy (the articles' "strategy 1").

    The pair's multi-scale start is built up scale by scale, coarsest first:
    the coarsest scale alone is standardized and optimized for
    `settings.coarse_to_fine_steps[0]` steps (default 20); then the next finer
    scale's fluctuations (the same ones `multiscale` would use for this seed)
    are added at their designed weight and the sum is restandardized
    (`starts.add_scale`), optimized for the next stage's steps (40, 80), and so
    on; once every scale is in, the full ascent runs `settings.steps` (default
    400). The stages run without the convergence stop; pairs that stop with
    `no_activation` in a stage still get the finer scales.

    Returns:
        The final ascent's result; `start_images` holds the coarsest-scale starts.

    Raises:
        OIPGraphError: bad settings, e.g. `coarse_to_fine_steps` without one
            positive entry per scale but the finest.
    """
    cells, factors = settings.scales(ascent.image_shape[0])
    stage_steps = tuple(settings.coarse_to_fine_steps)
    if len(stage_steps) != len(cells) - 1:
        raise OIPGraphError(
            f"coarse_to_fine_steps must give {len(cells) - 1} step counts (one per scale but the finest"
            f" of cells {list(cells)}), got {list(stage_steps)}"
        )
    streams = starts.pair_stream(map_index, init_index)
    seeds = starts.start_seeds(seed, streams)
    # A scale keeps its position in `cells` as its seed salt, so its noise is the one multiscale() uses.
    coarsest_first = sorted(range(len(cells)), key=lambda scale: cells[scale])

    def weighted_noise(scale: int) -> tf.Tensor:
        return factors[scale] * starts.scale_noise(seeds, ascent.image_shape, cells[scale], scale)

    raw = weighted_noise(coarsest_first[0])
    domain = ascent.domain
    images = np.asarray(domain.from_standardized(tf.image.per_image_standardization(raw)))
    start_images = images
    for scale, steps in zip(coarsest_first[1:], stage_steps):
        stage = run_in_batches(ascent, images, map_index, settings, steps=int(steps), conv_criterion=0.0, seeds=seeds)
        added = weighted_noise(scale)
        # In a value range the stage's images are standardized first, so that the scale adds at its designed weight.
        stage_images = stage.images if domain is STANDARDIZED else tf.image.per_image_standardization(stage.images)
        images = np.asarray(domain.from_standardized(starts.add_scale(stage_images, raw, added)))
        raw += added
    final_steps = settings.final_steps(DEFAULT_COARSE_TO_FINE_FINAL_STEPS)
    result = run_in_batches(ascent, images, map_index, settings, steps=final_steps, seeds=seeds)
    return OIPRun(result, start_images, init_index, seed, streams, ["coarse_to_fine"] * len(map_index))


def _precursor_pass(
    ascent: OIPAscent,
    seed: int,
    map_index: np.ndarray,
    init_index: np.ndarray,
    settings: StrategySettings,
    grid: int,
    values: Sequence[float],
) -> tuple[AscentResult, np.ndarray]:
    """One precursor pass on one pattern grid: the full-ascent results and start patterns of the pairs."""
    scan = PrecursorScan(ascent, grid=grid, values=values, colors=settings.precursor_colors)
    distinct_images = scan.num_patterns - scan.repeated_patterns
    if int(np.max(init_index)) >= distinct_images:
        raise OIPGraphError(
            f"init {int(np.max(init_index))} asks for more precursor starts than there are distinct patterns "
            f"({distinct_images})"
        )
    starts_per_map: dict[int, int] = {}
    for map_id, init in zip(map_index.tolist(), init_index.tolist()):
        starts_per_map[map_id] = max(starts_per_map.get(map_id, settings.precursor_top_n), init + 1)
    # The |V| constant patterns all standardize to the zero image: ask for enough extra patterns
    # to drop the repeats, so that N full ascents start from N different images.
    repeats = scan.repeated_patterns
    scan_images, scan_maps = [], []
    for map_id, count in sorted(starts_per_map.items()):
        best = scan.run(
            map_id, settings.precursor_scan_steps, min(count + repeats, scan.num_patterns), verbose=settings.verbose
        )
        _, first = np.unique(best.images.reshape(len(best.images), -1), axis=0, return_index=True)
        images = best.images[np.sort(first)[:count]]
        scan_images.append(images)
        scan_maps.append(np.full([len(images)], map_id, np.int32))
    scan_images, scan_maps = np.concatenate(scan_images), np.concatenate(scan_maps)
    scan_ranks = np.concatenate([np.arange(np.sum(scan_maps == map_id)) for map_id in np.unique(scan_maps)])
    scan_seeds = starts.start_seeds(seed, starts.pair_stream(scan_maps, scan_ranks))
    final_steps = settings.final_steps(DEFAULT_PRECURSOR_STEPS)
    full = run_in_batches(ascent, scan_images, scan_maps, settings, steps=final_steps, seeds=scan_seeds)
    ranked = {}
    for map_id in starts_per_map:
        rows = np.flatnonzero(scan_maps == map_id)
        ranked[map_id] = rows[np.argsort(-full.loss[rows], kind="stable")]
    chosen = np.array([ranked[map_id][init] for map_id, init in zip(map_index.tolist(), init_index.tolist())], np.int64)
    return select_pairs(full, chosen), scan_images[chosen]


def precursor_strategy(
    ascent: OIPAscent, map_index: np.ndarray, init_index: np.ndarray, seed: int, settings: StrategySettings
) -> OIPRun:
    """The precursor strategy: a pattern scan per map, then the full ascent from the best patterns.

    For each map, `PrecursorScan` ranks all grid patterns
    (`settings.precursor_grid`, `settings.precursor_values`; default 3x3 cells
    with values 0.2, 0.5, 0.8) by their loss after
    `settings.precursor_scan_steps` steps (10), and the best N
    (`settings.precursor_top_n`, 8) get the full ascent (`settings.steps`,
    default 1200). The N results are ranked by final loss (ties: better scan
    rank first) and pair (map, init i) gets the i-th best, so init 0 is the
    map's best OIP; a map asked for K > N inits scans for K patterns. Patterns
    with the same image (the constant ones, all zero) start only one ascent.

    Maps none of whose pairs fire are scanned again on each grid of
    `settings.precursor_fallbacks` in turn (default: the article's 4x4 grid of
    7x7 squares with two values, 65,536 patterns) until one of their pairs
    fires; all pairs of such a map take the results of the same grid.

    The result does not depend on the seed (the scans are exhaustive), and a
    map's OIPs do not depend on which other maps run with it.

    Returns:
        The final ascent's result; `start_images` holds each pair's grid pattern.
    """
    passes = [(settings.precursor_grid, settings.precursor_values), *settings.precursor_fallbacks]
    rows = np.arange(len(map_index))
    result, start_images = None, None
    for grid, values in passes:
        attempt, attempt_starts = _precursor_pass(
            ascent, seed, map_index[rows], init_index[rows], settings, grid, values
        )
        if result is None:
            result, start_images = attempt, attempt_starts
        else:
            result = replace_pairs(result, rows, attempt)
            start_images = start_images.copy()
            start_images[rows] = attempt_starts
        fired_maps = np.unique(map_index[result.status != STATUS_NO_ACTIVATION])
        rows = np.flatnonzero(~np.isin(map_index, fired_maps))
        if not len(rows):
            break
    streams = starts.pair_stream(map_index, init_index)
    return OIPRun(result, start_images, init_index, seed, streams, ["precursor"] * len(map_index))


def preactivation_strategy(
    ascent: OIPAscent, map_index: np.ndarray, init_index: np.ndarray, seed: int, settings: StrategySettings
) -> OIPRun:
    """The preactivation strategy: random starts woken up on the map's pre-activation, then the full ascent.

    The pair's multi-scale start (the one `random` uses for the same seed) is
    moved by `PreActivationWakeUp`, ascent on the peak of the map's
    pre-activation, until the map fires, for at most `settings.wake_steps`
    steps (200); the full ascent (`settings.steps`, default 600) continues from
    there. Starts on which the map fires already go straight to the full
    ascent, so for them the result is the random strategy's.

    Returns:
        The final ascent's result; `start_images` holds the multi-scale starts.

    Raises:
        OIPGraphError: the layer has no pre-activation (not a plain Conv2D).
    """
    wake_up = PreActivationWakeUp(ascent)
    streams = starts.pair_stream(map_index, init_index)
    seeds = starts.start_seeds(seed, streams)
    multiscale = starts.multiscale(seeds, ascent.image_shape, *settings.scales(ascent.image_shape[0]))
    start_images = np.asarray(ascent.domain.from_standardized(multiscale))
    woken = []
    for begin in range(0, len(map_index), settings.batch_size):
        batch = slice(begin, begin + settings.batch_size)
        woken.append(
            wake_up(start_images[batch], map_index[batch], settings.wake_steps, settings.epsilon, seeds[batch]).images
        )
    result = run_in_batches(ascent, np.concatenate(woken), map_index, settings, seeds=seeds)
    return OIPRun(result, start_images, init_index, seed, streams, ["preactivation"] * len(map_index))


def auto_strategy(
    ascent: OIPAscent, map_index: np.ndarray, init_index: np.ndarray, seed: int, settings: StrategySettings
) -> OIPRun:
    """The auto strategy: random for every pair, then stages for the pairs without an OIP (`oipgraph.auto`)."""
    from oipgraph import auto  # auto's stages build on the strategies of this module

    return auto.auto_strategy(ascent, map_index, init_index, seed, settings)


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
