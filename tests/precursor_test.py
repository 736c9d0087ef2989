"""Tests of the precursor scan: pattern enumeration, chunking, halving, the sliced objective, errors."""

import itertools

import helpers
import keras
import numpy as np
import tensorflow as tf

from oipgraph.ascent import OIPAscent, ascent_update, loss_and_gradient
from oipgraph.core.errors import OIPGraphError
from oipgraph.models.fastconv import can_slice_channels
from oipgraph.models.loading import load_model
from oipgraph.strategies.precursor import PrecursorScan

VALUES = (0.2, 0.5, 0.8)


def small_cnn(input_shape=(10, 10, 1), top_activation="relu") -> keras.Model:
    """Conv(3 maps) -> MaxPool -> Conv(4 maps) with seeded random weights."""
    with helpers.keras_seed(3):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(3, 3, activation="relu", name="conv_a")(inputs)
        x = keras.layers.MaxPooling2D(2, name="pool")(x)
        x = keras.layers.Conv2D(4, 2, activation=top_activation, name="conv_b")(x)
        return keras.Model(inputs, x)


def reference_scores(ascent: OIPAscent, images: tf.Tensor, map_index: int, steps: int) -> np.ndarray:
    """Every image's loss after `steps` plain ascent steps on the full layer (no slicing, no dropping)."""
    maps = tf.fill([tf.shape(images)[0]], map_index)
    x = images
    for _ in range(steps):
        _, gradient = loss_and_gradient(lambda batch: ascent.map_loss(batch, maps), x)
        x = ascent_update(x, gradient, 0.01)
    return ascent.map_loss(x, maps).numpy()


class PatternTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ascent = OIPAscent(small_cnn(), "conv_b")

    def test_enumeration_is_exact(self):
        scan = PrecursorScan(self.ascent, grid=2, values=VALUES)
        self.assertEqual(scan.num_patterns, 81)
        cells = scan.cell_values(tf.range(scan.num_patterns)).numpy()
        self.assertEqual(cells.shape, (81, 2, 2))
        self.assertLen({tuple(pattern.ravel()) for pattern in cells}, 81)
        self.assertAllInSet(cells.ravel(), np.float32(VALUES))
        # Base-3 digits, cell (0, 0) most significant: 5 = 0*27 + 0*9 + 1*3 + 2.
        self.assertAllClose(cells[5], [[0.2, 0.2], [0.5, 0.8]])
        self.assertAllClose(cells[80], [[0.8, 0.8], [0.8, 0.8]])
        self.assertAllClose(cells[27], [[0.5, 0.2], [0.2, 0.2]])
        # Every combination appears exactly once, in base-3 order.
        expected = np.float32(VALUES)[np.array(list(itertools.product(range(3), repeat=4)))].reshape(81, 2, 2)
        self.assertAllEqual(cells, expected)

    def test_images_are_upscaled_standardized_cells(self):
        scan = PrecursorScan(self.ascent, grid=3, values=(0.1, 0.9))
        index = tf.constant([0, 5, 300, 510])
        images = scan.patterns(index).numpy()
        self.assertEqual(images.shape, (4, 10, 10, 1))
        cells = scan.cell_values(index)[..., None]
        expected = tf.image.per_image_standardization(
            tf.image.resize(cells, [10, 10], method="bicubic", antialias=True)
        )
        self.assertAllClose(images, expected)
        self.assertAllClose(images[1:].mean(axis=(1, 2, 3)), np.zeros(3), atol=1e-5)
        self.assertAllClose(images[1:].std(axis=(1, 2, 3)), np.ones(3), atol=1e-3)
        # Non-constant patterns give distinct images (constant ones all standardize to 0).
        non_constant = scan.patterns(tf.range(1, scan.num_patterns - 1)).numpy().reshape(scan.num_patterns - 2, -1)
        self.assertLen(np.unique(non_constant.round(5), axis=0), scan.num_patterns - 2)

    def test_three_channel_models_get_the_same_value_on_every_channel(self):
        ascent = OIPAscent(small_cnn(input_shape=(10, 10, 3)), "conv_b")
        images = PrecursorScan(ascent, grid=2).patterns(tf.constant([7, 40])).numpy()
        self.assertEqual(images.shape, (2, 10, 10, 3))
        self.assertAllClose(images[..., 1], images[..., 0])
        self.assertAllClose(images[..., 2], images[..., 0])


class ScanTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ascent = OIPAscent(small_cnn(), "conv_b")

    def test_scores_follow_the_ascent_formulas(self):
        scan = PrecursorScan(self.ascent, grid=2, halving_steps=0)
        index = tf.range(scan.num_patterns)
        for map_index in range(self.ascent.num_maps):
            scores = scan.score_patterns(index, tf.constant(map_index), tf.constant(4)).numpy()
            expected = reference_scores(self.ascent, scan.patterns(index), map_index, 4)
            self.assertAllClose(scores, expected, atol=1e-5, rtol=1e-5)

    def test_chunked_scan_equals_one_unchunked_scan(self):
        whole = PrecursorScan(self.ascent, grid=2, chunk_size=81, halving_steps=0)
        self.assertEqual(whole.chunk_size, 81)
        chunked_scans = {
            size: PrecursorScan(self.ascent, grid=2, chunk_size=size, halving_steps=0) for size in (1, 7, 40)
        }
        for map_index in range(self.ascent.num_maps):
            want = whole.scan(map_index, 5, 6)
            expected = reference_scores(self.ascent, whole.patterns(tf.range(81)), map_index, 5)
            order = np.argsort(-expected, kind="stable")[:6]
            self.assertAllClose(want["scores"], expected[order], atol=1e-5, rtol=1e-5)
            for chunk_size, chunked in chunked_scans.items():
                with self.subTest(map_index=map_index, chunk_size=chunk_size):
                    got = chunked.scan(map_index, 5, 6)
                    self.assertAllEqual(got["pattern_index"], want["pattern_index"])
                    self.assertAllClose(got["scores"], want["scores"], atol=1e-6, rtol=0)
                    self.assertAllClose(got["images"], whole.patterns(want["pattern_index"]))

    def test_scan_output_shapes_and_order(self):
        scan = PrecursorScan(self.ascent, grid=2, chunk_size=10)
        out = scan.scan(1, 3, 8)
        self.assertEqual(out["images"].shape, (8, 10, 10, 1))
        self.assertEqual(out["scores"].shape, (8,))
        self.assertEqual(out["pattern_index"].dtype, tf.int32)
        scores = out["scores"].numpy()
        self.assertTrue(np.all(scores[:-1] >= scores[1:]))
        self.assertAllClose(out["images"], scan.patterns(out["pattern_index"]))

    def test_python_run_equals_graph_scan(self):
        for halving in ({"halving_steps": 0}, {"halving_steps": 2, "halving_keep": 12, "halving_keep_per_result": 2}):
            scan = PrecursorScan(self.ascent, grid=2, chunk_size=16, **halving)
            for map_index in (0, 3):
                with self.subTest(map_index=map_index, **halving):
                    graph = scan.scan(map_index, 6, 5)
                    python = scan.run(map_index, scan_steps=6, top_n=5, verbose=False)
                    self.assertAllEqual(python.pattern_index, graph["pattern_index"])
                    self.assertAllEqual(python.scores, graph["scores"])
                    self.assertAllEqual(python.images, graph["images"])

    def test_halving_prunes_only_when_it_can_drop_patterns(self):
        scan = PrecursorScan(self.ascent, grid=2, halving_steps=2, halving_keep=12, halving_keep_per_result=2)
        self.assertTrue(bool(scan.prunes(10, 5)))
        self.assertEqual(int(scan.pool_size(5)), 12)
        self.assertEqual(int(scan.pool_size(20)), 40)
        self.assertFalse(bool(scan.prunes(2, 5)))  # no steps left after the ranking
        self.assertFalse(bool(scan.prunes(10, 41)))  # would keep all 81
        default = PrecursorScan(self.ascent, grid=2)
        self.assertFalse(bool(default.prunes(10, 8)))  # 81 patterns < 1024 kept

    def test_dead_starts_are_dropped_with_score_zero(self):
        model = small_cnn()
        kernel, bias = model.get_layer("conv_b").get_weights()
        bias[2] = -100.0
        model.get_layer("conv_b").set_weights([kernel, bias])
        scan = PrecursorScan(OIPAscent(model, "conv_b"), grid=2)
        out = scan.scan(2, 10, 4)
        self.assertAllEqual(out["scores"], np.zeros(4))
        self.assertAllEqual(out["pattern_index"], [0, 1, 2, 3])


class SlicedObjectiveTest(tf.test.TestCase):
    def test_sliced_kernel_equals_full_layer_on_shipped_model(self):
        model = load_model()
        images = PrecursorScan(OIPAscent(model, "Conv2D_1"), grid=3).patterns(tf.constant([5, 999, 12345, 19000]))
        for layer_name, maps in (("Conv2D_3", (0, 9, 127)), ("Conv2D_1", (0, 31))):
            ascent = OIPAscent(model, layer_name)
            self.assertTrue(ascent.objective.shared_sliced)
            for map_index in maps:
                with self.subTest(layer=layer_name, map_index=map_index):
                    full = ascent.map_loss(images, tf.fill([4], map_index))
                    shared = ascent.objective.shared_target(images, tf.constant(map_index))
                    self.assertAllClose(shared, full, atol=1e-6, rtol=1e-6)

    def test_other_layers_fall_back_to_the_full_feature_model(self):
        for activation in ("softmax", None):
            model = small_cnn(top_activation=activation)
            ascent = OIPAscent(model, "conv_b")
            self.assertEqual(ascent.objective.shared_sliced, activation is None)
            images = PrecursorScan(ascent, grid=2).patterns(tf.range(5, 9))
            for map_index in range(4):
                full = ascent.map_loss(images, tf.fill([4], map_index))
                self.assertAllClose(ascent.objective.shared_target(images, tf.constant(map_index)), full, atol=1e-6)
        pool = OIPAscent(small_cnn(), "pool")
        self.assertFalse(can_slice_channels(pool.feature_model.get_layer("pool")))
        self.assertFalse(pool.objective.shared_sliced)


class ColorPatternTest(tf.test.TestCase):
    def test_colour_patterns_follow_the_gray_ones(self):
        ascent = OIPAscent(small_cnn(input_shape=(10, 10, 3)), "conv_b")
        colors = ((1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (1.0, -1.0, 0.0))
        scan = PrecursorScan(ascent, grid=2, values=(0.2, 0.8), colors=colors)
        self.assertEqual((scan.cell_patterns, scan.num_patterns, scan.repeated_patterns), (16, 48, 3))
        gray = PrecursorScan(ascent, grid=2, values=(0.2, 0.8))
        self.assertEqual(gray.colors, ((1.0, 1.0, 1.0),))
        self.assertAllEqual(scan.patterns(tf.range(16)), gray.patterns(tf.range(16)))
        cells = tf.image.resize(scan.cell_values(tf.constant([5]))[..., None], [10, 10], "bicubic", antialias=True)
        for color_index, color in enumerate(colors):
            with self.subTest(color=color):
                expected = tf.image.per_image_standardization(cells * tf.constant(color))
                self.assertAllClose(scan.patterns(tf.constant([16 * color_index + 5])), expected, atol=1e-5)
        # A constant cell grid in a colour is a colour, not the zero image; in gray it is zero.
        self.assertAllEqual(scan.patterns(tf.constant([0])), tf.zeros([1, 10, 10, 3]))
        red = scan.patterns(tf.constant([16])).numpy()
        self.assertGreater(red[..., 0].mean(), 0.5)
        self.assertLess(red[..., 1].mean(), 0.0)

    def test_bad_colours(self):
        ascent = OIPAscent(small_cnn(input_shape=(10, 10, 3)), "conv_b")
        for colors, message in (
            ((), "at least one colour"),
            (((1.0, 0.0),), r"colour \[1.0, 0.0\] must be 3 finite values"),
            (((0.0, 0.0, 0.0),), "not all zero"),
            (((1.0, float("nan"), 0.0),), "must be 3 finite values"),
            (((1.0, 0.0, 0.0), (1.0, 0.0, 0.0)), "colors must be distinct"),
            ("red", "colors must be a list of per-channel value lists"),
        ):
            with self.subTest(colors=colors), self.assertRaisesRegex(OIPGraphError, message):
                PrecursorScan(ascent, grid=2, colors=colors)


class ErrorTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ascent = OIPAscent(small_cnn(), "conv_b")
        cls.scan = PrecursorScan(cls.ascent, grid=2)

    def assert_one_line(self, error: Exception, *parts: str) -> None:
        message = str(error)
        self.assertNotIn("\n", message)
        for part in parts:
            self.assertIn(part, message)

    def test_bad_constructor_arguments(self):
        cases = [
            ({"grid": 0}, ("grid", "0")),
            ({"grid": -2}, ("grid", "-2")),
            ({"grid": 2.5}, ("grid", "2.5")),
            ({"values": ()}, ("values", "empty")),
            ({"values": (0.2, float("nan"))}, ("values", "nan")),
            ({"values": (0.2, 0.2)}, ("values", "distinct")),
            ({"chunk_size": 0}, ("chunk_size", "0")),
            ({"chunk_size": 10**9}, ("chunk_size", "1000000000")),
            ({"grid": 6}, ("grid 6", "patterns")),
            ({"halving_steps": -1}, ("halving_steps", "-1")),
            ({"epsilon": 0.0}, ("epsilon", "0.0")),
        ]
        for kwargs, parts in cases:
            with self.subTest(**{key: repr(value) for key, value in kwargs.items()}):
                with self.assertRaises(OIPGraphError) as caught:
                    PrecursorScan(self.ascent, **kwargs)
                self.assert_one_line(caught.exception, *parts)

    def test_bad_run_arguments(self):
        cases = [
            ({"map_index": 4}, ("map index 4", "conv_b", "0..3")),
            ({"map_index": -1}, ("map index -1",)),
            ({"map_index": 0, "top_n": 82}, ("top_n 82", "81")),
            ({"map_index": 0, "top_n": 0}, ("top_n", "0")),
            ({"map_index": 0, "scan_steps": 0}, ("scan_steps", "0")),
            ({"map_index": 0, "scan_steps": -3}, ("scan_steps", "-3")),
        ]
        for kwargs, parts in cases:
            with self.subTest(**kwargs):
                with self.assertRaises(OIPGraphError) as caught:
                    self.scan.run(**kwargs)
                self.assert_one_line(caught.exception, *parts)

    def test_bad_scan_inputs_raise_invalid_argument_naming_the_input(self):
        cases = [
            ((4, 10, 8), "map_index must be < 4"),
            ((-1, 10, 8), "map_index must be >= 0"),
            ((0, 0, 8), "scan_steps must be > 0"),
            ((0, 10, 0), "top_n must be > 0"),
            ((0, 10, 82), "top_n must be <= 81"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
                    self.scan.scan(*args)


if __name__ == "__main__":
    tf.test.main()
