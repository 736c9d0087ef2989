"""The `unit` objective: one unit of a non-spatial layer (Dense, Flatten, pooling to a vector, ...).

For a layer that ends in a softmax or sigmoid (a classifier's output) the
objective is the unit's *pre-activation logit*, as in lucid and tf-keras-vis:
the softmax probability of one class can rise by pushing the other logits
down, and it saturates at 1, where its gradient vanishes; the logit measures
the evidence for the class itself. For a `Dense` layer the logit is
inputs @ kernel[:, unit] + bias[unit]; for a separate `Softmax` or
`Activation('softmax'|'sigmoid')` layer it is that layer's input.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from oipgraph.models import layer_lookup
from oipgraph.models.fastconv import activation_name
from oipgraph.objectives.base import Objective
from oipgraph.objectives.spatial import NONNEGATIVE_ACTIVATIONS

SQUASHING_ACTIVATIONS = frozenset({"softmax", "sigmoid"})


def ends_in_squashing(layer: keras.layers.Layer) -> bool:
    """Whether `layer`'s output is a softmax or sigmoid of something (then its units' logits are the objective)."""
    return isinstance(layer, keras.layers.Softmax) or activation_name(layer) in SQUASHING_ACTIVATIONS


class UnitObjective(Objective):
    """loss[b] = unit `target[b]` of a non-spatial layer for image b; the pre-activation logit after softmax/sigmoid.

    Attributes:
        feature_model: The model from the image to what the objective reads:
            the layer's output, or for a softmax/sigmoid layer the layer's input.
        layer: The target layer.
        logits: Whether the objective is the pre-activation logit.
    """

    target_kind = "unit"

    def __init__(self, model: keras.Model, layer_name: str):
        """Builds the objective for layer `layer_name` (`outer/inner` if nested) of `model` (output [B, units])."""
        self.layer_name = layer_name
        features = layer_lookup.resolve_layer(model, layer_name).feature_model
        self.layer = layer_lookup.output_layer(features)
        self.num_targets = int(features.output.shape[-1])
        self.logits = ends_in_squashing(self.layer)
        self.dense_logits = self.logits and isinstance(self.layer, keras.layers.Dense)
        self.name = "unit_logit" if self.logits else "unit"
        self.feature_model = layer_lookup.layer_input_model(features, layer_name) if self.logits else features
        self.nonnegative = not self.logits and activation_name(self.layer) in NONNEGATIVE_ACTIVATIONS

    def __call__(self, images: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        # float32 from here on: on a bfloat16 model (`models.precision`) the logit is a float32 dot product.
        features = tf.cast(self.feature_model(images, training=False), tf.float32)
        if not self.dense_logits:
            return tf.gather(features, target, axis=1, batch_dims=1)
        # Only each pair's own column of the kernel: [B, inputs] . [B, inputs].
        columns = tf.gather(tf.transpose(tf.cast(self.layer.kernel, features.dtype)), target)
        logits = tf.reduce_sum(features * columns, axis=1)
        return logits + tf.gather(tf.cast(self.layer.bias, features.dtype), target) if self.layer.use_bias else logits

    def all_targets(self, images: tf.Tensor) -> tf.Tensor:
        features = tf.cast(self.feature_model(images, training=False), tf.float32)
        if not self.dense_logits:
            return features
        logits = tf.matmul(features, tf.cast(self.layer.kernel, features.dtype))
        return logits + tf.cast(self.layer.bias, features.dtype) if self.layer.use_bias else logits
