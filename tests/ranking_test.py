"""Tests of oipgraph.strategies.ranking: chunk sizes, the running top-N and successive halving."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from oipgraph.core.errors import OIPGraphError
from oipgraph.strategies import ranking


def stable_top(scores: np.ndarray, top_n: int) -> np.ndarray:
    """The indices of the `top_n` highest scores, the lower index first among equal scores."""
    return np.argsort(-scores, kind="stable")[:top_n]


class RankingTest(tf.test.TestCase):
    def test_best_of_equals_a_stable_sort_for_every_chunk_size(self):
        # Few distinct values, so that many scores tie across chunk borders.
        scores = np.random.default_rng(0).integers(0, 5, 50).astype(np.float32)
        candidates = tf.range(50)
        for chunk_size in (1, 3, 7, 50, 64):
            for top_n in (1, 6, 50):
                with self.subTest(chunk_size=chunk_size, top_n=top_n):
                    best_scores, best_index = ranking.best_of(
                        candidates, lambda index: tf.gather(scores, index), chunk_size, tf.constant(top_n)
                    )
                    self.assertAllEqual(best_index, stable_top(scores, top_n))
                    self.assertAllEqual(best_scores, scores[stable_top(scores, top_n)])

    def test_best_of_a_subset_returns_candidate_indices(self):
        scores = np.arange(20, dtype=np.float32)[::-1].copy()  # lower index, higher score
        candidates = tf.constant([3, 5, 11, 17], tf.int32)
        _, best_index = ranking.best_of(candidates, lambda index: tf.gather(scores, index), 3, tf.constant(2))
        self.assertAllEqual(best_index, [3, 5])

    def test_halving_pool_and_prunes(self):
        halving = ranking.Halving(steps=2, keep=12, keep_per_result=2)
        self.assertEqual(int(halving.pool_size(5, 81)), 12)
        self.assertEqual(int(halving.pool_size(20, 81)), 40)
        self.assertEqual(int(halving.pool_size(50, 81)), 81)
        self.assertTrue(bool(halving.prunes(10, 5, 81)))
        self.assertFalse(bool(halving.prunes(2, 5, 81)))  # no steps left after the ranking
        self.assertFalse(bool(halving.prunes(10, 41, 81)))  # would keep all 81
        self.assertFalse(bool(ranking.Halving(steps=0).prunes(10, 5, 81)))  # exhaustive

    def test_bad_halving_settings_name_the_value(self):
        for kwargs, words in [
            ({"steps": -1}, ("halving_steps", "-1")),
            ({"steps": 1.5}, ("halving_steps", "1.5")),
            ({"steps": True}, ("halving_steps", "True")),
            ({"keep": 0}, ("halving_keep", "0")),
            ({"keep_per_result": -3}, ("halving_keep_per_result", "-3")),
        ]:
            with self.subTest(**kwargs):
                with self.assertRaises(OIPGraphError) as raised:
                    ranking.Halving(**kwargs)
                for word in words:
                    self.assertIn(word, str(raised.exception))

    def test_chunk_size_fits_the_memory_budget(self):
        model = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Conv2D(8, 3)])
        per_image = ranking.activation_bytes_per_image(model)
        self.assertEqual(per_image, 62 * 62 * 8 * 4 * 4)
        fitting = ranking.CHUNK_MEMORY_BUDGET // per_image
        self.assertEqual(ranking.chunk_size_for(model, None, 10**6), min(ranking.PREFERRED_CHUNK_SIZE, fitting))
        self.assertEqual(ranking.chunk_size_for(model, None, 9), 9)
        self.assertEqual(ranking.chunk_size_for(model, fitting, 10**6), fitting)
        with self.assertRaisesRegex(OIPGraphError, f"chunk_size {fitting + 1} needs about .* at most {fitting} fits"):
            ranking.chunk_size_for(model, fitting + 1, 10**6)
        with self.assertRaisesRegex(OIPGraphError, "chunk_size must be a positive integer, got 0"):
            ranking.chunk_size_for(model, 0, 10)


if __name__ == "__main__":
    tf.test.main()
