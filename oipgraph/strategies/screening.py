"""One precursor screening for many maps at once: `auto`'s shared alternative to a pattern scan per map.

`PrecursorScan` ranks all grid patterns for one map, with ascent steps on
each pattern, so M maps cost M scans. `auto` needs starts for all maps that
random and coarse-to-fine leave dark, and a pattern's forward pass gives the
loss of every map of the layer at once. The screening therefore runs in three
shared passes:

1. Screen: the loss of every pattern p for every target t of the layer at the
   pattern itself, s0[p, t] = objective.all_targets(pattern_p)[t], in chunks
   (one forward pass per pattern for all maps); per requested map the `keep`
   best patterns by s0 (ties: lower pattern index first). For a map whose loss
   cannot be negative (a ReLU map), patterns with s0 = 0 are dropped: loss and
   gradient are 0 there, so no ascent step moves them.
2. Scan: the survivors of all maps run `scan_steps` steps of the ascent in one
   mixed batch (`OIPAscent`, convergence off), and are ranked per map by the
   loss after them (ties: better screen rank first).
3. The `top_n` best distinct start images per map (the constant patterns all
   standardize to the zero image) are the starts of the map's full ascent.

Unlike `PrecursorScan` (every pattern gets 2 ascent steps before the ranking),
only the `keep` patterns ranked best at step 0 get ascent steps; as there, a
pattern on which a ReLU map does not fire can never score above 0, so both
rank the same firing patterns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from oipgraph.ascent import OIPAscent
from oipgraph.core import interrupts
from oipgraph.core.errors import check_positive_int
from oipgraph.strategies.precursor import PrecursorScan

DEFAULT_SCREEN_KEEP = 32
SCREEN_CHUNK = 1024


@dataclasses.dataclass
class ScreenedStarts:
    """The precursor starts of several maps, map by map, best first within a map.

    Attributes:
        images: float32 [S, H, W, C], the start patterns (in the ascent's domain).
        map_index: int32 [S], the map of each start.
        rank: int32 [S], the start's rank within its map (0: best scan score).
        pattern_index: int32 [S], which pattern of the scan each start is.
        scores: float32 [S], the loss after the scan steps.
    """

    images: np.ndarray
    map_index: np.ndarray
    rank: np.ndarray
    pattern_index: np.ndarray
    scores: np.ndarray


class SharedScreen(tf.Module):
    """Ranks the patterns of a `PrecursorScan` for many maps with one forward pass per pattern.

    Example:
        ascent = OIPAscent.from_file(None, "Conv2D_3")
        screen = SharedScreen(PrecursorScan(ascent))
        starts = screen.starts([2, 34, 46], top_n=2)   # 2 starts each, from 19,683 patterns
    """

    def __init__(self, scan: PrecursorScan, chunk_size: int = SCREEN_CHUNK, name: str | None = None):
        """Builds the screen for the patterns (grid, values) of `scan` and the layer of `scan.ascent`.

        `chunk_size` patterns go through the model together (`budget.batch_within_memory` sizes it on
        large models); the ranking does not depend on it.
        """
        super().__init__(name=name or f"shared_screen_{scan.ascent.layer_name}")
        self.scan = scan
        self.ascent: OIPAscent = scan.ascent
        self.chunk_size = int(min(check_positive_int("chunk_size", chunk_size), scan.num_patterns))
        self._chunk_scores = tf.function(
            self._scores_at_step_zero,
            autograph=False,
            input_signature=[tf.TensorSpec([None], tf.int32, name="pattern_index"), tf.TensorSpec([None], tf.int32)],
        )

    def _scores_at_step_zero(self, pattern_index: tf.Tensor, map_index: tf.Tensor) -> tf.Tensor:
        """float32 [M, n]: s0 of patterns `pattern_index` (int32 [n]) for maps `map_index` (int32 [M])."""
        losses = self.ascent.step_objective.all_targets(self.scan.patterns(pattern_index))
        return tf.transpose(tf.gather(losses, map_index, axis=1))

    def screen(
        self, map_index: np.ndarray, keep: int, progress: Callable[[int, int], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Step 1 for maps `map_index` (int [M]): float32 [M, k] step-0 scores and int32 [M, k] patterns, best first.

        The patterns are scored chunk by chunk from Python, with a running top-k per map (the previous
        best first, so ties keep the lower pattern index however the patterns are chunked); between
        chunks Ctrl-C is raised (`interrupts.check`) and `progress(patterns_done, patterns)` is called.
        """
        self.ascent.objective.check_targets(np.asarray(map_index))
        keep = check_positive_int("keep", keep)
        map_tensor = tf.constant(np.asarray(map_index, np.int32))
        count = len(map_index)
        total = self.scan.num_patterns
        best_scores, best_index = tf.zeros([count, 0]), tf.zeros([count, 0], tf.int32)
        for begin in range(0, total, self.chunk_size):
            interrupts.check()
            pattern_index = tf.range(begin, min(begin + self.chunk_size, total), dtype=tf.int32)
            scores = tf.concat([best_scores, self._chunk_scores(pattern_index, map_tensor)], axis=1)
            indices = tf.concat([best_index, tf.tile(pattern_index[None], [count, 1])], axis=1)
            top = tf.math.top_k(scores, k=min(keep, int(scores.shape[1])))
            best_scores, best_index = top.values, tf.gather(indices, top.indices, batch_dims=1)
            if progress is not None:
                progress(min(begin + self.chunk_size, total), total)
        return best_scores.numpy(), best_index.numpy()

    def starts(
        self,
        map_index: np.ndarray,
        top_n: int,
        keep: int = DEFAULT_SCREEN_KEEP,
        scan_steps: int = 10,
        batch_size: int = 256,
        progress: Callable[[int, int], None] | None = None,
    ) -> ScreenedStarts:
        """Steps 1 to 3: up to `top_n` distinct start patterns per map of `map_index` (distinct ints [M]).

        A map with fewer firing patterns gets fewer starts; one with none gets none. `progress` gets the
        screen's (patterns done, patterns), see `screen`.
        """
        map_index = np.asarray(map_index, np.int32)
        top_n = check_positive_int("top_n", top_n)
        scores, pattern_index = self.screen(map_index, max(keep, top_n), progress)
        nonnegative = self.ascent.objective.nonnegative
        rows = [
            (map_id, pattern)
            for map_id, row_scores, row in zip(map_index, scores, pattern_index)
            for score, pattern in zip(row_scores, row)
            if score > 0 or not nonnegative
        ]
        empty = ScreenedStarts(
            np.zeros([0, *self.ascent.image_shape], np.float32),
            *(np.zeros([0], dtype) for dtype in (np.int32, np.int32, np.int32, np.float32)),
        )
        if not rows:
            return empty
        maps = np.array([row[0] for row in rows], np.int32)
        patterns = np.array([row[1] for row in rows], np.int32)
        images = self.scan.patterns(patterns).numpy()
        scan_scores = np.concatenate(
            [
                self.ascent(
                    images[begin : begin + batch_size],
                    maps[begin : begin + batch_size],
                    steps=scan_steps,
                    epsilon=self.scan.epsilon,
                    conv_criterion=0.0,
                ).loss
                for begin in range(0, len(maps), batch_size)
            ]
        )
        chosen, ranks = [], []
        for map_id in dict.fromkeys(maps.tolist()):
            rows_of_map = np.flatnonzero(maps == map_id)
            rows_of_map = rows_of_map[np.argsort(-scan_scores[rows_of_map], kind="stable")]
            _, first = np.unique(images[rows_of_map].reshape(len(rows_of_map), -1), axis=0, return_index=True)
            best = rows_of_map[np.sort(first)][:top_n]
            chosen.extend(best.tolist())
            ranks.extend(range(len(best)))
        chosen = np.asarray(chosen, np.int64)
        return ScreenedStarts(
            images[chosen], maps[chosen], np.asarray(ranks, np.int32), patterns[chosen], scan_scores[chosen]
        )
