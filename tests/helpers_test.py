"""Tests of the test helpers that guard the suite's process state."""

import random

import helpers
import keras
import numpy as np
import tensorflow as tf
from keras.src.backend.common import global_state
from tensorflow.python.eager import context


class KerasSeedTest(tf.test.TestCase):
    def test_seeds_inside_and_leaves_every_global_random_state_as_it_was(self):
        def draws():
            return random.random(), float(np.random.random_sample()), keras.random.uniform([]).numpy()

        with helpers.keras_seed(11):
            inside = draws()
        with helpers.keras_seed(11):
            self.assertEqual(draws(), inside)
        random_state, numpy_state = random.getstate(), np.random.get_state()
        keras_seed, tensorflow_seed = global_state.get_global_attribute("global_random_seed"), context.global_seed()
        with helpers.keras_seed(12):
            draws()
        self.assertEqual(random.getstate(), random_state)
        self.assertAllEqual(np.random.get_state()[1], numpy_state[1])
        self.assertEqual(global_state.get_global_attribute("global_random_seed"), keras_seed)
        self.assertEqual(context.global_seed(), tensorflow_seed)
