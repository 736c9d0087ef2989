"""Tests of the col2im convolution pieces: equal values and input gradients to TensorFlow's own ops."""

from unittest import mock

import numpy as np
import tensorflow as tf
from helpers import input_gradient

from oipgraph.models import fastconv


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
        # Both formulations: gathered_pair_conv (small maps) and image_patches (above the matrix bound).
        rng = np.random.default_rng(2)
        for size, kernel_size, channels in (((5, 5), (3, 3), 6), ((4, 6), (2, 3), 1), ((9, 8), (3, 3), 2)):
            for bound in (fastconv.MAX_READ_MATRIX_ENTRIES, 0):
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

                    with mock.patch.object(fastconv, "MAX_READ_MATRIX_ENTRIES", bound):
                        outputs, gradient = input_gradient(
                            lambda x: fastconv.per_pair_conv(x, kernels, kernel_size), inputs, upstream
                        )
                        _, kernel_gradient = input_gradient(
                            lambda k: fastconv.per_pair_conv(inputs, k, kernel_size), kernels, upstream
                        )
                    expected, expected_gradient = input_gradient(reference, inputs, upstream)
                    self.assertAllClose(outputs, expected, atol=1e-5)
                    self.assertAllClose(gradient, expected_gradient, atol=1e-5)
                    # d kernels[b, t, c] = sum over outputs of upstream times the input each tap reads.
                    patches = tf.image.extract_patches(
                        inputs, [1, *kernel_size, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID"
                    )
                    expected_kernel = tf.einsum("byx,byxk->bk", upstream, patches)
                    self.assertAllClose(kernel_gradient, tf.reshape(expected_kernel, kernels.shape), atol=1e-4)

    def test_per_pair_conv_of_an_image_does_not_depend_on_its_batch(self):
        # A batched matmul per image ([h*w, C] x [C, taps]) rounded differently at batch sizes that are not
        # multiples of 8 under oneDNN; the matrix-vector product of the gathered patches does not.
        rng = np.random.default_rng(3)
        inputs = tf.constant(rng.normal(size=[96, 5, 5, 64]), tf.float32)
        kernels = tf.constant(rng.normal(size=[96, 9, 64]), tf.float32)
        # An unknown batch size, as in the ascent's step function.
        conv = tf.function(
            lambda x, k: input_gradient(lambda y: fastconv.per_pair_conv(y, k, (3, 3)), x, None),
            input_signature=[tf.TensorSpec([None, 5, 5, 64]), tf.TensorSpec([None, 9, 64])],
        )
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


if __name__ == "__main__":
    tf.test.main()
