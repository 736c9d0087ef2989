"""The fast formulation of a Keras model for the ascent: the same outputs, a cheaper input gradient.

`fast_model` clones a functional model (sharing its layers and weights) with two
exact rewrites:

* every stride-1 plain `Conv2D` that reads at most `fastconv.MAX_COL2IM_CHANNELS`
  channels (the image) gets the col2im input gradient (`fastconv.conv2d_col2im_gradient`);
* a plain `Conv2D` with a ReLU or ReLU6 whose only consumer is a `MaxPooling2D`
  applies its activation after the pooling: a(max(z)) = max(a(z)) for a
  nondecreasing a, and the gradients agree too (where the activation makes two
  inputs of a window tie, its slope there is 0 either way). The activation and its
  gradient then run on the pooled map, a quarter of the conv's output for 2x2
  pools (BENCHMARKS.md, issue 16).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import keras
import tensorflow as tf

from oipgraph.fastconv import (
    MAX_COL2IM_CHANNELS,
    activation_name,
    can_slice_channels,
    conv2d_col2im_gradient,
    explicit_padding,
    has_unit_stride,
)

# Activations that commute with a max-pooling, values and gradients (see the module docstring).
POOL_COMMUTING_ACTIVATIONS = frozenset({"relu", "relu6"})


class FastConv2D(keras.layers.Layer):
    """Computes what a plain `Conv2D` computes, with the col2im input gradient and/or without its activation.

    Shares the wrapped layer's weights; made by `fast_model`.

    Attributes:
        conv: The wrapped layer.
        col2im: Whether the input gradient is col2im (stride-1 layers only).
        activate: Whether the layer's activation is applied (False: the pre-activation).
    """

    def __init__(self, conv: keras.layers.Conv2D, col2im: bool = True, activate: bool = True):
        suffix = ("_col2im" if col2im else "") + ("" if activate else "_linear")
        super().__init__(name=f"{conv.name}{suffix}", dtype=conv.dtype_policy)
        self.conv, self.col2im, self.activate = conv, col2im, activate

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        kernel = tf.cast(tf.convert_to_tensor(self.conv.kernel), inputs.dtype)
        if self.col2im:
            outputs = conv2d_col2im_gradient(explicit_padding(self.conv, inputs), kernel)
        else:
            outputs = self.conv.convolution_op(inputs, kernel)
        if self.conv.use_bias:
            # BiasAdd, not AddV2: TensorFlow's remapper fuses Conv2D + BiasAdd + activation into one
            # oneDNN kernel only for BiasAdd, also inside a while_loop's step function.
            outputs = tf.nn.bias_add(outputs, tf.cast(self.conv.bias, outputs.dtype))
        return self.conv.activation(outputs) if self.activate else outputs

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


def convs_before_max_pools(model: keras.Model) -> set[int]:
    """ids of the plain ReLU/ReLU6 `Conv2D` layers of `model` whose output only a `MaxPooling2D` reads.

    Each such layer is called once in `model`, and its output is not an output of `model`.
    """
    nodes = [node for depth_nodes in getattr(model, "_nodes_by_depth", {}).values() for node in depth_nodes]
    calls = Counter(id(node.operation) for node in nodes)
    readers: dict[int, list] = {}
    for node in nodes:
        for tensor in node.arguments.keras_tensors:
            readers.setdefault(id(tensor), []).append(node.operation)
    for tensor in model.outputs:
        readers.setdefault(id(tensor), []).append(None)
    found = set()
    for node in nodes:
        layer = node.operation
        if not (
            can_slice_channels(layer)
            and activation_name(layer) in POOL_COMMUTING_ACTIVATIONS
            and calls[id(layer)] == 1
            and len(node.outputs) == 1
        ):
            continue
        consumers = readers.get(id(node.outputs[0]), [])
        if len(consumers) == 1 and isinstance(consumers[0], keras.layers.MaxPooling2D):
            found.add(id(layer))
    return found


def fast_model(model: keras.Model) -> keras.Model:
    """`model` with the col2im input gradients and the activations after max-pools (module docstring).

    The returned functional model shares all layers and weights with `model` and
    computes the same outputs (bit for bit) and input gradients (up to float
    rounding). Where no rewrite applies, `model` itself is returned without cloning it.
    """
    nodes = [node for depth_nodes in getattr(model, "_nodes_by_depth", {}).values() for node in depth_nodes]
    col2im = {
        id(node.operation)
        for node in nodes
        if node.operation is not None and reads_few_channels(node.operation, node.arguments.args)
    }
    pooled = convs_before_max_pools(model)
    if not col2im and not pooled:
        return model
    deferred: dict[int, keras.layers.Layer] = {}  # id of a pre-activation tensor -> the conv whose activation waits

    def call(layer, *args, **kwargs):
        if id(layer) in col2im | pooled and not kwargs:
            outputs = FastConv2D(layer, col2im=id(layer) in col2im, activate=id(layer) not in pooled)(args[0])
            if id(layer) in pooled:
                deferred[id(outputs)] = layer
            return outputs
        if args and id(args[0]) in deferred:  # The max-pool after a deferred activation.
            conv = deferred.pop(id(args[0]))
            return keras.layers.Activation(conv.activation, name=f"{conv.name}_activation")(layer(*args, **kwargs))
        return layer(*args, **kwargs)

    return keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
