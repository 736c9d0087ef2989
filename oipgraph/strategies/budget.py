"""auto's escalation within a time budget and all ascents within a memory budget: pure planning functions.

Time. All costs are counted in *image-steps*: one ascent step (forward and backward pass) of one image
through the model up to the layer. The budget's basis is the random stage's work as asked: its pairs x its
steps (`EscalationShape.basis`), and the escalation stages together may cost at most `escalation_budget` x
that. Not the image-steps it ran: a dark pair stops after a few steps (11 on the shipped CNN), so a random
stage that leaves many maps dark is short, and a budget of what it ran would be smallest exactly where
the escalation has most to do. The random stage's wall time over its image-steps gives the seconds an
image-step costs (for the ETA). The estimates, for D dark pairs of M dark maps:

- the precursor screen: P patterns x `SCREEN_COST_PER_PATTERN` (one forward pass for all maps, no
  gradient) + M x keep x scan_steps (the scan steps of the kept patterns) + M x max(starts, inits) x
  steps x r (the full ascents, where r = the share of their steps that the pairs which fired in the random
  stage ran before the convergence stop, 1 if none fired; the same share is assumed);
- the pre-activation wake-up: D x (wake_steps + steps x r).

`plan_escalation` picks, before the escalation, the order of the stages and the largest precursor
screen on `precursor_ladder` (fewer starts, fewer kept patterns, fewer scan steps, two cell values,
then a 2x2 grid) that fits together with a wake-up of every dark pair; if none fits, the wake-up goes
first (it fires nearly every dark map at a fraction of the cost, though at about half the loss of the
screen's OIPs: BENCHMARKS.md, "Real networks"; the budget bounds the screen, so it keeps the first turn
while some form of it fits) and the precursor gets what is left (`plan_precursor`, called again before
it runs); if not even the wake-up of every dark pair fits, the wake-up runs on as many dark pairs as fit
(`EscalationPlan.wake_pairs`, whole maps in map order). A stage whose smallest form does not fit is
skipped. Costs are counts, not clocks, so a plan is the same on every machine and in every rerun.

Memory. `batch_within_memory` sizes the ascent's batch and the screen's chunks from the layer's
activation sizes (`ranking.activation_bytes_per_image`), what the process already holds and the results
that a chunk of pairs keeps until it is saved (`result_bytes_per_pair`: at 224x224 RGB with 8 snapshots
6.0 MB a pair; BENCHMARKS.md, "Real networks"). A chunk holds at most `CHUNK_RESULT_BYTES` of results
(`chunk_maps`): at 224x224 89 maps instead of the 256 of `--batch_size`, whose 1.5 GB of results, held twice
while the batches' results are joined, took a 512-map run to 4.7 GiB.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

# Image-steps one pattern of the shared screen costs: a forward pass only (about a third of a step's
# forward and backward pass), for all maps at once, rounded up (BENCHMARKS.md, "Real networks").
SCREEN_COST_PER_PATTERN = 0.5
MAX_ESCALATION_BUDGET = 1000.0
# GiB. The 3 GB is 2.79 GiB, and the activation estimate runs a little under the peak (VGG16
# block1_conv2 at 224x224, 64 maps: a 3 GiB budget peaked at 3.17 GiB; BENCHMARKS.md, "Real networks").
DEFAULT_MEMORY_BUDGET_GB = 2.5
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
        fired_image_steps: Image-steps that the pairs which fired in the random stage ran (sum of their steps).
        fired_pairs: Pairs that fired in the random stage.
        random_pairs: Pairs of the random stage.
        random_steps: Steps per pair of the random stage (its upper bound).
        inits: Pairs per map.
        precursor_steps: Steps of the precursor's full ascent.
        wake_steps: Most wake-up steps per pair.
        final_steps: Steps of the ascent after the wake-up.
        colors: Colours of the precursor patterns.
    """

    fired_image_steps: float
    fired_pairs: int
    random_pairs: int
    random_steps: int
    inits: int
    precursor_steps: int
    wake_steps: int
    final_steps: int
    colors: int = 1

    @property
    def basis(self) -> float:
        """The budget's basis: the random stage's image-steps as asked, random_pairs x random_steps."""
        return float(self.random_pairs * self.random_steps)

    @property
    def steps_share(self) -> float:
        """r: the share of its steps a pair that fired ran in the random stage (1 if none fired)."""
        if self.fired_pairs <= 0 or self.random_steps <= 0:
            return 1.0
        return min(1.0, max(0.0, self.fired_image_steps / (self.fired_pairs * self.random_steps)))


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
        wake_pairs: Most dark pairs the wake-up runs on (whole maps, in map order); None for all.
    """

    order: tuple[str, ...]
    precursor: PrecursorPlan | None
    budget: float | None
    wake_pairs: int | None = None


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
    wake-up first (if the layer has one) and the precursor after it with what is left; else the wake-up
    of as many dark pairs as fit; else the precursor alone, if its smallest form fits. A budget of 0
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
    wake_pairs = int(budget // preactivation_cost(1, shape)) if can_wake else 0
    if wake_pairs > 0:
        return EscalationPlan(("preactivation",), None, budget, wake_pairs)
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


def whole_maps(rows: np.ndarray, map_index: np.ndarray, most_pairs: int) -> np.ndarray:
    """The wake-up's share of a limited plan: the rows of the first maps (in map order) whose pairs fit.

    Args:
        rows: int64 [R], positions of the dark pairs.
        map_index: int32 [B], every pair's map.
        most_pairs: Most pairs (`EscalationPlan.wake_pairs`).

    Returns:
        int64 [<= R], the rows of whole maps, ascending, at most `most_pairs` of them.
    """
    chosen, count = [], 0
    for map_id in np.unique(map_index[rows]):
        of_map = rows[map_index[rows] == map_id]
        if count + len(of_map) > most_pairs:
            break
        chosen.append(of_map)
        count += len(of_map)
    return np.sort(np.concatenate(chosen)) if chosen else rows[:0]


# The most results a chunk of pairs may hold (`result_bytes_per_pair` x its pairs): a chunk's results are held
# (twice, while its batches' results are joined) until it is saved, and its group is what writing the outputs
# loads at once. A constant, not a share of --memory_budget: chunks are part of a run (its saved plans, the
# maps a resumed chunk recomputes), and the budget is not part of a run's settings.
CHUNK_RESULT_BYTES = 512 * 2**20


def chunk_maps(batch_size: int, inits: int, result_bytes: int) -> int:
    """Maps per chunk: `batch_size // inits`, fewer where their results would pass `CHUNK_RESULT_BYTES` (>= 1).

    Args:
        batch_size: Pairs of a chunk (`--batch_size`).
        inits: Pairs per map (`--inits_per_map`).
        result_bytes: `result_bytes_per_pair` of the run's images.
    """
    return max(1, min(batch_size, CHUNK_RESULT_BYTES // result_bytes) // inits)


def result_bytes_per_pair(image_shape: tuple[int, ...], num_snapshots: int) -> int:
    """Bytes of one pair's result held in memory: its final image, its start image and its snapshots, float32.

    bytes = 4 x (2 + num_snapshots) x prod(image_shape) (loss history and the scalars are left out: small).
    """
    return 4 * (2 + num_snapshots) * int(np.prod(image_shape))


def batch_within_memory(
    bytes_per_image: int, budget_bytes: int, resident_bytes: int, wanted: int, reserved_bytes: int = 0
) -> int:
    """Images per batch: at most `wanted`, and their activations within the budget that the process leaves free.

    batch = min(wanted, (budget_bytes - resident_bytes - reserved_bytes) // bytes_per_image); 0 when not even
    one fits. `reserved_bytes` is memory the run will hold beside the batch (a chunk's results).
    """
    free = budget_bytes - resident_bytes - reserved_bytes
    return int(max(0, min(wanted, free // max(1, bytes_per_image))))


def resident_bytes() -> int:
    """The process's resident memory now (bytes), from /proc/self/statm; 0 where that does not exist."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
