"""`pixels`: the parameter is the image itself (the articles' parameterization).

to_image(p) = p; after each step p <- domain.project(p) (per-image standardization, or clipping to
[LOW, HIGH]); steps are scaled by the domain's `step_scale`.
"""

from __future__ import annotations

import tensorflow as tf

from oipgraph.ascent.parameterizations.base import Parameterization


class Pixels(Parameterization):
    """The image's pixels, kept in the domain by its projection."""

    name = "pixels"

    @property
    def param_shape(self) -> tuple[int, int, int]:
        return self.image_shape

    @property
    def step_scale(self) -> float:
        return self.domain.step_scale

    def to_image(self, params: tf.Tensor) -> tf.Tensor:
        return params

    def from_image(self, images: tf.Tensor) -> tf.Tensor:
        return tf.convert_to_tensor(images, tf.float32)

    def project(self, params: tf.Tensor) -> tf.Tensor:
        return self.domain.project(params)
