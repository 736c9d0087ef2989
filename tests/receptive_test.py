"""Tests of the image window: the model run on the window gives exactly the outputs the objective reads."""

import helpers
import keras
import numpy as np
import tensorflow as tf

from oipgraph import starts
from oipgraph.ascent import OIPAscent, loss_and_gradient
from oipgraph.models import receptive
from oipgraph.models.loading import load_model
from oipgraph.objectives import ChannelObjective, NeuronObjective, PreActivationPeak


def chain_model(*layers: keras.layers.Layer, input_shape=(23, 21, 3)) -> keras.Model:
    with helpers.keras_seed(3):
        inputs = keras.Input(input_shape)
        x = inputs
        for layer in layers:
            x = layer(x)
        return keras.Model(inputs, x)


def conv(filters=4, kernel=3, **kwargs) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(filters, kernel, activation="relu", **kwargs)


class InputWindowTest(tf.test.TestCase):
    def test_shipped_cnn_windows(self):
        model = load_model()
        cases = [
            # Max_Pool_2 reads 10 of Conv2D_2's 11 rows: 26x26 of the image.
            ("Conv2D_3", ((0, 3), (0, 3)), ((0, 26), (0, 26))),
            ("Conv2D_3", ((1, 2), (1, 2)), ((4, 22), (4, 22))),
            ("Conv2D_2", ((2, 3), (7, 8)), ((4, 12), (14, 22))),
            ("Conv2D_2", ((0, 11), (0, 11)), None),  # the whole image
        ]
        for layer_name, map_window, expected in cases:
            with self.subTest(layer=layer_name, map_window=map_window):
                feature_model = keras.Model(model.inputs[0], model.get_layer(layer_name).output)
                self.assertEqual(receptive.input_window(feature_model, map_window), expected)

    def test_cropped_model_gives_exactly_the_window_of_the_outputs(self):
        cases = {
            "strided valid conv, pool": (conv(strides=2), keras.layers.MaxPooling2D(2), conv(5, 2)),
            "dilated conv, average pool, batch norm": (
                conv(dilation_rate=2),
                keras.layers.BatchNormalization(),
                keras.layers.AveragePooling2D(3, strides=2),
                conv(3),
            ),
            "depthwise, separable, 1x1 same, activation": (
                keras.layers.DepthwiseConv2D(3, strides=2),
                keras.layers.SeparableConv2D(6, 3),
                keras.layers.Conv2D(4, 1, padding="same"),
                keras.layers.Activation("tanh"),
            ),
        }
        for name, layers in cases.items():
            model = chain_model(*layers)
            height, width = model.output.shape[1:3]
            whole_map = ((0, height), (0, width))
            for map_window in (whole_map, ((1, 2), (width - 1, width)), ((0, 2), (1, 3))):
                window = receptive.input_window(model, map_window)
                with self.subTest(name, map_window=map_window, window=window):
                    if map_window != whole_map:  # The whole map may read the whole image (None).
                        self.assertIsNotNone(window)
                    images = tf.random.stateless_normal([2, *model.inputs[0].shape[1:]], [1, 2])
                    (rows, cols) = map_window
                    cropped = receptive.cropped_model(model, window)
                    expected = model(images)[:, rows[0] : rows[1], cols[0] : cols[1]]
                    self.assertAllClose(cropped(receptive.crop(images, window)), expected, atol=1e-5, rtol=1e-5)

                    def loss(x, use_window, model=model, cropped=cropped, window=window, rows=rows, cols=cols):
                        if use_window:
                            return tf.reduce_sum(cropped(receptive.crop(x, window)), axis=[1, 2, 3])
                        return tf.reduce_sum(model(x)[:, rows[0] : rows[1], cols[0] : cols[1]], axis=[1, 2, 3])

                    _, gradient = loss_and_gradient(lambda x: loss(x, True), images)
                    _, expected_gradient = loss_and_gradient(lambda x: loss(x, False), images)
                    self.assertAllClose(gradient, expected_gradient, atol=1e-5, rtol=1e-5)
                    outside = np.ones(gradient.shape, bool)
                    (top, bottom), (left, right) = window or receptive.full_window(images.shape[1:3])
                    outside[:, top:bottom, left:right] = False
                    self.assertAllEqual(gradient.numpy()[outside], np.zeros(int(outside.sum()), np.float32))

    def test_no_window_where_none_is_exact(self):
        inputs = keras.Input((16, 16, 3))
        branch = conv()(inputs)
        merged = keras.layers.Add()([branch, conv()(inputs)])
        cases = {
            "same padding": chain_model(conv(padding="same"), conv(), input_shape=(16, 16, 3)),
            "merge": keras.Model(inputs, merged),
            "zero padding": chain_model(keras.layers.ZeroPadding2D(1), conv(), input_shape=(16, 16, 3)),
            "batch norm over rows": chain_model(
                conv(), keras.layers.BatchNormalization(axis=1), input_shape=(16, 16, 3)
            ),
        }
        for name, model in cases.items():
            with self.subTest(name):
                self.assertIsNone(receptive.input_window(model, ((0, 1), (0, 1))))


class WindowedObjectivesTest(tf.test.TestCase):
    """The objectives on the window equal their plain formulation (whole image, whole maps)."""

    def assert_same_loss_and_gradient(self, fast, plain, images, targets):
        loss, gradient = loss_and_gradient(lambda x: fast(x, targets), images)
        expected, expected_gradient = loss_and_gradient(lambda x: plain(x, targets), images)
        self.assertGreater(float(tf.reduce_max(tf.abs(expected_gradient))), 0.0)
        self.assertAllClose(loss, expected, atol=1e-6, rtol=1e-5)
        self.assertAllClose(gradient, expected_gradient, atol=1e-6 * float(tf.reduce_max(tf.abs(expected_gradient))))

    def test_channel_neuron_and_preactivation_on_the_shipped_cnn(self):
        model = load_model()
        targets = tf.constant([0, 5, 77, 127], tf.int32)
        images = starts.multiscale(starts.start_seeds(2, range(4)), (28, 28, 1))
        for layer_name, objective, position in (
            ("Conv2D_3", ChannelObjective, None),
            ("Conv2D_3", NeuronObjective, (1, 1)),
            ("Conv2D_3", NeuronObjective, (2, 0)),
            ("Conv2D_2", NeuronObjective, (3, 9)),
        ):
            feature_model = keras.Model(model.inputs[0], model.get_layer(layer_name).output)
            extra = {} if position is None else {"position": position}
            fast = objective(feature_model, layer_name, **extra)
            plain = objective(feature_model, layer_name, fast=False, **extra)
            with self.subTest(layer=layer_name, objective=fast.name):
                self.assertIsNotNone(fast.image_window)
                self.assertIsNone(plain.image_window)
                self.assert_same_loss_and_gradient(fast, plain, images, targets % fast.num_targets)
                self.assert_same_loss_and_gradient(
                    PreActivationPeak(fast), PreActivationPeak(plain), images, targets % fast.num_targets
                )
                self.assertAllClose(fast.shared_target(images, 3), plain.shared_target(images, 3), atol=1e-6)
                self.assertAllClose(
                    PreActivationPeak(fast).all_targets(images), PreActivationPeak(plain).all_targets(images), atol=1e-5
                )

    def test_ascent_on_the_window_equals_the_plain_ascent(self):
        model = load_model()
        maps = np.array([0, 3, 64, 101], np.int32)
        images = starts.multiscale(starts.start_seeds(4, range(len(maps))), (28, 28, 1)).numpy()
        for objective in ("channel", "neuron"):
            with self.subTest(objective=objective):
                fast = OIPAscent(model, "Conv2D_3", objective=objective)(images, maps, steps=30)
                plain = OIPAscent(model, "Conv2D_3", objective=objective, fast=False)(images, maps, steps=30)
                self.assertAllClose(fast.images, plain.images, atol=1e-4, rtol=0)
                self.assertAllClose(fast.loss_history, plain.loss_history, atol=1e-4, rtol=1e-4)
                self.assertAllEqual(fast.status, plain.status)
