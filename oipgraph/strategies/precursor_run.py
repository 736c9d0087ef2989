"""The precursor scan's checked Python entry point: chunk by chunk, with a progress bar.

`PrecursorScan` (`precursor`) inherits `check_arguments` and `run` from `ScanEntryPoint`; they use its
`num_patterns`, `chunk_size`, `halving`, `pool_size`, `prunes`, `patterns` and `_score_chunk`. Ctrl-C
is raised between chunks (`oipgraph.core.interrupts`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from oipgraph.core import interrupts, limits
from oipgraph.core.errors import OIPGraphError, check_positive_int
from oipgraph.core.progress import Progress
from oipgraph.strategies.ranking import merge_top

DEFAULT_SCAN_STEPS = 10
DEFAULT_TOP_N = 8


@dataclasses.dataclass
class PrecursorResult:
    """The best start patterns of one map, best first.

    Attributes:
        map_index: The scanned map.
        images: float32 [top_n, H, W, C], the standardized pattern images (start images).
        scores: float32 [top_n], the loss after `scan_steps` ascent steps, descending.
        pattern_index: int32 [top_n], which pattern each image is.
    """

    map_index: int
    images: np.ndarray
    scores: np.ndarray
    pattern_index: np.ndarray


class ScanEntryPoint:
    """`check_arguments` and `run` of `PrecursorScan`: the scan from Python, with one-line errors."""

    def check_arguments(self, map_index: int, scan_steps: int, top_n: int) -> tuple[int, int, int]:
        """Python-side validation with one-line messages; returns the arguments as ints.

        Raises:
            OIPGraphError: map_index out of range, scan_steps outside [1,
                limits.MAX_SCAN_STEPS], or top_n outside [1, min(num_patterns,
                limits.MAX_TOP_N)].
        """
        if isinstance(map_index, (bool, np.bool_)) or not isinstance(map_index, (int, np.integer)):
            raise OIPGraphError(f"map_index must be an integer, got {map_index!r}")
        if not 0 <= map_index < self.ascent.num_maps:
            raise OIPGraphError(
                f"map index {map_index} out of range: layer {self.ascent.layer_name} has maps "
                f"0..{self.ascent.num_maps - 1}"
            )
        scan_steps = limits.check_int("scan_steps", scan_steps, limits.MAX_SCAN_STEPS)
        top_n = check_positive_int("top_n", top_n)
        if top_n > self.num_patterns:
            raise OIPGraphError(f"top_n {top_n} is larger than the number of patterns ({self.num_patterns})")
        top_n = limits.check_int("top_n", top_n, limits.MAX_TOP_N)
        return int(map_index), scan_steps, top_n

    def run(
        self, map_index: int, scan_steps: int = DEFAULT_SCAN_STEPS, top_n: int = DEFAULT_TOP_N, verbose: bool = False
    ) -> PrecursorResult:
        """Scans chunk by chunk with a progress bar; the same top-N as `scan`.

        Ctrl-C during a chunk is raised as KeyboardInterrupt after it (`oipgraph.core.interrupts`).

        Args:
            map_index: The map to scan for.
            scan_steps: Ascent steps per pattern before ranking (> 0).
            top_n: How many of the best start images to return.
            verbose: Report progress per chunk (`core.progress.Progress`: a live bar on a terminal, else lines).

        Returns:
            A `PrecursorResult`, best pattern first.

        Raises:
            OIPGraphError: bad map_index, scan_steps or top_n.
        """
        map_index, scan_steps, top_n = self.check_arguments(map_index, scan_steps, top_n)
        candidates = np.arange(self.num_patterns, dtype=np.int32)
        prunes = bool(self.prunes(scan_steps, top_n))
        survivors = int(self.pool_size(top_n)) if prunes else 0
        chunks = -(-self.num_patterns // self.chunk_size) + (-(-survivors // self.chunk_size) if prunes else 0)
        progress = Progress(chunks, unit="chunk", label=f"precursor scan of map {map_index}", enabled=verbose)
        done = 0

        def best_of_chunks(candidates: np.ndarray, steps: int, count: int, metric: str) -> tuple[tf.Tensor, tf.Tensor]:
            nonlocal done
            best_scores, best_index = tf.zeros([0]), tf.zeros([0], tf.int32)
            for begin in range(0, len(candidates), self.chunk_size):
                interrupts.check()
                pattern_index = tf.constant(candidates[begin : begin + self.chunk_size])
                scores = self._score_chunk(pattern_index, tf.constant(map_index), tf.constant(steps))
                best_scores, best_index = merge_top(best_scores, best_index, scores, pattern_index, count)
                done += 1
                progress.update(done, stage=f"{metric} {float(best_scores[0]):.4g}")
            return best_scores, best_index

        with interrupts.deferred():
            if prunes:
                _, survivors = best_of_chunks(candidates, self.halving.steps, survivors, "best_halving")
                candidates = np.sort(survivors.numpy())
            best_scores, best_index = best_of_chunks(candidates, scan_steps, top_n, "best")
        progress.finish()
        return PrecursorResult(
            map_index=map_index,
            images=self.patterns(best_index).numpy(),
            scores=best_scores.numpy(),
            pattern_index=best_index.numpy(),
        )
