"""The compiled OIP ascent: one `tf.Module`, one `tf.while_loop`, many (image, target) pairs.

For every pair b (start image x_b, target t_b of the objective: a map or unit
of the chosen layer), step j:

1. loss_j = objective(transform(x), t_b), g = d loss_j / d x (`step.AscentStep`;
   the transforms are the identity unless jitter or scale is on).
2. Convergence (if `conv_criterion` > 0): for j > 10, a relative change
   (loss_j - loss_{j-1}) / (|loss_j| + 1e-7) below `conv_criterion` in 4
   successive steps stops the pair as `converged`. Dividing by |loss|, not
   loss, keeps a rising negative loss (a linear layer, a logit) from counting
   as converged; for the articles' ReLU maps loss >= 0 and both agree.
3. Zero activation: a step with loss_j == 0 and mean(g) == 0 counts; more than
   10 such steps stop the pair as `no_activation`.
4. Otherwise x <- project(x + epsilon * step_scale * g / (rms(g) + 1e-7)),
   per-image standardization for standardized images (`domain`).

A stopped pair is frozen (its image no longer changes) and leaves the
computation: each step gathers the pairs still running, computes only them and
scatters their new state back, so pairs that stop early (a map that never
fires stops at step 11) cost nothing afterwards. The loop ends when every pair
stopped or `steps` steps ran. `loss` is the objective at the returned
image (without transforms); `loss_history[b, j]` is loss_j (frozen pairs
repeat their final loss); `steps_run` counts the gradient evaluations of a pair
(11 for a map that never fires); snapshots are the images after 0, n, 2n, 4n,
... and all steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from oipgraph import limits
from oipgraph.domain import Domain, infer_domain
from oipgraph.errors import OIPGraphError
from oipgraph.layer_lookup import module_name
from oipgraph.model import check_image_model, load_model
from oipgraph.objectives import Objective, build_objective
from oipgraph.objectives.base import STATUS_COMPLETED, STATUS_CONVERGED, STATUS_NAMES, STATUS_NO_ACTIVATION
from oipgraph.results import AscentResult
from oipgraph.step import GRADIENT_EPS, AscentStep, ascent_update, compiled_step, loss_and_gradient, never_single
from oipgraph.transforms import Transforms

__all__ = [
    "GRADIENT_EPS",
    "STATUS_COMPLETED",
    "STATUS_CONVERGED",
    "STATUS_NAMES",
    "STATUS_NO_ACTIVATION",
    "AscentResult",
    "OIPAscent",
    "ascent_update",
    "checked_steps",
    "compiled_step",
    "loss_and_gradient",
    "snapshot_steps",
]

DEFAULT_STEPS = 600
DEFAULT_EPSILON = 0.01
DEFAULT_CONV_CRITERION = 5e-4
DEFAULT_NUM_SNAPSHOTS = 8
ZERO_STEP_LIMIT = 10
CONVERGENCE_AFTER_STEP = 10
CONVERGENCE_STREAK = 4
LOSS_EPS = 1e-7
# The Python entry point runs the loop in segments of about this many seconds, so that progress
# moves and Ctrl-C is answered within a segment; the results do not depend on the segmentation.
SEGMENT_SECONDS = 0.5
FIRST_SEGMENT_STEPS = 5
STATE_KEYS = ("step", "images", "loss_prev", "zero_steps", "streak", "status", "active", "steps_run", "snapshots")


def snapshot_steps(steps: tf.Tensor | int, num_snapshots: int) -> tf.Tensor:
    """Log-spaced snapshot steps [0, n, 2n, 4n, ..., steps], n = max(1, steps // 2^(F-2))."""
    steps = tf.cast(steps, tf.int32)
    spacing = tf.maximum(1, steps // 2 ** (num_snapshots - 2))
    doublings = tf.constant([2**j for j in range(num_snapshots - 2)], tf.int32)
    middle = tf.minimum(spacing * doublings, steps)
    return tf.concat([[0], middle, [steps]], axis=0)


def checked_steps(
    steps: tf.Tensor, epsilon: tf.Tensor, conv_criterion: tf.Tensor | None = None, batch: tf.Tensor | None = None
) -> tf.Tensor:
    """In-graph validation of an ascent loop's step arguments; returns `steps` behind the checks.

    steps in [1, limits.MAX_STEPS], epsilon in (0, limits.MAX_EPSILON], conv_criterion finite and, given
    the batch, batch x steps <= limits.MAX_STEP_PAIRS. Size every allocation from the returned `steps`.
    """
    checks = limits.assert_steps(steps) + limits.assert_epsilon(epsilon)
    if conv_criterion is not None:
        checks.append(tf.debugging.assert_all_finite(conv_criterion, message="conv_criterion must be finite"))
    if batch is not None:
        checks += limits.assert_step_pairs(steps, batch)
    with tf.control_dependencies(checks):
        return tf.identity(steps)


class OIPAscent(tf.Module):
    """Normalized gradient ascent on input images for the targets (maps or units) of one layer.

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
        transforms: Transforms | None = None,
        domain: Domain | None = None,
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
            transforms: Jitter and scale applied to what the model sees (default none).
            domain: Where the images live: `domain.Standardized()` or a
                `domain.ValueRange`; None reads it off the model
                (`domain.infer_domain`: a leading Rescaling or Normalization
                layer), else standardized images.

        Raises:
            OIPGraphError: unsuitable model, layer or objective, or num_snapshots < 2.
        """
        super().__init__(name=name or f"oip_ascent_{module_name(layer_name)}")
        if num_snapshots < 2:
            raise OIPGraphError(f"num_snapshots must be >= 2, got {num_snapshots}")
        self.image_shape = check_image_model(model)
        if not isinstance(objective, Objective):
            objective = build_objective(model, layer_name, objective, neuron, minimize, fast)
        self.objective = objective
        self.layer_name = layer_name
        self.num_maps = objective.num_targets
        self.num_snapshots = num_snapshots
        self.feature_model = objective.feature_model
        if domain is None:
            domain, self.domain_reason = infer_domain(model)
        else:
            self.domain_reason = f"input range {domain.name}, as given"
        self.ascent_step = AscentStep(objective, self.image_shape, transforms, domain)
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
        self.optimize = tf.function(self._optimize, input_signature=[image_spec, map_spec, *scalar_specs, seed_spec])
        self.loss = tf.function(self._checked_loss, input_signature=[image_spec, map_spec])
        height, width, channels = self.image_shape
        state_spec = {
            "step": tf.TensorSpec([], tf.int32),
            "images": tf.TensorSpec([None, height, width, channels], tf.float32),
            "loss_prev": tf.TensorSpec([None], tf.float32),
            "zero_steps": tf.TensorSpec([None], tf.int32),
            "streak": tf.TensorSpec([None], tf.int32),
            "status": tf.TensorSpec([None], tf.int32),
            "active": tf.TensorSpec([None], tf.bool),
            "steps_run": tf.TensorSpec([None], tf.int32),
            "snapshots": tf.TensorSpec([num_snapshots, None, height, width, channels], tf.float32),
        }
        self._start = tf.function(self._checked_start, input_signature=[image_spec, map_spec, *scalar_specs, seed_spec])
        self._advance = tf.function(
            self._run_segment,
            input_signature=[state_spec, map_spec, *scalar_specs, seed_spec, tf.TensorSpec([], tf.int32)],
        )
        self._finish = tf.function(self._final_outputs, input_signature=[state_spec, map_spec, scalar_specs[0]])

    @classmethod
    def from_file(cls, model_path: str | None, layer_name: str, **kwargs) -> OIPAscent:
        """Builds the ascent from a `.keras` file (None: the shipped MNIST CNN)."""
        return cls(load_model(model_path), layer_name, **kwargs)

    # -- graph pieces ---------------------------------------------------------

    def map_loss(self, images: tf.Tensor, map_index: tf.Tensor) -> tf.Tensor:
        """float32 [B]: the objective of image b for target `map_index[b]` (no transforms)."""
        return self.objective(images, map_index)

    def check_inputs(self, images: tf.Tensor, map_index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """In-graph validation (raises InvalidArgumentError).

        Returns:
            (images with a static shape, map_index), both behind the checks, so
            that nothing reads a bad map index before the check names it.
        """
        height, width, channels = self.image_shape
        shape = tf.shape(images)
        # Pad before comparing so that a wrong rank reaches the assertion instead of a broadcast error.
        padded_shape = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)[:4]
        shape_ok = tf.equal(tf.size(shape), 4) & tf.reduce_all(tf.equal(padded_shape[1:], [height, width, channels]))
        # The range checks reduce over axis 0: a scalar map_index must meet the rank check first. A loaded
        # signature does not enforce its [None] spec, and the graph optimizer folds tf.rank of a tensor of
        # known rank to a constant: the serialize/parse round trip drops the static shape, so the rank is
        # measured at run time.
        runtime_map_index = tf.io.parse_tensor(tf.io.serialize_tensor(map_index), tf.int32)
        map_rank_check = tf.debugging.Assert(
            tf.equal(tf.rank(runtime_map_index), 1),
            ["map_index must be a vector [batch]; got shape", tf.shape(runtime_map_index)],
        )
        with tf.control_dependencies([map_rank_check]):
            map_vector = tf.identity(map_index)
        checks = [
            tf.debugging.Assert(
                shape_ok, [f"images must have shape [batch, {height}, {width}, {channels}]; got shape", shape]
            ),
            *limits.assert_batch(padded_shape[0], self.image_shape, name="images batch (pairs per request)"),
            map_rank_check,
            tf.debugging.assert_equal(
                tf.size(map_index),
                padded_shape[0],
                message="map_index needs one entry per image; map_index length vs batch",
            ),
            *self.objective.graph_checks(map_vector),
            *limits.assert_pixels(images),
        ]
        with tf.control_dependencies(checks):
            return tf.ensure_shape(tf.identity(images), [None, height, width, channels]), tf.identity(map_index)

    def _checked_loss(self, images: tf.Tensor, map_index: tf.Tensor) -> tf.Tensor:
        return self.map_loss(*self.check_inputs(images, map_index))

    def _checked_start(self, images, map_index, steps, epsilon, conv_criterion, seeds) -> dict[str, tf.Tensor]:
        """The loop state before step 0, behind the checks of all arguments."""
        return self._initial_state(*self.check_inputs(images, map_index), steps, epsilon, conv_criterion, seeds)

    def _initial_state(self, images, map_index, steps, epsilon, conv_criterion, seeds) -> dict[str, tf.Tensor]:
        """The loop state before step 0 of checked `images` and `map_index`."""
        steps = checked_steps(steps, epsilon, conv_criterion, tf.shape(images)[0])
        seed_check = tf.debugging.assert_equal(
            tf.shape(seeds)[0], tf.shape(map_index)[0], message="seeds needs one [2] seed per image; seeds vs batch"
        )
        with tf.control_dependencies([seed_check, steps]):
            images = tf.identity(images)
            # The loop's history (TensorArray) is sized from this step: it must wait for the step checks.
            first_step = tf.identity(tf.constant(0))
        batch = tf.shape(images)[0]
        zeros = tf.zeros([batch], tf.int32)
        return {
            "step": first_step,
            "images": images,
            "loss_prev": tf.zeros([batch]),
            "zero_steps": zeros,
            "streak": zeros,
            "status": zeros + STATUS_COMPLETED,
            "active": tf.ones([batch], tf.bool),
            "steps_run": zeros,
            "snapshots": tf.zeros(tf.concat([[self.num_snapshots], tf.shape(images)], axis=0)),
        }

    def _run_segment(self, state, map_index, steps, epsilon, conv_criterion, seeds, end_step):
        """Runs steps state["step"] .. min(end_step, steps) - 1 of the loop (fewer once every pair stopped).

        Returns:
            (the state after them, float32 [steps run now, B] loss history).
        """
        frames = snapshot_steps(steps, self.num_snapshots)
        use_convergence = conv_criterion > 0
        start_step = state["step"]
        end_step = tf.minimum(end_step, steps)

        def record(step, x, snapshots):
            hit = tf.equal(frames, step)
            return tf.cond(
                tf.reduce_any(hit),
                lambda: tf.where(hit[:, None, None, None, None], x[None], snapshots),
                lambda: snapshots,
            )

        def body(state, history):
            step, all_images = state["step"], state["images"]
            snapshots = record(step, all_images, state["snapshots"])
            # Only the pairs still running are computed; stopped ones keep their frozen state.
            rows = tf.where(state["active"])[:, 0]
            at_rows = rows[:, None]

            def running(key):
                return tf.gather(state[key], rows)

            x = tf.gather(all_images, rows)
            loss, grad = self.loss_and_gradient(x, tf.gather(map_index, rows), tf.gather(seeds, rows), step)
            relative_change = (loss - running("loss_prev")) / (tf.abs(loss) + LOSS_EPS)
            streak = tf.where(
                (step > CONVERGENCE_AFTER_STEP) & (relative_change < conv_criterion), running("streak") + 1, 0
            )
            converged = use_convergence & (streak >= CONVERGENCE_STREAK)
            zero = tf.equal(loss, 0.0) & tf.equal(tf.reduce_mean(grad, axis=[1, 2, 3]), 0.0)
            zero_steps = running("zero_steps") + tf.cast(zero, tf.int32)
            stopping = converged | (zero_steps > ZERO_STEP_LIMIT)
            status = tf.where(stopping, tf.where(converged, STATUS_CONVERGED, STATUS_NO_ACTIVATION), running("status"))
            x = tf.where(stopping[:, None, None, None], x, self.ascent_step.update(x, grad, epsilon))

            def scatter(key, values):
                return tf.tensor_scatter_nd_update(state[key], at_rows, values)

            # A stopped pair's history repeats its last loss, which stays in loss_prev.
            loss_prev = scatter("loss_prev", loss)
            history = history.write(step - start_step, loss_prev)
            new_state = {
                "step": step + 1,
                "images": scatter("images", x),
                "loss_prev": loss_prev,
                "zero_steps": scatter("zero_steps", zero_steps),
                "streak": scatter("streak", streak),
                "status": scatter("status", status),
                "active": scatter("active", ~stopping),
                "steps_run": scatter("steps_run", tf.fill(tf.shape(rows), step + 1)),
                "snapshots": snapshots,
            }
            return new_state, history

        history = tf.TensorArray(tf.float32, size=tf.maximum(end_step - start_step, 0), element_shape=[None])
        state, history = tf.while_loop(
            lambda state, history: (state["step"] < end_step) & tf.reduce_any(state["active"]),
            body,
            (state, history),
            parallel_iterations=1,
        )
        return state, history.gather(tf.range(state["step"] - start_step))

    def _final_outputs(self, state, map_index, steps) -> dict[str, tf.Tensor]:
        """Everything but the loss history, from the state after the loop."""
        frames = snapshot_steps(steps, self.num_snapshots)
        x = state["images"]
        final_loss = never_single(self.map_loss, x, map_index)
        snapshots = tf.where((frames >= state["step"])[:, None, None, None, None], x[None], state["snapshots"])
        return {
            "images": x,
            "loss": final_loss,
            "status": state["status"],
            "steps_run": state["steps_run"],
            "snapshots": tf.transpose(snapshots, [1, 0, 2, 3, 4]),
            "snapshot_steps": frames,
        }

    def _optimize(self, images, map_index, steps, epsilon, conv_criterion, seeds) -> dict[str, tf.Tensor]:
        # Everything below reads the checked map_index, so that no gather sees a bad index first.
        images, map_index = self.check_inputs(images, map_index)
        state = self._initial_state(images, map_index, steps, epsilon, conv_criterion, seeds)
        state, history = self._run_segment(state, map_index, steps, epsilon, conv_criterion, seeds, steps)
        outputs = self._final_outputs(state, map_index, steps)
        padding = tf.tile(outputs["loss"][None], [steps - state["step"], 1])
        return {**outputs, "loss_history": tf.transpose(tf.concat([history, padding], axis=0))}

    # -- checked Python entry point ------------------------------------------

    def check_arguments(
        self, images: np.ndarray, map_index: np.ndarray, steps: int, epsilon: float, conv_criterion: float
    ) -> None:
        """Python-side validation with one-line messages (the graph checks again)."""
        height, width, channels = self.image_shape
        if images.ndim != 4 or images.shape[1:] != (height, width, channels):
            raise OIPGraphError(
                f"images must have shape [batch, {height}, {width}, {channels}], got {list(images.shape)}"
            )
        if map_index.shape != (images.shape[0],):
            raise OIPGraphError(
                f"map_index needs one entry per image: {map_index.shape[0] if map_index.ndim else 1} for "
                f"{images.shape[0]} images"
            )
        self.objective.check_targets(map_index)
        limits.check_batch("images batch (pairs per request)", images.shape[0], self.image_shape)
        limits.check_pixels("images", images)
        if isinstance(steps, float) and steps.is_integer():
            steps = int(steps)
        limits.check_steps("steps", steps)
        limits.check_step_pairs(steps, images.shape[0])
        limits.check_epsilon("epsilon", epsilon)
        if not math.isfinite(conv_criterion):
            raise OIPGraphError(f"conv_criterion must be finite (<= 0 disables convergence), got {conv_criterion!r}")

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
        `progress` report and Ctrl-C stop it between segments.

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
        state = self._start(images, map_index, *arguments, seeds)
        histories, segment = [], FIRST_SEGMENT_STEPS
        while int(state["step"]) < steps and bool(tf.reduce_any(state["active"])):
            started = time.perf_counter()
            end = min(int(state["step"]) + segment, int(steps))
            state, history = self._advance(state, map_index, *arguments, seeds, tf.constant(end))
            histories.append(history.numpy())
            elapsed = time.perf_counter() - started
            segment = max(1, min(4 * segment, round(segment * SEGMENT_SECONDS / max(elapsed, 1e-3))))
            if progress is not None:
                progress(int(state["step"]), int(steps))
        outputs = {key: value.numpy() for key, value in self._finish(state, map_index, arguments[0]).items()}
        history = np.concatenate(histories, axis=0).T if histories else np.zeros([len(map_index), 0], np.float32)
        outputs["loss_history"] = np.concatenate(
            [history, np.repeat(outputs["loss"][:, None], int(steps) - history.shape[1], axis=1)], axis=1
        )
        outputs["snapshot_steps"] = np.tile(outputs["snapshot_steps"], (len(map_index), 1))
        if progress is not None:
            progress(int(steps), int(steps))
        return AscentResult(map_index=map_index, **outputs)
