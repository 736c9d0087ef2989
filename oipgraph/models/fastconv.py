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
  ones (Conv2D_3's 5x5 input) `gathered_pair_conv` gathers the patches once and
  differentiates the whole map with two small matmuls: 0.39 ms instead of 1.15 ms
  for the map and its gradient at batch 93 (BENCHMARKS.md).

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
# `per_pair_conv` gathers the patches of maps whose `read_matrix` has at most this many entries (64 KiB).
MAX_READ_MATRIX_ENTRIES = 2**14


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


def read_matrix(input_size: Sequence[int], kernel_size: Sequence[int]) -> np.ndarray:
    """float32 [h * w, H * W * kh * kw]: the 0/1 matrix with a one at [q, (p, t)] where output q reads input p
    through tap t (`patch_indices`), all row-major."""
    indices = patch_indices(input_size, kernel_size)
    taps = kernel_size[0] * kernel_size[1]
    outputs, tap = np.divmod(np.arange(indices.size), taps)
    matrix = np.zeros([indices.size // taps, input_size[0] * input_size[1] * taps], np.float32)
    matrix[outputs, indices * taps + tap] = 1.0
    return matrix


def gathered_pair_conv(inputs: tf.Tensor, kernels: tf.Tensor, kernel_size: Sequence[int]) -> tf.Tensor:
    """`per_pair_conv` from one gather of the patches, with a gradient of two small matmuls.

    Forward: outputs[b, q] = patches[b, q] . kernels[b], the patches gathered at once from the flattened input.
    Gradient, from upstream u [B, h * w]: d inputs[b, p, c] = sum over t of w[b, p, t] * kernels[b, t, c],
    where w = u x `read_matrix` [B, H * W, kh * kw] is the upstream each input position meets through each
    tap; d kernels[b, t, c] = sum over q of u[b, q] * patches[b, q, (t, c)].

    Args:
        inputs: float [B, H, W, C], with static H, W and C.
        kernels: float [B, kh * kw, C], tap-major.
        kernel_size: (kh, kw).

    Returns:
        float [B, h * w].
    """
    _, height, width, channels = inputs.shape
    taps = kernel_size[0] * kernel_size[1]
    indices = patch_indices((height, width), kernel_size)
    reads = read_matrix((height, width), kernel_size)

    @tf.custom_gradient
    def conv(images, pair_kernels):
        flat = tf.reshape(images, [-1, height * width, channels])
        patches = tf.reshape(tf.gather(flat, indices, axis=1), [-1, indices.size // taps, taps * channels])
        flat_kernels = tf.reshape(pair_kernels, [-1, taps * channels])

        def gradient(upstream):
            weights = tf.reshape(tf.matmul(upstream, tf.constant(reads, upstream.dtype)), [-1, height * width, taps])
            image_gradient = tf.reshape(tf.matmul(weights, pair_kernels), tf.shape(images))
            kernel_gradient = tf.reshape(tf.einsum("bq,bqk->bk", upstream, patches), tf.shape(pair_kernels))
            return image_gradient, kernel_gradient

        return tf.einsum("bqk,bk->bq", patches, flat_kernels), gradient

    return conv(inputs, kernels)


def per_pair_conv(inputs: tf.Tensor, kernels: tf.Tensor, kernel_size: Sequence[int]) -> tf.Tensor:
    """A stride-1 VALID convolution to one output channel, with one kernel per image.

    outputs[b, y, x] = sum over taps t = (i, j) and channels c of inputs[b, y + i, x + j, c] * kernels[b, t, c],
    computed as one matrix-vector product per image from the patches: `gathered_pair_conv` for small maps
    (a `read_matrix` of at most `MAX_READ_MATRIX_ENTRIES`), `image_patches` (col2im gradient, kh*kw
    slices and pads) for larger ones. Each image's result does not depend on the others in its batch.

    Args:
        inputs: float [B, H, W, C], with static H, W and C.
        kernels: float [B, kh * kw, C], tap-major (t = i * kw + j), each image's own kernel.
        kernel_size: (kh, kw).

    Returns:
        float [B, H - kh + 1, W - kw + 1].
    """
    _, height, width, _ = inputs.shape
    kernel_height, kernel_width = kernel_size
    out_size = [height - kernel_height + 1, width - kernel_width + 1]
    if height * width * out_size[0] * out_size[1] * kernel_height * kernel_width > MAX_READ_MATRIX_ENTRIES:
        return tf.einsum("tbyxc,btc->byx", image_patches(inputs, kernel_size), kernels)
    return tf.reshape(gathered_pair_conv(inputs, kernels, kernel_size), [-1, *out_size])


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
