"""Tests of the per-pair map loss: the sliced layer equals the plain layer output, values and gradients."""

import helpers
import keras
import numpy as np
import tensorflow as tf

from oipgraph import starts
from oipgraph.ascent import loss_and_gradient
from oipgraph.models.loading import load_model
from oipgraph.objectives import ChannelObjective, can_slice_per_pair


def plain_loss(feature_model, images, map_index):
    """The objective straight from its definition: the layer output, each pair's map, its mean."""
    features = feature_model(images)
    return tf.stack([tf.reduce_mean(features[pair, :, :, map_index[pair]]) for pair in range(len(map_index))])


def tiny_model(activation="relu", padding="valid", use_bias=True, top_kernel=3, top_maps=5, strides=1) -> keras.Model:
    with helpers.keras_seed(5):
        inputs = keras.Input((11, 10, 3))
        x = keras.layers.Conv2D(4, 3, activation="relu", padding="same", name="conv_a")(inputs)
        x = keras.layers.MaxPooling2D(2, name="pool")(x)
        outputs = keras.layers.Conv2D(
            top_maps, top_kernel, strides=strides, padding=padding, activation=activation, use_bias=use_bias, name="top"
        )(x)
        model = keras.Model(inputs, outputs)
        if use_bias:  # Different biases per map, so that picking the wrong map's bias shows.
            model.get_layer("top").bias.assign(np.linspace(-0.2, 0.3, top_maps))
        return model


class ChannelObjectiveTest(tf.test.TestCase):
    def assert_equals_plain(self, model, layer_name, map_index, sliced):
        feature_model = keras.Model(model.inputs[0], model.get_layer(layer_name).output)
        loss_fn = ChannelObjective(feature_model, layer_name)
        self.assertEqual(loss_fn.sliced, sliced)
        shape = [len(map_index), *model.inputs[0].shape[1:]]
        images = starts.multiscale(starts.start_seeds(0, range(len(map_index))), shape[1:])
        map_index = tf.constant(map_index, tf.int32)
        loss, gradient = loss_and_gradient(lambda x: loss_fn(x, map_index), images)
        expected, expected_gradient = loss_and_gradient(
            lambda x: plain_loss(feature_model, x, map_index.numpy()), images
        )
        self.assertGreater(float(tf.reduce_max(tf.abs(expected_gradient))), 0.0)
        self.assertAllClose(loss, expected, atol=1e-6, rtol=1e-5)
        self.assertAllClose(gradient, expected_gradient, atol=1e-6 * float(tf.reduce_max(tf.abs(expected_gradient))))

    def test_sliced_layers_equal_the_plain_layer(self):
        cases = [
            dict(),
            dict(activation="tanh", padding="same"),
            dict(activation=None, use_bias=False, top_kernel=(2, 3)),
            dict(activation="sigmoid", top_kernel=1),
        ]
        for kwargs in cases:
            with self.subTest(**kwargs):
                self.assert_equals_plain(tiny_model(**kwargs), "top", [0, 4, 2, 2, 1, 3], sliced=True)

    def test_other_layers_use_the_full_layer(self):
        cases = [
            ("strided", tiny_model(strides=2), "top"),
            ("softmax across maps", tiny_model(activation="softmax"), "top"),
            ("patches > 8x output", tiny_model(top_maps=1, top_kernel=3), "top"),
            ("pooling layer", tiny_model(), "pool"),
        ]
        for name, model, layer_name in cases:
            with self.subTest(name):
                maps = [0, 0, 0] if model.get_layer(layer_name).output.shape[-1] == 1 else [0, 3, 1]
                self.assert_equals_plain(model, layer_name, maps, sliced=False)

    def test_shipped_model_every_conv_layer(self):
        model = load_model()
        for layer_name, maps in (
            ("Conv2D_1", [0, 31, 7, 7]),
            ("Conv2D_2", [63, 0, 12, 40]),
            ("Conv2D_3", [0, 127, 9, 77]),
        ):
            with self.subTest(layer=layer_name):
                self.assertTrue(can_slice_per_pair(model.get_layer(layer_name)))
                self.assert_equals_plain(model, layer_name, maps, sliced=True)

    def test_plain_mode_uses_the_feature_model_as_it_is(self):
        model = tiny_model()
        feature_model = keras.Model(model.inputs[0], model.get_layer("top").output)
        loss_fn = ChannelObjective(feature_model, "top", fast=False)
        self.assertFalse(loss_fn.sliced)
        self.assertIs(loss_fn.model, feature_model)


if __name__ == "__main__":
    tf.test.main()
