"""What a strategy run is made of: its settings, its records, and the batched ascent call.

`StrategySettings` is what every strategy takes besides the maps and the seed; `OIPRun` what it
returns (the ascent results of B pairs and where they came from), with one `StageRecord` per stage
of a staged strategy (`auto`); `run_in_batches` runs the compiled ascent over any number of pairs.
The strategies themselves are in `oipgraph.strategies` and `oipgraph.strategies.auto`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from oipgraph import starts
from oipgraph.ascent import DEFAULT_CONV_CRITERION, DEFAULT_EPSILON, DEFAULT_STEPS, AscentResult, OIPAscent
from oipgraph.ascent.results import select_pairs
from oipgraph.core import limits
from oipgraph.core.errors import OIPGraphError, check_positive_int, is_positive_int
from oipgraph.distribute.executors import LocalExecutor, PairExecutor
from oipgraph.starts.patterns import DEFAULT_GRID, DEFAULT_VALUES
from oipgraph.strategies.budget import MAX_ESCALATION_BUDGET
from oipgraph.strategies.preactivation import DEFAULT_WAKE_STEPS
from oipgraph.strategies.precursor_run import DEFAULT_SCAN_STEPS, DEFAULT_TOP_N

DEFAULT_BATCH_SIZE = 256
# Steps of the coarse-to-fine stages before each finer scale is added (the final stage:
# `strategies.DEFAULT_COARSE_TO_FINE_FINAL_STEPS`).
DEFAULT_COARSE_TO_FINE_STEPS = (20, 40, 80)
# The first article's 4x4 grid of 7x7 squares, two values: 65,536 patterns. On the shipped
# CNN it finds starts for Conv2D_3 maps that no 3x3 pattern excites.
DEFAULT_PRECURSOR_FALLBACKS = ((4, (0.2, 0.8)),)
# auto's precursor stage: patterns per map that get the scan steps after the shared screening,
# and starts per map that get the full ascent.
DEFAULT_AUTO_SCREEN_KEEP = 32
DEFAULT_AUTO_PRECURSOR_STARTS = 3
# Patterns per forward pass of auto's shared screen (the CLI derives it from --memory_budget).
DEFAULT_SCREEN_CHUNK = 1024


@dataclasses.dataclass
class StrategySettings:
    """What every strategy needs besides the maps and the seed.

    Attributes:
        steps: Steps of the final (full) ascent; None uses each strategy's own
            default: 600 for random, fourier and preactivation, 400 for
            coarse_to_fine, 1200 for precursor. A number applies to every
            strategy (auto included).
        epsilon: Ascent step size (the step rule's learning rate); None for the ascent's (`OIPAscent.learning_rate`).
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
            `patterns.default_colors`.
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
        escalation_budget: auto's escalation stages together may cost at most
            this factor of its random stage's pairs x steps (`budget.plan_escalation`); 0: no
            escalation; None: no limit.
        screen_chunk: Patterns per forward pass of auto's shared screen.
        on_final: auto calls it with the pairs of the maps whose results are
            final (all their pairs fired, or the last stage ran), as soon as
            they are, each map once; the CLI saves them.
        plan_record: auto's escalation plan for these pairs as recorded by an
            earlier (interrupted) run, reused so that a resumed run computes
            the same; None to plan afresh.
        on_plan: Called with the plan record whenever auto extends it.
        on_stage: Called with a `StageProgress` as auto's stages advance.
        executor: Where the final ascents run (`run_in_batches`): None for this process's device
            (`distribute.LocalExecutor`); a `distribute.DeviceExecutor` spreads them over several devices,
            a `distribute.ClusterExecutor` over a cluster's workers. The precursor screen and the wake-up
            run in this process either way.
        on_returned: Called with (maps whose pairs all came back, maps of the call) by an executor that
            returns pairs in pieces (the cluster's), for progress.
    """

    steps: int | None = None
    epsilon: float | None = None
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
    escalation_budget: float | None = None
    screen_chunk: int = DEFAULT_SCREEN_CHUNK
    on_final: Callable[[OIPRun], None] | None = None
    plan_record: dict | None = None
    on_plan: Callable[[dict], None] | None = None
    on_stage: Callable[[StageProgress], None] | None = None
    executor: PairExecutor | None = None
    on_returned: Callable[[int, int], None] | None = None

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
            "screen_chunk": self.screen_chunk,
        }
        if self.steps is not None:
            counts["steps"] = self.steps
        if self.epsilon is not None:
            limits.check_epsilon("epsilon", self.epsilon)
        for name, value in counts.items():
            check_positive_int(name, value)
        for fallback in self.precursor_fallbacks:
            if len(fallback) != 2:
                raise OIPGraphError(f"precursor_fallbacks must hold (grid, values) pairs, got {fallback!r}")
        budget = self.escalation_budget
        if budget is not None and not (isinstance(budget, (int, float)) and 0 <= budget <= MAX_ESCALATION_BUDGET):
            raise OIPGraphError(f"escalation_budget must be a number in [0, {MAX_ESCALATION_BUDGET:g}], got {budget!r}")
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

    def step_size(self, ascent: OIPAscent) -> float:
        """`epsilon`, or the ascent's learning rate when it is None."""
        return ascent.learning_rate if self.epsilon is None else self.epsilon

    def pixel_step_size(self, ascent: OIPAscent) -> float:
        """The step size of pixel-space loops (the wake-up): `step_size` where the ascent itself takes
        normalized pixel steps, else the articles' `DEFAULT_EPSILON`."""
        articles = ascent.parameterization.name == "pixels" and ascent.step_rule.name == "normalized"
        return self.step_size(ascent) if articles else DEFAULT_EPSILON


@dataclasses.dataclass
class StageProgress:
    """Where a staged strategy (`auto`) is, for progress reports.

    Attributes:
        stage: What runs: "random", "precursor screen", "precursor ascent", "preactivation".
        share: The share (0 to 1) of this stage done.
        detail: Counts for people, e.g. "4096/19683 patterns"; "" for none.
        seconds_left: Estimated wall seconds left of the strategy's escalation of these pairs
            (this stage and the planned ones after it); None before the plan exists.
    """

    stage: str
    share: float
    detail: str = ""
    seconds_left: float | None = None


@dataclasses.dataclass
class StageRecord:
    """One stage of a strategy that runs in stages (`auto`).

    Attributes:
        name: The stage (`random`, `coarse_to_fine`, ...).
        pairs: Pairs the stage was run for.
        fired: Pairs it gave an OIP (`Objective.fired`).
        seconds: Wall time of the stage.
        cpu_seconds: CPU time of the process during the stage (all threads).
        image_steps: The stage's cost in image-steps (`budget`): counted for random, planned for the others.
        plan: How the stage was planned (auto's precursor: its form), {} for none.
    """

    name: str
    pairs: int
    fired: int
    seconds: float
    cpu_seconds: float
    image_steps: float = 0.0
    plan: dict = dataclasses.field(default_factory=dict)


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

    def select(self, rows: np.ndarray) -> OIPRun:
        """The pairs `rows` (int [R]) of this run, in that order, without its stage records.

        All pairs in their order share this run's arrays (no copy: at 224x224 a chunk's results are GBs).
        """
        rows = np.asarray(rows, np.int64)
        if np.array_equal(rows, np.arange(len(self))):
            return OIPRun(self.result, self.start_images, self.init_index, self.seed, self.streams, list(self.strategy))
        return OIPRun(
            select_pairs(self.result, rows),
            self.start_images[rows],
            self.init_index[rows],
            self.seed,
            self.streams[rows],
            [self.strategy[row] for row in rows.tolist()],
        )

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
    """Runs the ascent over any number of pairs, `settings.batch_size` at a time, on `settings.executor`.

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
    executor = settings.executor or LocalExecutor()
    return executor.run_pairs(
        ascent,
        images,
        map_index,
        steps,
        settings.step_size(ascent),
        conv_criterion,
        seeds,
        settings.batch_size,
        settings.progress,
        settings.on_returned,
    )
