"""`fourier`: the image is a function of a per-pair spectrum (lucid's `fft_image` and `to_valid_rgb`).

Per pair the parameter p is float32 [H, W//2+1, 2C]: the real (first C channels) and imaginary parts
of a spectrum s[y, x, c]. With f[y, x] = sqrt(fy^2 + fx^2) the frequency of bin (y, x) in cycles per
pixel (`np.fft.fftfreq`) and

    scale[y, x] = sqrt(H W) / max(f[y, x], 1 / max(H, W)) ** decay        (decay: `default_decay`)

the image is

    t = irfft2(scale * s) / 4                          float32 [H, W, C]
    t <- t @ M^T                                       (3 channels: colour decorrelation, `color.py`)
    x = LOW + (HIGH - LOW) * sigmoid(t)                (a value range)
    x = per_image_standardization(t)                   (standardized images)

The 1/f scale makes an equal step in every parameter an image step with natural images' 1/f spectrum,
so the ascent builds structure from coarse to fine instead of pixel noise; the sigmoid keeps every
image inside its range without clipping (no gradient is lost at the bounds). `from_image` inverts the
squash (logit of the pixel values, clipped to [1e-3, 1 - 1e-3] of the range), the colour transform and
the FFT, so start images of any strategy enter parameter space exactly (up to the clip and float rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from oipgraph.ascent.domain import Domain, ValueRange
from oipgraph.ascent.parameterizations import color
from oipgraph.ascent.parameterizations.base import Parameterization

# lucid divides the inverse FFT by 4 so that its default spectrum sd gives images of a small contrast.
IMAGE_DIVISOR = 4.0
# Pixel values this close to a range's bounds are moved inside before the logit (the sigmoid never reaches them).
SQUASH_MARGIN = 1e-3
# The 1/f exponent, measured (BENCHMARKS.md, "Natural-image models"): lucid's 1 keeps VGG16's OIPs at 128 px
# smooth (1.5 there gives flat, saturated blobs), while at 32 px (CIFAR-10) 1 leaves a high-frequency share of
# 0.26-0.44 and 1.5 gives 0.08-0.15. Between the two sizes the exponent moves linearly in log2(size).
DECAY_AT_128 = 1.0
DECAY_AT_32 = 1.5


def default_decay(side: int) -> float:
    """The decay for images whose longer side has `side` pixels: 1.0 from 128 up, 1.5 up to 32, log-linear between."""
    share = np.clip((7.0 - np.log2(max(side, 1))) / 2.0, 0.0, 1.0)
    return float(DECAY_AT_128 + share * (DECAY_AT_32 - DECAY_AT_128))


def frequency_scale(height: int, width: int, decay: float) -> np.ndarray:
    """float32 [H, W//2+1]: sqrt(H W) / max(f, 1 / max(H, W)) ** decay, f the bins' frequencies."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    frequencies = np.sqrt(fy * fy + fx * fx)
    return (np.sqrt(height * width) / np.maximum(frequencies, 1.0 / max(height, width)) ** decay).astype(np.float32)


class Fourier(Parameterization):
    """A 1/f-scaled spectrum per pair, colour-decorrelated (3 channels) and squashed into the domain.

    Attributes:
        decorrelate: Whether 3-channel images go through the colour decorrelation.
        decay: The exponent of the 1/f scale (None: `default_decay` of the image's size).
    """

    name = "fourier"
    start_noise = "fourier"

    def __init__(
        self,
        image_shape: Sequence[int],
        domain: Domain,
        decorrelate: bool | None = None,
        decay: float | None = None,
    ):
        super().__init__(image_shape, domain)
        height, width, channels = self.image_shape
        self.decorrelate = channels == 3 if decorrelate is None else bool(decorrelate and channels == 3)
        self.decay = default_decay(max(height, width)) if decay is None else float(decay)
        # NumPy, made a constant inside each graph: a captured eager tensor would not survive
        # `convert_variables_to_constants_v2` (oipgraph.distribute.frozen) intact.
        self._scale = frequency_scale(height, width, self.decay).astype(np.complex64)

    @property
    def param_shape(self) -> tuple[int, int, int]:
        height, width, channels = self.image_shape
        return (height, width // 2 + 1, 2 * channels)

    def to_image(self, params: tf.Tensor) -> tf.Tensor:
        height, width, channels = self.image_shape
        spectrum = tf.complex(params[..., :channels], params[..., channels:])  # [B, H, W//2+1, C]
        scaled = tf.transpose(spectrum, [0, 3, 1, 2]) * tf.constant(self._scale)
        signal = tf.signal.irfft2d(scaled, fft_length=[height, width]) / IMAGE_DIVISOR  # [B, C, H, W]
        signal = tf.transpose(signal, [0, 2, 3, 1])
        if self.decorrelate:
            signal = color.to_rgb(signal)
        return self._squash(signal)

    def from_image(self, images: tf.Tensor) -> tf.Tensor:
        height, width, _ = self.image_shape
        signal = self._unsquash(tf.convert_to_tensor(images, tf.float32))
        if self.decorrelate:
            signal = color.from_rgb(signal)
        spectrum = tf.signal.rfft2d(tf.transpose(signal, [0, 3, 1, 2]) * IMAGE_DIVISOR, fft_length=[height, width])
        spectrum = tf.transpose(spectrum / tf.constant(self._scale), [0, 2, 3, 1])
        return tf.concat([tf.math.real(spectrum), tf.math.imag(spectrum)], axis=-1)

    def _squash(self, signal: tf.Tensor) -> tf.Tensor:
        if isinstance(self.domain, ValueRange):
            return self.domain.low + (self.domain.high - self.domain.low) * tf.sigmoid(signal)
        return tf.image.per_image_standardization(signal)

    def _unsquash(self, images: tf.Tensor) -> tf.Tensor:
        if isinstance(self.domain, ValueRange):
            unit = (images - self.domain.low) / (self.domain.high - self.domain.low)
            unit = tf.clip_by_value(unit, SQUASH_MARGIN, 1.0 - SQUASH_MARGIN)
            return tf.math.log(unit) - tf.math.log1p(-unit)
        return images

    def describe(self) -> dict[str, object]:
        return {"param": self.name, "decorrelate": self.decorrelate, "decay": self.decay}
