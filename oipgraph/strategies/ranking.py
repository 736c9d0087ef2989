"""Ranking many candidates chunk by chunk: chunk sizes, the running top-N and successive halving.

The precursor scan scores tens of thousands of start patterns for one map. They
are scored in chunks that fit a memory budget (`chunk_size_for`), the best are
kept in a running top-N (`merge_top`, `best_of`), and with successive halving
(`Halving`) every candidate is first scored after a few steps and only the best
of them get all steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from oipgraph.core.errors import OIPGraphError, check_positive_int
from oipgraph.models.layer_lookup import output_sizes

# On the 2-core box, chunks of 128 to 1024 patterns ran the shipped CNN's scan equally fast
# (within the noise of a shared machine); 512 holds about 0.3 GB of activations.
PREFERRED_CHUNK_SIZE = 512
# Bytes a chunk's ascent may hold at once; keeps the scan well under 4 GB.
CHUNK_MEMORY_BUDGET = 1 << 30
# Activations kept per float of layer output during one ascent step (forward, gradient, temporaries).
_FLOATS_PER_ACTIVATION = 4
# Successive halving, checked against the exhaustive scan on the shipped CNN
# (benchmarks/precursor_benchmark.py --validate): rank all patterns after 2 steps
# and continue only the best max(1024, 128 * top_n).
DEFAULT_HALVING_STEPS = 2
DEFAULT_HALVING_KEEP = 1024
DEFAULT_HALVING_KEEP_PER_RESULT = 128


def activation_bytes_per_image(model: keras.Model) -> int:
    """Rough bytes one image needs in one ascent step of `model`: all layer outputs, a few times.

    bytes = 4 * _FLOATS_PER_ACTIVATION * sum of `layer_lookup.output_sizes(model)` (sizes as traced).
    """
    return sum(output_sizes(model)) * 4 * _FLOATS_PER_ACTIVATION


def chunk_size_for(model: keras.Model, chunk_size: int | None, num_candidates: int) -> int:
    """The chunk size of a scan of `num_candidates` images through `model`, within `CHUNK_MEMORY_BUDGET`.

    Args:
        model: The model each chunk runs (its activations size the chunk).
        chunk_size: The size asked for, or None for `PREFERRED_CHUNK_SIZE` or what fits.
        num_candidates: How many candidates there are (no chunk is larger).

    Raises:
        OIPGraphError: a chunk_size that is not a positive integer or does not fit the budget.
    """
    per_image = activation_bytes_per_image(model)
    fitting = max(1, CHUNK_MEMORY_BUDGET // per_image)
    if chunk_size is None:
        return int(min(PREFERRED_CHUNK_SIZE, fitting, num_candidates))
    chunk_size = check_positive_int("chunk_size", chunk_size)
    if chunk_size > fitting:
        raise OIPGraphError(
            f"chunk_size {chunk_size} needs about {chunk_size * per_image / 2**30:.1f} GiB;"
            f" at most {fitting} fits the {CHUNK_MEMORY_BUDGET / 2**30:.0f} GiB budget"
        )
    return int(min(chunk_size, num_candidates))


@dataclasses.dataclass(frozen=True)
class Halving:
    """Successive halving: rank every candidate once after `steps` steps, keep the best, then score them fully.

    Attributes:
        steps: Steps after which all candidates are ranked; 0 disables halving
            (every candidate gets every step: the exhaustive scan).
        keep: The least number of candidates kept.
        keep_per_result: Candidates kept per requested result: a scan for the
            top N keeps max(keep, keep_per_result * N).
    """

    steps: int = DEFAULT_HALVING_STEPS
    keep: int = DEFAULT_HALVING_KEEP
    keep_per_result: int = DEFAULT_HALVING_KEEP_PER_RESULT

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) or self.steps < 0:
            raise OIPGraphError(f"halving_steps must be an integer >= 0 (0 disables halving), got {self.steps!r}")
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "keep", check_positive_int("halving_keep", self.keep))
        object.__setattr__(self, "keep_per_result", check_positive_int("halving_keep_per_result", self.keep_per_result))

    def pool_size(self, top_n: tf.Tensor | int, num_candidates: int) -> tf.Tensor:
        """int32 []: how many of `num_candidates` survive the ranking of a scan that returns `top_n`."""
        keep = tf.maximum(self.keep, self.keep_per_result * tf.cast(top_n, tf.int32))
        return tf.minimum(keep, num_candidates)

    def prunes(self, scan_steps: tf.Tensor | int, top_n: tf.Tensor | int, num_candidates: int) -> tf.Tensor:
        """bool []: whether a scan of `scan_steps` steps for `top_n` results drops candidates after `steps` steps."""
        return (self.steps > 0) & (scan_steps > self.steps) & (self.pool_size(top_n, num_candidates) < num_candidates)


def merge_top(
    best_scores: tf.Tensor, best_index: tf.Tensor, scores: tf.Tensor, index: tf.Tensor, top_n: tf.Tensor | int
) -> tuple[tf.Tensor, tf.Tensor]:
    """The running top-N: the `top_n` best of the previous best and a new chunk.

    Chunks come in ascending candidate order, so the previous best have lower
    indices than the chunk; `tf.math.top_k` keeps the lower position first
    among equal scores, so ties rank the lower index first however the
    candidates are chunked.

    Args:
        best_scores: float32 [k], best_index: int32 [k]: the best so far, best first.
        scores: float32 [n], index: int32 [n]: the new chunk's scores and candidate indices.
        top_n: How many to keep.

    Returns:
        (float32 [min(top_n, k + n)] scores, int32 [...] indices), best first.
    """
    scores = tf.concat([best_scores, scores], axis=0)
    index = tf.concat([best_index, index], axis=0)
    top = tf.math.top_k(scores, k=tf.minimum(top_n, tf.size(scores)))
    return top.values, tf.gather(index, top.indices)


def best_of(
    candidates: tf.Tensor, score_chunk: Callable[[tf.Tensor], tf.Tensor], chunk_size: int, top_n: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """The `top_n` best scores and indices of `candidates`, chunk by chunk in one `tf.while_loop`.

    Args:
        candidates: int32 [n], ascending.
        score_chunk: int32 [m] candidates -> float32 [m] scores.
        chunk_size: Candidates scored together.
        top_n: int32 [], how many to return.

    Returns:
        (float32 [min(top_n, n)] scores, int32 [...] candidates), best first (ties: lower index first).
    """

    def body(begin, best_scores, best_index):
        index = candidates[begin : begin + chunk_size]
        best_scores, best_index = merge_top(best_scores, best_index, score_chunk(index), index, top_n)
        return begin + chunk_size, best_scores, best_index

    _, scores, index = tf.while_loop(
        lambda begin, *_: begin < tf.size(candidates),
        body,
        (tf.constant(0), tf.zeros([0]), tf.zeros([0], tf.int32)),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([None]), tf.TensorShape([None])),
        parallel_iterations=1,
    )
    return scores, index
