"""Tests of the fast model: the same outputs and input gradients as the model, col2im only where it applies."""

import keras
import tensorflow as tf
from helpers import input_gradient, seeded_conv

from oipgraph.models import fastmodel


def mixed_model(channels: int = 3) -> keras.Model:
    """A 'same' conv on the image, a strided conv, a dilated conv and a valid conv with tanh."""
    inputs = keras.Input((14, 13, channels))
    x = seeded_conv(6, (3, 2), "image_conv", 1, padding="same", activation="relu")(inputs)
    x = seeded_conv(4, 3, "strided", 2, strides=2, activation="relu")(x)
    x = seeded_conv(4, 2, "dilated", 3, dilation_rate=2, padding="same")(x)
    x = seeded_conv(5, 2, "top", 4, activation="tanh", use_bias=False)(x)
    return keras.Model(inputs, x)


def pooled_model() -> keras.Model:
    """The shipped CNN's pattern: conv on the image, ReLU, 2x2 max-pool, a second conv and pool."""
    inputs = keras.Input((16, 16, 1))
    x = seeded_conv(8, 3, "image_conv", 1, activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool_1")(x)
    x = seeded_conv(8, 3, "second_conv", 2, activation="relu", padding="same")(x)
    return keras.Model(inputs, keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool_2")(x))


class FastModelTest(tf.test.TestCase):
    def test_same_outputs_and_input_gradients_as_the_model(self):
        for name, model in (("mixed_1", mixed_model(1)), ("mixed_3", mixed_model(3)), ("pooled", pooled_model())):
            with self.subTest(model=name):
                fast = fastmodel.fast_model(model)
                images = tf.random.normal([4, *model.input_shape[1:]], seed=len(name))
                outputs, gradient = input_gradient(fast, images)
                expected, expected_gradient = input_gradient(model, images)
                self.assertAllClose(outputs, expected, atol=1e-6)
                self.assertAllClose(gradient, expected_gradient, atol=1e-6)
                self.assertNotEqual(float(tf.reduce_max(tf.abs(gradient))), 0.0)

    def test_only_unit_stride_convs_on_few_channels_get_col2im(self):
        fast = fastmodel.fast_model(mixed_model())
        replaced = [layer.conv.name for layer in fast.layers if isinstance(layer, fastmodel.FastConv2D)]
        # 'image_conv' reads the 3-channel image and 'top' the 4 maps of 'dilated' (<= MAX_COL2IM_CHANNELS);
        # 'strided' (stride 2) and 'dilated' (dilation 2) keep TensorFlow's gradient.
        self.assertEqual(replaced, ["image_conv", "top"])

    def test_bias_is_a_bias_add_that_tensorflow_fuses_into_the_conv(self):
        # Grappler's remapper fuses Conv2D + BiasAdd + Relu into one oneDNN kernel; an AddV2 bias stays a
        # separate op over the whole first feature map inside the ascent loop (BENCHMARKS.md, issue 16).
        layer = fastmodel.FastConv2D(mixed_model().get_layer("image_conv"))
        graph = tf.function(layer).get_concrete_function(tf.TensorSpec([None, 14, 13, 3])).graph
        op_types = {op.type for op in graph.get_operations()}
        self.assertIn("BiasAdd", op_types)
        self.assertNotIn("AddV2", op_types)

    def test_shares_the_weights_of_the_model(self):
        model = pooled_model()
        fast = fastmodel.fast_model(model)
        layer = model.get_layer("image_conv")
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * 2.0, bias])
        images = tf.random.normal([2, 16, 16, 1], seed=7)
        self.assertAllClose(fast(images), model(images), atol=1e-6)

    def test_model_without_such_layers_is_returned_as_is(self):
        inputs = keras.Input((8, 8, 3))
        model = keras.Model(inputs, keras.layers.Conv2D(4, 3, strides=2)(inputs))
        self.assertIs(fastmodel.fast_model(model), model)


if __name__ == "__main__":
    tf.test.main()
