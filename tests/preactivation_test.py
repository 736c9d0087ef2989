"""Tests of the pre-activation wake-up: what it computes, when it stops, and its errors."""

import keras
import numpy as np
import tensorflow as tf

from oipgraph import starts
from oipgraph.ascent import GRADIENT_EPS, OIPAscent
from oipgraph.core.errors import OIPGraphError
from oipgraph.strategies.preactivation import PreActivationWakeUp, can_wake

SIZE = 10
EPSILON = 0.05


def hidden_pattern_model() -> keras.Model:
    """conv1 (3x3, 4 maps, relu) -> conv2 (3x3, 3 maps, relu) on 10x10 images.

    conv2's map 0 fires for most images (bias +5); map 1 has bias -8 and fires
    for no random start; map 2 has a zero kernel and bias -1 and can never fire.
    """
    rng = np.random.default_rng(1)
    inputs = keras.Input((SIZE, SIZE, 1), name="image")
    conv1 = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")
    conv2 = keras.layers.Conv2D(3, 3, activation="relu", name="conv2")
    model = keras.Model(inputs, conv2(conv1(inputs)))
    conv1.set_weights([rng.normal(size=(3, 3, 1, 4)).astype(np.float32), np.zeros(4, np.float32)])
    kernel2 = rng.normal(size=(3, 3, 4, 3)).astype(np.float32) / 3
    kernel2[..., 2] = 0.0
    conv2.set_weights([kernel2, np.array([5.0, -8.0, -1.0], np.float32)])
    return model


def random_starts(count: int, seed: int = 0) -> np.ndarray:
    return starts.multiscale(
        starts.start_seeds(seed, range(count)), (SIZE, SIZE, 1), cells=(3, 5, 10), factors=(0.5, 0.5, 0.5)
    ).numpy()


def eager_wake_up(model: keras.Model, image: np.ndarray, map_index: int, steps: int) -> tuple[np.ndarray, int]:
    """The wake-up for one image written out step by step: ascend max z until relu(z) has a positive mean."""
    conv2 = model.get_layer("conv2")
    pre_model = keras.Model(model.inputs, conv2.input)
    x = tf.constant(image[None])
    for step in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x)
            z = tf.nn.conv2d(pre_model(x), conv2.kernel, 1, "VALID")[..., map_index] + conv2.bias[map_index]
            peak = tf.reduce_max(z)
        if float(tf.reduce_mean(tf.nn.relu(z))) > 0:
            return x.numpy()[0], step
        gradient = tape.gradient(peak, x)
        gradient /= tf.sqrt(tf.reduce_mean(tf.square(gradient))) + GRADIENT_EPS
        x = tf.image.per_image_standardization(x + EPSILON * gradient)
    return x.numpy()[0], steps


class PreActivationWakeUpTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = hidden_pattern_model()
        cls.ascent = OIPAscent(cls.model, "conv2")
        cls.wake_up = PreActivationWakeUp(cls.ascent)

    def test_activation_of_the_pre_activation_is_the_layer_output(self):
        images = random_starts(6)
        maps = np.array([0, 1, 2, 1, 0, 2], np.int32)
        pre_activation = self.wake_up.peak.spatial.pre_activation_maps(images, maps)
        outputs = self.ascent.feature_model(images)
        self.assertAllClose(tf.nn.relu(pre_activation), tf.gather(outputs, maps, axis=3, batch_dims=1), atol=1e-6)
        self.assertTrue(np.any(pre_activation.numpy() < 0))

    def test_wakes_a_map_that_random_starts_leave_dark(self):
        images = random_starts(4)
        dark = self.ascent(images, 1, steps=30)
        self.assertEqual(dark.status_names, ["no_activation"] * 4)
        woken = self.wake_up(images, 1, steps=200, epsilon=EPSILON)
        self.assertAllEqual(woken.fired, [True] * 4)
        self.assertAllGreater(woken.steps_run, 0)
        self.assertAllGreater(woken.peak, 0.0)
        self.assertAllGreater(self.ascent.loss(woken.images, np.ones(4, np.int32)), 0.0)
        self.assertAllClose(np.mean(woken.images, axis=(1, 2, 3)), np.zeros(4), atol=1e-5)
        result = self.ascent(woken.images, 1, steps=60)
        self.assertNotIn("no_activation", result.status_names)
        self.assertAllGreater(result.loss, 0.0)

    def test_compiled_wake_up_equals_the_eager_reference(self):
        images = random_starts(3, seed=5)
        woken = self.wake_up(images, 1, steps=200, epsilon=EPSILON)
        for pair in range(3):
            with self.subTest(pair=pair):
                image, steps_run = eager_wake_up(self.model, images[pair], 1, 200)
                self.assertEqual(woken.steps_run[pair], steps_run)
                self.assertAllClose(woken.images[pair], image, atol=1e-5)

    def test_maps_that_fire_already_are_left_alone_and_batches_are_independent(self):
        images = random_starts(4, seed=3)
        maps = np.array([0, 1, 0, 1], np.int32)
        woken = self.wake_up(images, maps, steps=200, epsilon=EPSILON)
        self.assertAllEqual(woken.steps_run[[0, 2]], [0, 0])
        self.assertAllEqual(woken.images[[0, 2]], images[[0, 2]])
        alone = self.wake_up(images[1:2], 1, steps=200, epsilon=EPSILON)
        self.assertEqual(alone.steps_run[0], woken.steps_run[1])
        self.assertAllClose(alone.images[0], woken.images[1], atol=1e-5)

    def test_a_map_that_cannot_fire_runs_every_step_and_stays_dark(self):
        images = random_starts(2)
        woken = self.wake_up(images, 2, steps=25, epsilon=EPSILON)
        self.assertAllEqual(woken.fired, [False, False])
        self.assertAllEqual(woken.steps_run, [25, 25])
        self.assertAllClose(woken.peak, [-1.0, -1.0])
        self.assertAllClose(woken.images, images, atol=1e-5)  # zero gradient: the image does not move

    def test_batch_size_and_steps_do_not_retrace(self):
        wake_up = PreActivationWakeUp(self.ascent)
        for count, steps in [(1, 3), (5, 7), (2, 1)]:
            wake_up(random_starts(count), np.ones(count, np.int32), steps=steps)
        self.assertEqual(wake_up.wake.experimental_get_tracing_count(), 1)

    def test_bad_arguments_give_one_line_errors(self):
        images = random_starts(2)
        cases = [
            (dict(map_index=3), "map index 3 out of range: layer conv2 has maps 0..2"),
            (dict(map_index=-1), "map index -1 out of range"),
            (dict(steps=0), "steps must be a positive integer, got 0"),
            (dict(epsilon=-0.5), "epsilon must be a finite number > 0, got -0.5"),
            (dict(images=np.full([2, SIZE, SIZE, 1], np.nan, np.float32)), "images contain NaN or Inf values"),
            (
                dict(images=np.zeros([2, 8, 8, 1], np.float32)),
                "images must have shape [batch, 10, 10, 1], got [2, 8, 8, 1]",
            ),
        ]
        for overrides, message in cases:
            with self.subTest(overrides=list(overrides)):
                arguments = dict(images=images, map_index=1, steps=5, epsilon=EPSILON) | overrides
                with self.assertRaises(OIPGraphError) as caught:
                    self.wake_up(**arguments)
                self.assertIn(message, str(caught.exception))
                self.assertNotIn("\n", str(caught.exception))

    def test_layers_without_a_pre_activation_are_refused(self):
        inputs = keras.Input((SIZE, SIZE, 1))
        features = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(inputs)
        pooled = keras.layers.MaxPooling2D(2, name="pool")(features)
        model = keras.Model(inputs, pooled)
        self.assertTrue(can_wake(OIPAscent(model, "conv")))
        ascent = OIPAscent(model, "pool")
        self.assertFalse(can_wake(ascent))
        with self.assertRaisesRegex(OIPGraphError, "^layer pool has no pre-activation to ascend: .*Conv2D"):
            PreActivationWakeUp(ascent)


class ShippedModelWakeUpTest(tf.test.TestCase):
    def test_wakes_the_conv2d_3_maps_that_no_start_excites(self):
        # Maps 5, 63 and 122 stay at zero for random, coarse-to-fine and 3x3/4x4 precursor starts
        # (and for every MNIST test digit).
        ascent = OIPAscent.from_file(None, "Conv2D_3")
        maps = np.array([5, 63, 122], np.int32)
        images = starts.multiscale(starts.start_seeds(0, range(3)), ascent.image_shape).numpy()
        self.assertAllEqual(ascent.loss(images, maps), np.zeros(3))
        woken = PreActivationWakeUp(ascent)(images, maps)
        self.assertAllEqual(woken.fired, [True] * 3)
        result = ascent(woken.images, maps, steps=300)
        self.assertNotIn("no_activation", result.status_names)
        self.assertAllGreater(result.loss, 0.1)


if __name__ == "__main__":
    tf.test.main()
