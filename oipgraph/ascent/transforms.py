"""Transformation robustness (lucid's standard set: pad, jitter, scale, rotate, jitter), applied to what the model sees.

At every ascent step each pair's image goes through, in lucid's order: a shift by (dy, dx), integers
drawn uniformly from [-jitter, jitter]; a scale about its centre by a factor drawn uniformly from
[1 - scale, 1 + scale]; a rotation about its centre by an angle drawn uniformly from
[-rotate, rotate] degrees; and a second shift by integers from [-jitter_after, jitter_after]. The four
are one affine map, applied once (`tf.raw_ops.ImageProjectiveTransformV3`, bilinear); the image the
model sees keeps the model's size. Pixels that come from outside the image are reflected in, or, with
`pad` > 0, are the domain's middle grey (lucid pads its images with grey before it jitters them; here the
canvas stays the model's size, so padding decides what is shown where the shifted image does not
reach). The gradient flows back through the transform to the stored image, which itself is never
transformed.

The draws are stateless: pair b at step j uses the seed
`stateless_fold_in(seeds[b], j)`, so a pair's transforms depend only on its own
seed and step, never on its batch, and the same seeds give the same run.
Off by default (the articles use none); all zero is the identity. `parse_transforms` reads the
`--transforms` text: `none`, `standard` (lucid's set scaled to the image: pad 12, shifts of up to 4,
scale 0.1, rotate 10 degrees, shifts of up to 2 per 128 pixels of the image's longer side; lucid's jitter(8)
and jitter(4) crop 8 and 4 pixels) or `name=value,...`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import tensorflow as tf

from oipgraph.core.errors import OIPGraphError

# Bounds that keep a transform meaningful: a shift of more than this many pixels, or a
# scale factor outside (0, 2), would show the model mostly reflected border.
MAX_JITTER = 1024
MAX_SCALE = 0.9
MAX_ROTATE = 45.0
# lucid's standard set, in pixels per STANDARD_SIDE pixels of the image's longer side (rotate: degrees).
# lucid's jitter(d) crops d pixels at a random offset, a shift of up to d/2 either way: its jitter(8) and
# jitter(4) are shifts of 4 and 2 here.
STANDARD_SIDE = 128
STANDARD = {"pad": 12, "jitter": 4, "scale": 0.1, "rotate": 10.0, "jitter_after": 2}


@dataclasses.dataclass(frozen=True)
class Transforms:
    """Random pad, jitter, scale, rotation and second jitter per pair and step.

    Attributes:
        jitter: Largest first shift in pixels (>= 0, at most `MAX_JITTER`).
        scale: Largest relative change of size (0 <= scale <= `MAX_SCALE`).
        rotate: Largest rotation in degrees (0 <= rotate <= `MAX_ROTATE`).
        jitter_after: Largest second shift in pixels (>= 0, at most `MAX_JITTER`).
        pad: > 0 fills what the shifted image does not cover with the domain's middle grey instead of
            reflecting it (at most `MAX_JITTER`).
    """

    jitter: int = 0
    scale: float = 0.0
    rotate: float = 0.0
    jitter_after: int = 0
    pad: int = 0

    def __post_init__(self):
        for name in ("jitter", "jitter_after", "pad"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_JITTER:
                raise OIPGraphError(f"{name} must be an integer number of pixels in [0, {MAX_JITTER}], got {value!r}")
        for name, bound, unit in (("scale", MAX_SCALE, "a fraction"), ("rotate", MAX_ROTATE, "degrees")):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= bound):
                raise OIPGraphError(f"{name} must be {unit} in [0, {bound:g}], got {value!r}")

    @property
    def active(self) -> bool:
        """Whether the transforms change anything."""
        return self.jitter > 0 or self.scale > 0 or self.rotate > 0 or self.jitter_after > 0

    def describe(self) -> dict[str, float]:
        return {
            "jitter": self.jitter,
            "scale": self.scale,
            "rotate": self.rotate,
            "jitter_after": self.jitter_after,
            "pad": self.pad,
        }

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

    def later_draws(self, seeds: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Per pair: rotation angle in radians [B] and second shift dy2 [B], dx2 [B] (float32) for step `step`."""

        def draw(seed: tf.Tensor) -> tf.Tensor:
            seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(step, tf.int64))
            angle = tf.random.stateless_uniform([1], tf.random.experimental.stateless_fold_in(seed, 2))
            shifts = tf.random.stateless_uniform(
                [2],
                tf.random.experimental.stateless_fold_in(seed, 3),
                minval=-self.jitter_after,
                maxval=self.jitter_after + 1,
                dtype=tf.int32,
            )
            radians = math.radians(self.rotate) * (2.0 * angle - 1.0)
            return tf.concat([radians, tf.cast(shifts, tf.float32)], axis=0)

        values = tf.map_fn(draw, seeds, fn_output_signature=tf.TensorSpec([3], tf.float32))
        return values[:, 0], values[:, 1], values[:, 2]

    def __call__(self, images: tf.Tensor, seeds: tf.Tensor, step: tf.Tensor, fill_value: float = 0.0) -> tf.Tensor:
        """The transformed images float32 [B, H, W, C] of `images` float32 [B, H, W, C].

        `fill_value` is what `pad` shows outside the image (the domain's middle grey).
        """
        if not self.active:
            return images
        dy, dx, factor = self.draws(seeds, step)
        height, width = tf.unstack(tf.cast(tf.shape(images)[1:3], tf.float32))
        center_y, center_x = (height - 1) / 2, (width - 1) / 2
        inverse = 1.0 / factor
        zeros = tf.zeros_like(inverse)
        if self.rotate == 0 and self.jitter_after == 0:
            # Output pixel (y, x) reads input ((y - cy) / s + cy - dy, (x - cx) / s + cx - dx).
            rows = [inverse, zeros, center_x * (1.0 - inverse) - dx, zeros, inverse, center_y * (1.0 - inverse) - dy]
        else:
            # Seen q = c + R s (p + d - c) + d2, so p = c - d + R^-1 (q - c - d2) / s.
            angle, dy2, dx2 = self.later_draws(seeds, step)
            cos, sin = tf.cos(angle) * inverse, tf.sin(angle) * inverse
            origin_x, origin_y = center_x + dx2, center_y + dy2
            rows = [
                cos,
                sin,
                center_x - dx - (cos * origin_x + sin * origin_y),
                -sin,
                cos,
                center_y - dy - (-sin * origin_x + cos * origin_y),
            ]
        matrices = tf.stack([*rows, zeros, zeros], axis=1)
        seen = tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=matrices,
            output_shape=tf.shape(images)[1:3],
            fill_value=float(fill_value) if self.pad else 0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT" if self.pad else "REFLECT",
        )
        return tf.ensure_shape(seen, images.shape)  # The output has the input's size: keep it known to the layers.


def standard_transforms(image_shape: Sequence[int]) -> Transforms:
    """lucid's standard set scaled to images of `image_shape` (H, W, C): `STANDARD` per 128 pixels."""
    ratio = max(int(image_shape[0]), int(image_shape[1])) / STANDARD_SIDE
    return Transforms(
        jitter=max(1, round(STANDARD["jitter"] * ratio)),
        scale=STANDARD["scale"],
        rotate=STANDARD["rotate"],
        jitter_after=max(1, round(STANDARD["jitter_after"] * ratio)),
        pad=max(1, round(STANDARD["pad"] * ratio)),
    )


def parse_transforms(text: str, image_shape: Sequence[int]) -> Transforms:
    """Transforms of a `--transforms` text: `none`, `standard`, or `name=value,...` of `Transforms`' fields.

    Raises:
        OIPGraphError: an unknown name, a malformed or out-of-bounds value (one line naming it).
    """
    text = text.strip()
    if text == "none":
        return Transforms()
    if text == "standard":
        return standard_transforms(image_shape)
    fields = {field.name: field.type for field in dataclasses.fields(Transforms)}
    values: dict[str, float | int] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in fields or not value.strip():
            raise OIPGraphError(
                f"--transforms={text!r}: expected none, standard or name=value pairs of {', '.join(fields)}"
            )
        try:
            values[name] = int(value) if name in ("jitter", "jitter_after", "pad") else float(value)
        except ValueError:
            raise OIPGraphError(f"--transforms={text!r}: {name}={value.strip()!r} is not a number") from None
    return Transforms(**values)
