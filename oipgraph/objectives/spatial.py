"""Objectives on a layer with spatial output [B, h, w, C]: `channel`, `neuron`, and the wake-up's pre-activation peak.

`ChannelObjective` is the articles' loss, the mean of one feature map;
`NeuronObjective` is one position (row, col) of a map (default the centre).
Both compute only each pair's own map where that is exact: for a stride-1
plain `Conv2D` target they run the model up to the layer's input, take the
layer's patches and apply each pair's own kernel row (`fastconv.per_pair_conv`),
bias and element-wise activation, which skips the layer's other maps
(1.2x faster on the shipped CNN's Conv2D_3, BENCHMARKS.md). Other layers use
the full feature model and gather the pair's map. Both run the model on the
image window their outputs read (`receptive`: the whole map for `channel`,
one position for `neuron`) where that window is exact and smaller than the image.

`PreActivationPeak` is the wake-up's objective: the largest pre-activation
z = conv(inputs) + bias of the map (or z at the neuron), whose gradient is not
zero where the ReLU output is.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from oipgraph.models import layer_lookup, receptive
from oipgraph.models.fastconv import (
    activation_name,
    can_slice_channels,
    explicit_padding,
    has_unit_stride,
    per_pair_conv,
)
from oipgraph.models.fastmodel import fast_model
from oipgraph.objectives.base import DerivedObjective, Objective

# A per-pair sliced layer materializes kh*kw*C_in patch values per output position instead of
# C_out outputs; beyond this factor the memory would outweigh the saved FLOPs for big layers.
MAX_PATCH_TO_OUTPUT_RATIO = 8
# Activations whose outputs are >= 0: a map of such a layer that never fires has loss exactly 0.
NONNEGATIVE_ACTIVATIONS = frozenset({"relu", "relu6", "sigmoid", "hard_sigmoid", "softplus", "exponential", "softmax"})


def layer_input_model(feature_model: keras.Model, layer_name: str) -> keras.Model:
    """The model of `feature_model` from the image up to the input of its output layer `layer_name`.

    The input is the one of the call that made `feature_model`'s output (`layer_lookup.layer_input_model`),
    which is also right for layers inlined from nested models.
    """
    return layer_lookup.layer_input_model(feature_model, layer_name)


def conv_pre_activation(layer: keras.layers.Conv2D, inputs: tf.Tensor, channel: tf.Tensor | None = None) -> tf.Tensor:
    """convolution(inputs) + bias of a plain Conv2D `layer`, before its activation.

    Args:
        layer: A layer that `can_slice_channels` accepts.
        inputs: float32 [B, H, W, C_in], the layer's input (cast to the kernel's dtype).
        channel: None for every output channel, or an int32 scalar for that one alone.

    Returns:
        [B, H', W', C_out], or [B, H', W', 1] for one channel, in the kernel's dtype (float32, or bfloat16
        in a bfloat16 copy of the model).
    """
    kernel, bias = layer.kernel, layer.bias
    # The layer's own call casts its inputs to its compute dtype (bfloat16 in a `--precision=bfloat16` copy);
    # the convolution op called directly does not.
    inputs = tf.cast(inputs, kernel.dtype)
    if channel is not None:
        kernel = kernel[..., channel : channel + 1]
        bias = bias[channel : channel + 1] if layer.use_bias else None
    outputs = layer.convolution_op(inputs, kernel)
    return outputs + bias if layer.use_bias else outputs


def can_slice_per_pair(layer: keras.layers.Layer) -> bool:
    """Whether a spatial objective computes one map per pair of `layer` from its patches.

    True for a stride-1 plain Conv2D (`fastconv.has_unit_stride`) whose patches
    are at most `MAX_PATCH_TO_OUTPUT_RATIO` times the size of its output.
    """
    if not has_unit_stride(layer):
        return False
    kernel_height, kernel_width, in_channels, out_channels = layer.kernel.shape
    return kernel_height * kernel_width * in_channels <= MAX_PATCH_TO_OUTPUT_RATIO * out_channels


class SpatialObjective(Objective):
    """Base of the objectives that reduce one map [B, h, w] of a spatial layer to a loss [B].

    Attributes:
        feature_model: The model from the image to the layer's output [B, h, w, C].
        layer: The target layer.
        map_shape: (h, w) of the layer's maps.
        map_window: The window of each map that the loss reads (`receptive.Window`);
            the maps of `pair_maps` and `pre_activation_maps` are this window.
        image_window: The window of the image that `map_window` reads, or None for
            the whole image (`receptive.input_window`; only where `fast`).
        sliced: Whether each pair's map is computed alone from the layer's patches.
        shared_sliced: Whether one map shared by a batch is computed with a sliced kernel.
    """

    def __init__(
        self,
        feature_model: keras.Model,
        layer_name: str,
        fast: bool = True,
        map_window: receptive.Window | None = None,
    ):
        """Builds the objective.

        Args:
            feature_model: A model from the image to the output of layer `layer_name` ([B, h, w, C]).
            layer_name: The target layer.
            fast: Use the per-pair sliced layer, the col2im input gradients and the
                image window where they are exact; False evaluates `feature_model`
                as it is on the whole image and gathers each pair's map (the plain
                formulation, for comparison).
            map_window: The window of each map the loss reads; None for the whole map.
        """
        self.feature_model = feature_model
        self.layer_name = layer_name
        self.layer = layer_lookup.output_layer(feature_model)
        _, height, width, self.num_targets = (
            int(dim) if dim is not None else None for dim in feature_model.output.shape
        )
        self.map_shape = (height, width)
        whole_map = receptive.full_window(self.map_shape)
        self.image_window = receptive.input_window(feature_model, map_window or whole_map) if fast else None
        # Without an image window the model computes whole maps, and the loss reads its window from them.
        self.map_window = (map_window or whole_map) if self.image_window is not None else whole_map
        self.nonnegative = activation_name(self.layer) in NONNEGATIVE_ACTIVATIONS
        self.sliced = fast and can_slice_per_pair(self.layer)
        self.shared_sliced = can_slice_channels(self.layer)
        if self.sliced or self.shared_sliced:
            inputs_model = receptive.cropped_model(layer_input_model(feature_model, layer_name), self.image_window)
        if self.sliced:
            self.model = fast_model(inputs_model)
        else:
            model = receptive.cropped_model(feature_model, self.image_window)
            self.model = fast_model(model) if fast else model
        if self.shared_sliced:
            # The precursor scan's and the wake-up's model: the fast one where the ascent's is the same model.
            self.layer_input_model = self.model if self.sliced else fast_model(inputs_model) if fast else inputs_model

    def reduce(self, maps: tf.Tensor) -> tf.Tensor:
        """float32 [B]: the loss of one map per image, `maps` float32 [B, h, w]."""
        raise NotImplementedError

    def window_of(self, images: tf.Tensor) -> tf.Tensor:
        """The part of `images` float32 [B, H, W, C] that the objective reads (`image_window`)."""
        return receptive.crop(images, self.image_window)

    def pair_maps(self, images: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        """float32 [B, h', w']: the `map_window` of map `target[b]` of the layer (after its activation) for image b.

        On a bfloat16 model (`models.precision`) the maps are bfloat16 values cast to float32; a sliced
        layer's own per-pair map (1 / C_out of the layer's work) is computed in float32 from its bfloat16
        input, so that the loss the stop rules read moves smoothly.
        """
        outputs = self.model(self.window_of(images), training=False)
        if not self.sliced:
            return tf.cast(tf.gather(outputs, target, axis=3, batch_dims=1), tf.float32)
        outputs = tf.cast(outputs, tf.float32)
        kernel_height, kernel_width, in_channels, out_channels = self.layer.kernel.shape
        # Map-major [C_out, taps, C_in], so that each pair's kernel is one contiguous row to gather.
        kernel = tf.transpose(tf.cast(self.layer.kernel, outputs.dtype), [3, 0, 1, 2])
        kernel = tf.reshape(kernel, [out_channels, kernel_height * kernel_width, in_channels])
        pre_activation = per_pair_conv(
            explicit_padding(self.layer, outputs), tf.gather(kernel, target), (kernel_height, kernel_width)
        )
        if self.layer.use_bias:
            pre_activation += tf.gather(tf.cast(self.layer.bias, outputs.dtype), target)[:, None, None]
        return self.layer.activation(pre_activation)

    def pre_activation_maps(self, images: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        """float32 [B, h', w']: the `map_window` of the pre-activation z of map `target[b]` for image b
        (plain Conv2D layers only)."""
        outputs = conv_pre_activation(self.layer, self.layer_input_model(self.window_of(images), training=False))
        return tf.cast(tf.gather(outputs, target, axis=3, batch_dims=1), tf.float32)

    def __call__(self, images: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        return self.reduce(self.pair_maps(images, target))

    def shared_target(self, images: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        if not self.shared_sliced:
            return super().shared_target(images, target)
        inputs = self.layer_input_model(self.window_of(images), training=False)
        maps = self.layer.activation(conv_pre_activation(self.layer, inputs, target))[..., 0]
        return self.reduce(tf.cast(maps, tf.float32))


class ChannelObjective(SpatialObjective):
    """loss[b] = mean over positions (y, x) of map `target[b]` of the layer, for image b (the articles' loss)."""

    name = "channel"

    def reduce(self, maps: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(maps, axis=[-2, -1])

    def all_targets(self, images: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(tf.cast(self.feature_model(images, training=False), tf.float32), axis=[1, 2])


class NeuronObjective(SpatialObjective):
    """loss[b] = map `target[b]` of the layer at position (row, col), for image b.

    Attributes:
        position: (row, col); default the centre (h // 2, w // 2).
    """

    def __init__(self, feature_model: keras.Model, layer_name: str, position: tuple[int, int] | None = None, **kwargs):
        height, width = (int(dim) for dim in feature_model.output.shape[1:3])
        self.position = (height // 2, width // 2) if position is None else tuple(int(p) for p in position)
        row, col = self.position
        super().__init__(feature_model, layer_name, map_window=((row, row + 1), (col, col + 1)), **kwargs)
        self.name = f"neuron({row},{col})"

    def reduce(self, maps: tf.Tensor) -> tf.Tensor:
        # The maps are the map window: the position relative to its corner.
        (top, _), (left, _) = self.map_window
        row, col = self.position
        return maps[..., row - top, col - left]

    def all_targets(self, images: tf.Tensor) -> tf.Tensor:
        row, col = self.position
        return tf.cast(self.feature_model(images, training=False)[:, row, col, :], tf.float32)

    def describe(self) -> dict:
        return {**super().describe(), "neuron": list(self.position)}


class PreActivationPeak(DerivedObjective):
    """loss[b] = the largest pre-activation z of map `target[b]` (for a neuron: z at its position).

    The wake-up ascends it for maps that never fire: z keeps its gradient
    where the ReLU output is zero. The map fires as soon as activation(loss) > 0
    (exact for the ReLU family, where the map is > 0 somewhere iff max z > 0).
    """

    def __init__(self, spatial: SpatialObjective):
        super().__init__(spatial, f"preactivation_peak({spatial.name})")
        self.spatial = spatial

    def __call__(self, images: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        maps = self.spatial.pre_activation_maps(images, target)
        if isinstance(self.spatial, NeuronObjective):
            return self.spatial.reduce(maps)
        return tf.reduce_max(maps, axis=[1, 2])

    def all_targets(self, images: tf.Tensor) -> tf.Tensor:
        inputs = self.spatial.layer_input_model(self.spatial.window_of(images), training=False)
        outputs = tf.cast(conv_pre_activation(self.spatial.layer, inputs), tf.float32)
        if isinstance(self.spatial, NeuronObjective):
            return self.spatial.reduce(tf.transpose(outputs, [0, 3, 1, 2]))
        return tf.reduce_max(outputs, axis=[1, 2])

    def fires(self, loss: tf.Tensor) -> tf.Tensor:
        """bool [B]: whether the map fires, from the peak `loss` [B]."""
        return self.spatial.layer.activation(loss) > 0
