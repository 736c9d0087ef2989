"""The articles' eager loop and a wall-clock timer, shared by the ascent benchmarks.

The scripts run as `python benchmarks/NAME.py`, so this folder is on `sys.path`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import tensorflow as tf

from oipgraph.ascent import OIPAscent


def timed(function: Callable[[], object]) -> float:
    """Wall-clock seconds of one call of `function`."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def eager_loop(ascent: OIPAscent, image: tf.Tensor, map_index: int, steps: int, epsilon: float = 0.01) -> None:
    """The articles' loop for one image: one GradientTape per step in Python, the zero-activation check on the host.

    The step is the ascent's (`epsilon * step_scale` times the normalized
    gradient, then back into the ascent's domain: per-image standardization
    for the shipped CNN, clipping for a value range).
    """
    domain = ascent.domain
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(image)
            loss = tf.reduce_mean(ascent.feature_model(image)[0, :, :, map_index])
        grad = tape.gradient(loss, image)
        grad = grad / (tf.sqrt(tf.reduce_mean(tf.square(grad))) + 1e-7)
        if float(loss) == 0.0 and float(tf.reduce_mean(grad)) == 0.0:
            break
        image = domain.project(image + epsilon * domain.step_scale * grad)
