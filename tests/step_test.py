"""Tests of oipgraph.ascent.step: the step's batch computed as two halves side by side."""

from __future__ import annotations

from unittest import mock

import numpy as np
import tensorflow as tf

from oipgraph import starts
from oipgraph.ascent import OIPAscent, step
from oipgraph.models.loading import load_model


def sizes_seen(batch: int) -> np.ndarray:
    """int32 [batch]: for each image, the batch size of the call of `fn` that computed it in `in_halves`."""

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def run(images):
        def fn(x):
            return (tf.fill([tf.shape(x)[0]], tf.shape(x)[0]),)

        return step.in_halves(fn, images)[0]

    return run(tf.zeros([batch, 3])).numpy()


class InHalvesTest(tf.test.TestCase):
    def test_batches_from_the_threshold_on_run_as_two_halves(self):
        threshold = step.MIN_SPLIT_BATCH
        for batch, expected in (
            (1, [1]),
            (threshold - 1, [threshold - 1] * (threshold - 1)),
            (threshold, [threshold // 2] * threshold),
            (threshold + 1, [threshold // 2] * (threshold // 2) + [threshold // 2 + 1] * (threshold // 2 + 1)),
            (100, [50] * 100),
        ):
            with self.subTest(batch=batch):
                self.assertAllEqual(sizes_seen(batch), expected)

    def test_no_split_where_tensorflow_sees_a_gpu(self):
        gpu = [tf.config.LogicalDevice("/device:GPU:0", "GPU")]
        with mock.patch.object(tf.config, "list_logical_devices", return_value=gpu):
            self.assertAllEqual(sizes_seen(100), [100] * 100)

    def test_halves_give_the_batch_result_bit_for_bit(self):
        # Per-pair targets (the ascent) and one shared target (the precursor scan), both over the threshold,
        # with an odd batch so that the halves differ in size.
        ascent = OIPAscent(load_model(), "Conv2D_3")
        batch = 2 * step.MIN_SPLIT_BATCH + 1
        maps = np.arange(batch, dtype=np.int32) % 128
        images = starts.multiscale(starts.start_seeds(0, maps), ascent.image_shape)
        seeds = tf.zeros([batch, 2], tf.int64)
        for shared_target, target in ((False, tf.constant(maps)), (True, tf.constant(7))):
            ascent_step = step.AscentStep(ascent.objective, ascent.image_shape, shared_target=shared_target)
            with self.subTest(shared_target=shared_target):
                loss, gradient = ascent_step.loss_and_gradient(images, target, seeds, tf.constant(0))
                whole_loss, whole_gradient = ascent_step._batch_step(images, target, seeds, tf.constant(0))
                self.assertAllEqual(loss, whole_loss)
                self.assertAllEqual(gradient, whole_gradient)
                self.assertGreater(float(tf.reduce_max(tf.abs(gradient))), 0.0)


if __name__ == "__main__":
    tf.test.main()
