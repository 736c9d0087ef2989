"""What a parameterization is: the per-pair tensor the ascent updates, and the image it stands for.

The ascent keeps one parameter p_b per pair, float32 [B, *param_shape]; the objective sees the image
x_b = to_image(p_b) in the input domain, and the step rule moves p_b along d loss / d p_b. Start images
enter parameter space through `from_image` (the inverse of `to_image` on images of the domain), and
every stored image, snapshot and picture is `to_image` of a parameter.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import tensorflow as tf

from oipgraph.ascent.domain import Domain


class Parameterization(abc.ABC):
    """One parameterization of the images of a domain.

    Attributes:
        name: The registry name (`--param`).
        image_shape: (H, W, C) of the images.
        domain: The images' domain.
        param_shape: The per-pair parameter's shape; rank 3 like an image, so that per-pair masks
            broadcast the same way.
        step_scale: The factor a step rule multiplies its step size by (the domain's for pixels, 1 else).
        start_noise: The noise of the `random` strategy's starts (a function of `oipgraph.starts`):
            the articles' `multiscale` fluctuations, or `fourier` (1/f) noise, whose spectrum matches a
            1/f parameterization (BENCHMARKS.md, "Natural-image models": fewer high frequencies at the end).
    """

    name: str = ""
    start_noise: str = "multiscale"

    def __init__(self, image_shape: Sequence[int], domain: Domain):
        self.image_shape = tuple(int(size) for size in image_shape)
        self.domain = domain

    @property
    @abc.abstractmethod
    def param_shape(self) -> tuple[int, int, int]:
        """The per-pair parameter's shape."""

    @property
    def step_scale(self) -> float:
        return 1.0

    @abc.abstractmethod
    def to_image(self, params: tf.Tensor) -> tf.Tensor:
        """float32 [B, H, W, C] images in the domain of float32 [B, *param_shape] parameters."""

    @abc.abstractmethod
    def from_image(self, images: tf.Tensor) -> tf.Tensor:
        """float32 [B, *param_shape] parameters whose `to_image` is `images` (float32 [B, H, W, C], in the domain)."""

    def project(self, params: tf.Tensor) -> tf.Tensor:
        """The parameters after a step, moved back where they are valid (default: unchanged)."""
        return params

    def describe(self) -> dict[str, object]:
        """What ran, for the catalog and the run record."""
        return {"param": self.name}
