"""How alike several OIPs of one map are, allowing for translation.

The articles ask whether a map's OIP is unique: different start images give
patterns of the same overall form, but shifted. The score here is the mean,
over all pairs of a map's OIPs, of the best normalized cross-correlation over
(circular) shifts of up to a quarter of the image size: 1 means the same
pattern up to a shift, about 0 means unrelated patterns.
"""

from __future__ import annotations

import itertools

import numpy as np


def _standardized(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.float64)
    spread = image.std()
    return (image - image.mean()) / spread if spread > 0 else np.zeros_like(image)


def translation_similarity(first: np.ndarray, second: np.ndarray, max_shift: int | None = None) -> float:
    """Best normalized cross-correlation of two [H, W, C] images over shifts up to `max_shift` pixels."""
    height, width = first.shape[:2]
    max_shift = max(height, width) // 4 if max_shift is None else max_shift
    a, b = _standardized(first), _standardized(second)
    spectrum = np.fft.fft2(a, axes=(0, 1)) * np.conj(np.fft.fft2(b, axes=(0, 1)))
    correlation = np.fft.ifft2(spectrum, axes=(0, 1)).real.sum(axis=-1) / a.size
    shifts_y = np.r_[0 : min(max_shift, height - 1) + 1, -min(max_shift, height - 1) : 0] % height
    shifts_x = np.r_[0 : min(max_shift, width - 1) + 1, -min(max_shift, width - 1) : 0] % width
    return float(correlation[np.ix_(shifts_y, shifts_x)].max())


def uniqueness(images: np.ndarray, max_shift: int | None = None) -> float | None:
    """Mean pairwise `translation_similarity` of K >= 2 images [K, H, W, C]; None for K < 2."""
    if len(images) < 2:
        return None
    scores = [translation_similarity(a, b, max_shift) for a, b in itertools.combinations(images, 2)]
    return float(np.mean(scores))
