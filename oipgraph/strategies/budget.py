"""auto's escalation within a time budget and all ascents within a memory budget: pure planning functions.

Time. All costs are counted in *image-steps*: one ascent step (forward and backward pass) of one image
through the model up to the layer. The random stage measures what one image-step of this model and layer
costs (`seconds_per_image_step` = its wall time / its image-steps), and the escalation stages together
may cost at most `escalation_budget` x the random stage's image-steps (so, at the measured cost, at most
that factor of its wall time). The estimates, for D dark pairs of M dark maps:

- the precursor screen: P patterns x `SCREEN_COST_PER_PATTERN` (one forward pass for all maps, no
  gradient) + M x keep x scan_steps (the scan steps of the kept patterns) + M x max(starts, inits) x
  steps x r (the full ascents, where r = the random stage's image-steps / (its pairs x its steps) is its
  measured share of steps run before convergence; the same share is assumed);
- the pre-activation wake-up: D x (wake_steps + steps x r).

`plan_escalation` picks, before the escalation, the order of the stages and the largest precursor
screen on `precursor_ladder` (fewer starts, fewer kept patterns, fewer scan steps, two cell values,
then a 2x2 grid) that fits together with a wake-up of every dark pair; if none fits, the wake-up goes
first (it fires nearly every dark map at a fraction of the cost: BENCHMARKS.md) and the precursor gets
what is left (`plan_precursor`, called again before it runs). A stage whose smallest form does not fit
is skipped. Costs are counts, not clocks, so a plan is the same on every machine and in every rerun.

Memory. `batch_within_memory` sizes the ascent's batch and the screen's chunks from the layer's
activation sizes (`ranking.activation_bytes_per_image`) and what the process already holds.
"""

from __future__ import annotations

import dataclasses
import os

# Image-steps one pattern of the shared screen costs: a forward pass only (about a third of a step's
# forward and backward pass), for all maps at once, rounded up (BENCHMARKS.md, "Real networks").
SCREEN_COST_PER_PATTERN = 0.5
MAX_ESCALATION_BUDGET = 1000.0
DEFAULT_MEMORY_BUDGET_GB = 3.0
MIN_MEMORY_BUDGET_GB = 1.0
MAX_MEMORY_BUDGET_GB = 4096.0


@dataclasses.dataclass(frozen=True)
class PrecursorPlan:
    """One form of auto's precursor stage.

    Attributes:
        grid: Cells per side of the patterns.
        values: Cell values.
        keep: Patterns per map that get the scan steps.
        scan_steps: Ascent steps of each kept pattern.
        starts: Starts per map that get the full ascent (at least one per init is used).
    """

    grid: int
    values: tuple[float, ...]
    keep: int
    scan_steps: int
    starts: int

    def num_patterns(self, colors: int) -> int:
        """colors x |values|^(grid^2)."""
        return colors * len(self.values) ** (self.grid * self.grid)


@dataclasses.dataclass(frozen=True)
class EscalationShape:
    """What the estimates need to know about the run (all counts).

    Attributes:
        random_image_steps: Image-steps the random stage ran (sum of its pairs' steps).
        random_pairs: Pairs of the random stage.
        random_steps: Steps per pair of the random stage (its upper bound).
        inits: Pairs per map.
        precursor_steps: Steps of the precursor's full ascent.
        wake_steps: Most wake-up steps per pair.
        final_steps: Steps of the ascent after the wake-up.
        colors: Colours of the precursor patterns.
    """

    random_image_steps: float
    random_pairs: int
    random_steps: int
    inits: int
    precursor_steps: int
    wake_steps: int
    final_steps: int
    colors: int = 1

    @property
    def steps_share(self) -> float:
        """r: the share of its steps an ascent ran in the random stage (1 if nothing ran)."""
        if self.random_pairs <= 0 or self.random_steps <= 0:
            return 1.0
        return min(1.0, max(0.0, self.random_image_steps / (self.random_pairs * self.random_steps)))


def precursor_ladder(default: PrecursorPlan) -> list[PrecursorPlan]:
    """The forms of the precursor stage, largest first: each rung shrinks one more thing."""
    rungs = [default]
    for change in (
        {"starts": 1},
        {"keep": min(default.keep, 8)},
        {"scan_steps": min(default.scan_steps, 5)},
        {"values": (default.values[0], default.values[-1]) if len(default.values) > 2 else default.values},
        {"grid": min(default.grid, 2)},
    ):
        rung = dataclasses.replace(rungs[-1], **change)
        if rung != rungs[-1]:
            rungs.append(rung)
    return rungs


def precursor_cost(plan: PrecursorPlan, dark_maps: int, shape: EscalationShape) -> float:
    """Estimated image-steps of the precursor stage for `dark_maps` maps (see the module docstring)."""
    if dark_maps <= 0:
        return 0.0
    screen = plan.num_patterns(shape.colors) * SCREEN_COST_PER_PATTERN
    scan = dark_maps * plan.keep * plan.scan_steps
    full = dark_maps * max(plan.starts, shape.inits) * shape.precursor_steps * shape.steps_share
    return screen + scan + full


def preactivation_cost(dark_pairs: int, shape: EscalationShape) -> float:
    """Estimated image-steps of the wake-up and its ascent for `dark_pairs` pairs."""
    return dark_pairs * (shape.wake_steps + shape.final_steps * shape.steps_share)


@dataclasses.dataclass(frozen=True)
class EscalationPlan:
    """The order of auto's escalation stages and the precursor's form.

    Attributes:
        order: Stage names in the order they run ("precursor", "preactivation").
        precursor: The precursor's form, or None to skip it (also when it runs second: `plan_precursor`
            decides again then).
        budget: Image-steps all escalation may cost; None for no limit.
    """

    order: tuple[str, ...]
    precursor: PrecursorPlan | None
    budget: float | None


def plan_escalation(
    budget: float | None,
    default: PrecursorPlan,
    dark_pairs: int,
    dark_maps: int,
    shape: EscalationShape,
    can_wake: bool,
) -> EscalationPlan:
    """The escalation for `dark_pairs` pairs of `dark_maps` maps within `budget` image-steps (None: no limit).

    Precursor first, in the largest form that fits with a wake-up of every dark pair reserved; else the
    wake-up first (if the layer has one) and the precursor after it with what is left; a budget of 0
    escalates nothing.
    """
    wake = preactivation_cost(dark_pairs, shape) if can_wake else 0.0
    default_order = ("precursor", "preactivation") if can_wake else ("precursor",)
    if budget is None:
        return EscalationPlan(default_order, default, None)
    for rung in precursor_ladder(default):
        if precursor_cost(rung, dark_maps, shape) + wake <= budget:
            return EscalationPlan(default_order, rung, budget)
    if can_wake and wake <= budget:
        return EscalationPlan(("preactivation", "precursor"), None, budget)
    return EscalationPlan(("precursor",), plan_precursor(budget, default, dark_maps, shape), budget)


def plan_precursor(
    remaining: float | None, default: PrecursorPlan, dark_maps: int, shape: EscalationShape
) -> PrecursorPlan | None:
    """The largest precursor form for `dark_maps` maps that fits `remaining` image-steps; None if none does."""
    if remaining is None:
        return default
    for rung in precursor_ladder(default):
        if precursor_cost(rung, dark_maps, shape) <= remaining:
            return rung
    return None


def batch_within_memory(bytes_per_image: int, budget_bytes: int, resident_bytes: int, wanted: int) -> int:
    """Images per batch: at most `wanted`, and their activations within the budget that the process leaves free.

    batch = min(wanted, (budget_bytes - resident_bytes) // bytes_per_image); 0 when not even one fits.
    """
    free = budget_bytes - resident_bytes
    return int(max(0, min(wanted, free // max(1, bytes_per_image))))


def resident_bytes() -> int:
    """The process's resident memory now (bytes), from /proc/self/statm; 0 where that does not exist."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
