"""Input domains: which images the model takes, and how the ascent keeps its images there.

- `Standardized` (the articles' and the shipped CNN's): every image has zero
  mean and unit variance (`tf.image.per_image_standardization`); after each
  step the image is standardized again.
- `ValueRange(low, high)`: pixel values in [low, high], e.g. [0, 1] or [0, 255]
  for a model that starts with its own `Rescaling`; after each step the image
  is clipped to the range.

A domain also sets the size of a step: the ascent moves an image by
`epsilon * step_scale` in root-mean-square per pixel, where `step_scale` is 1
for standardized images (their standard deviation) and (high - low) / 4 for a
range, so that one epsilon means a similar relative change in both.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from oipgraph.errors import OIPGraphError

# Start images in a range: mid-grey plus the standardized start times this share of the span, clipped.
RANGE_START_CONTRAST = 0.125


@dataclasses.dataclass(frozen=True)
class Standardized:
    """Per-image standardized images (zero mean, unit variance)."""

    name = "standardized"
    step_scale = 1.0

    def project(self, images: tf.Tensor) -> tf.Tensor:
        """float32 [B, H, W, C]: `images` standardized per image."""
        return tf.image.per_image_standardization(images)

    def from_standardized(self, images: tf.Tensor) -> tf.Tensor:
        """Start images of this domain made from standardized ones: unchanged."""
        return tf.convert_to_tensor(images, tf.float32)

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

    def project(self, images: tf.Tensor) -> tf.Tensor:
        """float32 [B, H, W, C]: `images` clipped to [low, high]."""
        return tf.clip_by_value(images, self.low, self.high)

    def from_standardized(self, images: tf.Tensor) -> tf.Tensor:
        """Start images in the range: mid + RANGE_START_CONTRAST * (high - low) * z, clipped (z standardized)."""
        middle, span = (self.low + self.high) / 2, self.high - self.low
        return self.project(middle + RANGE_START_CONTRAST * span * tf.convert_to_tensor(images, tf.float32))

    def describe(self) -> str:
        return self.name


Domain = Standardized | ValueRange
STANDARDIZED = Standardized()


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
