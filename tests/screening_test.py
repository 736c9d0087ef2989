"""Tests of the shared precursor screening (auto's precursor stage) against brute force."""

import numpy as np
import tensorflow as tf
from helpers import CHECKERBOARD_PATTERN, large_scale_model

from oipgraph.ascent import OIPAscent
from oipgraph.core.errors import OIPGraphError
from oipgraph.strategies.precursor import PrecursorScan
from oipgraph.strategies.screening import SharedScreen


class SharedScreenTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ascent = OIPAscent(large_scale_model(), "conv")
        cls.scan = PrecursorScan(cls.ascent, values=(0.2, 0.8))
        cls.losses = cls.ascent.objective.all_targets(cls.scan.patterns(tf.range(cls.scan.num_patterns))).numpy()

    def test_screen_is_the_brute_force_top_k_per_map_across_chunks(self):
        # Chunks of 100 of 512 patterns: the running top-k must carry over chunk ends; ties keep the lower index.
        screen = SharedScreen(self.scan, chunk_size=100)
        maps = np.array([1, 0, 2])
        scores, patterns = screen.screen(maps, keep=40)
        self.assertEqual(patterns.shape, (3, 40))
        for row, map_id in enumerate(maps):
            expected = np.argsort(-self.losses[:, map_id], kind="stable")[:40]
            self.assertAllEqual(patterns[row], expected)
            self.assertAllClose(scores[row], self.losses[expected, map_id])

    def test_starts_rank_firing_patterns_by_the_scan_and_skip_maps_without_any(self):
        screen = SharedScreen(self.scan, chunk_size=100)
        result = screen.starts([2, 1], top_n=3, keep=8)
        # No 3x3 pattern fires map 2 (a 4x4 checkerboard); two fire map 1, the 3x3 checkerboard best.
        self.assertEqual(np.sum(self.losses[:, 2] > 0), 0)
        self.assertEqual(np.sum(self.losses[:, 1] > 0), 2)
        self.assertAllEqual(result.map_index, [1, 1])
        self.assertAllEqual(result.rank, [0, 1])
        self.assertEqual(result.pattern_index[0], CHECKERBOARD_PATTERN)
        self.assertTrue(np.all(np.diff(result.scores) <= 0), result.scores)
        # The scores are the loss after the scan steps, from the screen's 8 best patterns.
        best8 = np.argsort(-self.losses[:, 1], kind="stable")[:8]
        scanned = self.ascent(self.scan.patterns(best8).numpy(), 1, steps=10, conv_criterion=0.0).loss
        self.assertAllClose(result.scores, np.sort(scanned)[::-1][:2], atol=1e-6)
        self.assertAllClose(result.images, self.scan.patterns(result.pattern_index))

    def test_bad_arguments(self):
        screen = SharedScreen(self.scan)
        with self.assertRaisesRegex(OIPGraphError, "map index 4 out of range: layer conv has maps 0..3"):
            screen.screen(np.array([4]), keep=2)
        with self.assertRaisesRegex(OIPGraphError, "keep must be a positive integer, got 0"):
            screen.screen(np.array([1]), keep=0)


if __name__ == "__main__":
    tf.test.main()
