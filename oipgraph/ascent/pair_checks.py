"""The checks of an ascent's (image, target) pairs: in the graph (`InvalidArgumentError` naming the input)
and in Python (one-line `OIPGraphError`), both before anything is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from oipgraph.core import limits
from oipgraph.core.errors import OIPGraphError
from oipgraph.objectives import Objective


def graph_checked_pairs(
    images: tf.Tensor, map_index: tf.Tensor, image_shape: Sequence[int], objective: Objective
) -> tuple[tf.Tensor, tf.Tensor]:
    """In-graph validation of (images [B, H, W, C], map_index [B]) pairs (raises InvalidArgumentError).

    Returns:
        (images with a static shape, map_index), both behind the checks, so
        that nothing reads a bad map index before the check names it.
    """
    height, width, channels = image_shape
    shape = tf.shape(images)
    # Pad before comparing so that a wrong rank reaches the assertion instead of a broadcast error.
    padded_shape = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)[:4]
    shape_ok = tf.equal(tf.size(shape), 4) & tf.reduce_all(tf.equal(padded_shape[1:], [height, width, channels]))
    # The range checks reduce over axis 0: a scalar map_index must meet the rank check first. A loaded
    # signature does not enforce its [None] spec, and the graph optimizer folds tf.rank of a tensor of
    # known rank to a constant: the serialize/parse round trip drops the static shape, so the rank is
    # measured at run time.
    runtime_map_index = tf.io.parse_tensor(tf.io.serialize_tensor(map_index), tf.int32)
    map_rank_check = tf.debugging.Assert(
        tf.equal(tf.rank(runtime_map_index), 1),
        ["map_index must be a vector [batch]; got shape", tf.shape(runtime_map_index)],
    )
    with tf.control_dependencies([map_rank_check]):
        map_vector = tf.identity(map_index)
    checks = [
        tf.debugging.Assert(
            shape_ok, [f"images must have shape [batch, {height}, {width}, {channels}]; got shape", shape]
        ),
        *limits.assert_batch(padded_shape[0], image_shape, name="images batch (pairs per request)"),
        map_rank_check,
        tf.debugging.assert_equal(
            tf.size(map_index),
            padded_shape[0],
            message="map_index needs one entry per image; map_index length vs batch",
        ),
        *objective.graph_checks(map_vector),
        *limits.assert_pixels(images),
    ]
    with tf.control_dependencies(checks):
        return tf.ensure_shape(tf.identity(images), [None, height, width, channels]), tf.identity(map_index)


def check_pair_arguments(
    images: np.ndarray,
    map_index: np.ndarray,
    steps: int,
    epsilon: float,
    conv_criterion: float,
    image_shape: Sequence[int],
    objective: Objective,
) -> None:
    """Python-side validation with one-line messages (the graph checks again)."""
    height, width, channels = image_shape
    if images.ndim != 4 or images.shape[1:] != (height, width, channels):
        raise OIPGraphError(f"images must have shape [batch, {height}, {width}, {channels}], got {list(images.shape)}")
    if map_index.shape != (images.shape[0],):
        raise OIPGraphError(
            f"map_index needs one entry per image: {map_index.shape[0] if map_index.ndim else 1} for "
            f"{images.shape[0]} images"
        )
    objective.check_targets(map_index)
    limits.check_batch("images batch (pairs per request)", images.shape[0], image_shape)
    limits.check_pixels("images", images)
    if isinstance(steps, float) and steps.is_integer():
        steps = int(steps)
    limits.check_steps("steps", steps)
    limits.check_step_pairs(steps, images.shape[0])
    limits.check_epsilon("epsilon", epsilon)
    if not math.isfinite(conv_criterion):
        raise OIPGraphError(f"conv_criterion must be finite (<= 0 disables convergence), got {conv_criterion!r}")
