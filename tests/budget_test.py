"""auto's escalation plan for a given budget and measured cost (pure functions, no timing)."""

import io

import numpy as np
import tensorflow as tf

from oipgraph.core.progress import Progress
from oipgraph.strategies import budget
from oipgraph.strategies.budget import EscalationShape, PrecursorPlan

DEFAULT = PrecursorPlan(grid=3, values=(0.2, 0.5, 0.8), keep=32, scan_steps=10, starts=3)
# 128 pairs of 600 steps; the 100 that fired ran half their steps: r = 0.5; the precursor's ascent 1200 steps.
SHAPE = EscalationShape(
    fired_image_steps=100 * 300,
    fired_pairs=100,
    random_pairs=128,
    random_steps=600,
    inits=1,
    precursor_steps=1200,
    wake_steps=200,
    final_steps=600,
)


class CostTest(tf.test.TestCase):
    def test_costs_follow_the_formulas(self):
        self.assertEqual(SHAPE.steps_share, 0.5)
        self.assertEqual(DEFAULT.num_patterns(colors=1), 19683)
        # 19683 patterns x 0.5 + 4 maps x 32 x 10 + 4 maps x 3 starts x 1200 x 0.5
        self.assertAllClose(budget.precursor_cost(DEFAULT, 4, SHAPE), 19683 * 0.5 + 1280 + 7200)
        self.assertEqual(budget.precursor_cost(DEFAULT, 0, SHAPE), 0.0)
        self.assertEqual(budget.preactivation_cost(5, SHAPE), 5 * (200 + 300))

    def test_the_ladder_shrinks_one_thing_per_rung(self):
        ladder = budget.precursor_ladder(DEFAULT)
        self.assertEqual(ladder[0], DEFAULT)
        self.assertEqual(
            [(rung.starts, rung.keep, rung.scan_steps, len(rung.values), rung.grid) for rung in ladder],
            [(3, 32, 10, 3, 3), (1, 32, 10, 3, 3), (1, 8, 10, 3, 3), (1, 8, 5, 3, 3), (1, 8, 5, 2, 3), (1, 8, 5, 2, 2)],
        )
        costs = [budget.precursor_cost(rung, 4, SHAPE) for rung in ladder]
        self.assertEqual(costs, sorted(costs, reverse=True))


class PlanTest(tf.test.TestCase):
    def plan(self, limit, dark_pairs=4, dark_maps=4, can_wake=True):
        return budget.plan_escalation(limit, DEFAULT, dark_pairs, dark_maps, SHAPE, can_wake)

    def test_no_limit_is_the_default_plan(self):
        plan = self.plan(None)
        self.assertEqual(plan.order, ("precursor", "preactivation"))
        self.assertEqual(plan.precursor, DEFAULT)
        self.assertEqual(self.plan(None, can_wake=False).order, ("precursor",))

    def test_the_largest_precursor_that_fits_beside_the_wake_up(self):
        wake = budget.preactivation_cost(4, SHAPE)
        ladder = budget.precursor_ladder(DEFAULT)
        for index, rung in enumerate(ladder):
            limit = budget.precursor_cost(rung, 4, SHAPE) + wake
            with self.subTest(rung=index):
                self.assertEqual(self.plan(limit), budget.EscalationPlan(("precursor", "preactivation"), rung, limit))
                if index + 1 < len(ladder):  # A hair less: the next rung.
                    self.assertEqual(self.plan(limit - 0.5).precursor, ladder[index + 1])

    def test_wake_up_first_when_no_precursor_fits_beside_it(self):
        smallest = budget.precursor_cost(budget.precursor_ladder(DEFAULT)[-1], 4, SHAPE)
        wake = budget.preactivation_cost(4, SHAPE)
        plan = self.plan(smallest + wake - 1)
        self.assertEqual(plan.order, ("preactivation", "precursor"))
        self.assertIsNone(plan.precursor)
        # What is left after the wake-up decides the precursor then.
        self.assertEqual(budget.plan_precursor(smallest, DEFAULT, 4, SHAPE), budget.precursor_ladder(DEFAULT)[-1])
        self.assertIsNone(budget.plan_precursor(smallest - 1, DEFAULT, 4, SHAPE))

    def test_without_a_wake_up_the_precursor_alone_and_a_zero_budget_escalates_nothing(self):
        full = budget.precursor_cost(DEFAULT, 4, SHAPE)
        self.assertEqual(self.plan(full, can_wake=False), budget.EscalationPlan(("precursor",), DEFAULT, full))
        nothing = self.plan(0.0)
        self.assertEqual(nothing.order, ("precursor",))
        self.assertIsNone(nothing.precursor)

    def test_the_basis_is_the_random_stage_as_asked_and_r_comes_from_the_pairs_that_fired(self):
        self.assertEqual(SHAPE.basis, 128 * 600)
        # Dark pairs stop after a few steps: neither the basis nor r may shrink with them.
        mostly_dark = EscalationShape(2 * 100, 2, 16, 100, 1, 1200, 200, 100)
        self.assertEqual((mostly_dark.basis, mostly_dark.steps_share), (1600.0, 1.0))
        self.assertEqual(EscalationShape(0.0, 0, 16, 100, 1, 1200, 200, 100).steps_share, 1.0)
        # escalation_budget 1: the full plan for 4 dark maps (19,683 x 0.5 + 8,480 + a wake-up of 2,000) fits.
        limit = 1.0 * SHAPE.basis
        self.assertEqual(self.plan(limit).precursor, DEFAULT)
        self.assertNotEqual(self.plan(limit, dark_pairs=40, dark_maps=40).precursor, DEFAULT)

    def test_the_wake_up_of_as_many_pairs_as_fit_when_not_all_do(self):
        per_pair = budget.preactivation_cost(1, SHAPE)
        plan = self.plan(3.5 * per_pair, dark_pairs=10, dark_maps=10)
        self.assertEqual(plan, budget.EscalationPlan(("preactivation",), None, 3.5 * per_pair, wake_pairs=3))
        # Without a wake-up (or budget for one pair), the precursor alone if its smallest form fits, else nothing.
        self.assertEqual(self.plan(per_pair - 1, dark_pairs=10, dark_maps=10).wake_pairs, None)
        self.assertEqual(self.plan(3.5 * per_pair, dark_pairs=10, dark_maps=10, can_wake=False).order, ("precursor",))

    def test_whole_maps_in_map_order(self):
        map_index = np.array([4, 4, 2, 2, 7, 7, 9])
        rows = np.array([0, 1, 2, 3, 4, 5, 6])
        self.assertAllEqual(budget.whole_maps(rows, map_index, 5), [0, 1, 2, 3])
        self.assertAllEqual(budget.whole_maps(rows, map_index, 1), [])
        self.assertAllEqual(budget.whole_maps(rows[4:], map_index, 3), [4, 5, 6])


class MemoryTest(tf.test.TestCase):
    def test_batch_within_memory(self):
        gib = 2**30
        self.assertEqual(budget.batch_within_memory(gib // 4, 3 * gib, gib, 256), 8)
        self.assertEqual(budget.batch_within_memory(1000, 3 * gib, gib, 256), 256)
        self.assertEqual(budget.batch_within_memory(2 * gib, 3 * gib, 2 * gib, 256), 0)
        # A chunk's results held beside the batch leave less for it.
        self.assertEqual(budget.batch_within_memory(gib // 4, 3 * gib, gib, 256, reserved_bytes=gib), 4)
        self.assertEqual(budget.batch_within_memory(gib // 4, 3 * gib, gib, 256, reserved_bytes=2 * gib), 0)
        # 224x224 RGB, 8 snapshots: final image, start image and 8 frames of float32.
        self.assertEqual(budget.result_bytes_per_pair((224, 224, 3), 8), 10 * 224 * 224 * 3 * 4)
        self.assertGreater(budget.resident_bytes(), 0)

    def test_chunks_hold_at_most_the_chunk_results(self):
        at_224 = budget.result_bytes_per_pair((224, 224, 3), 8)  # 6.0 MB: 89 pairs in 512 MiB.
        self.assertEqual(budget.chunk_maps(256, 1, at_224), 89)
        self.assertEqual(budget.chunk_maps(256, 4, at_224), 22)
        self.assertEqual(budget.chunk_maps(16, 1, at_224), 16)
        # Small images keep --batch_size // --inits_per_map (the shipped model's chunks are unchanged).
        self.assertEqual(budget.chunk_maps(256, 1, budget.result_bytes_per_pair((28, 28, 1), 8)), 256)
        self.assertEqual(budget.chunk_maps(256, 3, budget.result_bytes_per_pair((128, 128, 3), 8)), 85)
        # Never less than one map, even when one map's pairs alone pass the cap.
        self.assertEqual(budget.chunk_maps(256, 8, budget.CHUNK_RESULT_BYTES), 1)


class ProgressTest(tf.test.TestCase):
    def test_plain_lines_without_control_characters_off_a_terminal(self):
        stream = io.StringIO()
        progress = Progress(10, unit="map", label="oipgraph", stream=stream, interval=0.0)
        self.assertFalse(progress.live)
        progress.update(3, stage="random 30%")
        progress.update(5, stage="precursor screen 1024/19683 patterns", eta=65.0)
        progress.write("chunk 1 of 1: planned")
        progress.finish("done")
        text = stream.getvalue()
        for character in ("\x1b", "\b", "\r"):
            self.assertNotIn(character, text)
        lines = text.splitlines()
        self.assertEqual(lines[1], "oipgraph: 5/10 maps, 0:00 elapsed, ETA 1:05 (precursor screen 1024/19683 patterns)")
        self.assertEqual(lines[2:], ["oipgraph: chunk 1 of 1: planned", lines[3], "done"])
        self.assertTrue(lines[3].startswith("oipgraph: 5/10 maps"))

    def test_live_bar_redraws_in_place(self):
        stream = io.StringIO()
        progress = Progress(4, unit="chunk", stream=stream, live=True)
        progress.update(2, force=True)
        progress.finish()
        self.assertTrue(stream.getvalue().startswith("\r[============............] 2/4 chunks"))
        self.assertTrue(stream.getvalue().endswith("\n"))
        self.assertNotIn("\x1b", stream.getvalue())

    def test_disabled_writes_nothing(self):
        stream = io.StringIO()
        progress = Progress(4, stream=stream, enabled=False)
        progress.update(2, force=True)
        progress.finish("summary")
        self.assertEqual(stream.getvalue(), "")
