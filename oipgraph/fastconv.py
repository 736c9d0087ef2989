"""Convolutions with a cheap *input* gradient: image patches whose gradient is col2im.

The OIP ascent differentiates with respect to the image, never the weights, and
two stock TensorFlow gradients are slow for that on a CPU:

* `Conv2DBackpropInput` into a tensor with few channels (the image): it uses
  the vector units badly. For a convolution that reads 1 to 4 channels,
  `conv2d_col2im_gradient` keeps the forward `tf.nn.conv2d` and computes the
  input gradient as one matmul with the kernel followed by col2im (a sum of
  kh*kw shifted copies). Shipped CNN, Conv2D_1, batch 256, oneDNN: 14.6 ms -> 8 ms
  per step.
* `StridedSliceGrad`, which makes patches built from slices slow to
  differentiate (about 3 ms per slice in the same step). `image_patches` has
  col2im as its gradient instead. `per_pair_conv` (one map per pair of a target
  Conv2D, for `oipgraph.objectives.spatial`) uses it for large maps; for small
  ones (Conv2D_3's 5x5 input) one gather, whose gradient is one matmul with a 0/1
  matrix, beats the kh*kw slices and pads (1.04x the whole ascent).

All are exact reformulations: the same values, and gradients equal up to float
rounding (1e-7 relative on the shipped CNN). They apply to plain channels-last
`Conv2D` layers with stride 1 and dilation 1 (`has_unit_stride`); anything else
keeps its stock gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras.src.layers.convolutional.base_conv import BaseConv

# Activations that act on every element alone, so they commute with slicing channels.
ELEMENTWISE_ACTIVATIONS = frozenset(
    {
        "celu",
        "elu",
        "exponential",
        "gelu",
        "hard_sigmoid",
        "hard_silu",
        "hard_swish",
        "leaky_relu",
        "linear",
        "mish",
        "relu",
        "relu6",
        "selu",
        "sigmoid",
        "silu",
        "softplus",
        "softsign",
        "swish",
        "tanh",
    }
)
# Convolutions reading at most this many channels (images: 1 or 3) get the col2im input gradient.
MAX_COL2IM_CHANNELS = 4
# `per_pair_conv` gathers the patches of maps whose `patch_matrix` has at most this many entries (64 KiB).
MAX_PATCH_MATRIX_ENTRIES = 2**14


def activation_name(layer: keras.layers.Layer) -> str | None:
    """The name of `layer`'s activation function (`relu`, ...), or None where it has none."""
    return getattr(getattr(layer, "activation", None), "__name__", None)


def can_slice_channels(layer: keras.layers.Layer) -> bool:
    """Whether one output channel of `layer` can be computed alone with a sliced kernel.

    True for a plain channels-last `Conv2D` (no groups, no quantization, no
    overridden `call`) with an element-wise activation.
    """
    return (
        isinstance(layer, keras.layers.Conv2D)
        and type(layer).call is BaseConv.call
        and layer.data_format == "channels_last"
        and layer.groups == 1
        and getattr(layer, "quantization_mode", None) is None
        and activation_name(layer) in ELEMENTWISE_ACTIVATIONS
    )


def has_unit_stride(layer: keras.layers.Layer) -> bool:
    """Whether `layer` is a plain `Conv2D` (see `can_slice_channels`) with stride 1 and dilation 1."""
    return can_slice_channels(layer) and tuple(layer.strides) == (1, 1) and tuple(layer.dilation_rate) == (1, 1)


def explicit_padding(layer: keras.layers.Conv2D, inputs: tf.Tensor) -> tf.Tensor:
    """`inputs` padded so that a VALID convolution gives the output of stride-1 `layer`.

    TensorFlow's SAME padding puts (k - 1) // 2 rows before and k // 2 after.
    """
    if layer.padding == "valid":
        return inputs
    kernel_height, kernel_width = layer.kernel_size
    return tf.pad(
        inputs,
        [[0, 0], [(kernel_height - 1) // 2, kernel_height // 2], [(kernel_width - 1) // 2, kernel_width // 2], [0, 0]],
    )


def col2im(columns: tf.Tensor, kernel_size: Sequence[int]) -> tf.Tensor:
    """Sums the shifted tap images of a stride-1 VALID convolution.

    Args:
        columns: float [kh * kw, B, H', W', C]; tap t = (i, j) = divmod(t, kw)
            holds what lands on input position (y + i, x + j) from output (y, x).
        kernel_size: (kh, kw).

    Returns:
        float [B, H' + kh - 1, W' + kw - 1, C].
    """
    kernel_height, kernel_width = kernel_size
    shifted = []
    for tap in range(kernel_height * kernel_width):
        row, col = divmod(tap, kernel_width)
        paddings = [[0, 0], [row, kernel_height - 1 - row], [col, kernel_width - 1 - col], [0, 0]]
        shifted.append(tf.pad(columns[tap], paddings))
    return tf.add_n(shifted)


def image_patches(inputs: tf.Tensor, kernel_size: Sequence[int]) -> tf.Tensor:
    """The stride-1 VALID patches of `inputs`, tap-major, with col2im as their gradient.

    Args:
        inputs: float [B, H, W, C].
        kernel_size: (kh, kw).

    Returns:
        float [kh * kw, B, H - kh + 1, W - kw + 1, C]: entry [t, b, y, x, c] is
        inputs[b, y + i, x + j, c] for tap t = (i, j) = divmod(t, kw), matching
        `tf.reshape(conv_kernel, [kh * kw, C, C_out])`.
    """
    kernel_height, kernel_width = kernel_size

    @tf.custom_gradient
    def patches(images):
        taps = [
            images[:, row : (row - kernel_height + 1) or None, col : (col - kernel_width + 1) or None, :]
            for row in range(kernel_height)
            for col in range(kernel_width)
        ]
        return tf.stack(taps), lambda upstream: col2im(upstream, kernel_size)

    return patches(inputs)


def patch_indices(input_size: Sequence[int], kernel_size: Sequence[int]) -> np.ndarray:
    """int32 [h * w * kh * kw]: entry (q, t) is the input position p = (y + i, x + j) that output q = (y, x)
    reads through tap t = (i, j) of a stride-1 VALID convolution, all row-major (h = H - kh + 1, w = W - kw + 1).
    """
    (height, width), (kernel_height, kernel_width) = input_size, kernel_size
    rows, cols, tap_rows, tap_cols = np.meshgrid(
        np.arange(height - kernel_height + 1),
        np.arange(width - kernel_width + 1),
        np.arange(kernel_height),
        np.arange(kernel_width),
        indexing="ij",
    )
    return ((rows + tap_rows) * width + cols + tap_cols).reshape([-1]).astype(np.int32)


def patch_matrix(input_size: Sequence[int], kernel_size: Sequence[int]) -> np.ndarray:
    """float32 [H * W, h * w * kh * kw]: the 0/1 matrix with a one at [p, (q, t)] where `patch_indices` reads p."""
    indices = patch_indices(input_size, kernel_size)
    matrix = np.zeros([input_size[0] * input_size[1], indices.size], np.float32)
    matrix[indices, np.arange(indices.size)] = 1.0
    return matrix


def gathered_patches(inputs: tf.Tensor, kernel_size: Sequence[int]) -> tf.Tensor:
    """The stride-1 VALID patches of `inputs`, one gather, whose gradient is one matmul with `patch_matrix`.

    Args:
        inputs: float [B, H, W, C], with static H, W and C.
        kernel_size: (kh, kw).

    Returns:
        float [B, h * w, kh * kw * C]: row q = (y, x) is the patch that output q reads,
        tap-major (t = i * kw + j, then channel), matching `tf.reshape(conv_kernel, [kh * kw * C, C_out])`.
    """
    _, height, width, channels = inputs.shape
    indices = patch_indices((height, width), kernel_size)
    taps = kernel_size[0] * kernel_size[1]

    @tf.custom_gradient
    def patches(images):
        def gradient(upstream):
            # d images[b, p, c] = sum over (q, t) of matrix[p, (q, t)] * upstream[b, (q, t), c].
            upstream = tf.reshape(
                tf.transpose(tf.reshape(upstream, [-1, indices.size, channels]), [1, 0, 2]), [indices.size, -1]
            )
            summed = tf.matmul(tf.constant(patch_matrix((height, width), kernel_size), upstream.dtype), upstream)
            return tf.reshape(
                tf.transpose(tf.reshape(summed, [height * width, -1, channels]), [1, 0, 2]), tf.shape(images)
            )

        flat = tf.reshape(images, [-1, height * width, channels])
        return tf.reshape(tf.gather(flat, indices, axis=1), [-1, indices.size // taps, taps * channels]), gradient

    return patches(inputs)


def per_pair_conv(inputs: tf.Tensor, kernels: tf.Tensor, kernel_size: Sequence[int]) -> tf.Tensor:
    """A stride-1 VALID convolution to one output channel, with one kernel per image.

    outputs[b, y, x] = sum over taps t = (i, j) and channels c of inputs[b, y + i, x + j, c] * kernels[b, t, c],
    computed as one matrix-vector product per image from the patches: `gathered_patches` for small maps
    (a `patch_matrix` of at most `MAX_PATCH_MATRIX_ENTRIES`), `image_patches` (col2im gradient, kh*kw
    slices and pads) for larger ones. Each image's result does not depend on the others in its batch.

    Args:
        inputs: float [B, H, W, C], with static H, W and C.
        kernels: float [B, kh * kw, C], tap-major (t = i * kw + j), each image's own kernel.
        kernel_size: (kh, kw).

    Returns:
        float [B, H - kh + 1, W - kw + 1].
    """
    _, height, width, channels = inputs.shape
    kernel_height, kernel_width = kernel_size
    out_size = [height - kernel_height + 1, width - kernel_width + 1]
    if height * width * out_size[0] * out_size[1] * kernel_height * kernel_width > MAX_PATCH_MATRIX_ENTRIES:
        return tf.einsum("tbyxc,btc->byx", image_patches(inputs, kernel_size), kernels)
    patches = gathered_patches(inputs, kernel_size)
    outputs = tf.einsum("bqk,bk->bq", patches, tf.reshape(kernels, [-1, kernel_height * kernel_width * channels]))
    return tf.reshape(outputs, [-1, *out_size])


def conv2d_col2im_gradient(inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """`tf.nn.conv2d(inputs, kernel, 1, "VALID")` whose input gradient is a matmul plus col2im.

    Args:
        inputs: float [B, H, W, C_in].
        kernel: float [kh, kw, C_in, C_out], a tensor (its gradient is not computed).

    Returns:
        float [B, H - kh + 1, W - kw + 1, C_out].
    """
    kernel_height, kernel_width, in_channels, out_channels = kernel.shape

    @tf.custom_gradient
    def conv(images, weights):
        def gradient(upstream):
            # One matmul gives every tap's contribution: columns[(t, c), n] = sum_o weights[t, c, o] * upstream[n, o].
            columns = tf.matmul(
                tf.reshape(weights, [-1, out_channels]), tf.reshape(upstream, [-1, out_channels]), transpose_b=True
            )
            columns = tf.reshape(
                columns, tf.concat([[kernel_height * kernel_width, in_channels], tf.shape(upstream)[:3]], axis=0)
            )
            columns = tf.transpose(columns, [0, 2, 3, 4, 1]) if in_channels > 1 else tf.expand_dims(columns[:, 0], -1)
            return col2im(columns, (kernel_height, kernel_width)), None

        return tf.nn.conv2d(images, weights, 1, "VALID"), gradient

    return conv(inputs, kernel)
