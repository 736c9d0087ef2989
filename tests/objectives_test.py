"""Tests of the objectives (neuron, unit, minimize), the stop rules for any sign, and the transforms."""

import helpers
import keras
import numpy as np
import tensorflow as tf
from helpers import eager_reference

from oipgraph import starts
from oipgraph.ascent import STATUS_COMPLETED, STATUS_CONVERGED, STATUS_NO_ACTIVATION, OIPAscent
from oipgraph.ascent import step as step_lib
from oipgraph.ascent.transforms import Transforms
from oipgraph.core.errors import OIPGraphError
from oipgraph.models.loading import load_model
from oipgraph.objectives import Minimize, NeuronObjective, UnitObjective, build_objective
from oipgraph.strategies import StrategySettings, create_oips


def linear_conv_model() -> keras.Model:
    """Conv(relu) -> Conv(linear, 4 maps) -> Dense(3, softmax): objectives whose values can be negative."""
    with helpers.keras_seed(3):
        inputs = keras.Input((12, 12, 1))
        x = keras.layers.Conv2D(6, 3, activation="relu", name="conv_a")(inputs)
        x = keras.layers.Conv2D(4, 3, name="linear")(x)
        outputs = keras.layers.Dense(3, activation="softmax", name="head")(keras.layers.Flatten()(x))
        model = keras.Model(inputs, outputs)
        model.get_layer("linear").bias.assign([-0.5, -0.2, 0.0, 0.3])
        return model


class EagerReferenceTest(tf.test.TestCase):
    """neuron, unit and minimize follow the formulas step by step (50 steps, 1e-5), like the channel test."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = load_model()

    def assert_matches(self, ascent, targets, loss_of, conv_criterion=0.0):
        images = starts.multiscale(starts.start_seeds(11, range(len(targets))), ascent.image_shape).numpy()
        result = ascent(images, targets, steps=50, epsilon=0.01, conv_criterion=conv_criterion)
        for pair, target in enumerate(targets):
            with self.subTest(objective=ascent.objective.name, target=target):
                image, loss, history, status, steps_run = eager_reference(
                    lambda x, target=target: loss_of(x, target), images[pair], 50, 0.01, conv_criterion
                )
                self.assertAllClose(result.images[pair], image, atol=1e-5, rtol=0)
                self.assertAllClose(result.loss_history[pair], history, atol=1e-5, rtol=1e-5)
                self.assertAllClose(result.loss[pair], loss, atol=1e-5, rtol=1e-5)
                self.assertEqual(result.status[pair], status)
                self.assertEqual(result.steps_run[pair], steps_run)

    def test_neuron(self):
        features = keras.Model(self.model.inputs[0], self.model.get_layer("Conv2D_2").output)
        for position in ((5, 5), (0, 10)):
            ascent = OIPAscent(self.model, "Conv2D_2", objective="neuron", neuron=position)
            row, col = position
            self.assert_matches(ascent, [0, 7, 40], lambda x, target: features(x)[0, row, col, target])

    def test_unit_logit_of_a_softmax_layer(self):
        ascent = OIPAscent(self.model, "Dense_2")
        self.assertEqual(ascent.objective.name, "unit_logit")
        dense = self.model.get_layer("Dense_2")
        before = keras.Model(self.model.inputs[0], dense.input)

        def logit(x, target):
            return (before(x) @ dense.kernel + dense.bias)[0, target]

        self.assert_matches(ascent, [0, 3, 9], logit, conv_criterion=5e-4)

    def test_unit_of_a_relu_dense_layer(self):
        ascent = OIPAscent(self.model, "Dense_1")
        self.assertEqual(ascent.objective.name, "unit")
        features = keras.Model(self.model.inputs[0], self.model.get_layer("Dense_1").output)
        self.assert_matches(ascent, [0, 33, 69], lambda x, target: features(x)[0, target])

    def test_minimize(self):
        model = linear_conv_model()
        ascent = OIPAscent(model, "linear", minimize=True)
        self.assertEqual(ascent.objective.name, "minimize(channel)")
        features = keras.Model(model.inputs[0], model.get_layer("linear").output)
        self.assert_matches(
            ascent, [0, 1, 3], lambda x, target: -tf.reduce_mean(features(x)[0, :, :, target]), conv_criterion=5e-4
        )


class ClassOIPTest(tf.test.TestCase):
    def test_class_oips_of_the_shipped_cnn_are_classified_as_their_class(self):
        model = load_model()
        ascent = OIPAscent(model, "Dense_2")
        run = create_oips(ascent, range(10), "random", seed=0, settings=StrategySettings(steps=300))
        probabilities = model(run.result.images).numpy()
        self.assertAllEqual(probabilities.argmax(axis=1), np.arange(10))
        self.assertAllGreaterEqual(probabilities[np.arange(10), np.arange(10)], 0.99)


class StopRuleTest(tf.test.TestCase):
    def test_a_rising_negative_loss_never_counts_as_converged(self):
        model = linear_conv_model()
        ascent = OIPAscent(model, "linear")
        self.assertFalse(ascent.objective.nonnegative)
        images = starts.multiscale(starts.start_seeds(0, range(8)), ascent.image_shape).numpy()
        maps = [0, 1, 2, 3] * 2
        result = ascent(images, maps, steps=60, epsilon=0.01, conv_criterion=5e-4)
        # The case the rule is for: a pair whose loss is negative and rising after step 10, which
        # the old rule, (loss - loss_prev) / (loss + 1e-7) < criterion, took for converged.
        history = result.loss_history
        rising_negative = (history[:, 11:16] < 0).all(axis=1) & (np.diff(history[:, 10:16], axis=1) > 0).all(axis=1)
        self.assertTrue(rising_negative.any(), history[:, :16])
        for pair in np.flatnonzero(rising_negative):
            self.assertNotEqual(result.status[pair], STATUS_CONVERGED)
            self.assertGreater(result.steps_run[pair], 15)
        for pair in range(len(maps)):
            history = result.loss_history[pair]
            if result.status[pair] == STATUS_CONVERGED:
                stop = result.steps_run[pair]
                # Converged means the last 4 relative changes were below the criterion, measured against |loss|.
                changes = np.diff(history[stop - 5 : stop]) / (np.abs(history[stop - 4 : stop]) + 1e-7)
                self.assertTrue(np.all(changes < 5e-4), (pair, history[: stop + 1]))
            self.assertNotEqual(result.status[pair], STATUS_NO_ACTIVATION)

    def test_fired_is_defined_per_objective(self):
        model = linear_conv_model()
        linear = build_objective(model, "linear")
        relu = build_objective(model, "conv_a")
        loss, status = np.array([-0.5, 0.0, 0.2]), np.array([STATUS_COMPLETED, STATUS_COMPLETED, STATUS_NO_ACTIVATION])
        self.assertAllEqual(linear.fired(loss, status), [True, True, False])
        self.assertAllEqual(relu.fired(loss, status), [False, False, False])
        self.assertAllEqual(relu.fired(np.array([0.3]), np.array([STATUS_CONVERGED])), [True])
        self.assertAllEqual(Minimize(relu).fired(loss, status), [True, True, False])


class NeuronTest(tf.test.TestCase):
    def test_the_neuron_ends_as_the_largest_value_of_its_map(self):
        model = load_model()
        checked = 0
        for layer_name, position in (("Conv2D_1", (2, 3)), ("Conv2D_2", (8, 6))):
            features = keras.Model(model.inputs[0], model.get_layer(layer_name).output)
            ascent = OIPAscent(model, layer_name, objective="neuron", neuron=position)
            images = starts.multiscale(starts.start_seeds(1, range(3)), ascent.image_shape).numpy()
            result = ascent(images, [1, 5, 20], steps=300, conv_criterion=0.0)
            maps = tf.gather(features(result.images), [1, 5, 20], axis=3, batch_dims=1).numpy()
            # A neuron that never fired for its start (no_activation) has no OIP to judge.
            for pair in np.flatnonzero(ascent.objective.fired(result.loss, result.status)):
                with self.subTest(layer_name=layer_name, pair=pair):
                    self.assertEqual(np.unravel_index(maps[pair].argmax(), maps[pair].shape), position)
                    checked += 1
        self.assertGreaterEqual(checked, 4)

    def test_default_position_is_the_centre_and_fast_equals_plain(self):
        model = load_model()
        objective = build_objective(model, "Conv2D_2", "neuron")
        self.assertIsInstance(objective, NeuronObjective)
        self.assertEqual(objective.position, (5, 5))
        plain = build_objective(model, "Conv2D_2", "neuron", fast=False)
        images = starts.multiscale(starts.start_seeds(0, range(4)), (28, 28, 1))
        target = tf.constant([0, 9, 9, 63])
        fast_loss, fast_gradient = step_lib.loss_and_gradient(lambda x: objective(x, target), images)
        plain_loss, plain_gradient = step_lib.loss_and_gradient(lambda x: plain(x, target), images)
        self.assertAllClose(fast_loss, plain_loss, atol=1e-6)
        self.assertAllClose(fast_gradient, plain_gradient, atol=1e-6)

    def test_all_targets_match_each_target(self):
        model = load_model()
        images = starts.multiscale(starts.start_seeds(0, range(3)), (28, 28, 1))
        for layer_name, kind in (("Conv2D_3", "channel"), ("Conv2D_2", "neuron"), ("Dense_2", "unit")):
            objective = build_objective(model, layer_name, kind)
            every = objective.all_targets(images).numpy()
            self.assertEqual(every.shape, (3, objective.num_targets))
            for target in (0, objective.num_targets - 1):
                with self.subTest(layer_name=layer_name, target=target):
                    self.assertAllClose(every[:, target], objective(images, tf.fill([3], target)), atol=1e-5)


class TransformsTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = load_model()
        cls.images = starts.multiscale(starts.start_seeds(2, range(4)), (28, 28, 1)).numpy()
        cls.seeds = starts.start_seeds(5, range(4))

    def run_ascent(self, transforms, seeds):
        ascent = OIPAscent(self.model, "Conv2D_3", transforms=transforms)
        return ascent(self.images, [0, 9, 9, 77], steps=30, conv_criterion=0.0, seeds=seeds)

    def test_jitter_zero_is_no_transform(self):
        images = tf.constant(self.images)
        self.assertIs(Transforms()(images, self.seeds, tf.constant(3)), images)
        plain = self.run_ascent(None, self.seeds)
        zero = self.run_ascent(Transforms(jitter=0, scale=0.0), starts.start_seeds(9, range(4)))
        self.assertAllEqual(plain.images, zero.images)

    def test_same_seed_same_result_other_seed_other_result(self):
        transforms = Transforms(jitter=2, scale=0.1)
        first = self.run_ascent(transforms, self.seeds)
        again = self.run_ascent(transforms, self.seeds)
        other = self.run_ascent(transforms, starts.start_seeds(6, range(4)))
        plain = self.run_ascent(None, self.seeds)
        self.assertAllEqual(first.images, again.images)
        self.assertAllEqual(first.loss_history, again.loss_history)
        self.assertGreater(float(np.abs(first.images - other.images).max()), 1e-3)
        self.assertGreater(float(np.abs(first.images - plain.images).max()), 1e-3)

    def test_a_pure_shift_moves_pixels_and_reflects_at_the_border(self):
        transforms = Transforms(jitter=3)
        images = tf.constant(self.images)
        dy, dx, factor = (value.numpy() for value in transforms.draws(self.seeds, tf.constant(4)))
        self.assertAllEqual(factor, np.ones(4))
        self.assertTrue(np.all(np.abs(dy) <= 3) and np.all(np.abs(dx) <= 3))
        moved = transforms(images, self.seeds, tf.constant(4)).numpy()
        for pair in range(4):
            shift_y, shift_x = int(dy[pair]), int(dx[pair])
            expected = np.roll(self.images[pair], (shift_y, shift_x), axis=(0, 1))
            inner = (slice(3, 25), slice(3, 25))
            self.assertAllClose(moved[pair][inner], expected[inner], atol=1e-5)

    def test_bad_values_are_refused(self):
        for kwargs, message in (
            (dict(jitter=-1), "jitter must be an integer number of pixels in \\[0, 1024\\], got -1"),
            (dict(jitter=1.5), "got 1.5"),
            (dict(scale=-0.1), "scale must be a fraction in \\[0, 0.9\\], got -0.1"),
            (dict(scale=float("nan")), "got nan"),
        ):
            with self.subTest(**kwargs), self.assertRaisesRegex(OIPGraphError, message):
                Transforms(**kwargs)


class UnitObjectiveTest(tf.test.TestCase):
    def test_a_separate_softmax_layer_reads_its_input_as_logits(self):
        with helpers.keras_seed(0):
            inputs = keras.Input((8, 8, 1))
            logits = keras.layers.Dense(4, name="logits")(keras.layers.Flatten()(inputs))
            model = keras.Model(inputs, keras.layers.Softmax(name="probabilities")(logits))
            objective = build_objective(model, "probabilities")
            self.assertIsInstance(objective, UnitObjective)
            self.assertTrue(objective.logits)
            images = tf.random.normal([3, 8, 8, 1])
            expected = keras.Model(inputs, logits)(images).numpy()
            self.assertAllClose(objective(images, tf.constant([0, 3, 2])), expected[[0, 1, 2], [0, 3, 2]], atol=1e-6)


if __name__ == "__main__":
    tf.test.main()
