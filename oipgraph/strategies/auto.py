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

Within a budget (`settings.escalation_budget`, `plan_escalation`): the
stages after random together may cost at most that factor of the random
stage's pairs x steps, in image-steps; the precursor's screen shrinks to fit
(fewer starts, kept patterns, scan steps, cell values, a 2x2 grid), and where
even its smallest form does not fit beside a wake-up of every dark pair, the
wake-up runs first and the precursor gets what is left; where not even the
wake-up of every dark pair fits, it wakes as many whole maps as fit. The plan is a count, not a
clock: the same on every machine, and recorded (`settings.on_plan`) so that a
resumed run reuses it. Each map's pairs go to `settings.on_final` as soon as
they are final (all fired, or the last stage ran).

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

import numpy as np

from oipgraph.ascent import DEFAULT_STEPS, OIPAscent
from oipgraph.ascent.results import replace_pairs
from oipgraph.distribute.executors import PairsUnfinished
from oipgraph.starts.patterns import default_colors
from oipgraph.strategies.budget import (
    EscalationShape,
    PrecursorPlan,
    plan_escalation,
    plan_precursor,
    preactivation_cost,
    precursor_cost,
    whole_maps,
)
from oipgraph.strategies.preactivation import can_wake
from oipgraph.strategies.preactivation_strategy import preactivation_strategy
from oipgraph.strategies.precursor_stage import default_precursor_plan, precursor_stage
from oipgraph.strategies.precursor_strategy import DEFAULT_PRECURSOR_STEPS
from oipgraph.strategies.runs import OIPRun, StageProgress, StageRecord, StrategySettings
from oipgraph.strategies.start_images import random_strategy

# The order of auto's stages when nothing limits them.
AUTO_STAGES = ("random", "precursor", "preactivation")


# What the random stage's record holds (`_shape` reads it).
RANDOM_RECORD_KEYS = frozenset({"pairs", "fired_pairs", "fired_image_steps"})


class _Escalation:
    """The bookkeeping of one auto call: its plan record, the maps already final, progress reports."""

    def __init__(self, ascent: OIPAscent, map_index: np.ndarray, settings: StrategySettings):
        self.ascent, self.map_index, self.settings = ascent, map_index, settings
        self.emitted = np.zeros(len(map_index), bool)
        self.record = dict(settings.plan_record or {})
        if "random" in self.record and not RANDOM_RECORD_KEYS <= set(self.record["random"]):
            self.record = {}  # The record of an older oipgraph (another budget basis): planned again.
        self.seconds_per_image_step: float | None = None
        self.cost_after = 0.0  # Planned image-steps of the stages after the running one.

    def save(self, **entries) -> None:
        self.record.update(entries)
        if self.settings.on_plan is not None:
            self.settings.on_plan(dict(self.record))

    def report(self, stage: str, share: float, detail: str = "", cost: float = 0.0) -> None:
        if self.settings.on_stage is None:
            return
        left = None
        if self.seconds_per_image_step is not None:
            left = self.seconds_per_image_step * (cost * (1 - share) + self.cost_after)
        self.settings.on_stage(StageProgress(stage, share, detail, left))

    def emit(self, run: OIPRun, fired: np.ndarray, last: bool = False) -> None:
        """Hands the not yet emitted maps whose pairs all fired (all maps if `last`) to `settings.on_final`."""
        final = np.ones(len(fired), bool) if last else fired
        done_maps = [m for m in np.unique(self.map_index) if np.all(final[self.map_index == m])]
        rows = np.flatnonzero(np.isin(self.map_index, done_maps) & ~self.emitted)
        if len(rows) and self.settings.on_final is not None:
            self.settings.on_final(run.select(rows))
        self.emitted[rows] = True


def auto_strategy(
    ascent: OIPAscent, map_index: np.ndarray, init_index: np.ndarray, seed: int, settings: StrategySettings
) -> OIPRun:
    """The auto strategy (see the module docstring): random, then the planned stages on the pairs without an OIP."""
    book = _Escalation(ascent, map_index, settings)
    fired_of = lambda run: ascent.objective.fired(run.result.loss, run.result.status)  # noqa: E731
    started, cpu_started = time.perf_counter(), time.process_time()
    random_settings = dataclasses.replace(settings, progress=lambda share: book.report("random", share))
    try:
        run = random_strategy(ascent, map_index, init_index, seed, random_settings)
    except PairsUnfinished as unfinished:
        # Of the pairs that came back, the maps whose pairs all did and all fired are final: hand them over.
        part, unfinished.run = unfinished.run, None
        if part is not None and settings.on_final is not None:
            fired = fired_of(part)
            done = [m for m in np.unique(map_index) if np.sum(part.map_index == m) == np.sum(map_index == m)]
            done = [m for m in done if np.all(fired[part.map_index == m])]
            if done:
                settings.on_final(part.select(np.flatnonzero(np.isin(part.map_index, done))))
        raise
    seconds, image_steps = time.perf_counter() - started, float(np.sum(run.result.steps_run))
    fired = fired_of(run)
    records = [
        StageRecord(
            "random", len(map_index), int(np.sum(fired)), seconds, time.process_time() - cpu_started, image_steps
        )
    ]
    book.seconds_per_image_step = seconds / max(image_steps, 1.0)
    if "random" not in book.record:  # A resumed run keeps the basis of the first: the same plan.
        fired_steps = float(np.sum(run.result.steps_run[fired]))
        book.save(random={"pairs": len(map_index), "fired_pairs": int(np.sum(fired)), "fired_image_steps": fired_steps})
    book.emit(run, fired)
    shape = _shape(book.record["random"], ascent, init_index, settings)
    limit = None if settings.escalation_budget is None else settings.escalation_budget * shape.basis
    dark = np.flatnonzero(~fired)
    if len(dark) and "order" not in book.record:
        plan = plan_escalation(
            limit, default_precursor_plan(settings), len(dark), len(np.unique(map_index[dark])), shape, can_wake(ascent)
        )
        book.save(order=list(plan.order), precursor=_form_dict(plan.precursor), wake_pairs=plan.wake_pairs)
    spent = 0.0
    for position, name in enumerate(book.record.get("order", []) if len(dark) else []):
        rows = np.flatnonzero(~fired)
        if name == "preactivation" and book.record.get("wake_pairs") is not None:
            rows = whole_maps(rows, map_index, book.record["wake_pairs"])
        if not len(rows):
            break
        dark_maps = len(np.unique(map_index[rows]))
        if name == "precursor":
            if position > 0 and "late_precursor" not in book.record:
                remaining = None if limit is None else limit - spent
                late = plan_precursor(remaining, default_precursor_plan(settings), dark_maps, shape)
                book.save(late_precursor=_form_dict(late))
            form = _form(book.record["late_precursor" if position > 0 else "precursor"])
            cost = 0.0 if form is None else precursor_cost(form, dark_maps, shape)
        else:
            form, cost = None, preactivation_cost(len(rows), shape)
        later = book.record["order"][position + 1 :]
        book.cost_after = preactivation_cost(len(rows), shape) if "preactivation" in later else 0.0
        if name == "precursor" and form is None:
            records.append(StageRecord(name, len(rows), 0, 0.0, 0.0, 0.0, {"skipped": "escalation budget"}))
            continue
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            covered, attempt = _run_stage(
                name, ascent, map_index[rows], init_index[rows], seed, settings, form, book, cost
            )
        except PairsUnfinished as unfinished:
            last = position == len(book.record["order"]) - 1
            _emit_unfinished(book, run, rows, unfinished, last, fired_of)
            raise
        spent += cost
        stage_fired = 0
        if attempt is not None:
            stage_fired = int(np.sum(fired_of(attempt)))
            run = _replace_run_pairs(run, rows[covered], attempt)
            fired = fired_of(run)
            book.emit(run, fired)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        records.append(StageRecord(name, len(rows), stage_fired, seconds, cpu_seconds, cost, _form_dict(form) or {}))
    book.emit(run, fired, last=True)
    return dataclasses.replace(run, stages=records)


def _emit_unfinished(
    book: _Escalation, run: OIPRun, rows: np.ndarray, unfinished: PairsUnfinished, last: bool, fired_of
) -> None:
    """After a stage on pairs `rows` ended unfinished: hands the maps final now to `on_final`, none to the caller.

    The stage's pairs that came back (`unfinished.run`, at `rows[unfinished.run_rows]`) replace theirs, as
    after a whole stage; then the maps all of whose pairs fired are final, and after the last stage also
    every map none of whose pairs is still out.
    """
    part, unfinished.run = unfinished.run, None
    back = np.zeros(len(run), bool)
    if part is not None:
        done = rows[unfinished.run_rows]
        run, back[done] = _replace_run_pairs(run, done, part), True
    final = fired_of(run)
    if last:
        final = np.ones(len(run), bool)
        final[rows[~back[rows]]] = False
    book.emit(run, final)


def _shape(random: dict, ascent: OIPAscent, init_index: np.ndarray, settings: StrategySettings) -> EscalationShape:
    """What the plan needs to know, from the random stage's record (`random`) and the settings."""
    return EscalationShape(
        random["fired_image_steps"],
        random["fired_pairs"],
        random["pairs"],
        settings.final_steps(DEFAULT_STEPS),
        int(np.max(init_index)) + 1,
        settings.final_steps(DEFAULT_PRECURSOR_STEPS),
        settings.wake_steps,
        settings.final_steps(DEFAULT_STEPS),
        len(settings.precursor_colors or default_colors(ascent.image_shape[-1])),
    )


def _run_stage(
    name: str,
    ascent: OIPAscent,
    map_index: np.ndarray,
    init_index: np.ndarray,
    seed: int,
    settings: StrategySettings,
    form: PrecursorPlan | None,
    book: _Escalation,
    cost: float,
) -> tuple[np.ndarray, OIPRun | None]:
    """Runs one escalation stage on pairs (map_index[b], init_index[b]); returns (rows it covered, their run)."""
    book.report(name, 0.0, cost=cost)
    if name == "precursor":
        return precursor_stage(
            ascent,
            map_index,
            init_index,
            seed,
            settings,
            form,
            lambda stage, share, detail: book.report(stage, share, detail, cost),
        )
    stage_settings = dataclasses.replace(settings, progress=lambda share: book.report(name, share, cost=cost))
    return np.arange(len(map_index)), preactivation_strategy(ascent, map_index, init_index, seed, stage_settings)


def _form_dict(form: PrecursorPlan | None) -> dict | None:
    return None if form is None else {**dataclasses.asdict(form), "values": list(form.values)}


def _form(entry: dict | None) -> PrecursorPlan | None:
    return None if entry is None else PrecursorPlan(**{**entry, "values": tuple(entry["values"])})


def _replace_run_pairs(run: OIPRun, rows: np.ndarray, attempt: OIPRun) -> OIPRun:
    start_images = run.start_images.copy()
    start_images[rows] = attempt.start_images
    strategy = list(run.strategy)
    for row, name in zip(rows.tolist(), attempt.strategy):
        strategy[row] = name
    return dataclasses.replace(
        run, result=replace_pairs(run.result, rows, attempt.result), start_images=start_images, strategy=strategy
    )
