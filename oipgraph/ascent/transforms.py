"""Transformation robustness (lucid's jitter and scale), applied to what the model sees.

At every ascent step each pair's image is shifted by (dy, dx), integers drawn
uniformly from [-jitter, jitter], and scaled about its centre by a factor drawn
uniformly from [1 - scale, 1 + scale], before the objective reads it; the
gradient flows back through the transform to the stored image, which itself is
never transformed. Pixels that come from outside the image are reflected in
(`tf.raw_ops.ImageProjectiveTransformV3`, bilinear, fill mode REFLECT).

The draws are stateless: pair b at step j uses the seed
`stateless_fold_in(seeds[b], j)`, so a pair's transforms depend only on its own
seed and step, never on its batch, and the same seeds give the same run.
Off by default (the articles use none); jitter 0 and scale 0 is the identity.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from oipgraph.core.errors import OIPGraphError

# Bounds that keep a transform meaningful: a shift of more than this many pixels, or a
# scale factor outside (0, 2), would show the model mostly reflected border.
MAX_JITTER = 1024
MAX_SCALE = 0.9


@dataclasses.dataclass(frozen=True)
class Transforms:
    """Random jitter and scale per pair and step.

    Attributes:
        jitter: Largest shift in pixels (>= 0, at most `MAX_JITTER`).
        scale: Largest relative change of size (0 <= scale <= `MAX_SCALE`).
    """

    jitter: int = 0
    scale: float = 0.0

    def __post_init__(self):
        if isinstance(self.jitter, bool) or not isinstance(self.jitter, int) or not 0 <= self.jitter <= MAX_JITTER:
            raise OIPGraphError(f"jitter must be an integer number of pixels in [0, {MAX_JITTER}], got {self.jitter!r}")
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and 0 <= self.scale <= MAX_SCALE):
            raise OIPGraphError(f"scale must be a fraction in [0, {MAX_SCALE}], got {self.scale!r}")

    @property
    def active(self) -> bool:
        """Whether the transforms change anything."""
        return self.jitter > 0 or self.scale > 0

    def describe(self) -> dict[str, float]:
        return {"jitter": self.jitter, "scale": self.scale}

    def draws(self, seeds: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Per pair: shift dy [B], dx [B] (float32 integers) and scale factor [B] for step `step`.

        Args:
            seeds: int64 [B, 2], one stateless seed per pair.
            step: int32 scalar, the ascent step.
        """

        def draw(seed: tf.Tensor) -> tf.Tensor:
            seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(step, tf.int64))
            shifts = tf.random.stateless_uniform([2], seed, minval=-self.jitter, maxval=self.jitter + 1, dtype=tf.int32)
            factor = tf.random.stateless_uniform([1], tf.random.experimental.stateless_fold_in(seed, 1))
            return tf.concat([tf.cast(shifts, tf.float32), 1.0 + self.scale * (2.0 * factor - 1.0)], axis=0)

        values = tf.map_fn(draw, seeds, fn_output_signature=tf.TensorSpec([3], tf.float32))
        return values[:, 0], values[:, 1], values[:, 2]

    def __call__(self, images: tf.Tensor, seeds: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        """The transformed images float32 [B, H, W, C] of `images` float32 [B, H, W, C]."""
        if not self.active:
            return images
        dy, dx, factor = self.draws(seeds, step)
        height, width = tf.unstack(tf.cast(tf.shape(images)[1:3], tf.float32))
        center_y, center_x = (height - 1) / 2, (width - 1) / 2
        # Output pixel (y, x) reads input ((y - cy) / s + cy - dy, (x - cx) / s + cx - dx).
        inverse = 1.0 / factor
        zeros = tf.zeros_like(inverse)
        matrices = tf.stack(
            [
                inverse,
                zeros,
                center_x * (1.0 - inverse) - dx,
                zeros,
                inverse,
                center_y * (1.0 - inverse) - dy,
                zeros,
                zeros,
            ],
            axis=1,
        )
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=matrices,
            output_shape=tf.shape(images)[1:3],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="REFLECT",
        )
