"""Helpers shared by the test suites."""

import os

import keras
import numpy as np
import tensorflow as tf

from oipgraph import mnist

# TensorFlow's C++ runtime logs these at start-up, beyond the reach of TF_CPP_MIN_LOG_LEVEL in TF 2.21.
TF_LOG_PREFIXES = (
    "I0000 ",
    "W0000 ",
    "E0000 ",
    "WARNING: All log messages before absl::InitializeLog()",
    "To enable the following instructions",
)


def mnist_or_skip(test: tf.test.TestCase):
    """The full MNIST set from $OIPGRAPH_MNIST; skips only where that is unset (no data, no download).

    With the variable set, a missing or broken file fails the test instead of skipping it,
    and `.ci/run` fails when a test skips for lack of data while the data is there.
    """
    path = os.environ.get(mnist.ENV_VAR)
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


# A tiny model for the strategies: maps that only specific start images excite.
SIZE = 12
CHECKERBOARD = np.array([[1, -1, 1], [-1, 1, -1], [1, -1, 1]], np.float32)
# Pattern index of the 3x3 checkerboard with values (0.2, 0.8): base-2 digits 101010101.
CHECKERBOARD_PATTERN = 0b101010101
CHECKERBOARD_4X4 = np.array([[1, -1, 1, -1], [-1, 1, -1, 1], [1, -1, 1, -1], [-1, 1, -1, 1]], np.float32)
CHECKERBOARD_4X4_PATTERN = 0b1010010110100101
# A checkerboard of single pixels: finer than any precursor grid, and random noise never correlates with it enough.
PIXEL_CHECKERBOARD = np.indices([SIZE, SIZE]).sum(axis=0) % 2 * 2.0 - 1.0
THRESHOLD = 0.8


def unit_template(cells: np.ndarray) -> np.ndarray:
    """The cells upscaled like precursor patterns, standardized, scaled to norm 1."""
    template = tf.image.resize(cells[None, :, :, None], [SIZE, SIZE], method="bicubic", antialias=True)
    template = tf.image.per_image_standardization(template).numpy()[0, :, :, 0]
    return template / np.linalg.norm(template)


def large_scale_model() -> keras.Model:
    """One 12x12 conv with a 1x1 output and four maps.

    Map 0 always fires (bias 10). Map 1 fires only when the standardized image
    correlates with an upscaled 3x3 checkerboard by more than 0.8: random
    multi-scale starts and coarse noise never get there, the precursor's
    checkerboard pattern does. Map 2 is the same for a 4x4 checkerboard, which
    no 3x3 pattern matches well enough. Map 3 is the same for a checkerboard of
    single pixels, which no start image matches: only the pre-activation
    wake-up gets there.
    """
    inputs = keras.Input((SIZE, SIZE, 1), name="image")
    layer = keras.layers.Conv2D(4, SIZE, activation="relu", name="conv")
    model = keras.Model(inputs, layer(inputs))
    kernel = np.zeros((SIZE, SIZE, 1, 4), np.float32)
    kernel[..., 0, 0] = np.random.default_rng(0).normal(size=(SIZE, SIZE)) / SIZE
    # Unit templates: the pre-activation is <x, t> and lies in [-12, 12] for a standardized x.
    kernel[..., 0, 1] = unit_template(CHECKERBOARD)
    kernel[..., 0, 2] = unit_template(CHECKERBOARD_4X4)
    kernel[..., 0, 3] = PIXEL_CHECKERBOARD / np.linalg.norm(PIXEL_CHECKERBOARD)
    layer.set_weights([kernel, np.array([10.0] + [-THRESHOLD * SIZE] * 3, np.float32)])
    return model
