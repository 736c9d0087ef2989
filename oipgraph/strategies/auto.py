"""The `auto` strategy: random for every pair, and stages that only the pairs without an OIP go through.

Stages, in order; each runs only on the pairs that no earlier stage gave an
OIP (`Objective.fired`: not `no_activation` and, for a ReLU map, loss > 0), and
the escalation stops as soon as every pair has one:

1. `random`: every pair, the full ascent (`settings.steps`, default 600).
2. `precursor`: one shared screening of the 3x3 grid patterns for all maps
   still without an OIP (`screening.SharedScreen`: one forward pass per
   pattern for every map; per map the `settings.auto_screen_keep` (32)
   patterns with the highest loss get the scan's 10 ascent steps, all maps in
   one batch); the best `settings.auto_precursor_starts` (3) distinct patterns
   per map (at least one per init) run the full ascent (default 1200 steps)
   together, and init i of a map takes its i-th best result. Maps on which no
   pattern fires skip it.
3. `preactivation`: the random start woken up on the map's pre-activation,
   then the full ascent (600); only for layers with a pre-activation.

`OIPRun.strategy` names the stage that produced each pair's result (the last
one it ran), and `OIPRun.stages` records per stage the pairs it ran, the OIPs
it found and its wall and CPU time.

Measured on the 35 `Conv2D_3` maps of the shipped CNN that random leaves dark
(BENCHMARKS.md): the shared screening finds the starts of the per-map
`precursor` scan (8 starts: the same best OIP on 9 of 11 maps checked, one
better, one 0.7% lower) for one pass over the patterns instead of one scan
per map; 3 starts keep a median 99.9% of the best of 8. On all 13 maps that
`coarse_to_fine` gave an OIP when it ran before the precursor, the precursor's
OIPs have a higher loss, and on the others coarse_to_fine fires none, so auto
no longer runs it (it stays a strategy of its own). The 4x4 precursor scan
(65,536 patterns) is left out too: the wake-up fires every map that no 3x3
pattern fires, at a fraction of the cost, though on 4 maps with a lower loss.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from oipgraph import starts
from oipgraph.ascent import OIPAscent
from oipgraph.ascent.results import replace_pairs, select_pairs
from oipgraph.strategies.preactivation import can_wake
from oipgraph.strategies.preactivation_strategy import preactivation_strategy
from oipgraph.strategies.precursor import PrecursorScan
from oipgraph.strategies.precursor_strategy import DEFAULT_PRECURSOR_STEPS
from oipgraph.strategies.runs import OIPRun, StageRecord, StrategySettings, run_in_batches
from oipgraph.strategies.screening import SharedScreen
from oipgraph.strategies.start_images import random_strategy

# The order of auto's stages.
AUTO_STAGES = ("random", "precursor", "preactivation")


def precursor_stage(
    ascent: OIPAscent, map_index: np.ndarray, init_index: np.ndarray, seed: int, settings: StrategySettings
) -> tuple[np.ndarray, OIPRun | None]:
    """auto's precursor stage for pairs (map_index[b], init_index[b]) (int32 [B]).

    Returns:
        (rows, run): the positions (int64 [R]) of the pairs whose map got
        enough firing patterns for their init, and their results (R pairs, in
        the order of `rows`), None where no pair got one; `start_images`
        holds each pair's pattern.
    """
    scan = PrecursorScan(
        ascent, grid=settings.precursor_grid, values=settings.precursor_values, colors=settings.precursor_colors
    )
    maps = np.unique(map_index)
    top_n = max(settings.auto_precursor_starts, int(np.max(init_index)) + 1)
    screened = SharedScreen(scan).starts(
        maps,
        top_n,
        keep=settings.auto_screen_keep,
        scan_steps=settings.precursor_scan_steps,
        batch_size=settings.batch_size,
    )
    rows = np.flatnonzero([np.sum(screened.map_index == map_id) > init for map_id, init in zip(map_index, init_index)])
    if not len(rows):
        return rows, None
    seeds = starts.start_seeds(seed, starts.pair_stream(screened.map_index, screened.rank))
    full = run_in_batches(
        ascent,
        screened.images,
        screened.map_index,
        settings,
        steps=settings.final_steps(DEFAULT_PRECURSOR_STEPS),
        seeds=seeds,
    )
    ranked = {}
    for map_id in np.unique(screened.map_index):
        of_map = np.flatnonzero(screened.map_index == map_id)
        ranked[int(map_id)] = of_map[np.argsort(-full.loss[of_map], kind="stable")]
    chosen = np.array([ranked[int(map_index[row])][init_index[row]] for row in rows], np.int64)
    streams = starts.pair_stream(map_index[rows], init_index[rows])
    run = OIPRun(
        select_pairs(full, chosen), screened.images[chosen], init_index[rows], seed, streams, ["precursor"] * len(rows)
    )
    return rows, run


def _whole_strategy(strategy: Callable[..., OIPRun]) -> Callable[..., tuple[np.ndarray, OIPRun]]:
    def stage(ascent, map_index, init_index, seed, settings):
        return np.arange(len(map_index)), strategy(ascent, map_index, init_index, seed, settings)

    return stage


# name -> fn(ascent, map_index [B], init_index [B], seed, settings) -> (rows [R], OIPRun of those R pairs)
STAGE_FUNCTIONS: dict[str, Callable[..., tuple[np.ndarray, OIPRun | None]]] = {
    "random": _whole_strategy(random_strategy),
    "precursor": precursor_stage,
    "preactivation": _whole_strategy(preactivation_strategy),
}


def auto_strategy(
    ascent: OIPAscent, map_index: np.ndarray, init_index: np.ndarray, seed: int, settings: StrategySettings
) -> OIPRun:
    """The auto strategy (see the module docstring): `AUTO_STAGES` in order, each on the pairs still without an OIP."""
    run, records = None, []
    for name in AUTO_STAGES:
        if run is None:
            rows = np.arange(len(map_index))
        else:
            rows = np.flatnonzero(~ascent.objective.fired(run.result.loss, run.result.status))
            if not len(rows):
                break
        if name == "preactivation" and not can_wake(ascent):
            break
        started, cpu_started = time.perf_counter(), time.process_time()
        covered, attempt = STAGE_FUNCTIONS[name](ascent, map_index[rows], init_index[rows], seed, settings)
        fired = (
            0 if attempt is None else int(np.sum(ascent.objective.fired(attempt.result.loss, attempt.result.status)))
        )
        if attempt is not None:
            run = attempt if run is None else _replace_run_pairs(run, rows[covered], attempt)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        records.append(StageRecord(name, len(rows), fired, seconds, cpu_seconds))
    return dataclasses.replace(run, stages=records)


def _replace_run_pairs(run: OIPRun, rows: np.ndarray, attempt: OIPRun) -> OIPRun:
    start_images = run.start_images.copy()
    start_images[rows] = attempt.start_images
    strategy = list(run.strategy)
    for row, name in zip(rows.tolist(), attempt.strategy):
        strategy[row] = name
    return dataclasses.replace(
        run, result=replace_pairs(run.result, rows, attempt.result), start_images=start_images, strategy=strategy
    )
