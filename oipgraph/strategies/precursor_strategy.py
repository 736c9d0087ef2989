"""The `precursor` strategy: a scan of coarse grid patterns per map, then the full ascent from the best.

The scan itself is `precursor.PrecursorScan`; this module ranks its patterns' full ascents and hands
each pair (map, init i) the map's i-th best result.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from oipgraph import starts
from oipgraph.ascent import STATUS_NO_ACTIVATION, AscentResult, OIPAscent
from oipgraph.ascent.results import replace_pairs, select_pairs
from oipgraph.core.errors import OIPGraphError
from oipgraph.distribute.executors import PairsUnfinished
from oipgraph.strategies.precursor import PrecursorScan
from oipgraph.strategies.runs import OIPRun, StrategySettings, run_in_batches
from oipgraph.strategies.unfinished import choose_starts, keep_complete_maps

DEFAULT_PRECURSOR_STEPS = 1200


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
    try:
        full = run_in_batches(ascent, scan_images, scan_maps, settings, steps=final_steps, seeds=scan_seeds)
    except PairsUnfinished as unfinished:  # The pairs whose map's starts all came back (positions in this pass).
        keep_complete_maps(unfinished, scan_images, scan_maps, map_index, init_index, np.arange(len(map_index)), seed)
        raise
    chosen = choose_starts(full.loss, scan_maps, map_index, init_index)
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
    for number, (grid, values) in enumerate(passes):
        try:
            attempt, attempt_starts = _precursor_pass(
                ascent, seed, map_index[rows], init_index[rows], settings, grid, values
            )
        except PairsUnfinished as unfinished:
            last = number == len(passes) - 1
            _keep_final(unfinished, map_index, init_index, seed, rows, result, start_images, last)
            raise
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


def _keep_final(
    unfinished: PairsUnfinished,
    map_index: np.ndarray,
    init_index: np.ndarray,
    seed: int,
    rows: np.ndarray,
    result: AscentResult | None,
    start_images: np.ndarray | None,
    last: bool,
) -> None:
    """After a pass on pairs `rows` ended unfinished: its `run` becomes the strategy's final pairs.

    Final are the maps that fired in an earlier pass (every pair not in `rows`) and, of the pass's pairs that
    came back (whole maps, `keep_complete_maps`), the maps that fired, or all of them after the last pass.
    """
    part, done = unfinished.run, rows[unfinished.run_rows]
    if part is not None:
        fired_maps = np.unique(part.map_index[part.result.status != STATUS_NO_ACTIVATION])
        keep = np.ones(len(part), bool) if last else np.isin(part.map_index, fired_maps)
        part, done = part.select(np.flatnonzero(keep)), done[keep]
    if result is not None:  # Not the first pass: `result` holds every pair, final outside `rows`.
        if part is not None:
            result = replace_pairs(result, done, part.result)
            start_images = start_images.copy()
            start_images[done] = part.start_images
        done = np.sort(np.concatenate([np.setdiff1d(np.arange(len(map_index)), rows), done]))
        streams = starts.pair_stream(map_index[done], init_index[done])
        part = OIPRun(
            select_pairs(result, done), start_images[done], init_index[done], seed, streams, ["precursor"] * len(done)
        )
    unfinished.run, unfinished.run_rows = (part, done) if part is not None and len(done) else (None, done[:0])
