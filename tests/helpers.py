"""Helpers shared by the test suites."""

import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf
from keras.src.backend.common import global_state
from keras.src.random import seed_generator
from keras.src.utils import rng_utils
from tensorflow.python.eager import context

from oipgraph.ascent import STATUS_COMPLETED, STATUS_CONVERGED, STATUS_NO_ACTIVATION
from oipgraph.models import mnist

BIN_DIR = os.path.dirname(sys.executable)
FORKED_COMMANDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forked_commands.py")


@contextlib.contextmanager
def keras_seed(seed: int):
    """`keras.utils.set_random_seed(seed)` inside the block; afterwards every global seed it set is as before.

    Python's, NumPy's, TensorFlow's and Keras' global random state (the tests after this one see none of it).
    """
    keras_names = (rng_utils.GLOBAL_RANDOM_SEED, seed_generator.GLOBAL_SEED_GENERATOR)
    saved_keras = {name: global_state.get_global_attribute(name) for name in keras_names}
    saved_python, saved_numpy, saved_tensorflow = random.getstate(), np.random.get_state(), context.global_seed()
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        random.setstate(saved_python)
        np.random.set_state(saved_numpy)
        tf.random.set_seed(saved_tensorflow)
        for name, value in saved_keras.items():
            global_state.set_global_attribute(name, value)


def seeded_conv(filters, kernel_size, name, seed, **kwargs) -> keras.layers.Conv2D:
    """A Conv2D with seeded random weights (no global seed is touched) and a nonzero bias."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        name=name,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=seed + 100),
        **kwargs,
    )


def input_gradient(function, inputs, upstream=None):
    """(function(inputs), d <function(inputs), upstream> / d inputs); upstream None: all ones."""
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = function(inputs)
    return outputs, tape.gradient(outputs, inputs, output_gradients=upstream)


# TensorFlow's C++ runtime logs these at start-up, beyond the reach of TF_CPP_MIN_LOG_LEVEL in TF 2.21.
TF_LOG_PREFIXES = (
    "I0000 ",
    "W0000 ",
    "E0000 ",
    "WARNING: All log messages before absl::InitializeLog()",
    "To enable the following instructions",
)


# The start of every script that a test runs in a `python -I` child to load an export: it makes oipgraph
# unimportable (it is installed in the venv, editable, through a .pth hook that -I keeps), so that anything in
# the SavedModel that needed oipgraph would fail to load or run. It imports json and sys for the rest.
HIDE_OIPGRAPH = r"""
import importlib.abc
import json
import sys


class HideOipgraph(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "oipgraph" or name.startswith("oipgraph."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, HideOipgraph())
"""


def start(command: str, *args: str, **popen_kwargs) -> subprocess.Popen:
    """Starts one of the venv's commands (`oipgraph`, `oipgraph-export`, `oipgraph-train`), output piped as text."""
    return subprocess.Popen(
        [os.path.join(BIN_DIR, command), *args],
        **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen_kwargs},
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    """Waits for a process from `start`, killing it after `timeout` seconds (then TimeoutExpired is raised)."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_command(command: str, *args: str, timeout: float = 300, **popen_kwargs) -> subprocess.CompletedProcess:
    return finish(start(command, *args, **popen_kwargs), timeout)


def run_forked(
    command: str,
    cases: list[list[str]],
    env: dict[str, str] | None = None,
    timeout: float = 300,
    parallel: int = 2,
    prelude: str | None = None,
) -> list[subprocess.CompletedProcess]:
    """Runs `command` once per argument list in `cases`, all after one shared import (tests/forked_commands.py).

    Each case runs the command's entry point in its own forked process, from TensorFlow's runtime start-up to
    its exit, with what the shared import printed prepended to its output: what the command would give, at a
    fraction of the cost (one TensorFlow import, about 4 s of CPU, instead of one per case). `parallel` cases
    run at a time: pass 1 where cases reach the same --out folder's lock (its refusals about the saved run are
    made holding the lock, so a case running beside another may rightly be told the folder is in use).
    cli_test's BadInvocationTest also runs three of its cases as the real command and compares. Each result
    also has `cpu_seconds`, the CPU time of its process. A case that runs longer than `timeout` seconds is
    killed (returncode None). `prelude` names a module of tests/ that every case imports before it runs (a
    stand-in for a part of the command, e.g. tests/silent_command.py).
    """
    with tempfile.TemporaryDirectory(prefix="run_forked_") as scratch:
        request = os.path.join(scratch, "cases.json")
        with open(request, "w") as file:
            request_fields = {"program": os.path.join(BIN_DIR, command), "cases": cases, "timeout": timeout}
            json.dump({**request_fields, "parallel": parallel, "prelude": prelude}, file)
        done = subprocess.run(
            [sys.executable, FORKED_COMMANDS, request],
            capture_output=True,
            text=True,
            timeout=timeout * (len(cases) + 1),
            env=env,
        )
    if done.returncode != 0:
        raise AssertionError(f"tests/forked_commands.py failed:\n{done.stderr[-3000:]}")
    completed = []
    for args, result in zip(cases, json.loads(done.stdout.strip().splitlines()[-1]), strict=True):
        process = [os.path.join(BIN_DIR, command), *args]
        completed.append(subprocess.CompletedProcess(process, result["returncode"], result["stdout"], result["stderr"]))
        completed[-1].cpu_seconds = result["cpu_seconds"]
    return completed


def own_lines(stderr: str) -> list[str]:
    """The lines of stderr that oipgraph wrote: TensorFlow's C++ start-up log left out."""
    return [line for line in stderr.splitlines() if not line.startswith(TF_LOG_PREFIXES)]


def mnist_or_skip(test: tf.test.TestCase):
    """The full MNIST set from $OIPGRAPH_MNIST; skips only where that is unset (no data, no download).

    With the variable set, a missing or broken file fails the test instead of skipping it,
    and `.ci/run` fails when a test skips for lack of data while the data is there.
    """
    path = os.environ.get(mnist.ENV_VAR)
    if not path:
        test.skipTest(f"no MNIST data: set {mnist.ENV_VAR} to a Keras-format mnist.npz")
    return mnist.load_mnist(path)


def load_arrays(path: str) -> dict[str, np.ndarray]:
    """Every array of the .npz file at `path` (read at once, the file closed after)."""
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


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
    lines = own_lines(stderr)
    test.assertLen(lines, 1, stderr)
    test.assertStartsWith(lines[0], f"{program}: error: ")
    test.assertIn(message, lines[0])


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


def eager_reference(loss_of, image, steps, epsilon, conv_criterion):
    """The loop straight from the formulas for one image: GradientTape, Python steps, |loss| in the stop rule.

    Args:
        loss_of: image [1, H, W, C] -> scalar objective, written out plainly.
    """
    x = tf.constant(image[None])
    history, loss_prev, zero_steps, streak = [], 0.0, 0, 0
    status, steps_run = STATUS_COMPLETED, steps
    for step in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = loss_of(x)
        grad = tape.gradient(loss, x)
        loss = float(loss)
        history.append(loss)
        relative_change = (loss - loss_prev) / (abs(loss) + 1e-7)
        loss_prev = loss
        streak = streak + 1 if step > 10 and relative_change < conv_criterion else 0
        if float(tf.reduce_mean(grad)) == 0.0 and loss == 0.0:
            zero_steps += 1
        if conv_criterion > 0 and streak >= 4:
            status, steps_run = STATUS_CONVERGED, step + 1
            break
        if zero_steps > 10:
            status, steps_run = STATUS_NO_ACTIVATION, step + 1
            break
        grad = grad / (tf.sqrt(tf.reduce_mean(grad**2)) + 1e-7)
        x = tf.image.per_image_standardization(x + epsilon * grad)
    final_loss = float(loss_of(x))
    history += [final_loss] * (steps - len(history))
    return x.numpy()[0], final_loss, np.array(history, np.float32), status, steps_run
