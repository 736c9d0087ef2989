"""The bounds of `oipgraph.core.limits`: Python checks (OIPGraphError) and in-graph checks (InvalidArgumentError)."""

import re

import numpy as np
import tensorflow as tf
from helpers import SIZE, large_scale_model

from oipgraph.ascent import OIPAscent
from oipgraph.core import limits
from oipgraph.core.errors import OIPGraphError
from oipgraph.strategies.precursor import PrecursorScan


class PythonChecksTest(tf.test.TestCase):
    def test_values_at_the_bounds_pass(self):
        self.assertEqual(limits.check_steps("steps", limits.MAX_STEPS), limits.MAX_STEPS)
        self.assertEqual(limits.check_batch("batch", limits.MAX_BATCH, (28, 28, 1)), limits.MAX_BATCH)
        limits.check_step_pairs(limits.MAX_STEP_PAIRS // 256, 256)
        self.assertEqual(limits.check_int64("seed", -(2**63)), -(2**63))
        self.assertEqual(limits.check_epsilon("epsilon", limits.MAX_EPSILON), limits.MAX_EPSILON)
        self.assertEqual(limits.check_epsilon("epsilon", limits.FLOAT32_TINY), limits.FLOAT32_TINY)
        limits.check_pixels("images", np.full([1, 2, 2, 1], limits.MAX_PIXEL_MAGNITUDE, np.float32))

    def test_values_beyond_the_bounds_name_input_and_bound(self):
        cases = [
            (lambda: limits.check_steps("--steps", 2**31), "--steps=2147483648 is above the limit of 100000"),
            (lambda: limits.check_steps("--steps", 0), "--steps must be a positive integer, got 0"),
            (lambda: limits.check_steps("steps", 2.5), "steps must be a positive integer, got 2.5"),
            (lambda: limits.check_steps("steps", True), "steps must be a positive integer, got True"),
            (lambda: limits.check_batch("batch", 4097, (28, 28, 1)), "batch=4097 is above the limit of 4096"),
            # Larger images: at most 2^26 floats per request.
            (lambda: limits.check_batch("batch", 446, (224, 224, 3)), "batch=446 is above the limit of 445"),
            (lambda: limits.check_step_pairs(4097, 4096), "batch x steps = 4096 x 4097 = 16781312 loss values"),
            (lambda: limits.check_int64("--seed", 2**63), "--seed=9223372036854775808 is above the limit"),
            (lambda: limits.check_epsilon("--epsilon", 1e39), "--epsilon=1e+39 is above the limit of 100"),
            (lambda: limits.check_epsilon("--epsilon", 1e-46), "--epsilon=1e-46 is 0 in float32"),
            (lambda: limits.check_epsilon("--epsilon", float("inf")), "--epsilon must be a finite number > 0"),
            (lambda: limits.check_float32("--conv_criterion", 1e39), "--conv_criterion must be a finite float32"),
            (
                lambda: limits.check_pixels("images", np.full([1, 2, 2, 1], 3e38, np.float32)),
                "images hold a pixel of magnitude 3e+38, above the limit of 1e+06",
            ),
            (lambda: limits.check_pixels("images", np.full([1], np.nan)), "images contain NaN or Inf"),
        ]
        for check, message in cases:
            with self.subTest(message=message):
                with self.assertRaises(OIPGraphError) as raised:
                    check()
                self.assertIn(message, str(raised.exception))
                self.assertNotIn("\n", str(raised.exception))

    def test_max_batch_keeps_request_images_bounded(self):
        self.assertEqual(limits.max_batch((28, 28, 1)), limits.MAX_BATCH)
        self.assertEqual(limits.max_batch((224, 224, 3)), 2**26 // (224 * 224 * 3))
        self.assertEqual(limits.max_batch((10_000, 10_000, 3)), 1)


class LibraryBoundsTest(tf.test.TestCase):
    """The ascent and the precursor scan refuse out-of-bound arguments in Python and in the graph."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ascent = OIPAscent(large_scale_model(), "conv")
        cls.images = np.zeros([2, SIZE, SIZE, 1], np.float32)

    def test_ascent_python_checks(self):
        cases = [
            (dict(steps=limits.MAX_STEPS + 1), "steps=100001 is above the limit of 100000"),
            (dict(epsilon=1e30), "epsilon=1e+30 is above the limit of 100"),
            (dict(images=np.full([2, SIZE, SIZE, 1], 3e38, np.float32)), "images hold a pixel of magnitude 3e+38"),
            (dict(images=np.zeros([0, SIZE, SIZE, 1], np.float32), map_index=[]), "must be a positive integer, got 0"),
            (
                dict(images=np.zeros([4097, SIZE, SIZE, 1], np.float32), map_index=0),
                "images batch (pairs per request)=4097 is above the limit of 4096",
            ),
            (
                dict(images=np.zeros([4096, SIZE, SIZE, 1], np.float32), map_index=0, steps=4097),
                "batch x steps = 4096 x 4097",
            ),
        ]
        for changes, message in cases:
            arguments = {"images": self.images, "map_index": [0, 1], "steps": 5, **changes}
            with self.subTest(message=message):
                with self.assertRaisesRegex(OIPGraphError, re.escape(message)):
                    self.ascent(**arguments)

    def test_ascent_graph_checks_before_allocating(self):
        good = dict(
            images=tf.constant(self.images),
            map_index=tf.constant([0, 1]),
            steps=tf.constant(5),
            epsilon=tf.constant(0.01),
            conv_criterion=tf.constant(0.0),
            seeds=tf.zeros([2, 2], tf.int64),
        )
        cases = [
            (dict(steps=tf.constant(2**31 - 1)), r"steps must be <= 100000"),
            (dict(epsilon=tf.constant(1e30)), r"epsilon must be <= 100"),
            (dict(images=tf.fill([2, SIZE, SIZE, 1], 3e38)), r"images pixel magnitude must be <= 1e\+06"),
            (
                dict(
                    images=tf.zeros([0, SIZE, SIZE, 1]),
                    map_index=tf.zeros([0], tf.int32),
                    seeds=tf.zeros([0, 2], tf.int64),
                ),
                r"must be > 0",
            ),
            (
                dict(
                    images=tf.zeros([4096, SIZE, SIZE, 1]),
                    map_index=tf.zeros([4096], tf.int32),
                    steps=4097,
                    seeds=tf.zeros([4096, 2], tf.int64),
                ),
                r"batch x steps \(the values of loss_history\) must be <= 16777216",
            ),
        ]
        for changes, message in cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
                    self.ascent.optimize(**{**good, **changes})

    def test_precursor_bounds(self):
        scan = PrecursorScan(self.ascent, values=(0.2, 0.8))
        with self.assertRaisesRegex(OIPGraphError, "scan_steps=1001 is above the limit of 1000"):
            scan.run(0, scan_steps=1001)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "scan_steps must be <= 1000"):
            scan.scan(tf.constant(0), tf.constant(2**31 - 1), tf.constant(2))
        big = PrecursorScan(self.ascent, grid=4, values=(0.2, 0.8))  # 65,536 patterns.
        with self.assertRaisesRegex(OIPGraphError, "top_n=1025 is above the limit of 1024"):
            big.run(0, scan_steps=1, top_n=1025)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "top_n must be <= 1024"):
            big.scan(tf.constant(0), tf.constant(1), tf.constant(1025))


if __name__ == "__main__":
    tf.test.main()
