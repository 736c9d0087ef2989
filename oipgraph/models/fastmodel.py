"""The fast formulation of a Keras model for the ascent: the same outputs, a cheaper input gradient.

`fast_model` clones a functional model (sharing its layers and weights) so that
every stride-1 plain `Conv2D` that reads at most `fastconv.MAX_COL2IM_CHANNELS`
channels (the image) gets the col2im input gradient
(`fastconv.conv2d_col2im_gradient`), with its bias as a BiasAdd that TensorFlow
fuses into the convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from oipgraph.models.fastconv import (
    MAX_COL2IM_CHANNELS,
    conv2d_col2im_gradient,
    explicit_padding,
    has_unit_stride,
)


class FastConv2D(keras.layers.Layer):
    """Computes exactly what a stride-1 `Conv2D` computes, with the col2im input gradient.

    Shares the wrapped layer's weights; made by `fast_model`.
    """

    def __init__(self, conv: keras.layers.Conv2D):
        super().__init__(name=f"{conv.name}_col2im", dtype=conv.dtype_policy)
        self.conv = conv

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        kernel = tf.cast(tf.convert_to_tensor(self.conv.kernel), inputs.dtype)
        outputs = conv2d_col2im_gradient(explicit_padding(self.conv, inputs), kernel)
        if self.conv.use_bias:
            # BiasAdd, not AddV2: TensorFlow's remapper fuses Conv2D + BiasAdd + activation into one
            # oneDNN kernel only for BiasAdd, also inside a while_loop's step function.
            outputs = tf.nn.bias_add(outputs, tf.cast(self.conv.bias, outputs.dtype))
        return self.conv.activation(outputs)

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)


def reads_few_channels(layer: keras.layers.Layer, args: Sequence[object]) -> bool:
    """Whether a call `layer(*args)` is a stride-1 plain Conv2D on one NHWC tensor of <= 4 channels.

    Anything else (merge layers called on a list, layers with several inputs,
    unknown channel counts) keeps its own call.
    """
    if len(args) != 1 or not has_unit_stride(layer):
        return False
    shape = getattr(args[0], "shape", None)
    return shape is not None and len(shape) == 4 and shape[-1] is not None and shape[-1] <= MAX_COL2IM_CHANNELS


def fast_model(model: keras.Model) -> keras.Model:
    """`model` with the col2im input gradient in every stride-1 Conv2D that reads <= 4 channels.

    The returned functional model shares all layers and weights with `model` and
    computes the same outputs; only the graph of its input gradient differs.
    Where no layer qualifies (most deep RGB models start with a strided conv),
    `model` itself is returned without cloning it.
    """
    nodes = [node for depth_nodes in getattr(model, "_nodes_by_depth", {}).values() for node in depth_nodes]
    if not any(
        node.operation is not None and reads_few_channels(node.operation, node.arguments.args) for node in nodes
    ):
        return model

    def call(layer, *args, **kwargs):
        if reads_few_channels(layer, args) and not kwargs:
            return FastConv2D(layer)(args[0])
        return layer(*args, **kwargs)

    clone = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
    # The check above reads the model's own shapes; a clone whose calls saw other shapes may replace nothing.
    return clone if any(isinstance(layer, FastConv2D) for layer in clone.layers) else model
