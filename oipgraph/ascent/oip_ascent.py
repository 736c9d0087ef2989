"""The compiled OIP ascent: one `tf.Module`, one `tf.while_loop`, many (image, target) pairs.

For every pair b (start image x_b, target t_b of the objective: a map or unit
of the chosen layer), each step computes loss_j = objective(transform(x), t_b)
and g = d loss_j / d x (`step.AscentStep`; the transforms are the identity
unless jitter or scale is on) and moves x by
x <- project(x + epsilon * step_scale * g / (rms(g) + 1e-7)), per-image
standardization for standardized images (`domain`), until the pair stops as
`converged` or `no_activation` or `steps` steps ran (`loop`: the stop
rules, and how stopped pairs leave the computation).

`loss` is the objective at the returned image (without transforms);
`loss_history[b, j]` is loss_j (frozen pairs repeat their final loss);
`steps_run` counts the gradient evaluations of a pair; snapshots are the
images after 0, n, 2n, 4n, ... and all steps. `OIPAscent` validates every
input in Python (one-line `OIPGraphError`) and in the graph
(`InvalidArgumentError` naming the input) before anything is allocated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from oipgraph.ascent.domain import Domain, infer_domain
from oipgraph.ascent.loop import AscentLoop
from oipgraph.ascent.pair_checks import check_pair_arguments, graph_checked_pairs
from oipgraph.ascent.parameterizations import Parameterization, build_parameterization
from oipgraph.ascent.presets import resolve_recipe
from oipgraph.ascent.results import AscentResult, result_from_outputs
from oipgraph.ascent.step import AscentStep, never_single
from oipgraph.ascent.step_rules import StepRule, build_step_rule
from oipgraph.ascent.transforms import Transforms
from oipgraph.core import interrupts
from oipgraph.core.errors import OIPGraphError
from oipgraph.models.layer_lookup import module_name
from oipgraph.models.loading import check_image_model, load_model
from oipgraph.models.precision import BFLOAT16, FLOAT32, bfloat16_model, check_precision, resolve_precision
from oipgraph.objectives import Objective, build_objective

__all__ = [
    "DEFAULT_CONV_CRITERION",
    "DEFAULT_EPSILON",
    "DEFAULT_NUM_SNAPSHOTS",
    "DEFAULT_STEPS",
    "OIPAscent",
]

DEFAULT_STEPS = 600
DEFAULT_EPSILON = 0.01
DEFAULT_CONV_CRITERION = 5e-4
DEFAULT_NUM_SNAPSHOTS = 8
# The Python entry point runs the loop in segments of about this many seconds, so that progress
# moves and Ctrl-C is answered within a segment; the results do not depend on the segmentation.
SEGMENT_SECONDS = 0.5
FIRST_SEGMENT_STEPS = 5


def next_segment(segment: int, elapsed: float) -> int:
    """Steps of the next segment of the segmented loop: `segment` steps took `elapsed` seconds; aim at
    `SEGMENT_SECONDS`, growing at most 4x per segment."""
    return max(1, min(4 * segment, round(segment * SEGMENT_SECONDS / max(elapsed, 1e-3))))


class OIPAscent(tf.Module):
    """Gradient ascent on input images for the targets (maps or units) of one layer.

    `optimize` is a `tf.function` with a fixed input signature: any batch size
    and step count run without retracing, and every step runs inside one
    `tf.while_loop`. Call the module itself for checked NumPy results, with
    progress.

    Example:
        ascent = OIPAscent.from_file(None, "Conv2D_3")  # the shipped MNIST CNN, channel objective
        starts = multiscale(start_seeds(0, range(8)), ascent.image_shape)
        result = ascent(starts, map_index=range(8), steps=400)
        classes = OIPAscent.from_file(None, "Dense_2")  # unit objective: the class logits
    """

    def __init__(
        self,
        model: keras.Model,
        layer_name: str,
        num_snapshots: int = DEFAULT_NUM_SNAPSHOTS,
        name: str | None = None,
        fast: bool = True,
        *,
        objective: str | Objective | None = None,
        neuron: Sequence[int] | None = None,
        minimize: bool = False,
        transforms: Transforms | str | None = None,
        domain: Domain | None = None,
        preset: str | None = None,
        param: str | Parameterization | None = None,
        optimizer: str | StepRule | None = None,
        learning_rate: float | None = None,
        precision: str = FLOAT32,
    ):
        """Builds the ascent for `layer_name` of `model`.

        Args:
            model: A Keras model with one fixed-size NHWC image input (1 or 3 channels).
            layer_name: The layer the objective reads.
            num_snapshots: Frames recorded per pair (>= 2).
            name: Module name; defaults to `oip_ascent_<layer_name>`.
            fast: Allow the exact fast formulations of the objective (see
                `objectives.spatial`); False runs the plain Keras layer (same
                results up to float rounding, slower; for comparison).
            objective: `channel`, `neuron`, `unit`, a ready `Objective`, or None
                for the layer's default (`objectives.build_objective`).
            neuron: (row, col) of the `neuron` objective; None for the centre.
            minimize: Minimize the objective instead.
            transforms: Pad, jitter, scale and rotation applied to what the model sees (`Transforms`, or a
                `--transforms` text such as `standard`); None for the preset's.
            domain: Where the images live: `domain.Standardized()` or a
                `domain.ValueRange`; None reads it off the model
                (`domain.infer_domain`: a leading Rescaling or Normalization
                layer), else standardized images.
            preset: Where the pieces below that are None come from (`presets`): `articles` (pixels,
                normalized step, no transforms; the default, None), `natural` (fourier, adam, lucid's
                transforms) or `auto` (articles for standardized images, natural for a value range).
            param: What the ascent updates: `pixels` (the image itself, the articles') or `fourier`
                (a 1/f-scaled spectrum, colour-decorrelated and squashed into the domain;
                `ascent.parameterizations`), or a ready `Parameterization`.
            optimizer: The step rule: `normalized` (the articles') or `adam` (`ascent.step_rules`), or a
                ready `StepRule`. The `epsilon` of a call is its step size (learning rate).
            learning_rate: The step size strategies use when their settings give none (`learning_rate`).
            precision: `float32`, `bfloat16` (the steps' forward pass and gradient run on a bfloat16 copy of
                the model; image, update and reported losses stay float32, the final losses are the float32
                model's) or `auto` (bfloat16 where the CPU has AMX-BF16 or AVX512-BF16 or there is a GPU;
                `models.precision`). The precision used is `self.precision`.

        Raises:
            OIPGraphError: unsuitable model, layer or objective, num_snapshots < 2, an unknown precision,
                or bfloat16 with a ready `Objective` (it needs the objective by name to build it twice).
        """
        super().__init__(name=name or f"oip_ascent_{module_name(layer_name)}")
        if num_snapshots < 2:
            raise OIPGraphError(f"num_snapshots must be >= 2, got {num_snapshots}")
        self.image_shape = check_image_model(model)
        check_precision(precision)
        built_objective, objective_kind = not isinstance(objective, Objective), objective
        if built_objective:
            objective = build_objective(model, layer_name, objective, neuron, minimize, fast)
        self.objective = objective
        # `auto` keeps float32 for a ready Objective, which cannot be rebuilt on a bfloat16 copy.
        self.precision = resolve_precision(precision) if built_objective else FLOAT32
        if precision == BFLOAT16 and not built_objective:
            raise OIPGraphError("precision='bfloat16' needs the objective by name, not a ready Objective")
        # What the steps differentiate (the precursor scan and the wake-up too); `objective` scores the results.
        self.step_objective = objective
        if self.precision == BFLOAT16:
            self.step_objective = build_objective(
                bfloat16_model(model), layer_name, objective_kind, neuron, minimize, fast
            )
        self.layer_name = layer_name
        self.num_maps = objective.num_targets
        self.num_snapshots = num_snapshots
        self.feature_model = objective.feature_model
        if domain is None:
            domain, self.domain_reason = infer_domain(model)
        else:
            self.domain_reason = f"input range {domain.name}, as given"
        self.recipe = resolve_recipe(
            domain,
            self.image_shape,
            preset,
            getattr(param, "name", param),
            getattr(optimizer, "name", optimizer),
            learning_rate,
            transforms,
        )
        self.learning_rate = self.recipe.learning_rate
        transforms = self.recipe.transforms
        self.parameterization = build_parameterization(param or self.recipe.param, self.image_shape, domain)
        self.step_rule = build_step_rule(optimizer or self.recipe.optimizer)
        self.ascent_step = AscentStep(
            self.step_objective,
            self.image_shape,
            transforms,
            domain,
            parameterization=self.parameterization,
            step_rule=self.step_rule,
        )
        self.transforms, self.domain = self.ascent_step.transforms, domain
        self.loss_and_gradient = self.ascent_step.loss_and_gradient
        image_spec = tf.TensorSpec(None, tf.float32, name="images")
        map_spec = tf.TensorSpec([None], tf.int32, name="map_index")
        scalar_specs = [
            tf.TensorSpec([], tf.int32, name="steps"),
            tf.TensorSpec([], tf.float32, name="epsilon"),
            tf.TensorSpec([], tf.float32, name="conv_criterion"),
        ]
        seed_spec = tf.TensorSpec([None, 2], tf.int64, name="seeds")
        # autograph=False here and in every tf.function of the package: the graph code writes its loops and
        # branches as tf.while_loop / tf.cond itself, and AutoGraph's conversion of its source cost about
        # 2.5 s of every command's start (BENCHMARKS.md, "Start-up").
        self.optimize = tf.function(
            self._optimize, autograph=False, input_signature=[image_spec, map_spec, *scalar_specs, seed_spec]
        )
        self.loss = tf.function(self._checked_loss, autograph=False, input_signature=[image_spec, map_spec])
        self.loop = AscentLoop(self.ascent_step, num_snapshots)
        state_spec = self.loop.state_spec(self.image_shape)
        self._start = tf.function(
            self._checked_start, autograph=False, input_signature=[image_spec, map_spec, *scalar_specs, seed_spec]
        )
        self._advance = tf.function(
            self.loop.run_segment,
            autograph=False,
            input_signature=[state_spec, map_spec, *scalar_specs, seed_spec, tf.TensorSpec([], tf.int32)],
        )
        self._finish = tf.function(
            self._final_outputs, autograph=False, input_signature=[state_spec, map_spec, scalar_specs[0]]
        )

    @classmethod
    def from_file(cls, model_path: str | None, layer_name: str, **kwargs) -> OIPAscent:
        """Builds the ascent from a `.keras` file (None: the shipped MNIST CNN)."""
        return cls(load_model(model_path), layer_name, **kwargs)

    # -- graph pieces ---------------------------------------------------------

    def map_loss(self, images: tf.Tensor, map_index: tf.Tensor) -> tf.Tensor:
        """float32 [B]: the objective of image b for target `map_index[b]` (no transforms), on the float32 model."""
        return self.objective(images, map_index)

    def check_inputs(self, images: tf.Tensor, map_index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """In-graph validation (`pair_checks.graph_checked_pairs`): (images, map_index) behind the checks."""
        return graph_checked_pairs(images, map_index, self.image_shape, self.objective)

    def _checked_loss(self, images: tf.Tensor, map_index: tf.Tensor) -> tf.Tensor:
        return self.map_loss(*self.check_inputs(images, map_index))

    def _checked_start(self, images, map_index, steps, epsilon, conv_criterion, seeds) -> dict[str, tf.Tensor]:
        """The loop state before step 0, behind the checks of all arguments."""
        return self.loop.initial_state(*self.check_inputs(images, map_index), steps, epsilon, conv_criterion, seeds)

    def _final_outputs(self, state, map_index, steps) -> dict[str, tf.Tensor]:
        """Everything but the loss history, from the state after the loop."""
        images = self.ascent_step.parameterization.to_image(state["params"])
        return self.loop.final_outputs(state, steps, images, never_single(self.map_loss, images, map_index))

    def _optimize(self, images, map_index, steps, epsilon, conv_criterion, seeds) -> dict[str, tf.Tensor]:
        # Everything below reads the checked map_index, so that no gather sees a bad index first.
        images, map_index = self.check_inputs(images, map_index)
        state = self.loop.initial_state(images, map_index, steps, epsilon, conv_criterion, seeds)
        state, history = self.loop.run_segment(state, map_index, steps, epsilon, conv_criterion, seeds, steps)
        outputs = self._final_outputs(state, map_index, steps)
        padding = tf.tile(outputs["loss"][None], [steps - state["step"], 1])
        return {**outputs, "loss_history": tf.transpose(tf.concat([history, padding], axis=0))}

    # -- checked Python entry point ------------------------------------------

    def check_arguments(
        self, images: np.ndarray, map_index: np.ndarray, steps: int, epsilon: float, conv_criterion: float
    ) -> None:
        """Python-side validation with one-line messages (`pair_checks.check_pair_arguments`)."""
        check_pair_arguments(images, map_index, steps, epsilon, conv_criterion, self.image_shape, self.objective)

    def checked_pairs(
        self,
        images: np.ndarray | tf.Tensor,
        map_index: Sequence[int] | np.ndarray | int,
        steps: int,
        epsilon: float,
        conv_criterion: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(float32 images [B, H, W, C], int32 map_index [B]) for the pairs, checked.

        One map index applies to every image.
        """
        images = np.asarray(images, dtype=np.float32)
        map_index = np.asarray(map_index, dtype=np.int32)
        if map_index.ndim == 0 and images.ndim == 4:
            map_index = np.full([images.shape[0]], map_index, np.int32)
        self.check_arguments(images, map_index, steps, epsilon, conv_criterion)
        return images, map_index

    def __call__(
        self,
        images: np.ndarray | tf.Tensor,
        map_index: Sequence[int] | np.ndarray | int,
        steps: int = DEFAULT_STEPS,
        epsilon: float = DEFAULT_EPSILON,
        conv_criterion: float = DEFAULT_CONV_CRITERION,
        seeds: np.ndarray | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> AscentResult:
        """Runs the ascent for pairs (images[b], map_index[b]).

        The loop runs in segments of about `SEGMENT_SECONDS` (the same steps
        `optimize` runs in one call, so the same results), which lets
        `progress` report and Ctrl-C stop it between segments (a SIGINT
        during a segment is raised as KeyboardInterrupt after it:
        `oipgraph.core.interrupts`).

        Args:
            images: float [B, H, W, C] start images, in the ascent's domain.
            map_index: B targets (maps or units), or one for every image.
            steps: Maximum number of ascent steps (> 0).
            epsilon: Step size (> 0).
            conv_criterion: Relative-change threshold of the convergence stop;
                <= 0 runs every pair for all `steps` unless it has no activation.
            seeds: int64 [B, 2], the stateless seed of each pair's transforms;
                None for zeros (all pairs draw the same transforms). Unused
                without transforms.
            progress: Called with (steps done, steps) after every segment.

        Returns:
            An `AscentResult` with NumPy arrays.

        Raises:
            OIPGraphError: bad shapes, map indices, steps, epsilon or non-finite images.
        """
        images, map_index = self.checked_pairs(images, map_index, steps, epsilon, conv_criterion)
        seeds = np.zeros([len(map_index), 2], np.int64) if seeds is None else np.asarray(seeds, np.int64)
        if seeds.shape != (len(map_index), 2):
            raise OIPGraphError(f"seeds must have shape [{len(map_index)}, 2], got {list(seeds.shape)}")
        arguments = (tf.constant(int(steps)), tf.constant(float(epsilon)), tf.constant(float(conv_criterion)))
        with interrupts.deferred():
            state = self._start(images, map_index, *arguments, seeds)
            histories, segment = [], FIRST_SEGMENT_STEPS
            while int(state["step"]) < steps and bool(tf.reduce_any(state["active"])):
                interrupts.check()
                started = time.perf_counter()
                end = min(int(state["step"]) + segment, int(steps))
                state, history = self._advance(state, map_index, *arguments, seeds, tf.constant(end))
                histories.append(history.numpy())
                segment = next_segment(segment, time.perf_counter() - started)
                if progress is not None:
                    progress(int(state["step"]), int(steps))
            outputs = {key: value.numpy() for key, value in self._finish(state, map_index, arguments[0]).items()}
        if progress is not None:
            progress(int(steps), int(steps))
        return result_from_outputs(map_index, outputs, histories, steps)
