"""The compute loop of `oipgraph`: chunks of maps through the strategy, every final map saved at once, progress.

A chunk is `--chunk_maps` maps (default `budget.chunk_maps`: `--batch_size // --inits_per_map`, fewer
where their results would pass 512 MiB): the pairs a strategy sees together (auto's escalation gets all dark
maps of a chunk at once), in batches of `--batch_size` pairs (or fewer, `--memory_budget`). Within it each
map is saved as soon as its result is final
(`StrategySettings.on_final`: auto hands over the maps that fired after each stage; other strategies'
maps are final when the chunk's ascent ends), so Ctrl-C or SIGTERM keeps every finished map and
`--resume` computes only the others: its random stage runs again on them (a pair's result does not
depend on its batch) and auto reuses the chunk's saved plan, so the results are the same bit for bit.

Progress (`core.progress.Progress`): maps saved of all, the stage that runs, and an ETA = what is left
of this chunk's random stage (by its rate) + its escalation (auto's plan at the measured cost per
image-step, or before the plan min(1, `escalation_budget`) x the random stage) + the later chunks at this run's
measured seconds per map.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from oipgraph.ascent import OIPAscent
from oipgraph.core import interrupts
from oipgraph.core.progress import Progress
from oipgraph.distribute.executors import PairsUnfinished
from oipgraph.outputs.run_progress import RunProgress
from oipgraph.strategies import OIPRun, StrategySettings, create_oips
from oipgraph.strategies.runs import StageProgress


class _ChunkClock:
    """The ETA of the run from the chunk in progress and the chunks done (see the module docstring)."""

    def __init__(self, total_maps: int, done_maps: int, escalation_budget: float | None):
        # Until it is planned the escalation's cost is unknown: at most one random stage, a guess (the budget
        # is only its upper bound, and a large one would give an ETA of days for a run of minutes).
        self.total_maps, self.done_maps = total_maps, done_maps
        self.factor = 1.0 if escalation_budget is None else min(1.0, escalation_budget)
        self.computed_maps, self.computed_seconds = 0, 0.0
        self.chunk_maps, self.chunk_started, self.random_seconds = 0, time.monotonic(), None

    def start_chunk(self, maps: int) -> None:
        self.chunk_maps, self.chunk_started, self.random_seconds = maps, time.monotonic(), None

    def end_chunk(self, maps: int) -> None:
        self.computed_maps += maps
        self.computed_seconds += time.monotonic() - self.chunk_started

    def eta(self, stage: StageProgress | None, saved_maps: int) -> float | None:
        elapsed = time.monotonic() - self.chunk_started
        if stage is None or (stage.stage == "random" and stage.share <= 0):
            return None
        if stage.stage == "random":
            random_total = elapsed / stage.share
            chunk_left = random_total - elapsed + self.factor * random_total
        else:
            if self.random_seconds is None:
                self.random_seconds = elapsed
            chunk_left = stage.seconds_left or 0.0
            random_total = self.random_seconds
        per_map = (
            self.computed_seconds / self.computed_maps
            if self.computed_maps
            else (1 + self.factor) * random_total / max(1, self.chunk_maps)
        )
        later_maps = self.total_maps - saved_maps - self.chunk_maps
        return chunk_left + max(0, later_maps) * per_map


def compute_maps(
    progress: RunProgress,
    chunks: Sequence[Sequence[int]],
    done_maps: Sequence[int],
    ascent: OIPAscent,
    settings: StrategySettings,
    strategy: str,
    seed: int,
    inits: int,
    escalation_budget: float | None,
) -> None:
    """Computes every map of `chunks` that is not in `done_maps`, saving each map's pairs as soon as they are final.

    Raises KeyboardInterrupt / `interrupts.Terminated` at the next check point after a signal; every map
    saved until then stays saved.
    """
    total = sum(len(chunk) for chunk in chunks)
    saved = set(int(m) for m in done_maps)
    bar = Progress(total, unit="map", label="oipgraph")
    clock = _ChunkClock(total, len(saved), escalation_budget if strategy == "auto" else 0.0)
    bar.update(len(saved), stage=strategy, force=True)

    def save(run: OIPRun) -> None:
        progress.save_group(run.arrays())
        saved.update(np.unique(run.map_index).tolist())
        bar.update(len(saved), eta=bar.eta)

    def plan_saved(chunk: int, record: dict) -> None:
        known = progress.load_plan(chunk) or {}
        progress.save_plan(chunk, record)
        if "order" in record and "order" not in known:
            bar.write(f"chunk {chunk + 1} of {len(chunks)}: {describe_plan(record, escalation_budget)}")

    for chunk, chunk_maps in enumerate(chunks):
        todo = [m for m in chunk_maps if m not in saved]
        if not todo:
            continue
        clock.start_chunk(len(todo))

        def on_stage(stage: StageProgress) -> None:
            detail = f" {stage.detail}" if stage.detail else f" {100 * stage.share:.0f}%"
            bar.update(len(saved), stage=f"{stage.stage}{detail}", eta=clock.eta(stage, len(saved)))

        def on_returned(back: int, maps: int) -> None:
            bar.update(len(saved), stage=f"{strategy}: {back} of {maps} maps back from the workers")

        chunk_settings = dataclasses.replace(
            settings,
            progress=lambda share: on_stage(StageProgress(strategy, share)),
            on_returned=on_returned,
            on_final=save,
            on_stage=on_stage,
            plan_record=progress.load_plan(chunk),
            on_plan=lambda record, chunk=chunk: plan_saved(chunk, record),
        )
        try:
            run = create_oips(ascent, todo, strategy, seed, inits, chunk_settings)
        except PairsUnfinished as unfinished:
            if unfinished.run is not None:  # Maps all of whose pairs came back are final: save them.
                part = unfinished.run
                complete = [m for m in np.unique(part.map_index) if np.sum(part.map_index == m) == inits]
                if complete:
                    save(part.select(np.flatnonzero(np.isin(part.map_index, complete))))
            bar.finish()
            raise PairsUnfinished(
                f"{unfinished}; {len(saved)} of {total} maps are saved, rerun with --resume to continue"
            ) from None
        left = np.flatnonzero(~np.isin(run.map_index, list(saved)))
        if len(left):  # Strategies without on_final: the whole chunk is final now (`select` of all: no copy).
            save(run.select(left))
        del run  # Freed before the next chunk computes: at 224x224 a chunk's results are GBs.
        clock.end_chunk(len(todo))
        interrupts.check()  # A signal after the last check point in this chunk stops the run here, chunk saved.
    bar.finish()


def describe_plan(record: dict, escalation_budget: float | None) -> str:
    """One line for people: auto's planned escalation (`auto`'s plan record) and the budget it fits."""
    stages = []
    for name in record["order"]:
        form = record.get("precursor") if name == "precursor" and name == record["order"][0] else None
        if name == "precursor" and form is not None:
            patterns = len(form["values"]) ** (form["grid"] ** 2)
            stages.append(
                f"precursor ({form['grid']}x{form['grid']} grid, {patterns} patterns, keep {form['keep']},"
                f" {form['scan_steps']} scan steps, {form['starts']} starts)"
            )
        elif name == "precursor":
            stages.append("precursor (in the budget left)" if record["order"][0] != name else "no precursor")
        elif record.get("wake_pairs") is not None:
            stages.append(f"preactivation wake-up of at most {record['wake_pairs']} dark pairs (whole maps)")
        else:
            stages.append("preactivation wake-up")
    budget = "no limit" if escalation_budget is None else f"{escalation_budget:g} x the random stage's pairs x steps"
    return f"escalation planned within {budget}: " + ", then ".join(stages)
