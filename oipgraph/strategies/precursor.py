"""The precursor scan: rank every coarse grid pattern by its loss after a few ascent steps.

For maps that never react to random start images, the second article covers
the image with a g x g grid, gives each cell one of the values V, and tests
all |V|^(g*g) patterns (19,683 for g = 3, V = (0.2, 0.5, 0.8)):

1. Pattern i is a g x g grid of cell values in one colour, resized to the image size
   and standardized (`oipgraph.starts.patterns`, which numbers them); the constant gray
   patterns are exactly the zero image.
2. Each pattern image runs `scan_steps` steps of the normalized gradient ascent
   of `oipgraph.ascent` for the chosen map; its score is the loss at the image
   after those steps.
3. The `top_n` best *start* images (before the scan steps) are returned, best
   first; equal scores keep the lower pattern index first.

`PrecursorScan.scan` runs all of it in one graph (a `tf.while_loop` over
chunks, with a running top-N) for export and TF Serving; `PrecursorScan.run`
does the same chunk by chunk from Python with a progress bar.

Speed (the default scan of one Conv2D_3 map of the shipped CNN takes ~11 s on
a shared 2-core CPU, 2.6x to 3.2x faster than scoring every pattern with
`OIPAscent.optimize`; see benchmarks/precursor_benchmark.py):

- Only the chosen map is computed (`Objective.shared_target`; for a Conv2D
  layer: the model up to the layer's input, then the kernel sliced to one channel).
- The steps are the ascent's own (`step.AscentStep` with one target shared by
  the batch), for any objective, in the ascent's domain; the scan's few steps
  run without the ascent's transforms, so that a pattern's score does not
  depend on random draws.
- A start whose loss and gradient are both exactly zero is dropped from its
  chunk: its image can no longer change, so its score stays 0.
- Successive halving (`oipgraph.strategies.ranking`, also the chunk sizes and the
  running top-N): when `scan_steps > halving_steps` (default 2), every
  pattern is first scored after `halving_steps` steps, and only the best
  `max(halving_keep, halving_keep_per_result * top_n)` (default 1024 for
  N = 8) get all `scan_steps` steps. On the shipped CNN the final top-8 lay
  within the best 132 after 2 steps on each of 11 maps studied, and the top-N
  equals the exhaustive scan's (`halving_steps=0`) on every Conv2D_3 map
  checked with `precursor_benchmark.py --validate_maps`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

from oipgraph.ascent import DEFAULT_EPSILON, OIPAscent
from oipgraph.ascent.step import AscentStep, compiled_step, never_single
from oipgraph.core import limits
from oipgraph.core.errors import OIPGraphError
from oipgraph.models.layer_lookup import module_name
from oipgraph.starts.patterns import DEFAULT_GRID, DEFAULT_VALUES, GridPatterns
from oipgraph.strategies.precursor_run import ScanEntryPoint
from oipgraph.strategies.ranking import (
    DEFAULT_HALVING_KEEP,
    DEFAULT_HALVING_KEEP_PER_RESULT,
    DEFAULT_HALVING_STEPS,
    Halving,
    best_of,
    chunk_size_for,
)


class PrecursorScan(ScanEntryPoint, tf.Module):
    """Scans all g x g grid patterns for the start images that excite one map most.

    Example:
        ascent = OIPAscent.from_file(None, "Conv2D_3")
        scan = PrecursorScan(ascent)            # 3x3 grid, values (0.2, 0.5, 0.8)
        best = scan.run(map_index=46)           # 8 best of 19,683 starts, 10 scan steps
        result = ascent(best.images, 46, steps=1200)

    Attributes:
        ascent: The ascent whose layer, model and formulas the scan uses.
        grid_patterns: The patterns (`patterns.GridPatterns`); grid, values,
            colors, cell_patterns and num_patterns are its own.
        grid: Cells per side.
        values: Cell values V.
        num_patterns: len(colors) * |V|^(grid * grid).
        chunk_size: Patterns optimized together (`ranking.chunk_size_for`).
        halving: The successive halving (`ranking.Halving`).
        epsilon: Step size of the scan steps.
        scan: `tf.function(map_index, scan_steps, top_n) -> {"images", "scores",
            "pattern_index"}` with int32 scalar inputs; the whole scan in one graph.
    """

    def __init__(
        self,
        ascent: OIPAscent,
        grid: int = DEFAULT_GRID,
        values: Sequence[float] = DEFAULT_VALUES,
        chunk_size: int | None = None,
        epsilon: float = DEFAULT_EPSILON,
        halving_steps: int = DEFAULT_HALVING_STEPS,
        halving_keep: int = DEFAULT_HALVING_KEEP,
        halving_keep_per_result: int = DEFAULT_HALVING_KEEP_PER_RESULT,
        colors: Sequence[Sequence[float]] | None = None,
        name: str | None = None,
    ):
        """Builds the scan for the layer of `ascent`.

        Args:
            ascent: The compiled ascent of the layer to scan.
            grid: Cells per side of the pattern grid (> 0).
            values: The distinct, finite values a cell can take (at least one).
            chunk_size: Patterns per chunk; None picks a fast size that fits the
                memory budget.
            epsilon: Step size of the scan's ascent steps (> 0).
            halving_steps: Steps after which the patterns are ranked once and
                all but the best `max(halving_keep, halving_keep_per_result *
                top_n)` are dropped; 0 scores every pattern with all
                `scan_steps` steps (exhaustive).
            halving_keep: The least number of patterns kept by the halving.
            halving_keep_per_result: Patterns kept by the halving per requested result.
            colors: The colours of the patterns, each one value per channel of
                the image; None for `patterns.default_colors(channels)`.
            name: Module name; defaults to `precursor_<layer>`.

        Raises:
            OIPGraphError: a bad grid, values, chunk size or epsilon, or more
                than 2^31 - 1 patterns.
        """
        super().__init__(name=name or f"precursor_{module_name(ascent.layer_name)}")
        self.ascent = ascent
        self.grid_patterns = GridPatterns(ascent.image_shape, grid, values, colors)
        self.grid, self.values, self.colors = (
            self.grid_patterns.grid,
            self.grid_patterns.values,
            self.grid_patterns.colors,
        )
        self.cell_patterns = self.grid_patterns.cell_patterns
        self.num_patterns = self.grid_patterns.num_patterns
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise OIPGraphError(f"epsilon must be a finite number > 0, got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.chunk_size = chunk_size_for(ascent.feature_model, chunk_size, self.num_patterns)
        self.halving = Halving(halving_steps, halving_keep, halving_keep_per_result)
        self.ascent_step = AscentStep(
            ascent.step_objective, ascent.image_shape, domain=ascent.domain, shared_target=True
        )
        scalar = lambda name: tf.TensorSpec([], tf.int32, name=name)  # noqa: E731
        self.scan = tf.function(
            self._scan, autograph=False, input_signature=[scalar("map_index"), scalar("scan_steps"), scalar("top_n")]
        )
        # One non-inlined trace of a chunk's scoring serves both passes of `scan` (halving and final):
        # inlined, each pass held its own copy of the model, which doubled the export's tracing time.
        self._compiled_score = compiled_step(
            self.score_patterns,
            [tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)],
        )
        self._score_chunk = tf.function(
            self._checked_score_chunk,
            autograph=False,
            input_signature=[
                tf.TensorSpec([None], tf.int32, name="pattern_index"),
                scalar("map_index"),
                scalar("steps"),
            ],
        )

    # -- graph pieces -----------------------------------------------------------

    @property
    def repeated_patterns(self) -> int:
        """How many patterns repeat another's image (`GridPatterns.repeated_patterns`)."""
        return self.grid_patterns.repeated_patterns

    def cell_values(self, pattern_index: tf.Tensor) -> tf.Tensor:
        """float32 [B, grid, grid]: the cell values of patterns `pattern_index` (int32 [B])."""
        return self.grid_patterns.cell_values(pattern_index)

    def patterns(self, pattern_index: tf.Tensor) -> tf.Tensor:
        """float32 [B, H, W, C]: the start images of patterns `pattern_index` (int32 [B]), in the ascent's domain.

        `GridPatterns.standardized`, mapped into the ascent's domain (`Domain.from_standardized`).

        Raises:
            InvalidArgumentError: an index outside [0, num_patterns).
        """
        return self.ascent.domain.from_standardized(self.grid_patterns.standardized(pattern_index))

    def pool_size(self, top_n: tf.Tensor | int) -> tf.Tensor:
        """How many patterns survive the halving for a scan that returns `top_n` (`ranking.Halving`)."""
        return self.halving.pool_size(top_n, self.num_patterns)

    def prunes(self, scan_steps: tf.Tensor | int, top_n: tf.Tensor | int) -> tf.Tensor:
        """Whether a scan with these arguments drops hopeless patterns after `halving.steps` steps."""
        return self.halving.prunes(scan_steps, top_n, self.num_patterns)

    def score_patterns(self, pattern_index: tf.Tensor, map_index: tf.Tensor, scan_steps: tf.Tensor) -> tf.Tensor:
        """float32 [n]: each pattern's loss after `scan_steps` ascent steps for map `map_index`.

        Args:
            pattern_index: int32 [n], the patterns to score.
            map_index: int32 scalar, the map.
            scan_steps: int32 scalar (> 0), ascent steps before scoring.
        """
        images = self.patterns(pattern_index)
        height, width, channels = self.ascent.image_shape
        count = tf.shape(images)[0]

        def body(step, x, position):
            no_seeds = tf.zeros([tf.shape(x)[0], 2], tf.int64)
            loss, gradient = self.ascent_step.loss_and_gradient(x, map_index, no_seeds, step)
            x = self.ascent_step.update(x, gradient, self.epsilon)
            # Zero loss and zero gradient: the image never moves again, so its score stays 0.
            moving = tf.not_equal(loss, 0.0) | tf.reduce_any(tf.not_equal(gradient, 0.0), axis=[1, 2, 3])
            return step + 1, tf.boolean_mask(x, moving), tf.boolean_mask(position, moving)

        _, images, position = tf.while_loop(
            lambda step, x, position: (step < scan_steps) & (tf.size(position) > 0),
            body,
            (tf.constant(0), images, tf.range(count)),
            shape_invariants=(
                tf.TensorShape([]),
                tf.TensorShape([None, height, width, channels]),
                tf.TensorShape([None]),
            ),
            parallel_iterations=1,
        )
        # oneDNN convolutions fail on empty batches, so a chunk without moving images skips the model.
        final_loss = tf.cond(
            tf.size(position) > 0,
            lambda: never_single(lambda batch: self.ascent.step_objective.shared_target(batch, map_index), images),
            lambda: tf.zeros([0], tf.float32),
        )
        return tf.scatter_nd(position[:, None], final_loss, [count])

    def _best_of(
        self, candidates: tf.Tensor, map_index: tf.Tensor, steps: tf.Tensor, top_n: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The `top_n` best scores and pattern indices of `candidates` (ascending), chunk by chunk."""
        return best_of(candidates, lambda index: self._compiled_score(index, map_index, steps), self.chunk_size, top_n)

    def _check_scan_inputs(
        self, map_index: tf.Tensor, scan_steps: tf.Tensor, top_n: tf.Tensor | None = None
    ) -> list[tf.Operation]:
        layer = self.ascent.layer_name
        checks = [
            tf.debugging.assert_non_negative(map_index, message="map_index must be >= 0; got map_index"),
            tf.debugging.assert_less(
                map_index,
                self.ascent.num_maps,
                message=f"map_index must be < {self.ascent.num_maps} (maps of {layer}); got map_index",
            ),
            *limits.assert_in_range(scan_steps, "scan_steps", limits.MAX_SCAN_STEPS),
        ]
        if top_n is not None:
            checks += [
                tf.debugging.assert_positive(top_n, message="top_n must be > 0; got top_n"),
                tf.debugging.assert_less_equal(
                    top_n,
                    self.num_patterns,
                    message=f"top_n must be <= {self.num_patterns} (the number of patterns); got top_n",
                ),
                *limits.assert_in_range(top_n, "top_n", limits.MAX_TOP_N),
            ]
        return checks

    def _checked_score_chunk(self, pattern_index: tf.Tensor, map_index: tf.Tensor, steps: tf.Tensor) -> tf.Tensor:
        with tf.control_dependencies(self._check_scan_inputs(map_index, steps)):
            pattern_index = tf.identity(pattern_index)
        return self.score_patterns(pattern_index, map_index, steps)

    def _scan(self, map_index: tf.Tensor, scan_steps: tf.Tensor, top_n: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.control_dependencies(self._check_scan_inputs(map_index, scan_steps, top_n)):
            map_index = tf.identity(map_index)
        all_patterns = tf.range(self.num_patterns)

        def halving_survivors():
            _, survivors = self._best_of(
                all_patterns, map_index, tf.constant(self.halving.steps), self.pool_size(top_n)
            )
            return tf.sort(survivors)

        candidates = tf.cond(self.prunes(scan_steps, top_n), halving_survivors, lambda: all_patterns)
        scores, pattern_index = self._best_of(candidates, map_index, scan_steps, top_n)
        return {"images": self.patterns(pattern_index), "scores": scores, "pattern_index": pattern_index}
