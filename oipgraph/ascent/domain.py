"""Input domains: which images the model takes, and how the ascent keeps its images there.

- `Standardized` (the articles' and the shipped CNN's): every image has zero
  mean and unit variance (`tf.image.per_image_standardization`); after each
  step the image is standardized again.
- `ValueRange(low, high)`: pixel values in [low, high], e.g. [0, 1] or [0, 255]
  for a model that starts with its own `Rescaling`; after each step the image
  is clipped to the range.

`infer_domain` reads the domain off a model that states it: a leading
`Rescaling(scale, offset)` layer (also inside a nested model that reads the
image first) maps [0, 1/scale] to [0, 1] when offset >= 0 and [0, -2*offset/scale]
to [offset, -offset] (e.g. [-1, 1]) otherwise; a leading `Normalization` layer
alone (mean m, variance v per channel) is read as [min(m - 2 sqrt(v)),
max(m + 2 sqrt(v))], an estimate. Models that state nothing (the shipped MNIST
CNN, most `keras.applications` bases without their `preprocess_input`) get
standardized images, and the command line says so.

A domain also sets the size of a step: the ascent moves an image by
`epsilon * step_scale` in root-mean-square per pixel, where `step_scale` is 1
for standardized images (their standard deviation) and (high - low) / 4 for a
range, so that one epsilon means a similar relative change in both.

A domain also says how its images are shown (PNGs, TensorBoard): `display`
maps them to [0, 1]. Standardized images have no absolute brightness, so each
image's own [min, max] is stretched to [0, 1]; range images are real pixel
values, shown linearly, (x - low) / (high - low), so that a grey image looks
grey and colours are the colours the model sees.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from oipgraph.core.errors import OIPGraphError

# Start images in a range: mid-grey plus the standardized start times this share of the span, clipped.
RANGE_START_CONTRAST = 0.125


@dataclasses.dataclass(frozen=True)
class Standardized:
    """Per-image standardized images (zero mean, unit variance)."""

    name = "standardized"
    step_scale = 1.0
    middle = 0.0  # The grey of this domain (what `Transforms.pad` shows).

    def project(self, images: tf.Tensor) -> tf.Tensor:
        """float32 [B, H, W, C]: `images` standardized per image."""
        return tf.image.per_image_standardization(images)

    def from_standardized(self, images: tf.Tensor) -> tf.Tensor:
        """Start images of this domain made from standardized ones: unchanged."""
        return tf.convert_to_tensor(images, tf.float32)

    def display(self, images: np.ndarray) -> np.ndarray:
        """float32 [N, H, W, C] in [0, 1]: every image's own [min, max] stretched to [0, 1] (flat images 0.5).

        Args:
            images: float [N, H, W, C], standardized images.
        """
        images = np.asarray(images, np.float32)
        low = images.min(axis=(1, 2, 3), keepdims=True)
        span = images.max(axis=(1, 2, 3), keepdims=True) - low
        return np.where(span > 0, (images - low) / np.where(span > 0, span, 1.0), 0.5).astype(np.float32)

    def describe(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True)
class ValueRange:
    """Pixel values in [low, high].

    Attributes:
        low: The smallest pixel value.
        high: The largest pixel value (> low).
    """

    low: float
    high: float

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise OIPGraphError(f"input range must be two finite numbers LOW < HIGH, got {self.low}, {self.high}")

    @property
    def name(self) -> str:
        return f"{self.low:g},{self.high:g}"

    @property
    def step_scale(self) -> float:
        return (self.high - self.low) / 4

    @property
    def middle(self) -> float:
        """The grey of this domain (what `Transforms.pad` shows)."""
        return (self.low + self.high) / 2

    def project(self, images: tf.Tensor) -> tf.Tensor:
        """float32 [B, H, W, C]: `images` clipped to [low, high]."""
        return tf.clip_by_value(images, self.low, self.high)

    def from_standardized(self, images: tf.Tensor) -> tf.Tensor:
        """Start images in the range: mid + RANGE_START_CONTRAST * (high - low) * z, clipped (z standardized)."""
        middle, span = (self.low + self.high) / 2, self.high - self.low
        return self.project(middle + RANGE_START_CONTRAST * span * tf.convert_to_tensor(images, tf.float32))

    def display(self, images: np.ndarray) -> np.ndarray:
        """float32 [N, H, W, C] in [0, 1]: (images - low) / (high - low), clipped; no per-image stretch.

        Args:
            images: float [N, H, W, C], pixel values of the range.
        """
        shown = (np.asarray(images, np.float32) - self.low) / (self.high - self.low)
        return np.clip(shown, 0.0, 1.0).astype(np.float32)

    def describe(self) -> str:
        return self.name


Domain = Standardized | ValueRange
STANDARDIZED = Standardized()
# The images of a model behind `models.preprocessing` (`--preprocess`): RGB in [0, 255].
PREPROCESSED_RANGE = ValueRange(0.0, 255.0)


def parse_domain(text: str) -> Domain:
    """`standardized` or `LOW,HIGH` (e.g. `0,255`) as a domain.

    Raises:
        OIPGraphError: anything else, or LOW >= HIGH.
    """
    if text.strip() == "standardized":
        return STANDARDIZED
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise OIPGraphError(f"input range must be 'standardized' or LOW,HIGH like 0,255; got {text!r}") from None
    return ValueRange(low, high)


def leading_layer(model: keras.Model) -> keras.layers.Layer | None:
    """The first layer that reads the model's image input, looking inside nested models; None if none."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            return leading_layer(layer) or layer
        return layer
    return None


def infer_domain(model: keras.Model) -> tuple[Domain, str]:
    """The input domain a model states with a leading Rescaling or Normalization layer.

    Returns:
        (domain, reason): the domain, and one line saying where it comes from;
        standardized images where the model states nothing.
    """
    layer = leading_layer(model)
    if isinstance(layer, keras.layers.Rescaling):
        scale, offset = float(np.mean(layer.scale)), float(np.mean(layer.offset))
        if scale > 0:
            high = 1 / scale if offset >= 0 else -2 * offset / scale
            domain = ValueRange(0.0, round(high, 6))
            return domain, f"input range {domain.name}, inferred from the leading Rescaling layer {layer.name!r}"
    if isinstance(layer, keras.layers.Normalization) and layer.built:
        mean, spread = np.asarray(layer.mean), 2 * np.sqrt(np.asarray(layer.variance))
        if np.all(np.isfinite(mean)) and np.all(spread > 0):
            domain = ValueRange(round(float(np.min(mean - spread)), 4), round(float(np.max(mean + spread)), 4))
            return domain, (
                f"input range {domain.name}, estimated as mean +- 2 std of the leading Normalization layer"
                f" {layer.name!r}"
            )
    return STANDARDIZED, (
        "input range: standardized images (the model states no range; pass --input_range=LOW,HIGH for a model"
        " that takes raw pixel values such as 0,1 or 0,255)"
    )


def pixels_to_domain(domain: Domain, from_uint8: bool):
    """The function that turns a dataset's stored pixel values into images of `domain`.

    Args:
        domain: The model's input domain.
        from_uint8: Whether the values were stored as uint8 (0..255).

    Returns:
        float32 [B, H, W, C] -> float32 [B, H, W, C]: per-image standardization for
        standardized images; for a range, 0..255 mapped linearly onto [low, high]
        where the data was uint8, else the values clipped to the range.
    """
    if not isinstance(domain, ValueRange):
        return domain.project
    if from_uint8:
        return lambda images: domain.low + (domain.high - domain.low) / 255 * images
    return domain.project
