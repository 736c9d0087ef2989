"""Helpers shared by the test suites."""

import os

import numpy as np
import tensorflow as tf

from oipgraph import mnist

# TensorFlow's C++ runtime logs these at start-up, beyond the reach of TF_CPP_MIN_LOG_LEVEL in TF 2.21.
TF_LOG_PREFIXES = ("I0000 ", "W0000 ", "E0000 ", "WARNING: All log messages before absl::InitializeLog()", "To enable the following instructions")


def mnist_or_skip(test: tf.test.TestCase):
    """The full MNIST set from $OIPGRAPH_MNIST or Keras' cache; skips only where none can be had."""
    path = os.environ.get(mnist.ENV_VAR)
    cached = os.path.expanduser("~/.keras/datasets/mnist.npz")
    if not path and os.path.isfile(cached):
        path = cached
    if not path:
        test.skipTest(f"no MNIST data: set {mnist.ENV_VAR} to a Keras-format mnist.npz")
    return mnist.load_mnist(path)


def write_npz(directory: str, name: str = "mnist.npz", **overrides) -> str:
    """A small Keras-format MNIST file with random digits; `overrides` replace or drop (None) arrays."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, [256, 28, 28], dtype=np.uint8),
        "y_train": rng.integers(0, 10, [256], dtype=np.uint8),
        "x_test": rng.integers(0, 256, [64, 28, 28], dtype=np.uint8),
        "y_test": rng.integers(0, 10, [64], dtype=np.uint8),
    }
    arrays.update(overrides)
    path = os.path.join(directory, name)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


def assert_one_line_error(test: tf.test.TestCase, stderr: str, program: str, message: str) -> None:
    """Our own output on stderr is exactly one error line (TensorFlow's C++ start-up log aside)."""
    own_lines = [line for line in stderr.splitlines() if not line.startswith(TF_LOG_PREFIXES)]
    test.assertLen(own_lines, 1, stderr)
    test.assertStartsWith(own_lines[0], f"{program}: error: ")
    test.assertIn(message, own_lines[0])
