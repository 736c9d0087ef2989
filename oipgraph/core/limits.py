"""Upper bounds for every size a flag or a serving request controls, checked before anything is allocated.

A served SavedModel takes its sizes from the request (`steps`, the batch, `scan_steps`, `top_n`), and the
command line takes them from flags. Unbounded, one request can reserve memory for 2^31 steps
(`TensorArray(size=steps)`), make a million start images, or scan without end; an epsilon of 1e30
standardizes every image to zeros and pixels of 3e38 overflow to NaN, both reported as success. Every
such input is checked against the bounds below, in Python (`check_*`, raising `OIPGraphError` with one
line that names the input and the bound) and in the graph (`assert_*`, `tf.debugging` ops whose
`InvalidArgumentError` names the input and the bound; put them in `tf.control_dependencies` of every
tensor that sizes an allocation).

Why these values (a real user never reaches them; the defaults are far below):

- `MAX_STEPS` = 100,000 ascent steps: the defaults are 600 (random) and 1200 (precursor); the articles'
  runs converge within a few hundred. 100,000 steps of one pair take a few minutes on a 2-core CPU.
- `MAX_BATCH` = 4096 pairs (or start images) per request: the CLI's default batch is 256 and the ascent's
  throughput stops growing above 256-512 pairs (BENCHMARKS.md). For models with larger images the bound
  shrinks so that a request's images hold at most `MAX_BATCH_FLOATS` floats (`max_batch`).
- `MAX_STEP_PAIRS` = 2^24 = batch x steps: `loss_history` [B, steps] is an output, so the product is bounded
  too (64 MiB per copy; e.g. 256 pairs x 65,536 steps, or 4096 pairs x 4096 steps). It also bounds a
  request's compute: about an hour at the shipped model's ~5,000 pair-steps/s on 2 cores.
- `MAX_SCAN_STEPS` = 1000 steps per precursor pattern: the default and the article use 10.
- `MAX_TOP_N` = 1024 best precursor starts: the default is 8 (the strategies use 8 to 16).
- `MAX_INITS_PER_MAP` = 1000 start images per map: the uniqueness question needs a handful (2 to 16).
  Below `MAX_TOP_N`, so that the precursor strategy's scans (inits plus the repeats of the constant
  patterns, which all standardize to the zero image) stay within it.
- `MAX_RUN_LOSS_VALUES` = 2^25 = maps x inits_per_map x steps of one command-line run: every pair's loss
  history is kept until the run's `oips.npz` is written (128 MiB), and the best ones go to TensorBoard.
  All 128 maps of the shipped CNN with 16 inits and 1200 steps need 2.5M.
- `MAX_EPSILON` = 100: images are standardized (rms 1) and the step's gradient is normalized (rms 1), so
  epsilon = 1 already moves an image by its own size; the default is 0.01. Far above, float32 loses
  the image (at 1e30 the standardization's variance overflows and every image becomes 0).
- `MAX_LABELS_FILE_BYTES` = 16 MiB and `MAX_LABEL_CHARS` = 200 per name for `--labels`: a name per map or
  unit of one layer, read whole into memory; Keras' ImageNet class index (1000 names) is 35 KB, and the
  widest layers have a few thousand maps. The count itself must equal the layer's maps or units.
- `MAX_PIXEL_MAGNITUDE` = 1e6 for input images: standardized images have |x| <= sqrt(H*W*C) (28 for
  MNIST), raw 8-bit or 16-bit images stay below 65,536; at 3e38 the squares overflow to Inf and the
  ascent returns NaN.
- `MAX_DEVICES` = 64 devices for `--devices`: the largest GPU machines have 8 or 16; logical CPU devices
  beyond the cores only add threads. `MAX_CLUSTER_TASKS` = 1024 tasks and `MAX_CLUSTER_FILE_BYTES` = 1 MiB
  for `--cluster` (an address is ~20 bytes). `MAX_WORKER_TIMEOUT_S` = 1 day for `--worker_timeout`.

The largest allowed request on the shipped model and its peak memory are in BENCHMARKS.md ("Limits").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from oipgraph.core.errors import OIPGraphError

MAX_STEPS = 100_000
MAX_BATCH = 4096
MAX_BATCH_FLOATS = 2**26
MAX_STEP_PAIRS = 2**24
MAX_SCAN_STEPS = 1000
MAX_TOP_N = 1024
MAX_INITS_PER_MAP = 1000
MAX_RUN_LOSS_VALUES = 2**25
MAX_EPSILON = 100.0
MAX_PIXEL_MAGNITUDE = 1e6
MAX_LABELS_FILE_BYTES = 16 * 2**20
MAX_LABEL_CHARS = 200
# More hardware (`oipgraph.distribute`): devices of one process, tasks of a cluster file, its size, the
# seconds a worker may stay silent.
MAX_DEVICES = 64
MAX_CLUSTER_TASKS = 1024
MAX_CLUSTER_FILE_BYTES = 2**20
MAX_WORKER_TIMEOUT_S = 86_400
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT32_TINY = float(np.finfo(np.float32).smallest_subnormal)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def max_batch(image_shape: Sequence[int]) -> int:
    """Pairs (or images) one request may hold: min(MAX_BATCH, MAX_BATCH_FLOATS // (H * W * C))."""
    return max(1, min(MAX_BATCH, MAX_BATCH_FLOATS // math.prod(int(size) for size in image_shape)))


# -- Python checks (one-line OIPGraphError) --------------------------------------------------------------


def check_int(name: str, value: object, bound: int, low: int = 1) -> int:
    """Returns `value` as an int, or raises OIPGraphError unless it is an integer in [low, bound].

    Args:
        name: How the user named the input, e.g. "--steps" or "steps".
        value: The value to check (bool is refused).
        bound: The inclusive upper bound.
        low: The inclusive lower bound.
    """
    wanted = "a positive integer" if low == 1 else f"an integer >= {low}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise OIPGraphError(f"{name} must be {wanted}, got {value!r}")
    if value > bound:
        raise OIPGraphError(f"{name}={value} is above the limit of {bound} (see oipgraph.core.limits)")
    return int(value)


def check_steps(name: str, steps: object) -> int:
    """An ascent's step budget: an integer in [1, MAX_STEPS]."""
    return check_int(name, steps, MAX_STEPS)


def check_batch(name: str, batch: object, image_shape: Sequence[int]) -> int:
    """Pairs or images per request: an integer in [1, max_batch(image_shape)]."""
    return check_int(name, batch, max_batch(image_shape))


def check_step_pairs(steps: int, batch: int, what: str = "batch x steps") -> None:
    """`loss_history` [batch, steps] stays within MAX_STEP_PAIRS values."""
    if steps * batch > MAX_STEP_PAIRS:
        raise OIPGraphError(
            f"{what} = {batch} x {steps} = {batch * steps} loss values is above the limit of {MAX_STEP_PAIRS}"
            " (see oipgraph.core.limits)"
        )


def check_int64(name: str, value: object) -> int:
    """An integer that TensorFlow holds as int64 (a seed)."""
    return check_int(name, value, INT64_MAX, low=INT64_MIN)


def check_epsilon(name: str, epsilon: object) -> float:
    """A step size that is a float32 > 0 (not rounded to 0) and at most MAX_EPSILON."""
    if isinstance(epsilon, (bool, np.bool_)) or not isinstance(epsilon, (int, float, np.integer, np.floating)):
        raise OIPGraphError(f"{name} must be a number, got {epsilon!r}")
    epsilon = float(epsilon)
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise OIPGraphError(f"{name} must be a finite number > 0, got {epsilon!r}")
    if epsilon > MAX_EPSILON:
        raise OIPGraphError(
            f"{name}={epsilon:g} is above the limit of {MAX_EPSILON:g} (a step of 1 already moves a standardized"
            " image by its own size)"
        )
    if epsilon < FLOAT32_TINY:
        raise OIPGraphError(f"{name}={epsilon:g} is 0 in float32 (the smallest step is {FLOAT32_TINY:g})")
    return epsilon


def check_float32(name: str, value: float) -> float:
    """A finite number that float32 holds (|value| <= 3.4e38)."""
    if not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
        raise OIPGraphError(f"{name} must be a finite float32 number (|x| <= {FLOAT32_MAX:.3g}), got {value!r}")
    return float(value)


def check_pixels(name: str, images: np.ndarray) -> None:
    """Finite pixels of magnitude at most MAX_PIXEL_MAGNITUDE."""
    if not np.all(np.isfinite(images)):
        raise OIPGraphError(f"{name} contain NaN or Inf values")
    if images.size and float(np.max(np.abs(images))) > MAX_PIXEL_MAGNITUDE:
        raise OIPGraphError(
            f"{name} hold a pixel of magnitude {float(np.max(np.abs(images))):.3g}, above the limit of"
            f" {MAX_PIXEL_MAGNITUDE:g}"
        )


# -- in-graph checks (InvalidArgumentError) --------------------------------------------------------------


def assert_in_range(value: tf.Tensor, name: str, bound: int, low: int = 1) -> list[tf.Operation]:
    """Ops that fail unless the integer scalar `value` lies in [low, bound]; the message names both."""
    value = tf.cast(value, tf.int64)
    return [
        tf.debugging.assert_greater_equal(
            value, tf.constant(low, tf.int64), message=f"{name} must be {'> 0' if low == 1 else f'>= {low}'}; got"
        ),
        tf.debugging.assert_less_equal(
            value, tf.constant(bound, tf.int64), message=f"{name} must be <= {bound} (the limit); got"
        ),
    ]


def assert_steps(steps: tf.Tensor, name: str = "steps") -> list[tf.Operation]:
    """`steps` in [1, MAX_STEPS]."""
    return assert_in_range(steps, name, MAX_STEPS)


def assert_batch(batch: tf.Tensor, image_shape: Sequence[int], name: str = "batch") -> list[tf.Operation]:
    """`batch` (a count of images or pairs) in [1, max_batch(image_shape)]."""
    return assert_in_range(batch, name, max_batch(image_shape))


def assert_step_pairs(steps: tf.Tensor, batch: tf.Tensor) -> list[tf.Operation]:
    """batch x steps <= MAX_STEP_PAIRS, computed in int64 (no overflow)."""
    product = tf.cast(steps, tf.int64) * tf.cast(batch, tf.int64)
    return [
        tf.debugging.assert_less_equal(
            product,
            tf.constant(MAX_STEP_PAIRS, tf.int64),
            message=f"batch x steps (the values of loss_history) must be <= {MAX_STEP_PAIRS} (the limit); got",
        )
    ]


def assert_epsilon(epsilon: tf.Tensor, name: str = "epsilon") -> list[tf.Operation]:
    """`epsilon` finite, > 0 and at most MAX_EPSILON (NaN fails the first check)."""
    return [
        tf.debugging.assert_positive(epsilon, message=f"{name} must be > 0; got {name}"),
        tf.debugging.assert_all_finite(epsilon, message=f"{name} must be finite"),
        tf.debugging.assert_less_equal(
            epsilon,
            tf.constant(MAX_EPSILON, epsilon.dtype),
            message=f"{name} must be <= {MAX_EPSILON:g} (the limit); got {name}",
        ),
    ]


def assert_pixels(images: tf.Tensor, name: str = "images") -> list[tf.Operation]:
    """Every pixel of `images` finite and of magnitude at most MAX_PIXEL_MAGNITUDE."""
    finite = tf.debugging.assert_all_finite(images, message=f"{name} contain NaN or Inf")
    with tf.control_dependencies([finite]):
        largest = tf.reduce_max(tf.abs(images))
    return [
        finite,
        tf.debugging.assert_less_equal(
            largest,
            tf.constant(MAX_PIXEL_MAGNITUDE, images.dtype),
            message=f"{name} pixel magnitude must be <= {MAX_PIXEL_MAGNITUDE:g} (the limit); got largest",
        ),
    ]
