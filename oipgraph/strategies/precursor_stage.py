"""auto's precursor stage: one shared screen of the grid patterns for every dark map, the scan, the full ascent.

See `oipgraph.strategies.auto` (stage 2) for what it does and why; `budget.PrecursorPlan` is its form
(grid, values, kept patterns, scan steps, starts), shrunk by the planner to fit the escalation budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from oipgraph import starts
from oipgraph.ascent import OIPAscent
from oipgraph.ascent.results import select_pairs
from oipgraph.distribute.executors import PairsUnfinished
from oipgraph.strategies.budget import PrecursorPlan
from oipgraph.strategies.precursor import PrecursorScan
from oipgraph.strategies.precursor_strategy import DEFAULT_PRECURSOR_STEPS
from oipgraph.strategies.runs import OIPRun, StrategySettings, run_in_batches
from oipgraph.strategies.screening import SharedScreen
from oipgraph.strategies.unfinished import choose_starts, keep_complete_maps


def precursor_stage(
    ascent: OIPAscent,
    map_index: np.ndarray,
    init_index: np.ndarray,
    seed: int,
    settings: StrategySettings,
    form: PrecursorPlan,
    report: Callable[[str, float, str], None] = lambda *_: None,
) -> tuple[np.ndarray, OIPRun | None]:
    """auto's precursor stage for pairs (map_index[b], init_index[b]) (int32 [B]) in the given `form`.

    `report(stage, share, detail)` follows the screen's patterns and the full ascent.

    Returns:
        (rows, run): the positions (int64 [R]) of the pairs whose map got
        enough firing patterns for their init, and their results (R pairs, in
        the order of `rows`), None where no pair got one; `start_images`
        holds each pair's pattern.
    """
    scan = PrecursorScan(ascent, grid=form.grid, values=form.values, colors=settings.precursor_colors)
    maps = np.unique(map_index)
    top_n = max(form.starts, int(np.max(init_index)) + 1)
    screened = SharedScreen(scan, chunk_size=settings.screen_chunk).starts(
        maps,
        top_n,
        keep=form.keep,
        scan_steps=form.scan_steps,
        batch_size=settings.batch_size,
        progress=lambda done, total: report("precursor screen", done / total, f"{done}/{total} patterns"),
    )
    rows = np.flatnonzero([np.sum(screened.map_index == map_id) > init for map_id, init in zip(map_index, init_index)])
    if not len(rows):
        return rows, None
    seeds = starts.start_seeds(seed, starts.pair_stream(screened.map_index, screened.rank))
    try:
        full = run_in_batches(
            ascent,
            screened.images,
            screened.map_index,
            dataclasses.replace(settings, progress=lambda share: report("precursor ascent", share, "")),
            steps=settings.final_steps(DEFAULT_PRECURSOR_STEPS),
            seeds=seeds,
        )
    except PairsUnfinished as unfinished:  # The covered pairs whose map's starts all came back.
        keep_complete_maps(unfinished, screened.images, screened.map_index, map_index, init_index, rows, seed)
        raise
    chosen = choose_starts(full.loss, screened.map_index, map_index[rows], init_index[rows])
    streams = starts.pair_stream(map_index[rows], init_index[rows])
    run = OIPRun(
        select_pairs(full, chosen), screened.images[chosen], init_index[rows], seed, streams, ["precursor"] * len(rows)
    )
    return rows, run


def default_precursor_plan(settings: StrategySettings) -> PrecursorPlan:
    """The precursor's form when nothing limits it: the settings' grid, values, keep, scan steps and starts."""
    return PrecursorPlan(
        settings.precursor_grid,
        tuple(settings.precursor_values),
        settings.auto_screen_keep,
        settings.precursor_scan_steps,
        settings.auto_precursor_starts,
    )
