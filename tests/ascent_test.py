"""Tests of the compiled OIP ascent against a step-by-step eager reference."""

import re

import helpers
import keras
import numpy as np
import tensorflow as tf

from oipgraph import ascent as ascent_lib
from oipgraph import starts
from oipgraph.ascent import OIPAscent, step
from oipgraph.core.errors import OIPGraphError
from oipgraph.models import fastmodel
from oipgraph.models.loading import load_model


def eager_reference(feature_model, image, map_index, steps, epsilon, conv_criterion):
    """The articles' loop, written straight from the formulas: one image, GradientTape, Python steps."""
    return helpers.eager_reference(
        lambda x: tf.reduce_mean(feature_model(x)[0, :, :, map_index]), image, steps, epsilon, conv_criterion
    )


def tiny_model(input_shape=(12, 12, 1), dead_channel=True) -> keras.Model:
    """Conv(4 maps) -> Conv(3 maps); map 2 of the second conv never fires (bias -100)."""
    with helpers.keras_seed(1):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_a")(inputs)
        x = keras.layers.Conv2D(3, 3, activation="relu", name="conv_b")(x)
        outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x))
        model = keras.Model(inputs, outputs)
        if dead_channel:
            kernel, bias = model.get_layer("conv_b").get_weights()
            bias[2] = -100.0
            model.get_layer("conv_b").set_weights([kernel, bias])
        return model


class AscentMatchesEagerReferenceTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = load_model()

    # Why two tests: a max-pool window whose two largest inputs are one float apart (met on an AVX-512 CPU:
    # Max_Pool_1 of map 0's trajectory at step 40, gap 6e-8) sends the gradient to either input depending
    # on the last bit. The fast formulations round differently from the Keras layers (1e-7), so on the
    # shipped CNN, whose trajectories cross such ties, their loop may leave the reference by 5e-4 at
    # step 40 on one CPU and not on another. So the loop runs the plain layers there (the same arithmetic
    # as the reference: no tie can split them), and the fast formulations follow the reference over a
    # whole trajectory on a model that has no discrete choices (softplus, average pooling).
    def test_compiled_loop_equals_eager_reference_on_shipped_model(self):
        for layer_name, maps in (("Conv2D_3", (0, 5, 77)), ("Conv2D_2", (3, 40))):
            ascent = OIPAscent(self.model, layer_name, fast=False)
            self.assert_loop_follows_eager_reference(ascent, maps, seed=7)

    def test_fast_loop_equals_eager_reference_on_a_smooth_model(self):
        # 15x15: the pooling drops the last row and column of the 13x13 conv output, so the window is 14x14.
        inputs = keras.Input((15, 15, 1))
        x = helpers.seeded_conv(8, 3, "image_conv", 1, activation="softplus")(inputs)
        x = keras.layers.AveragePooling2D(2, name="pool")(x)
        outputs = helpers.seeded_conv(16, 3, "target", 2, activation="softplus")(x)
        ascent = OIPAscent(keras.Model(inputs, outputs), "target")
        # The fast formulations are the ones under test: each pair's map from patches, the image window,
        # and the first conv's col2im gradient.
        self.assertTrue(ascent.objective.sliced)
        self.assertIsNotNone(ascent.objective.image_window)
        self.assertTrue(any(isinstance(layer, fastmodel.FastConv2D) for layer in ascent.objective.model.layers))
        self.assert_loop_follows_eager_reference(ascent, (0, 3, 15), seed=2)

    def assert_loop_follows_eager_reference(self, ascent, maps, seed):
        images = starts.multiscale(starts.start_seeds(seed, range(len(maps))), ascent.image_shape).numpy()
        for conv_criterion in (0.0, ascent_lib.DEFAULT_CONV_CRITERION):
            result = ascent(images, maps, steps=50, epsilon=0.01, conv_criterion=conv_criterion)
            for pair, map_index in enumerate(maps):
                with self.subTest(layer=ascent.layer_name, map_index=map_index, conv_criterion=conv_criterion):
                    image, loss, history, status, steps_run = eager_reference(
                        ascent.feature_model, images[pair], map_index, 50, 0.01, conv_criterion
                    )
                    self.assertAllClose(result.images[pair], image, atol=1e-5, rtol=0)
                    self.assertAllClose(result.loss_history[pair], history, atol=1e-5, rtol=1e-5)
                    self.assertAllClose(result.loss[pair], loss, atol=1e-5, rtol=1e-5)
                    self.assertEqual(result.status[pair], status)
                    self.assertEqual(result.steps_run[pair], steps_run)

    def test_batch_equals_each_pair_alone(self):
        ascent = OIPAscent(self.model, "Conv2D_3")
        maps = np.array([1, 1, 64, 127, 9], np.int32)
        images = starts.multiscale(starts.start_seeds(3, range(len(maps))), ascent.image_shape).numpy()
        # oneDNN may round a batch differently from a single image; after a few dozen steps a
        # max-pool or ReLU tie can turn that rounding into a visible difference, so stay short.
        batch = ascent(images, maps, steps=15)
        for pair, map_index in enumerate(maps):
            alone = ascent(images[pair : pair + 1], [map_index], steps=15)
            self.assertAllClose(batch.images[pair], alone.images[0], atol=1e-5, rtol=0)
            self.assertAllClose(batch.loss_history[pair], alone.loss_history[0], atol=1e-5, rtol=1e-5)
            self.assertEqual(batch.status[pair], alone.status[0])
            self.assertEqual(batch.steps_run[pair], alone.steps_run[0])

    def test_a_pair_gives_the_same_result_alone_and_in_any_batch(self):
        # A batch of one runs other oneDNN kernels; the ascent computes it as a pair (step.never_single),
        # so that map 4's OIP is bit for bit the same from `--maps=4` and from `--maps=0-255`. Batches of
        # step.MIN_SPLIT_BATCH or more run as two halves (step.in_halves), one of them odd-sized here.
        ascent = OIPAscent(self.model, "Conv2D_3")
        maps = np.roll(np.arange(256) % 128, -4).astype(np.int32)
        streams = starts.pair_stream(maps, np.arange(256) // 128)
        images = starts.multiscale(starts.start_seeds(0, streams), ascent.image_shape).numpy()
        whole = ascent(images, maps, steps=200, conv_criterion=0.0)
        for batch in (1, 7, 16, step.MIN_SPLIT_BATCH + 1, 100):
            part = ascent(images[:batch], maps[:batch], steps=200, conv_criterion=0.0)
            with self.subTest(batch=batch):
                self.assertAllEqual(part.images, whole.images[:batch])
                self.assertAllEqual(part.loss_history, whole.loss_history[:batch])
                self.assertAllEqual(part.status, whole.status[:batch])

    def test_stopped_pairs_leave_the_batch_without_changing_any_result(self):
        # Pairs that stop at different steps (no_activation at 11, converged, completed), in two orders:
        # each equals the same pair run alone, where nothing is ever dropped from its batch.
        ascent = OIPAscent(self.model, "Conv2D_3")
        maps = np.array([3, 0, 5, 77, 9, 46, 3, 127], np.int32)
        images = starts.multiscale(starts.start_seeds(4, range(len(maps))), ascent.image_shape).numpy()
        # At 5e-3 maps 46 and 127 converge at step 101 and maps 0, 77 and 9 would at 108-109, so they complete
        # in 105 steps; both kinds keep a few steps' margin against float rounding. Maps 3 and 5 never fire.
        run = lambda images, maps: ascent(images, maps, steps=105, conv_criterion=5e-3)  # noqa: E731
        alone = [run(images[pair : pair + 1], maps[pair : pair + 1]) for pair in range(len(maps))]
        self.assertContainsSubset({0, 1, 2}, {int(result.status[0]) for result in alone})
        for order in (np.arange(len(maps)), np.array([7, 2, 5, 0, 3, 6, 1, 4])):
            batch = run(images[order], maps[order])
            for position, pair in enumerate(order):
                with self.subTest(order=order.tolist(), pair=pair):
                    for field in ("images", "loss", "loss_history", "status", "steps_run", "snapshots"):
                        self.assertAllEqual(getattr(batch, field)[position], getattr(alone[pair], field)[0])

    def test_output_shapes_and_snapshots(self):
        ascent = OIPAscent(self.model, "Conv2D_1", num_snapshots=8)
        images = starts.multiscale(starts.start_seeds(0, range(3)), ascent.image_shape).numpy()
        result = ascent(images, [0, 1, 2], steps=600, conv_criterion=0.0)
        self.assertEqual(result.images.shape, (3, 28, 28, 1))
        self.assertEqual(result.loss_history.shape, (3, 600))
        self.assertEqual(result.snapshots.shape, (3, 8, 28, 28, 1))
        self.assertAllEqual(result.snapshot_steps, [[0, 9, 18, 36, 72, 144, 288, 600]] * 3)
        self.assertAllClose(result.snapshots[:, 0], images)
        self.assertAllClose(result.snapshots[:, -1], result.images)

    def test_changing_batch_size_and_steps_does_not_retrace(self):
        ascent = OIPAscent(self.model, "Conv2D_2")
        for batch, steps in ((1, 3), (5, 7), (2, 12)):
            images = starts.multiscale(starts.start_seeds(batch, range(batch)), ascent.image_shape).numpy()
            ascent(images, [0] * batch, steps=steps)
            ascent.optimize(images, [0] * batch, steps, 0.01, 5e-4, np.zeros([batch, 2], np.int64))
        # The Python entry point runs the loop in segments (start, advance, finish); one trace each.
        for function in (ascent.optimize, ascent._start, ascent._advance, ascent._finish):
            self.assertEqual(function.experimental_get_tracing_count(), 1)


class StoppingTest(tf.test.TestCase):
    def test_dead_map_stops_at_step_11_and_stays_frozen(self):
        ascent = OIPAscent(tiny_model(), "conv_b")
        images = starts.multiscale(starts.start_seeds(0, range(2)), ascent.image_shape).numpy()
        result = ascent(images, [2, 0], steps=40, conv_criterion=0.0)
        self.assertEqual(result.status_names, ["no_activation", "completed"])
        self.assertAllEqual(result.steps_run, [11, 40])
        # A pair that stops makes no update: its image is still the start image.
        self.assertAllClose(result.images[0], images[0])
        self.assertAllEqual(result.loss_history[0], np.zeros(40))
        self.assertAllClose(result.snapshots[0], np.repeat(images[:1], 8, axis=0))
        self.assertGreater(result.loss[1], 0.0)

    def test_saturating_map_converges_and_is_frozen_afterwards(self):
        with helpers.keras_seed(2):
            inputs = keras.Input((8, 8, 1))
            features = keras.layers.Conv2D(1, 8, activation="relu", name="linear_map")(inputs)
        ascent = OIPAscent(keras.Model(inputs, features), "linear_map")
        images = np.abs(starts.multiscale(starts.start_seeds(4, [0]), ascent.image_shape).numpy())
        images = tf.image.per_image_standardization(images).numpy()
        kernel = ascent.feature_model.get_layer("linear_map").kernel.numpy()
        # Start where the map fires: the kernel itself, blurred by noise.
        images[0] = tf.image.per_image_standardization(kernel[..., 0] + 0.5 * images[0]).numpy()
        result = ascent(images, [0], steps=1000, epsilon=0.05)
        self.assertEqual(result.status_names, ["converged"])
        stop = int(result.steps_run[0])
        self.assertLess(stop, 1000)
        self.assertGreater(stop, 14)
        self.assertAllClose(result.loss_history[0, stop - 1 :], np.full(1000 - stop + 1, result.loss[0]), atol=1e-6)
        self.assertAllClose(result.snapshots[0, -1], result.images[0])

    def test_all_pairs_stopped_ends_loop_early_with_full_history(self):
        ascent = OIPAscent(tiny_model(), "conv_b")
        images = starts.multiscale(starts.start_seeds(0, range(3)), ascent.image_shape).numpy()
        result = ascent(images, [2, 2, 2], steps=5000)
        self.assertAllEqual(result.steps_run, [11, 11, 11])
        self.assertEqual(result.loss_history.shape, (3, 5000))


class OtherModelsTest(tf.test.TestCase):
    def test_three_channel_non_square_model(self):
        with helpers.keras_seed(3):
            inputs = keras.Input((16, 20, 3))
            x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inputs)
            x = keras.layers.MaxPooling2D(name="pool")(x)
            x = keras.layers.Conv2D(5, 3, activation="relu", name="c2")(x)
            model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
        for layer_name, num_maps in (("c1", 6), ("c2", 5), ("pool", 6)):
            ascent = OIPAscent(model, layer_name)
            self.assertEqual(ascent.num_maps, num_maps)
            images = starts.fourier(starts.start_seeds(0, range(2)), ascent.image_shape).numpy()
            result = ascent(images, [0, num_maps - 1], steps=20)
            self.assertEqual(result.images.shape, (2, 16, 20, 3))
            self.assertAllClose(np.mean(result.images, axis=(1, 2, 3)), [0.0, 0.0], atol=1e-5)


class ArgumentErrorsTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = load_model()
        cls.ascent = OIPAscent(cls.model, "Conv2D_3")
        cls.images = starts.multiscale(starts.start_seeds(0, range(2)), cls.ascent.image_shape).numpy()

    def test_bad_layers(self):
        for layer_name, kwargs, message in (
            ("Conv2D_9", {}, "unknown layer 'Conv2D_9'"),
            ("image", {}, "layer 'image' is the model's input"),
            (
                "Dense_1",
                dict(objective="channel"),
                "objective 'channel' needs a layer with spatial [B, H, W, C] output",
            ),
            ("Dense_1", dict(objective="neuron"), "objective 'neuron' needs a layer with spatial"),
            ("Conv2D_3", dict(objective="unit"), "objective 'unit' needs a layer with [B, units] output"),
            ("Conv2D_3", dict(objective="pixel"), "unknown objective 'pixel'"),
            ("Conv2D_3", dict(objective="neuron", neuron=(3, 0)), r"neuron (3, 0) is outside the 3x3 maps"),
            ("Conv2D_3", dict(objective="channel", neuron=(1, 1)), "needs the neuron objective"),
        ):
            with (
                self.subTest(layer_name=layer_name, **kwargs),
                self.assertRaisesRegex(OIPGraphError, re.escape(message) if "(" not in message[:3] else message),
            ):
                OIPAscent(self.model, layer_name, **kwargs)

    def test_bad_call_arguments(self):
        nan_images = self.images.copy()
        nan_images[1, 3, 3, 0] = np.nan
        cases = (
            (
                "map out of range",
                dict(map_index=[0, 128]),
                "map index 128 out of range: layer Conv2D_3 has maps 0..127",
            ),
            ("negative map", dict(map_index=[-1, 0]), "map index -1 out of range"),
            ("map count", dict(map_index=[0, 1, 2]), "one entry per image: 3 for 2 images"),
            ("zero steps", dict(steps=0), "steps must be a positive integer, got 0"),
            ("fractional steps", dict(steps=2.5), "steps must be a positive integer, got 2.5"),
            ("zero epsilon", dict(epsilon=0.0), "epsilon must be a finite number > 0, got 0.0"),
            ("nan epsilon", dict(epsilon=float("nan")), "epsilon must be a finite number > 0, got nan"),
            ("nan images", dict(images=nan_images), "images contain NaN or Inf"),
            (
                "wrong size",
                dict(images=np.zeros([2, 27, 28, 1], np.float32)),
                r"images must have shape \[batch, 28, 28, 1\], got \[2, 27, 28, 1\]",
            ),
            ("wrong rank", dict(images=np.zeros([28, 28, 1], np.float32)), r"got \[28, 28, 1\]"),
        )
        for name, overrides, message in cases:
            arguments = dict(images=self.images, map_index=[0, 1], steps=5, epsilon=0.01) | overrides
            with self.subTest(name), self.assertRaisesRegex(OIPGraphError, message):
                self.ascent(**arguments)

    def test_graph_checks_raise_invalid_argument(self):
        cases = (
            (self.images, [0, 200], 5, 0.01, "map_index must be < 128"),
            (self.images, [0, -3], 5, 0.01, "map_index must be >= 0"),
            (self.images[:, :20], [0, 1], 5, 0.01, "images must have shape"),
            (self.images[0], [0, 1], 5, 0.01, r"images must have shape \[batch, 28, 28, 1\]; got shape.*28 28 1"),
            (self.images, [0, 1], 0, 0.01, "steps must be > 0"),
            (self.images, [0, 1], 5, -1.0, "epsilon must be > 0"),
            (np.full_like(self.images, np.nan), [0, 1], 5, 0.01, "images contain NaN or Inf"),
        )
        for images, map_index, steps, epsilon, message in cases:
            with self.subTest(message), self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
                seeds = np.zeros([len(map_index), 2], np.int64)
                self.ascent.optimize(images, tf.constant(map_index, tf.int32), steps, epsilon, 0.0, seeds)


class StartImagesTest(tf.test.TestCase):
    def test_same_seed_same_images_different_seeds_differ(self):
        for make in (starts.multiscale, starts.fourier):
            with self.subTest(make.__name__):
                first = make(starts.start_seeds(5, range(4)), (28, 28, 1)).numpy()
                again = make(starts.start_seeds(5, range(4)), (28, 28, 1)).numpy()
                other = make(starts.start_seeds(6, range(4)), (28, 28, 1)).numpy()
                self.assertAllEqual(first, again)
                self.assertGreater(np.abs(first - other).min(axis=(1, 2, 3)).max(), 0.0)
                self.assertGreater(np.abs(first[0] - first[1]).max(), 0.1)
                self.assertAllClose(first.mean(axis=(1, 2, 3)), np.zeros(4), atol=1e-5)
                self.assertAllClose(first.std(axis=(1, 2, 3)), np.ones(4), atol=1e-3)

    def test_image_depends_only_on_its_seed_not_the_batch(self):
        streams = starts.pair_stream([3, 9, 3], [0, 0, 1])
        batch = starts.multiscale(starts.start_seeds(1, streams), (28, 28, 1)).numpy()
        alone = starts.multiscale(starts.start_seeds(1, streams[1:2]), (28, 28, 1)).numpy()
        self.assertAllEqual(batch[1], alone[0])

    def test_any_number_of_scales_and_channels(self):
        images = starts.multiscale(starts.start_seeds(0, [0, 1]), (10, 12, 3), cells=(2, 5), factors=(1.0, 0.25))
        self.assertEqual(images.shape, (2, 10, 12, 3))
        single_scale = starts.multiscale(starts.start_seeds(0, [0]), (28, 28, 1), cells=(28,), factors=(1.0,))
        self.assertEqual(single_scale.shape, (1, 28, 28, 1))

    def test_coarse_scales_are_smoother(self):
        coarse = starts.multiscale(starts.start_seeds(0, range(8)), (28, 28, 1), cells=(3,), factors=(1.0,)).numpy()
        fine = starts.multiscale(starts.start_seeds(0, range(8)), (28, 28, 1), cells=(28,), factors=(1.0,)).numpy()
        roughness = lambda images: np.abs(np.diff(images, axis=1)).mean()
        self.assertLess(roughness(coarse), 0.5 * roughness(fine))

    def test_bad_scales(self):
        cases = (
            ((), (), "at least one length scale, got an empty list"),
            ((3, 7), (0.5,), r"cells \[3, 7\] and factors \[0.5\] must have the same length"),
            ((3, 0), (0.5, 0.5), "cells must be positive integers, got 0"),
            ((3, -2), (0.5, 0.5), "cells must be positive integers, got -2"),
            ((3, 2.5), (0.5, 0.5), "cells must be positive integers, got 2.5"),
            ((3,), (float("inf"),), "factors must be finite numbers, got inf"),
            ((3, 7), (0.0, 0.0), "factors must not all be zero"),
        )
        for cells, factors, message in cases:
            with self.subTest(message), self.assertRaisesRegex(OIPGraphError, message):
                starts.multiscale(starts.start_seeds(0, [0]), (28, 28, 1), cells=cells, factors=factors)
        with self.assertRaisesRegex(OIPGraphError, "fourier alpha must be a finite number >= 0, got -1"):
            starts.fourier(starts.start_seeds(0, [0]), (28, 28, 1), alpha=-1)


if __name__ == "__main__":
    tf.test.main()
