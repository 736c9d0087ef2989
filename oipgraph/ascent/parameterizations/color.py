"""Colour decorrelation for 3-channel images (lucid's `_linear_decorelate_color`).

The parameterization works in a decorrelated colour space d; an RGB image is rgb = d @ M^T with
M = S / max_j ||S[:, j]||, where S is lucid's square root of the colour correlation of ImageNet
images (`COLOR_CORRELATION_SVD_SQRT`, estimated by lucid on ImageNet; the same matrix serves CIFAR-10
and other natural photographs, whose colour statistics are alike). Steps of equal size in d are then
steps of natural colour contrast in RGB, instead of independent noise per channel.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

COLOR_CORRELATION_SVD_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
COLOR_MATRIX = COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))


def to_rgb(decorrelated: tf.Tensor) -> tf.Tensor:
    """float32 [..., 3] RGB of float32 [..., 3] decorrelated colours: d @ M^T."""
    return tf.tensordot(decorrelated, tf.constant(COLOR_MATRIX.T), axes=1)


def from_rgb(rgb: tf.Tensor) -> tf.Tensor:
    """float32 [..., 3] decorrelated colours of float32 [..., 3] RGB: rgb @ (M^T)^-1."""
    return tf.tensordot(rgb, tf.constant(np.linalg.inv(COLOR_MATRIX.T).astype(np.float32)), axes=1)
