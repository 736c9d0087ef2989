"""Wake-up starts for maps that never fire: ascend the map's pre-activation until it does.

A map of a ReLU layer is a = relu(z), z = conv(layer input) + bias. Where a
start image leaves the whole map at zero, the ascent's loss (mean of a) has a
zero gradient and the pair stops with `no_activation`; random, coarse-to-fine
and precursor starts only help if one of them already makes the map fire. The
pre-activation z keeps its gradient where a is zero, so `PreActivationWakeUp`
ascends the peak of z (its maximum over positions: the place closest to
firing) with the ascent's own step (normalized gradient, then per-image
standardization). A pair stops at the first image on which the map fires
(loss > 0), and the full ascent of `OIPAscent` takes over from there.

On the shipped CNN this wakes all 7 Conv2D_3 maps that no random,
coarse-to-fine or 3x3/4x4 precursor start excites (3, 5, 18, 26, 63, 78, 122),
from 16 of 16 random starts each, within 60 steps; the full ascent then ends
with losses of 0.3 to 0.5, like the other maps' OIPs.

It needs a plain `Conv2D` target layer with an element-wise activation (the
ones `oipgraph.objective.can_slice_channels` accepts): that is where z is the
layer's own intermediate result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from oipgraph.ascent import DEFAULT_EPSILON, OIPAscent, ascent_update, checked_steps, compiled_step
from oipgraph.errors import OIPGraphError
from oipgraph.objective import can_slice_channels, conv_pre_activation, layer_input_model

DEFAULT_WAKE_STEPS = 200


@dataclasses.dataclass
class WakeUpResult:
    """Wake-up results for B pairs, as NumPy arrays.

    Attributes:
        map_index: int32 [B], the map of each pair.
        images: float32 [B, H, W, C], the woken images (the start where it fired already).
        fired: bool [B], whether the map fires on `images` (loss > 0).
        steps_run: int32 [B], wake-up steps taken (0 for a start that fired already).
        peak: float32 [B], the maximum pre-activation of the map on `images`.
    """

    map_index: np.ndarray
    images: np.ndarray
    fired: np.ndarray
    steps_run: np.ndarray
    peak: np.ndarray


def can_wake(ascent: OIPAscent) -> bool:
    """Whether the target layer of `ascent` has a pre-activation to ascend."""
    return can_slice_channels(ascent.feature_model.get_layer(ascent.layer_name))


class PreActivationWakeUp(tf.Module):
    """Moves start images until the map of each pair fires, by ascending the map's pre-activation.

    Example:
        ascent = OIPAscent.from_file(None, "Conv2D_3")
        starts = multiscale(start_seeds(0, range(4)), ascent.image_shape)
        woken = PreActivationWakeUp(ascent)(starts, map_index=[3, 5, 18, 26])
        result = ascent(woken.images, [3, 5, 18, 26], steps=600)
    """

    def __init__(self, ascent: OIPAscent, name: str | None = None):
        """Builds the wake-up for the target layer of `ascent`.

        Raises:
            OIPGraphError: the layer is not a plain Conv2D with an element-wise activation.
        """
        super().__init__(name=name or f"wake_up_{ascent.layer_name}")
        if not can_wake(ascent):
            raise OIPGraphError(
                f"layer {ascent.layer_name} has no pre-activation to ascend: the wake-up needs a plain Conv2D"
                " with an element-wise activation"
            )
        self.ascent = ascent
        self.layer = ascent.feature_model.get_layer(ascent.layer_name)
        self.layer_input_model = layer_input_model(ascent.feature_model, ascent.layer_name)
        map_spec = tf.TensorSpec([None], tf.int32, name="map_index")
        self.peak_loss_and_gradient = compiled_step(
            self._peak_loss_and_gradient, [tf.TensorSpec([None, *ascent.image_shape], tf.float32), map_spec]
        )
        self.wake = tf.function(
            self._wake,
            input_signature=[
                tf.TensorSpec(None, tf.float32, name="images"),
                map_spec,
                tf.TensorSpec([], tf.int32, name="steps"),
                tf.TensorSpec([], tf.float32, name="epsilon"),
            ],
        )

    def pre_activation(self, images: tf.Tensor, map_index: tf.Tensor) -> tf.Tensor:
        """float32 [B, H', W']: the pre-activation z of map `map_index[b]` for image b."""
        outputs = conv_pre_activation(self.layer, self.layer_input_model(images, training=False))
        return tf.gather(outputs, map_index, axis=3, batch_dims=1)

    def _peak_loss_and_gradient(
        self, images: tf.Tensor, map_index: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Per pair: the peak of z [B], the map's loss [B] (mean activation), d peak / d image [B, H, W, C]."""
        with tf.GradientTape() as tape:
            tape.watch(images)
            pre_activation = self.pre_activation(images, map_index)
            peak = tf.reduce_max(pre_activation, axis=[1, 2])
            total = tf.reduce_sum(peak)
        loss = tf.reduce_mean(self.layer.activation(pre_activation), axis=[1, 2])
        return peak, loss, tape.gradient(total, images)

    def _wake(
        self, images: tf.Tensor, map_index: tf.Tensor, steps: tf.Tensor, epsilon: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        images, map_index = self.ascent.check_inputs(images, map_index)
        steps = checked_steps(steps, epsilon)

        def body(step, x, fired, steps_run):
            _, loss, gradient = self.peak_loss_and_gradient(x, map_index)
            fired = loss > 0
            steps_run = tf.where(fired, steps_run, step + 1)
            x = tf.where(fired[:, None, None, None], x, ascent_update(x, gradient, epsilon))
            return step + 1, x, fired, steps_run

        batch = tf.shape(images)[0]
        _, x, _, steps_run = tf.while_loop(
            lambda step, x, fired, steps_run: (step < steps) & ~tf.reduce_all(fired),
            body,
            (tf.constant(0), images, tf.zeros([batch], tf.bool), tf.zeros([batch], tf.int32)),
            parallel_iterations=1,
        )
        peak, loss, _ = self.peak_loss_and_gradient(x, map_index)
        return {"images": x, "fired": loss > 0, "steps_run": steps_run, "peak": peak}

    def __call__(
        self,
        images: np.ndarray | tf.Tensor,
        map_index: Sequence[int] | np.ndarray | int,
        steps: int = DEFAULT_WAKE_STEPS,
        epsilon: float = DEFAULT_EPSILON,
    ) -> WakeUpResult:
        """Wakes the maps of pairs (images[b], map_index[b]).

        Args:
            images: float [B, H, W, C] start images (standardized per image).
            map_index: B map indices, or one index for every image.
            steps: Most wake-up steps per pair (> 0); a pair stops as soon as its map fires.
            epsilon: Step size (> 0).

        Returns:
            A `WakeUpResult`; `fired` is False where `steps` steps were not enough.

        Raises:
            OIPGraphError: bad shapes, map indices, steps, epsilon or non-finite images.
        """
        images, map_index = self.ascent.checked_pairs(images, map_index, steps, epsilon, conv_criterion=0.0)
        outputs = self.wake(images, map_index, tf.constant(int(steps)), tf.constant(float(epsilon)))
        return WakeUpResult(map_index=map_index, **{key: value.numpy() for key, value in outputs.items()})
