"""Tests of the col2im convolution pieces: equal values and input gradients to TensorFlow's own ops."""

from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from oipgraph import fastconv


def input_gradient(function, inputs, upstream):
    """d <function(inputs), upstream> / d inputs."""
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = function(inputs)
    return outputs, tape.gradient(outputs, inputs, output_gradients=upstream)


class PatchesTest(tf.test.TestCase):
    def test_patches_and_their_gradient_equal_extract_patches(self):
        rng = np.random.default_rng(0)
        for kernel_size in ((1, 1), (3, 3), (2, 3), (5, 4)):
            for channels in (1, 3):
                with self.subTest(kernel_size=kernel_size, channels=channels):
                    images = tf.constant(rng.normal(size=[2, 9, 8, channels]), tf.float32)
                    kernel_height, kernel_width = kernel_size
                    taps = kernel_height * kernel_width
                    out_shape = [2, 9 - kernel_height + 1, 8 - kernel_width + 1]

                    def reference(x):
                        patches = tf.image.extract_patches(
                            x, [1, kernel_height, kernel_width, 1], [1] * 4, [1] * 4, "VALID"
                        )
                        # extract_patches orders each patch (row, col, channel); make it tap-major like image_patches.
                        return tf.transpose(tf.reshape(patches, [*out_shape, taps, channels]), [3, 0, 1, 2, 4])

                    upstream = tf.constant(rng.normal(size=[taps, *out_shape, channels]), tf.float32)
                    patches, gradient = input_gradient(
                        lambda x: fastconv.image_patches(x, kernel_size), images, upstream
                    )
                    expected, expected_gradient = input_gradient(reference, images, upstream)
                    self.assertAllEqual(patches, expected)
                    self.assertAllClose(gradient, expected_gradient, atol=1e-5)

    def test_col2im_conv_equals_conv2d_with_its_input_gradient(self):
        rng = np.random.default_rng(1)
        for kernel_shape in ((3, 3, 1, 32), (2, 4, 3, 5), (1, 1, 2, 4)):
            with self.subTest(kernel_shape=kernel_shape):
                images = tf.constant(rng.normal(size=[3, 10, 11, kernel_shape[2]]), tf.float32)
                kernel = tf.constant(rng.normal(size=kernel_shape), tf.float32)
                out_shape = [3, 10 - kernel_shape[0] + 1, 11 - kernel_shape[1] + 1, kernel_shape[3]]
                upstream = tf.constant(rng.normal(size=out_shape), tf.float32)
                outputs, gradient = input_gradient(
                    lambda x: fastconv.conv2d_col2im_gradient(x, kernel), images, upstream
                )
                expected, expected_gradient = input_gradient(
                    lambda x: tf.nn.conv2d(x, kernel, 1, "VALID"), images, upstream
                )
                self.assertAllEqual(outputs, expected)
                self.assertAllClose(gradient, expected_gradient, atol=1e-5)

    def test_per_pair_conv_equals_each_images_own_conv_with_its_input_gradient(self):
        # Both formulations: gathered patches (small maps) and image_patches (above the matrix bound).
        rng = np.random.default_rng(2)
        for size, kernel_size, channels in (((5, 5), (3, 3), 6), ((4, 6), (2, 3), 1), ((9, 8), (3, 3), 2)):
            for bound in (fastconv.MAX_PATCH_MATRIX_ENTRIES, 0):
                with self.subTest(size=size, kernel_size=kernel_size, bound=bound):
                    inputs = tf.constant(rng.normal(size=[3, *size, channels]), tf.float32)
                    kernels = tf.constant(rng.normal(size=[3, kernel_size[0] * kernel_size[1], channels]), tf.float32)
                    out_shape = [3, size[0] - kernel_size[0] + 1, size[1] - kernel_size[1] + 1]
                    upstream = tf.constant(rng.normal(size=out_shape), tf.float32)

                    def reference(x):
                        return tf.concat(
                            [
                                tf.nn.conv2d(
                                    x[b : b + 1], tf.reshape(kernels[b], [*kernel_size, channels, 1]), 1, "VALID"
                                )
                                for b in range(3)
                            ],
                            axis=0,
                        )[..., 0]

                    with mock.patch.object(fastconv, "MAX_PATCH_MATRIX_ENTRIES", bound):
                        outputs, gradient = input_gradient(
                            lambda x: fastconv.per_pair_conv(x, kernels, kernel_size), inputs, upstream
                        )
                    expected, expected_gradient = input_gradient(reference, inputs, upstream)
                    self.assertAllClose(outputs, expected, atol=1e-5)
                    self.assertAllClose(gradient, expected_gradient, atol=1e-5)

    def test_per_pair_conv_of_an_image_does_not_depend_on_its_batch(self):
        # A batched matmul per image ([h*w, C] x [C, taps]) rounded differently at batch sizes that are not
        # multiples of 8 under oneDNN; the matrix-vector product of the gathered patches does not.
        rng = np.random.default_rng(3)
        inputs = tf.constant(rng.normal(size=[96, 5, 5, 64]), tf.float32)
        kernels = tf.constant(rng.normal(size=[96, 9, 64]), tf.float32)
        conv = tf.function(lambda x, k: input_gradient(lambda y: fastconv.per_pair_conv(y, k, (3, 3)), x, None))
        outputs, gradient = conv(inputs, kernels)
        for batch in (2, 7, 13, 93):
            with self.subTest(batch=batch):
                part_outputs, part_gradient = conv(inputs[:batch], kernels[:batch])
                self.assertAllEqual(part_outputs, outputs[:batch])
                self.assertAllEqual(part_gradient, gradient[:batch])

    def test_col2im_conv_in_a_compiled_function_with_unknown_batch(self):
        kernel = tf.random.normal([3, 3, 1, 4], seed=2)

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
        def gradient(images):
            return input_gradient(lambda x: tf.nn.relu(fastconv.conv2d_col2im_gradient(x, kernel)), images, None)[1]

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
        def expected(images):
            return input_gradient(lambda x: tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "VALID")), images, None)[1]

        for batch in (1, 5):
            images = tf.random.normal([batch, 8, 8, 1], seed=batch)
            self.assertAllClose(gradient(images), expected(images), atol=1e-5)


def mixed_model(channels: int = 3) -> keras.Model:
    """A 'same' conv on the image, a strided conv, a dilated conv and a valid conv with tanh."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((14, 13, channels))
    x = keras.layers.Conv2D(6, (3, 2), padding="same", activation="relu", name="image_conv")(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="strided")(x)
    x = keras.layers.Conv2D(4, 2, dilation_rate=2, padding="same", name="dilated")(x)
    x = keras.layers.Conv2D(5, 2, activation="tanh", use_bias=False, name="top")(x)
    return keras.Model(inputs, x)


class FastInputGradientsTest(tf.test.TestCase):
    def test_same_outputs_and_input_gradients_as_the_model(self):
        for channels in (1, 3):
            with self.subTest(channels=channels):
                model = mixed_model(channels)
                fast = fastconv.fast_input_gradients(model)
                images = tf.random.normal([4, 14, 13, channels], seed=channels)
                outputs, gradient = input_gradient(fast, images, None)
                expected, expected_gradient = input_gradient(model, images, None)
                self.assertAllClose(outputs, expected, atol=1e-6)
                self.assertAllClose(gradient, expected_gradient, atol=1e-6)

    def test_only_unit_stride_convs_on_few_channels_are_replaced(self):
        model = mixed_model()
        fast = fastconv.fast_input_gradients(model)
        replaced = [layer.conv.name for layer in fast.layers if isinstance(layer, fastconv.Col2ImConv2D)]
        # 'image_conv' reads the 3-channel image and 'top' the 4 maps of 'dilated' (<= MAX_COL2IM_CHANNELS);
        # 'strided' (stride 2) and 'dilated' (dilation 2) keep TensorFlow's gradient.
        self.assertEqual(replaced, ["image_conv", "top"])
        self.assertFalse(fastconv.has_unit_stride(model.get_layer("strided")))
        self.assertFalse(fastconv.has_unit_stride(model.get_layer("dilated")))

    def test_bias_is_a_bias_add_that_tensorflow_fuses_into_the_conv(self):
        # Grappler's remapper fuses Conv2D + BiasAdd + Relu into one oneDNN kernel; an AddV2 bias stays a
        # separate op over the whole first feature map inside the ascent loop (BENCHMARKS.md, issue 16).
        layer = fastconv.Col2ImConv2D(mixed_model().get_layer("image_conv"))
        graph = tf.function(layer).get_concrete_function(tf.TensorSpec([None, 14, 13, 3])).graph
        op_types = {op.type for op in graph.get_operations()}
        self.assertIn("BiasAdd", op_types)
        self.assertNotIn("AddV2", op_types)

    def test_shares_the_weights_of_the_model(self):
        model = mixed_model()
        fast = fastconv.fast_input_gradients(model)
        layer = model.get_layer("image_conv")
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * 2.0, bias])
        images = tf.random.normal([2, 14, 13, 3], seed=7)
        self.assertAllClose(fast(images), model(images), atol=1e-6)

    def test_model_without_such_convs_is_returned_as_is(self):
        inputs = keras.Input((8, 8, 3))
        model = keras.Model(inputs, keras.layers.Conv2D(4, 3, strides=2)(inputs))
        self.assertIs(fastconv.fast_input_gradients(model), model)


if __name__ == "__main__":
    tf.test.main()
