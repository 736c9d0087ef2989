"""The part of the image an objective sees: run the model on that window only.

A VALID convolution or pooling layer with stride s drops the trailing rows and
columns its windows do not reach (the shipped CNN's `Max_Pool_2` reads 10 of
`Conv2D_2`'s 11 rows), and a `neuron` objective reads one position of a map.
Everything outside the *input window* of the objective's outputs is computed
for nothing, and its gradient is exactly zero. For a model that is a chain of
layers each of which maps an output window to one input window:

* Conv2D, DepthwiseConv2D, SeparableConv2D with VALID padding (or a 1x1
  kernel), kernel k, stride s, dilation d: output rows [a, b) read input rows
  [a * s, (b - 1) * s + (k - 1) * d + 1);
* MaxPooling2D and AveragePooling2D with VALID padding: the same with k the
  pool size;
* element-wise layers (activations, BatchNormalization, Dropout, Rescaling,
  ...): the same window,

the image window follows by composing these from the objective's output
window back to the image, and the model run on the cropped image gives
exactly the objective's outputs: every start a*s is a multiple of the stride,
so every window of the cropped computation is a window of the original. The
gradient of the cropped-away pixels is zero (`crop`'s gradient pads with
zeros). On the shipped CNN the image window of `Conv2D_3` is 26x26 of 28x28,
which saves 15 % of `Conv2D_1` and 17 % of `Conv2D_2`; a `neuron` objective's
window is smaller still (18x18 for the centre of `Conv2D_3`).

Anything else (SAME padding with a kernel above 1, merges, reshapes, nested
models left unflattened) keeps the whole image: `input_window` returns None.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

# (rows [begin, end), cols [begin, end)), half-open.
Window = tuple[tuple[int, int], tuple[int, int]]

ELEMENTWISE_LAYERS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.BatchNormalization,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.Rescaling,
    keras.layers.Identity,
)
WINDOWED_LAYERS = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
)


def _per_channel(layer: keras.layers.Layer) -> bool:
    """Whether an element-wise layer acts on the channel axis only (not on positions)."""
    axis = getattr(layer, "axis", -1)
    axes = tuple(axis) if isinstance(axis, list | tuple) else (axis,)
    return all(value in (-1, 3) for value in axes)


def layer_input_window(layer: keras.layers.Layer, window: Window) -> Window | None:
    """The window of `layer`'s input that its output `window` reads; None where none is exact."""
    if isinstance(layer, ELEMENTWISE_LAYERS):
        return window if _per_channel(layer) else None
    if not isinstance(layer, WINDOWED_LAYERS) or getattr(layer, "data_format", "channels_last") != "channels_last":
        return None
    if isinstance(layer, keras.layers.MaxPooling2D | keras.layers.AveragePooling2D):
        kernel, dilation = tuple(layer.pool_size), (1, 1)
    else:
        kernel, dilation = tuple(layer.kernel_size), tuple(layer.dilation_rate)
    if layer.padding != "valid" and kernel != (1, 1):
        return None
    reach = [(size - 1) * rate + 1 for size, rate in zip(kernel, dilation)]
    return tuple(
        (begin * stride, (end - 1) * stride + extent)
        for (begin, end), stride, extent in zip(window, tuple(layer.strides), reach)
    )


def chain(model: keras.Model) -> list[keras.layers.Layer] | None:
    """The layers of `model` from its output back to its input, if it is a chain of one-input layers."""
    layers, tensor = [], model.outputs[0]
    while tensor is not model.inputs[0]:
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return None
        node = history.operation._inbound_nodes[history.node_index]
        if len(node.input_tensors) != 1:
            return None
        layers.append(history.operation)
        tensor = node.input_tensors[0]
    return layers


def input_window(model: keras.Model, output_window: Window) -> Window | None:
    """The image window of `model` that `output_window` of its output reads, if smaller than the image.

    Args:
        model: A functional model with one fixed-size image input [B, H, W, C] and one
            spatial output.
        output_window: ((row begin, row end), (col begin, col end)) of the output.

    Returns:
        The image window, or None where it is the whole image or no exact window is known.
    """
    layers = chain(model)
    if layers is None:
        return None
    window = output_window
    for layer in layers:
        window = layer_input_window(layer, window)
        if window is None:
            return None
    image_size = tuple(int(size) for size in model.inputs[0].shape[1:3])
    if window == ((0, image_size[0]), (0, image_size[1])):
        return None
    if any(begin < 0 or end > size for (begin, end), size in zip(window, image_size)):
        return None
    return window


def cropped_model(model: keras.Model, window: Window | None) -> keras.Model:
    """`model` called on images of the window's size (sharing its layers and weights); `model` for None."""
    if window is None:
        return model
    (top, bottom), (left, right) = window
    inputs = keras.Input((bottom - top, right - left, model.inputs[0].shape[-1]), name=f"{model.name}_window")
    return keras.models.clone_model(model, input_tensors=inputs, clone_function=lambda layer: layer)


def crop(images: tf.Tensor, window: Window | None) -> tf.Tensor:
    """float32 [B, h, w, C]: the window of `images` [B, H, W, C]; its gradient is zero outside the window.

    The gradient pads with zeros (`tf.pad`) instead of TensorFlow's slower `StridedSliceGrad`.
    """
    if window is None:
        return images
    (top, bottom), (left, right) = window

    @tf.custom_gradient
    def window_of(images):
        # Dynamic sizes: transformed images (`transforms`) have no static height and width.
        height, width = tf.shape(images)[1], tf.shape(images)[2]

        def gradient(upstream):
            return tf.pad(upstream, [[0, 0], [top, height - bottom], [left, width - right], [0, 0]])

        window = images[:, top:bottom, left:right, :]
        return tf.ensure_shape(window, [None, bottom - top, right - left, images.shape[-1]]), gradient

    return window_of(images)


def full_window(shape: Sequence[int]) -> Window:
    """The window of a whole map of spatial size `shape` (h, w)."""
    return ((0, int(shape[0])), (0, int(shape[1])))
