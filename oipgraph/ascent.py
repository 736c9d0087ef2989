"""The compiled OIP ascent: one `tf.Module`, one `tf.while_loop`, many (image, map) pairs.

For every pair b (start image x_b, feature map k_b of the chosen layer), step j:

1. loss_j = mean over positions of the activation of map k_b, g = d loss_j / d x.
2. Convergence (if `conv_criterion` > 0): for j > 10, a relative change
   (loss_j - loss_{j-1}) / (loss_j + 1e-7) below `conv_criterion` in 4
   successive steps stops the pair as `converged`.
3. Zero activation: a step with loss_j == 0 and mean(g) == 0 counts; more than
   10 such steps stop the pair as `no_activation`.
4. Otherwise x <- per_image_standardization(x + epsilon * g / (rms(g) + 1e-7)).

A stopped pair is frozen (its image no longer changes); the loop ends when every
pair stopped or `steps` steps ran. `loss` is the objective at the returned
image; `loss_history[b, j]` is loss_j (frozen pairs repeat their final loss);
`steps_run` counts the gradient evaluations of a pair (11 for a map that never
fires); snapshots are the images after 0, n, 2n, 4n, ... and all steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from oipgraph import limits
from oipgraph.errors import OIPGraphError
from oipgraph.model import check_image_model, load_model, spatial_layer
from oipgraph.objective import PairMapLoss

STATUS_COMPLETED, STATUS_CONVERGED, STATUS_NO_ACTIVATION = 0, 1, 2
STATUS_NAMES = ("completed", "converged", "no_activation")
DEFAULT_STEPS = 600
DEFAULT_EPSILON = 0.01
DEFAULT_CONV_CRITERION = 5e-4
DEFAULT_NUM_SNAPSHOTS = 8
ZERO_STEP_LIMIT = 10
CONVERGENCE_AFTER_STEP = 10
CONVERGENCE_STREAK = 4
GRADIENT_EPS = 1e-7
LOSS_EPS = 1e-7


def snapshot_steps(steps: tf.Tensor | int, num_snapshots: int) -> tf.Tensor:
    """Log-spaced snapshot steps [0, n, 2n, 4n, ..., steps], n = max(1, steps // 2^(F-2))."""
    steps = tf.cast(steps, tf.int32)
    spacing = tf.maximum(1, steps // 2 ** (num_snapshots - 2))
    doublings = tf.constant([2**j for j in range(num_snapshots - 2)], tf.int32)
    middle = tf.minimum(spacing * doublings, steps)
    return tf.concat([[0], middle, [steps]], axis=0)


def compiled_step(function: Callable, input_signature: Sequence[tf.TensorSpec]) -> Callable:
    """`tf.function(function)` that TensorFlow keeps as a function call instead of inlining it.

    Every ascent loop calls its loss-and-gradient step through this. Inlined
    into a `tf.while_loop` body, the step's max-pool gradients only sometimes
    get TensorFlow's oneDNN kernel (the graph pass that swaps it in needs to
    visit the forward max-pool first, and in a loop body that depends on the
    node order): in about one process in three they ran on the Eigen kernel,
    8x slower, which made the whole loop 1.4-1.6x slower. A function that is not
    inlined is optimized as its own acyclic graph, where the swap always happens.
    """
    return tf.function(function, input_signature=input_signature, experimental_attributes={"_noinline": True})


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


def loss_and_gradient(loss_fn: Callable[[tf.Tensor], tf.Tensor], images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-image loss [B] = loss_fn(images) and its gradient with respect to each image [B, H, W, C]."""
    with tf.GradientTape() as tape:
        tape.watch(images)
        loss = loss_fn(images)
        # Images are independent, so the gradient of the sum is every image's own gradient.
        total = tf.reduce_sum(loss)
    return loss, tape.gradient(total, images)


def ascent_update(images: tf.Tensor, gradient: tf.Tensor, epsilon: tf.Tensor | float) -> tf.Tensor:
    """One normalized ascent step: standardize(x + epsilon * g / (rms(g) + 1e-7)), per image.

    Shared by `OIPAscent` and the precursor scan so that both follow the same formula.

    Args:
        images: float32 [B, H, W, C], the current images.
        gradient: float32 [B, H, W, C], the gradient of each image's loss.
        epsilon: Step size.

    Returns:
        float32 [B, H, W, C], the stepped images, standardized per image.
    """
    rms = tf.sqrt(tf.reduce_mean(tf.square(gradient), axis=[1, 2, 3], keepdims=True))
    return tf.image.per_image_standardization(images + epsilon * gradient / (rms + GRADIENT_EPS))


@dataclasses.dataclass
class AscentResult:
    """Results of an ascent for B pairs, as NumPy arrays.

    Attributes:
        map_index: int32 [B], the map of each pair.
        images: float32 [B, H, W, C], the final (standardized) images.
        loss: float32 [B], the objective at `images`.
        loss_history: float32 [B, steps], the loss at each step.
        steps_run: int32 [B], gradient evaluations per pair.
        status: int32 [B], 0 completed, 1 converged, 2 no_activation.
        snapshots: float32 [B, F, H, W, C], images at `snapshot_steps`.
        snapshot_steps: int32 [F] when every pair ran with the same step
            budget; int32 [B, F] (one row per pair) in results that join pairs
            run with different budgets (the auto strategy). Use
            `pair_snapshot_steps(b)` to read either form.
    """

    map_index: np.ndarray
    images: np.ndarray
    loss: np.ndarray
    loss_history: np.ndarray
    steps_run: np.ndarray
    status: np.ndarray
    snapshots: np.ndarray
    snapshot_steps: np.ndarray

    def pair_snapshot_steps(self, pair: int) -> np.ndarray:
        """int32 [F]: the steps at which the snapshots of pair `pair` were taken."""
        steps = np.asarray(self.snapshot_steps)
        return steps[pair] if steps.ndim == 2 else steps

    @property
    def status_names(self) -> list[str]:
        return [STATUS_NAMES[code] for code in self.status]

    def __len__(self) -> int:
        return len(self.map_index)


class OIPAscent(tf.Module):
    """Normalized gradient ascent on input images for the maps of one layer.

    `optimize` is a `tf.function` with a fixed input signature: any batch size
    and step count run without retracing, and every step runs inside one
    `tf.while_loop`. Call the module itself for checked NumPy results.

    Example:
        ascent = OIPAscent.from_file(None, "Conv2D_3")  # the shipped MNIST CNN
        starts = multiscale(start_seeds(0, range(8)), ascent.image_shape)
        result = ascent(starts, map_index=range(8), steps=400)
    """

    def __init__(
        self,
        model: keras.Model,
        layer_name: str,
        num_snapshots: int = DEFAULT_NUM_SNAPSHOTS,
        name: str | None = None,
        fast: bool = True,
    ):
        """Builds the ascent for `layer_name` of `model`.

        Args:
            model: A Keras model with one fixed-size NHWC image input (1 or 3 channels).
            layer_name: A layer with spatial [B, H, W, C] output, e.g. a Conv2D.
            num_snapshots: Frames recorded per pair (>= 2).
            name: Module name; defaults to `oip_ascent_<layer_name>`.
            fast: Compute each pair's map alone and the first convolution's input
                gradient as col2im where that is exact (`objective.PairMapLoss`);
                False runs the plain Keras layer output (same results up to float
                rounding, slower; for comparison).

        Raises:
            OIPGraphError: unsuitable model or layer, or num_snapshots < 2.
        """
        super().__init__(name=name or f"oip_ascent_{layer_name}")
        if num_snapshots < 2:
            raise OIPGraphError(f"num_snapshots must be >= 2, got {num_snapshots}")
        self.image_shape = check_image_model(model)
        layer = spatial_layer(model, layer_name)
        self.layer_name = layer_name
        self.num_maps = int(layer.output.shape[-1])
        self.num_snapshots = num_snapshots
        self.feature_model = keras.Model(model.inputs[0], layer.output, name=f"features_{layer_name}")
        self.pair_loss = PairMapLoss(self.feature_model, layer_name, fast=fast)
        image_spec = tf.TensorSpec(None, tf.float32, name="images")
        map_spec = tf.TensorSpec([None], tf.int32, name="map_index")
        self.optimize = tf.function(
            self._optimize,
            input_signature=[
                image_spec,
                map_spec,
                tf.TensorSpec([], tf.int32, name="steps"),
                tf.TensorSpec([], tf.float32, name="epsilon"),
                tf.TensorSpec([], tf.float32, name="conv_criterion"),
            ],
        )
        self.loss = tf.function(self._checked_loss, input_signature=[image_spec, map_spec])
        self.loss_and_gradient = compiled_step(
            self._loss_and_gradient, [tf.TensorSpec([None, *self.image_shape], tf.float32), map_spec]
        )

    @classmethod
    def from_file(cls, model_path: str | None, layer_name: str, **kwargs) -> OIPAscent:
        """Builds the ascent from a `.keras` file (None: the shipped MNIST CNN)."""
        return cls(load_model(model_path), layer_name, **kwargs)

    # -- graph pieces ---------------------------------------------------------

    def map_loss(self, images: tf.Tensor, map_index: tf.Tensor) -> tf.Tensor:
        """Mean activation of map `map_index[b]` for image b: float32 [B]."""
        return self.pair_loss(images, map_index)

    def _loss_and_gradient(self, images: tf.Tensor, map_index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-pair loss [B] and its gradient with respect to each image [B, H, W, C] (as `self.loss_and_gradient`)."""
        return loss_and_gradient(lambda x: self.map_loss(x, map_index), images)

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
            tf.debugging.assert_non_negative(map_vector, message="map_index must be >= 0; got map_index"),
            tf.debugging.assert_less(
                map_vector,
                self.num_maps,
                message=f"map_index must be < {self.num_maps} (maps of {self.layer_name}); got map_index",
            ),
            *limits.assert_pixels(images),
        ]
        with tf.control_dependencies(checks):
            return tf.ensure_shape(tf.identity(images), [None, height, width, channels]), tf.identity(map_index)

    def _checked_loss(self, images: tf.Tensor, map_index: tf.Tensor) -> tf.Tensor:
        return self.map_loss(*self.check_inputs(images, map_index))

    def _optimize(self, images, map_index, steps, epsilon, conv_criterion) -> dict[str, tf.Tensor]:
        images, map_index = self.check_inputs(images, map_index)
        batch = tf.shape(images)[0]
        steps = checked_steps(steps, epsilon, conv_criterion, batch)
        frames = snapshot_steps(steps, self.num_snapshots)
        use_convergence = conv_criterion > 0

        def record(step, x, snapshots):
            hit = tf.equal(frames, step)
            return tf.cond(
                tf.reduce_any(hit),
                lambda: tf.where(hit[:, None, None, None, None], x[None], snapshots),
                lambda: snapshots,
            )

        def body(step, x, loss_prev, zero_steps, streak, status, active, steps_run, history, snapshots):
            snapshots = record(step, x, snapshots)
            loss, grad = self.loss_and_gradient(x, map_index)
            history = history.write(step, loss)
            relative_change = (loss - loss_prev) / (loss + LOSS_EPS)
            streak = tf.where((step > CONVERGENCE_AFTER_STEP) & (relative_change < conv_criterion), streak + 1, 0)
            converged = use_convergence & (streak >= CONVERGENCE_STREAK)
            zero = tf.equal(loss, 0.0) & tf.equal(tf.reduce_mean(grad, axis=[1, 2, 3]), 0.0)
            zero_steps += tf.cast(zero, tf.int32)
            dead = zero_steps > ZERO_STEP_LIMIT
            stopping = active & (converged | dead)
            status = tf.where(stopping, tf.where(converged, STATUS_CONVERGED, STATUS_NO_ACTIVATION), status)
            steps_run = tf.where(active, step + 1, steps_run)
            active &= ~stopping
            x = tf.where(active[:, None, None, None], ascent_update(x, grad, epsilon), x)
            return step + 1, x, loss, zero_steps, streak, status, active, steps_run, history, snapshots

        zeros_int = tf.zeros([batch], tf.int32)
        loop_vars = (
            tf.constant(0),
            images,
            tf.zeros([batch]),
            zeros_int,
            zeros_int,
            zeros_int + STATUS_COMPLETED,
            tf.ones([batch], tf.bool),
            zeros_int,
            tf.TensorArray(tf.float32, size=steps, element_shape=[None]),
            tf.zeros(tf.concat([[self.num_snapshots], tf.shape(images)], axis=0)),
        )
        end_step, x, _, _, _, status, _, steps_run, history, snapshots = tf.while_loop(
            lambda step, *rest: (step < steps) & tf.reduce_any(rest[5]),
            body,
            loop_vars,
            parallel_iterations=1,
        )
        final_loss = self.map_loss(x, map_index)
        snapshots = tf.where((frames >= end_step)[:, None, None, None, None], x[None], snapshots)
        loss_history = tf.concat(
            [history.gather(tf.range(end_step)), tf.tile(final_loss[None], [steps - end_step, 1])], axis=0
        )
        return {
            "images": x,
            "loss": final_loss,
            "loss_history": tf.transpose(loss_history),
            "status": status,
            "steps_run": steps_run,
            "snapshots": tf.transpose(snapshots, [1, 0, 2, 3, 4]),
            "snapshot_steps": frames,
        }

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
        bad = [int(k) for k in map_index if not 0 <= k < self.num_maps]
        if bad:
            raise OIPGraphError(
                f"map index {bad[0]} out of range: layer {self.layer_name} has maps 0..{self.num_maps - 1}"
            )
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
    ) -> AscentResult:
        """Runs the ascent for pairs (images[b], map_index[b]).

        Args:
            images: float [B, H, W, C] start images (standardized per image).
            map_index: B map indices, or one index for every image.
            steps: Maximum number of ascent steps (> 0).
            epsilon: Step size (> 0).
            conv_criterion: Relative-change threshold of the convergence stop;
                <= 0 runs every pair for all `steps` unless it has no activation.

        Returns:
            An `AscentResult` with NumPy arrays.

        Raises:
            OIPGraphError: bad shapes, map indices, steps, epsilon or non-finite images.
        """
        images, map_index = self.checked_pairs(images, map_index, steps, epsilon, conv_criterion)
        outputs = self.optimize(
            images, map_index, tf.constant(int(steps)), tf.constant(float(epsilon)), tf.constant(float(conv_criterion))
        )
        return AscentResult(map_index=map_index, **{key: value.numpy() for key, value in outputs.items()})
