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
ones `oipgraph.models.fastconv.can_slice_channels` accepts): that is where z is the
layer's own intermediate result. The loop uses the ascent's own step
(`step.AscentStep`) with the objective `objectives.PreActivationPeak`, the peak
of z (for a neuron objective: z at the neuron), and the ascent's transforms and
domain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from oipgraph.ascent import DEFAULT_EPSILON, OIPAscent
from oipgraph.ascent.loop import checked_steps
from oipgraph.ascent.step import AscentStep
from oipgraph.core.errors import OIPGraphError
from oipgraph.models.layer_lookup import module_name
from oipgraph.objectives import PreActivationPeak, SpatialObjective

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
    """Whether the objective of `ascent` maximizes a map (or neuron) of a layer with a pre-activation to ascend."""
    return isinstance(ascent.objective, SpatialObjective) and ascent.objective.shared_sliced


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
            OIPGraphError: the objective is not a map or neuron of a plain Conv2D
                with an element-wise activation.
        """
        super().__init__(name=name or f"wake_up_{module_name(ascent.layer_name)}")
        if not can_wake(ascent):
            raise OIPGraphError(
                f"layer {ascent.layer_name} has no pre-activation to ascend: the wake-up needs a plain Conv2D"
                " with an element-wise activation"
            )
        self.ascent = ascent
        self.peak = PreActivationPeak(ascent.step_objective)
        self.ascent_step = AscentStep(self.peak, ascent.image_shape, ascent.transforms, ascent.domain)
        self.wake = tf.function(
            self._wake,
            autograph=False,
            input_signature=[
                tf.TensorSpec(None, tf.float32, name="images"),
                tf.TensorSpec([None], tf.int32, name="map_index"),
                tf.TensorSpec([], tf.int32, name="steps"),
                tf.TensorSpec([], tf.float32, name="epsilon"),
                tf.TensorSpec([None, 2], tf.int64, name="seeds"),
            ],
        )

    def _wake(self, images, map_index, steps, epsilon, seeds) -> dict[str, tf.Tensor]:
        images, map_index = self.ascent.check_inputs(images, map_index)
        steps = checked_steps(steps, epsilon)

        def body(step, x, fired, steps_run):
            peak, gradient = self.ascent_step.loss_and_gradient(x, map_index, seeds, step)
            fired = self.peak.fires(peak)
            steps_run = tf.where(fired, steps_run, step + 1)
            x = tf.where(fired[:, None, None, None], x, self.ascent_step.update(x, gradient, epsilon))
            return step + 1, x, fired, steps_run

        batch = tf.shape(images)[0]
        _, x, _, steps_run = tf.while_loop(
            lambda step, x, fired, steps_run: (step < steps) & ~tf.reduce_all(fired),
            body,
            (tf.constant(0), images, tf.zeros([batch], tf.bool), tf.zeros([batch], tf.int32)),
            parallel_iterations=1,
        )
        peak = self.peak(x, map_index)
        return {"images": x, "fired": self.peak.fires(peak), "steps_run": steps_run, "peak": peak}

    def __call__(
        self,
        images: np.ndarray | tf.Tensor,
        map_index: Sequence[int] | np.ndarray | int,
        steps: int = DEFAULT_WAKE_STEPS,
        epsilon: float = DEFAULT_EPSILON,
        seeds: np.ndarray | None = None,
    ) -> WakeUpResult:
        """Wakes the maps of pairs (images[b], map_index[b]).

        Args:
            images: float [B, H, W, C] start images (standardized per image).
            map_index: B map indices, or one index for every image.
            steps: Most wake-up steps per pair (> 0); a pair stops as soon as its map fires.
            epsilon: Step size (> 0).
            seeds: int64 [B, 2] stateless seeds of the transforms; None for zeros.

        Returns:
            A `WakeUpResult`; `fired` is False where `steps` steps were not enough.

        Raises:
            OIPGraphError: bad shapes, map indices, steps, epsilon or non-finite images.
        """
        images, map_index = self.ascent.checked_pairs(images, map_index, steps, epsilon, conv_criterion=0.0)
        seeds = np.zeros([len(map_index), 2], np.int64) if seeds is None else np.asarray(seeds, np.int64)
        outputs = self.wake(images, map_index, tf.constant(int(steps)), tf.constant(float(epsilon)), seeds)
        return WakeUpResult(map_index=map_index, **{key: value.numpy() for key, value in outputs.items()})
