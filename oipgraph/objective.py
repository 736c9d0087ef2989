"""The loss of one feature map per image, computed without the layer's other maps where that is exact.

`PairMapLoss` is the OIP ascent's objective: for pairs (image b, map k_b) it
computes only map k_b of each pair. For a stride-1 `Conv2D` target layer it runs
the model up to the layer's input, takes the layer's patches
(`fastconv.image_patches`) and applies each pair's own kernel column, bias and
element-wise activation. That skips the layer's other channels and the gradient
of a batched gather; with the col2im input gradient of the first convolution
(`fastconv.fast_input_gradients`) the shipped CNN's Conv2D_3 ascent steps run
1.2x faster (oneDNN; BENCHMARKS.md). Other layers use the full feature model.

`SingleMapLoss` is the precursor scan's objective: thousands of images for *one*
map, as one convolution with the kernel sliced to that map's output channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from oipgraph.fastconv import can_slice_channels, explicit_padding, fast_input_gradients, has_unit_stride, image_patches

if TYPE_CHECKING:
    from oipgraph.ascent import OIPAscent

# A per-pair sliced layer materializes kh*kw*C_in patch values per output position instead of
# C_out outputs; beyond this factor the memory would outweigh the saved FLOPs for big layers.
MAX_PATCH_TO_OUTPUT_RATIO = 8


def layer_input_model(feature_model: keras.Model, layer_name: str) -> keras.Model:
    """The model of `feature_model` from the image up to the input of its layer `layer_name`."""
    layer = feature_model.get_layer(layer_name)
    return keras.Model(feature_model.inputs[0], layer.input, name=f"inputs_of_{layer_name}")


def conv_pre_activation(layer: keras.layers.Conv2D, inputs: tf.Tensor, channel: tf.Tensor | None = None) -> tf.Tensor:
    """convolution(inputs) + bias of a plain Conv2D `layer`, before its activation.

    Args:
        layer: A layer that `can_slice_channels` accepts.
        inputs: float32 [B, H, W, C_in], the layer's input.
        channel: None for every output channel, or an int32 scalar for that one alone.

    Returns:
        float32 [B, H', W', C_out], or [B, H', W', 1] for one channel.
    """
    kernel, bias = layer.kernel, layer.bias
    if channel is not None:
        kernel = kernel[..., channel : channel + 1]
        bias = bias[channel : channel + 1] if layer.use_bias else None
    outputs = layer.convolution_op(inputs, kernel)
    return outputs + bias if layer.use_bias else outputs


def can_slice_per_pair(layer: keras.layers.Layer) -> bool:
    """Whether `PairMapLoss` computes one map per pair of `layer` from its patches.

    True for a stride-1 plain Conv2D (`fastconv.has_unit_stride`) whose patches
    are at most `MAX_PATCH_TO_OUTPUT_RATIO` times the size of its output.
    """
    if not has_unit_stride(layer):
        return False
    kernel_height, kernel_width, in_channels, out_channels = layer.kernel.shape
    return kernel_height * kernel_width * in_channels <= MAX_PATCH_TO_OUTPUT_RATIO * out_channels


class PairMapLoss:
    """loss[b] = mean over positions of map `map_index[b]` of a layer, for image b.

    Attributes:
        sliced: Whether each pair's map is computed alone from the layer's patches.
    """

    def __init__(self, feature_model: keras.Model, layer_name: str, fast: bool = True):
        """Builds the loss.

        Args:
            feature_model: A model from the image to the output of layer `layer_name`.
            layer_name: The target layer, with NHWC output.
            fast: Use the per-pair sliced layer and the col2im input gradients
                where they are exact; False evaluates `feature_model` as it is
                and gathers each pair's map (the plain formulation, for comparison).
        """
        self.layer = feature_model.get_layer(layer_name)
        self.sliced = fast and can_slice_per_pair(self.layer)
        if self.sliced:
            self.model = fast_input_gradients(layer_input_model(feature_model, layer_name))
        else:
            self.model = fast_input_gradients(feature_model) if fast else feature_model

    def __call__(self, images: tf.Tensor, map_index: tf.Tensor) -> tf.Tensor:
        """float32 [B] losses of `images` [B, H, W, C] for the int32 maps `map_index` [B]."""
        outputs = self.model(images, training=False)
        if not self.sliced:
            return tf.reduce_mean(tf.gather(outputs, map_index, axis=3, batch_dims=1), axis=[1, 2])
        kernel_height, kernel_width, in_channels, out_channels = self.layer.kernel.shape
        patches = image_patches(explicit_padding(self.layer, outputs), (kernel_height, kernel_width))
        # Map-major [C_out, taps, C_in], so that each pair's kernel is one contiguous row to gather.
        kernel = tf.transpose(tf.cast(self.layer.kernel, patches.dtype), [3, 0, 1, 2])
        kernel = tf.reshape(kernel, [out_channels, kernel_height * kernel_width, in_channels])
        pre_activation = tf.einsum("tbyxc,btc->byx", patches, tf.gather(kernel, map_index))
        if self.layer.use_bias:
            pre_activation += tf.gather(tf.cast(self.layer.bias, patches.dtype), map_index)[:, None, None]
        return tf.reduce_mean(self.layer.activation(pre_activation), axis=[1, 2])


class SingleMapLoss:
    """loss[b] = mean over positions of map `map_index` for image b, for one map shared by the batch.

    Equals `OIPAscent.map_loss(images, [map_index] * B)`, computed on the
    sliced kernel where `can_slice_channels` allows it.

    Attributes:
        sliced: Whether the fast sliced-kernel path is used.
    """

    def __init__(self, ascent: OIPAscent):
        """Builds the loss for the layer of `ascent`."""
        self.ascent = ascent
        self.layer = ascent.feature_model.get_layer(ascent.layer_name)
        self.sliced = can_slice_channels(self.layer)
        if self.sliced:
            self.layer_input_model = layer_input_model(ascent.feature_model, ascent.layer_name)

    def __call__(self, images: tf.Tensor, map_index: tf.Tensor) -> tf.Tensor:
        """float32 [B] losses of `images` [B, H, W, C] for the scalar int32 `map_index`."""
        if not self.sliced:
            return self.ascent.map_loss(images, tf.fill(tf.shape(images)[:1], map_index))
        inputs = self.layer_input_model(images, training=False)
        outputs = self.layer.activation(conv_pre_activation(self.layer, inputs, map_index))
        return tf.reduce_mean(outputs, axis=[1, 2, 3])
