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
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from oipgraph import starts
from oipgraph.ascent import (
    DEFAULT_CONV_CRITERION,
    DEFAULT_EPSILON,
    DEFAULT_STEPS,
    STATUS_NO_ACTIVATION,
    AscentResult,
    OIPAscent,
)
from oipgraph.domain import STANDARDIZED
from oipgraph.errors import OIPGraphError, check_positive_int, is_positive_int
from oipgraph.preactivation import DEFAULT_WAKE_STEPS, PreActivationWakeUp
from oipgraph.precursor import DEFAULT_GRID, DEFAULT_SCAN_STEPS, DEFAULT_TOP_N, DEFAULT_VALUES, PrecursorScan
from oipgraph.results import concat_results, replace_pairs, select_pairs

DEFAULT_BATCH_SIZE = 256
# Steps of the coarse-to-fine stages before each finer scale is added; the final
# stage (all scales) runs `settings.steps` or DEFAULT_COARSE_TO_FINE_FINAL_STEPS.
DEFAULT_COARSE_TO_FINE_STEPS = (20, 40, 80)
DEFAULT_COARSE_TO_FINE_FINAL_STEPS = 400
DEFAULT_PRECURSOR_STEPS = 1200
# The first article's 4x4 grid of 7x7 squares, two values: 65,536 patterns. On the shipped
# CNN it finds starts for Conv2D_3 maps that no 3x3 pattern excites.
DEFAULT_PRECURSOR_FALLBACKS = ((4, (0.2, 0.8)),)
# auto's precursor stage: patterns per map that get the scan steps after the shared screening,
# and starts per map that get the full ascent.
DEFAULT_AUTO_SCREEN_KEEP = 32
DEFAULT_AUTO_PRECURSOR_STARTS = 3


@dataclasses.dataclass
class StrategySettings:
    """What every strategy needs besides the maps and the seed.

    Attributes:
        steps: Steps of the final (full) ascent; None uses each strategy's own
            default: 600 for random, fourier and preactivation, 400 for
            coarse_to_fine, 1200 for precursor. A number applies to every
            strategy (auto included).
        epsilon: Ascent step size.
        conv_criterion: Convergence threshold of the final ascent (<= 0: off).
        batch_size: Pairs per ascent call.
        verbose: Progress bars of the precursor scans.
        progress: Called with the share (0 to 1) of the current ascent's pairs
            and steps done, as the ascent advances; None for no reports.
        coarse_to_fine_steps: Steps of each coarse-to-fine stage before the next
            finer scale is added: one entry per scale but the finest.
        cells: Length scales of the multi-scale starts (cells per side); None
            for the default (3, 7, 14, 28) scaled to the image height. Used by
            random and coarse_to_fine.
        factors: Weight of each scale; None for 0.5 each.
        precursor_grid: Cells per side of the precursor patterns.
        precursor_values: Cell values of the precursor patterns.
        precursor_colors: Colours of the precursor patterns (one value per
            image channel each, `PrecursorScan`'s `colors`); None for
            `precursor.default_colors`.
        precursor_scan_steps: Ascent steps per pattern in the scan.
        precursor_top_n: Best patterns per map that get the full ascent.
        precursor_fallbacks: (grid, values) of further scans for pairs that
            the first scan leaves without activation; () for none.
        wake_steps: Most pre-activation steps of the preactivation strategy
            before its full ascent.
        auto_screen_keep: Patterns per map that get the scan steps in auto's
            shared precursor screening.
        auto_precursor_starts: Starts per map (at least one per init) that get
            the full ascent in auto's precursor stage.
    """

    steps: int | None = None
    epsilon: float = DEFAULT_EPSILON
    conv_criterion: float = DEFAULT_CONV_CRITERION
    batch_size: int = DEFAULT_BATCH_SIZE
    verbose: bool = False
    progress: Callable[[float], None] | None = None
    coarse_to_fine_steps: tuple[int, ...] = DEFAULT_COARSE_TO_FINE_STEPS
    cells: tuple[int, ...] | None = None
    factors: tuple[float, ...] | None = None
    precursor_grid: int = DEFAULT_GRID
    precursor_values: tuple[float, ...] = DEFAULT_VALUES
    precursor_colors: tuple[tuple[float, ...], ...] | None = None
    precursor_scan_steps: int = DEFAULT_SCAN_STEPS
    precursor_top_n: int = DEFAULT_TOP_N
    precursor_fallbacks: tuple[tuple[int, tuple[float, ...]], ...] = DEFAULT_PRECURSOR_FALLBACKS
    wake_steps: int = DEFAULT_WAKE_STEPS
    auto_screen_keep: int = DEFAULT_AUTO_SCREEN_KEEP
    auto_precursor_starts: int = DEFAULT_AUTO_PRECURSOR_STARTS

    def check(self) -> None:
        """Raises OIPGraphError (one line, naming the field) for a bad setting."""
        counts = {
            "batch_size": self.batch_size,
            "precursor_grid": self.precursor_grid,
            "precursor_scan_steps": self.precursor_scan_steps,
            "precursor_top_n": self.precursor_top_n,
            "wake_steps": self.wake_steps,
            "auto_screen_keep": self.auto_screen_keep,
            "auto_precursor_starts": self.auto_precursor_starts,
        }
        if self.steps is not None:
            counts["steps"] = self.steps
        for name, value in counts.items():
            check_positive_int(name, value)
        for fallback in self.precursor_fallbacks:
            if len(fallback) != 2:
                raise OIPGraphError(f"precursor_fallbacks must hold (grid, values) pairs, got {fallback!r}")
        if not all(is_positive_int(steps) for steps in self.coarse_to_fine_steps):
            raise OIPGraphError(
                f"coarse_to_fine_steps must be positive integers, got {list(self.coarse_to_fine_steps)}"
            )

    def scales(self, height: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """The checked (cells, factors) of the multi-scale starts for images of `height` rows."""
        cells = starts.default_cells(height) if self.cells is None else self.cells
        factors = (starts.DEFAULT_FACTORS[0],) * len(cells) if self.factors is None else self.factors
        return starts.check_scales(cells, factors)

    def final_steps(self, default: int) -> int:
        """`steps`, or the strategy's `default` when it is None."""
        return default if self.steps is None else self.steps


@dataclasses.dataclass
class StageRecord:
    """One stage of a strategy that runs in stages (`auto`).

    Attributes:
        name: The stage (`random`, `coarse_to_fine`, ...).
        pairs: Pairs the stage was run for.
        fired: Pairs it gave an OIP (`Objective.fired`).
        seconds: Wall time of the stage.
        cpu_seconds: CPU time of the process during the stage (all threads).
    """

    name: str
    pairs: int
    fired: int
    seconds: float
    cpu_seconds: float


@dataclasses.dataclass
class OIPRun:
    """OIPs for B pairs (map, init): the ascent results plus where they came from.

    Attributes:
        result: The `AscentResult` of the final ascent of every pair.
        start_images: float32 [B, H, W, C], the start image of the pair's
            strategy (coarse_to_fine: the coarsest-scale start; precursor: the
            grid pattern).
        init_index: int32 [B], which of a map's starts a pair is.
        seed: The run's seed; pair b used stateless seed `[seed, streams[b]]`.
        streams: int64 [B], the seed stream of every pair.
        strategy: Per pair, the strategy that produced the final OIP.
        stages: The stages of a strategy that runs in stages (`auto`), in
            order; empty for the others.
    """

    result: AscentResult
    start_images: np.ndarray
    init_index: np.ndarray
    seed: int
    streams: np.ndarray
    strategy: list[str]
    stages: list[StageRecord] = dataclasses.field(default_factory=list)

    @property
    def map_index(self) -> np.ndarray:
        return self.result.map_index

    def __len__(self) -> int:
        return len(self.result)

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-pair record as arrays [B, ...]: what a chunk saves for `--resume` and `oips.npz` holds."""
        return {
            **{field.name: getattr(self.result, field.name) for field in dataclasses.fields(AscentResult)},
            "init_index": self.init_index,
            "seed_stream": self.streams,
            "strategy": np.asarray(self.strategy),
            "start_images": self.start_images,
        }


def run_in_batches(
    ascent: OIPAscent,
    images: np.ndarray,
    map_index: np.ndarray,
    settings: StrategySettings,
    steps: int | None = None,
    conv_criterion: float | None = None,
    seeds: np.ndarray | None = None,
) -> AscentResult:
    """Runs the ascent over any number of pairs, `settings.batch_size` at a time.

    Args:
        ascent: The compiled ascent.
        images: float32 [B, H, W, C] start images.
        map_index: int32 [B].
        settings: Batch size, epsilon, convergence criterion, progress.
        steps: Steps per pair; None for `settings.final_steps(DEFAULT_STEPS)`.
        conv_criterion: Overrides `settings.conv_criterion` when given.
        seeds: int64 [B, 2], each pair's stateless seed for the transforms; None for zeros.
    """
    steps = settings.final_steps(DEFAULT_STEPS) if steps is None else steps
    conv_criterion = settings.conv_criterion if conv_criterion is None else conv_criterion
    seeds = np.zeros([len(map_index), 2], np.int64) if seeds is None else seeds
    parts = []
    total = len(map_index)
    for begin in range(0, total, settings.batch_size):
        end = min(begin + settings.batch_size, total)

        def report(step: int, steps: int, begin: int = begin, end: int = end) -> None:
            if settings.progress is not None:
                settings.progress((begin + (end - begin) * step / steps) / total)

        batch = slice(begin, end)
        parts.append(
            ascent(images[batch], map_index[batch], steps, settings.epsilon, conv_criterion, seeds[batch], report)
        )
    return concat_results(parts)


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
