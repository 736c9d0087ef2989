"""Start images for the OIP ascent: multi-scale fluctuations and Fourier noise.

Every image gets its own stateless seed `[seed, stream]`, so an image depends
only on its seed, never on the batch it is made in: the same seed gives the same
image on every run, alone or in any batch, eagerly or inside a graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from oipgraph.core.errors import OIPGraphError

DEFAULT_CELLS = (3, 7, 14, 28)
DEFAULT_FACTORS = (0.5, 0.5, 0.5, 0.5)
DEFAULT_FOURIER_ALPHA = 1.0
# Reference height the default cells are given for (MNIST); other sizes scale them.
_REFERENCE_HEIGHT = 28


def start_seeds(seed: int, streams: Sequence[int] | np.ndarray) -> np.ndarray:
    """Stateless seeds `[[seed, stream], ...]` (int64 [B, 2]) for a batch of start images."""
    streams = np.asarray(streams, dtype=np.int64).reshape(-1)
    return np.stack([np.full_like(streams, seed), streams], axis=1)


def pair_stream(map_index: int | np.ndarray, init_index: int | np.ndarray) -> np.ndarray:
    """The seed stream of start image number `init_index` of map `map_index`.

    Kept independent of how many maps or inits a run has, so a map's start image
    is the same whichever other maps are optimized with it.
    """
    return np.asarray(init_index, dtype=np.int64) * (1 << 32) + np.asarray(map_index, dtype=np.int64)


def default_cells(height: int) -> tuple[int, ...]:
    """The articles' cells (3, 7, 14, 28) scaled to an image of `height` rows."""
    if height == _REFERENCE_HEIGHT:
        return DEFAULT_CELLS
    return tuple(max(1, round(cells * height / _REFERENCE_HEIGHT)) for cells in DEFAULT_CELLS)


def check_scales(cells: Sequence[int], factors: Sequence[float]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Validates length scales; returns them as tuples.

    Raises:
        OIPGraphError: empty lists, different lengths, cells <= 0, non-finite factors.
    """
    cells, factors = tuple(cells), tuple(factors)
    if not cells:
        raise OIPGraphError("cells must name at least one length scale, got an empty list")
    if len(cells) != len(factors):
        raise OIPGraphError(f"cells {list(cells)} and factors {list(factors)} must have the same length")
    for count in cells:
        if isinstance(count, bool) or int(count) != count or count <= 0:
            raise OIPGraphError(f"cells must be positive integers, got {count!r}")
    for factor in factors:
        if not math.isfinite(factor):
            raise OIPGraphError(f"factors must be finite numbers, got {factor!r}")
    if not any(factors):
        raise OIPGraphError(f"factors must not all be zero, got {list(factors)}")
    return tuple(int(count) for count in cells), tuple(float(factor) for factor in factors)


def multiscale(
    seeds: tf.Tensor | np.ndarray,
    image_shape: Sequence[int],
    cells: Sequence[int] | None = None,
    factors: Sequence[float] = DEFAULT_FACTORS,
) -> tf.Tensor:
    """Multi-scale fluctuations: the articles' start images.

    For each length scale, uniform noise in [-1, 1] on a `cells x cells` grid is
    resized (bicubic, antialiased) to the image size; the scales are summed with
    their factors and the result is standardized per image.

    Args:
        seeds: int64 [B, 2] stateless seeds, one per image (see `start_seeds`).
        image_shape: (height, width, channels).
        cells: Grid cells per side for each scale; default (3, 7, 14, 28) scaled
            to the image height.
        factors: Weight of each scale (same length as `cells`).

    Returns:
        float32 [B, height, width, channels], standardized per image.
    """
    height, width, channels = (int(dim) for dim in image_shape)
    cells, factors = check_scales(default_cells(height) if cells is None else cells, factors)
    seeds = tf.convert_to_tensor(seeds, tf.int64)
    total = tf.zeros(tf.concat([tf.shape(seeds)[:1], [height, width, channels]], axis=0))
    for scale, (count, factor) in enumerate(zip(cells, factors)):
        total += factor * scale_noise(seeds, image_shape, count, scale)
    return tf.image.per_image_standardization(total)


def scale_noise(seeds: tf.Tensor | np.ndarray, image_shape: Sequence[int], count: int, scale: int) -> tf.Tensor:
    """The unweighted fluctuations of one length scale of `multiscale`.

    Args:
        seeds: int64 [B, 2] stateless seeds, one per image.
        image_shape: (height, width, channels).
        count: Grid cells per side of this scale.
        scale: Position of the scale in the `cells` list; it is folded into the
            seed, so a scale's noise does not depend on the other scales.

    Returns:
        float32 [B, height, width, channels]: uniform noise in [-1, 1] on a
        `count x count` grid, resized (bicubic, antialiased) to the image size.
    """
    height, width, channels = (int(dim) for dim in image_shape)
    seeds = tf.convert_to_tensor(seeds, tf.int64)
    noise = tf.map_fn(
        lambda seed: tf.random.stateless_uniform(
            [count, count, channels], tf.random.experimental.stateless_fold_in(seed, scale), minval=-1.0, maxval=1.0
        ),
        seeds,
        fn_output_signature=tf.TensorSpec([count, count, channels], tf.float32),
    )
    if (count, count) != (height, width):
        noise = tf.image.resize(noise, [height, width], method="bicubic", antialias=True)
    return noise


def fourier(
    seeds: tf.Tensor | np.ndarray, image_shape: Sequence[int], alpha: float = DEFAULT_FOURIER_ALPHA
) -> tf.Tensor:
    """Fourier start images: random phases with amplitudes proportional to 1/f^alpha.

    alpha = 1 gives the 1/f^2 power spectrum of natural images; larger values
    give smoother, larger-scale patterns.

    Args:
        seeds: int64 [B, 2] stateless seeds, one per image.
        image_shape: (height, width, channels).
        alpha: Spectral decay exponent (>= 0).

    Returns:
        float32 [B, height, width, channels], standardized per image.
    """
    if not (math.isfinite(alpha) and alpha >= 0):
        raise OIPGraphError(f"fourier alpha must be a finite number >= 0, got {alpha!r}")
    height, width, channels = (int(dim) for dim in image_shape)
    freq_y = np.fft.fftfreq(height)[:, None]
    freq_x = np.fft.rfftfreq(width)[None, :]
    freq = np.sqrt(freq_y**2 + freq_x**2)
    amplitude = np.maximum(freq, 1.0 / max(height, width)) ** -alpha
    amplitude[0, 0] = 0.0  # No constant offset: standardization would remove it anyway.
    amplitude = tf.constant(amplitude, tf.float32)
    seeds = tf.convert_to_tensor(seeds, tf.int64)
    phases = tf.map_fn(
        lambda seed: tf.random.stateless_uniform([channels, height, width // 2 + 1], seed, maxval=2 * math.pi),
        seeds,
        fn_output_signature=tf.TensorSpec([channels, height, width // 2 + 1], tf.float32),
    )
    spectrum = tf.complex(amplitude * tf.cos(phases), amplitude * tf.sin(phases))
    images = tf.signal.irfft2d(spectrum, fft_length=[height, width])
    return tf.image.per_image_standardization(tf.transpose(images, [0, 2, 3, 1]))


def image_stddev(images: tf.Tensor | np.ndarray) -> tf.Tensor:
    """float32 [B, 1, 1, 1]: the per-image divisor of `tf.image.per_image_standardization`.

    That is max(stddev, 1 / sqrt(pixels)), so `standardize(raw) * image_stddev(raw)`
    is `raw` without its mean.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    pixels = tf.cast(tf.reduce_prod(tf.shape(images)[1:]), tf.float32)
    stddev = tf.math.reduce_std(images, axis=[1, 2, 3], keepdims=True)
    return tf.maximum(stddev, tf.math.rsqrt(pixels))


def add_scale(images: tf.Tensor | np.ndarray, raw: tf.Tensor | np.ndarray, added: tf.Tensor | np.ndarray) -> tf.Tensor:
    """Adds fluctuations of a finer scale to standardized images (coarse-to-fine).

    `images` were standardized from `raw`, the weighted sum of the scales so far (and maybe
    optimized since); they are scaled back to the size `raw` had, `added` (the
    next scale times its factor) is added, and the sum is standardized again.
    Without optimization in between this gives exactly the multi-scale start
    of all scales added so far.

    Args:
        images: float32 [B, H, W, C], standardized images.
        raw: float32 [B, H, W, C], the weighted sum of the scales in `images`.
        added: float32 [B, H, W, C], the next scale's weighted fluctuations.

    Returns:
        float32 [B, H, W, C], standardized per image.
    """
    return tf.image.per_image_standardization(tf.convert_to_tensor(images, tf.float32) * image_stddev(raw) + added)
