"""Tests of the start strategies: coarse_to_fine, precursor, preactivation, auto escalation, and merged results."""

import contextlib
import dataclasses
from unittest import mock

import keras
import numpy as np
import tensorflow as tf
from helpers import (
    CHECKERBOARD_4X4_PATTERN,
    CHECKERBOARD_PATTERN,
    PIXEL_CHECKERBOARD,
    SIZE,
    THRESHOLD,
    large_scale_model,
)

from oipgraph import starts, strategies
from oipgraph.ascent import STATUS_COMPLETED, STATUS_NO_ACTIVATION, AscentResult, OIPAscent, results
from oipgraph.core.errors import OIPGraphError
from oipgraph.strategies import OIPRun, StrategySettings, auto, create_oips, precursor_strategy, start_images
from oipgraph.strategies.precursor import PrecursorScan
from oipgraph.strategies.screening import SharedScreen


def fast_settings(**overrides) -> StrategySettings:
    settings = StrategySettings(
        steps=60, cells=(3, 6, 12), coarse_to_fine_steps=(10, 20), precursor_values=(0.2, 0.8), precursor_top_n=3
    )
    return dataclasses.replace(settings, **overrides)


@contextlib.contextmanager
def recording_stages(calls: list):
    """auto's stages (random, precursor, preactivation), each appending (stage, map_index list) to `calls`."""
    stages = {"random": "random_strategy", "precursor": "precursor_stage", "preactivation": "preactivation_strategy"}

    def recording(name, function):
        def run(ascent, map_index, *args, **kwargs):
            calls.append((name, map_index.tolist()))
            return function(ascent, map_index, *args, **kwargs)

        return run

    with contextlib.ExitStack() as stack:
        for name, attribute in stages.items():
            stack.enter_context(mock.patch.object(auto, attribute, recording(name, getattr(auto, attribute))))
        yield


class LargeScaleMapTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ascent = OIPAscent(large_scale_model(), "conv")

    def test_random_starts_never_fire_but_the_precursor_finds_the_pattern(self):
        run = create_oips(self.ascent, [0, 1], "random", seed=0, inits_per_map=3, settings=fast_settings())
        self.assertEqual(run.result.status_names[3:], ["no_activation"] * 3)
        self.assertAllEqual(run.result.loss[3:], np.zeros(3))
        self.assertNotIn("no_activation", run.result.status_names[:3])
        best = PrecursorScan(self.ascent, values=(0.2, 0.8)).run(1, scan_steps=10, top_n=3)
        self.assertEqual(best.pattern_index[0], CHECKERBOARD_PATTERN)
        self.assertGreater(best.scores[0], 0.0)

    def test_auto_stages_run_in_order_and_stop_once_every_map_has_an_oip(self):
        cases = [
            # map 0 fires for random starts: nothing escalates.
            ([0], [("random", [0, 0])]),
            # map 1 needs the 3x3 checkerboard: the precursor stage is the last.
            ([0, 1], [("random", [0, 0, 1, 1]), ("precursor", [1, 1])]),
            # maps 2 (a 4x4 checkerboard, no 3x3 pattern fires it) and 3 (single pixels) need the wake-up.
            (
                [0, 1, 2, 3],
                [
                    ("random", [0, 0, 1, 1, 2, 2, 3, 3]),
                    ("precursor", [1, 1, 2, 2, 3, 3]),
                    ("preactivation", [2, 2, 3, 3]),
                ],
            ),
        ]
        for maps, expected in cases:
            with self.subTest(maps=maps):
                calls = []
                with recording_stages(calls):
                    run = create_oips(self.ascent, maps, "auto", seed=0, inits_per_map=2, settings=fast_settings())
                self.assertEqual(calls, expected)
                self.assertEqual([stage.name for stage in run.stages], [name for name, _ in expected])
                self.assertEqual([stage.pairs for stage in run.stages], [len(pairs) for _, pairs in expected])
                self.assertEqual(sum(stage.fired for stage in run.stages), 2 * len(maps))
                self.assertNotIn("no_activation", run.result.status_names)
                self.assertTrue(np.all(run.result.loss > 0), run.result.loss)
                self.assertAllEqual(run.init_index, [0, 1] * len(maps))
        expected_strategy = ["random"] * 2 + ["precursor"] * 2 + ["preactivation"] * 4
        self.assertEqual(run.strategy, expected_strategy)
        scan = PrecursorScan(self.ascent, values=(0.2, 0.8))
        self.assertAllClose(run.start_images[2], scan.patterns([CHECKERBOARD_PATTERN])[0])
        # The wake-up starts from the random start (the same seeds as random).
        random = create_oips(self.ascent, [3], "random", seed=0, inits_per_map=2, settings=fast_settings())
        self.assertAllEqual(run.start_images[6:], random.start_images)

    def test_auto_precursor_stage_gives_init_i_the_i_th_best_of_its_starts(self):
        settings = fast_settings(auto_precursor_starts=3)
        rows, run = auto.precursor_stage(
            self.ascent,
            np.array([1, 1, 2], np.int32),
            np.array([0, 1, 0], np.int32),
            0,
            settings,
            auto.default_precursor_plan(settings),
        )
        # Map 2 has no firing 3x3 pattern: its pair is not covered.
        self.assertAllEqual(rows, [0, 1])
        self.assertEqual(run.strategy, ["precursor"] * 2)
        self.assertGreaterEqual(run.result.loss[0], run.result.loss[1])
        self.assertGreater(run.result.loss[1], 0.0)
        starts_of_map = SharedScreen(PrecursorScan(self.ascent, values=(0.2, 0.8))).starts(
            [1], top_n=3, keep=settings.auto_screen_keep
        )
        # Only two 3x3 patterns fire map 1: both start a full ascent, init 0 takes the better.
        self.assertLen(starts_of_map.images, 2)
        finals = self.ascent(starts_of_map.images, 1, steps=settings.steps).loss
        self.assertAllClose(run.result.loss, np.sort(finals)[::-1], atol=1e-5)

    def test_precursor_inits_are_the_best_results_in_order(self):
        settings = fast_settings()
        run = create_oips(self.ascent, [1], "precursor", inits_per_map=3, settings=settings)
        self.assertEqual(run.strategy, ["precursor"] * 3)
        self.assertEqual(run.result.loss_history.shape, (3, settings.steps))
        self.assertTrue(np.all(np.diff(run.result.loss) <= 0), run.result.loss)
        self.assertGreater(run.result.loss[0], 0.0)
        # A map's OIPs do not depend on the seed or on the other maps in the run.
        alone = create_oips(self.ascent, [0, 1], "precursor", seed=5, inits_per_map=3, settings=settings)
        self.assertAllClose(alone.result.images[3:], run.result.images)
        self.assertAllClose(alone.start_images[3:], run.start_images)

    def test_precursor_falls_back_to_the_4x4_grid(self):
        without = create_oips(self.ascent, [2], "precursor", settings=fast_settings(precursor_fallbacks=()))
        self.assertEqual(without.result.status_names, ["no_activation"])
        run = create_oips(self.ascent, [1, 2], "precursor", inits_per_map=2, settings=fast_settings())
        self.assertNotIn("no_activation", run.result.status_names)
        self.assertEqual(run.strategy, ["precursor"] * 4)
        grid3 = PrecursorScan(self.ascent, values=(0.2, 0.8))
        grid4 = PrecursorScan(self.ascent, grid=4, values=(0.2, 0.8))
        self.assertAllClose(run.start_images[0], grid3.patterns([CHECKERBOARD_PATTERN])[0])
        self.assertAllClose(run.start_images[2], grid4.patterns([CHECKERBOARD_4X4_PATTERN])[0])

    def test_precursor_starts_are_distinct_images(self):
        # Map 0 is linear in the image, so the zero image (every constant pattern) scans best:
        # it steps straight onto the kernel. It must start one ascent, not two.
        scan = PrecursorScan(self.ascent, values=(0.2, 0.8))
        self.assertAllEqual(scan.run(0, 10, 3).pattern_index[:2], [0, scan.num_patterns - 1])
        run = create_oips(self.ascent, [0], "precursor", inits_per_map=3, settings=fast_settings())
        flat = run.start_images.reshape(3, -1)
        self.assertLen(np.unique(flat, axis=0), 3)
        self.assertAllEqual(run.start_images[0], np.zeros([SIZE, SIZE, 1]))

    def test_precursor_final_steps_default_to_1200(self):
        scan_results = PrecursorScan(self.ascent, values=(0.2, 0.8)).run(0, 10, 1)
        with mock.patch.object(precursor_strategy, "run_in_batches", wraps=strategies.run_in_batches) as wrapped:
            create_oips(self.ascent, [0], "precursor", settings=fast_settings(steps=None, precursor_top_n=1))
        self.assertEqual(wrapped.call_args.kwargs["steps"], strategies.DEFAULT_PRECURSOR_STEPS)
        self.assertAllClose(wrapped.call_args.args[1], scan_results.images)

    def test_preactivation_wakes_the_map_that_no_start_excites(self):
        settings = fast_settings()
        random = create_oips(self.ascent, [0, 3], "random", seed=2, inits_per_map=2, settings=settings)
        self.assertEqual(random.result.status_names[2:], ["no_activation"] * 2)
        run = create_oips(self.ascent, [0, 3], "preactivation", seed=2, inits_per_map=2, settings=settings)
        self.assertEqual(run.strategy, ["preactivation"] * 4)
        self.assertNotIn("no_activation", run.result.status_names)
        self.assertTrue(np.all(run.result.loss[2:] > 0), run.result.loss)
        # Same starts as random; where the map fires already the wake-up leaves the start alone.
        self.assertAllEqual(run.start_images, random.start_images)
        self.assertAllEqual(run.result.images[:2], random.result.images[:2])
        # The woken OIP of map 3 is the pixel checkerboard the map looks for.
        correlation = np.sum(run.result.images[2:, :, :, 0] * PIXEL_CHECKERBOARD, axis=(1, 2)) / SIZE**2
        self.assertAllGreater(correlation, THRESHOLD)


class CoarseToFineTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ascent = OIPAscent(large_scale_model(), "conv")

    def test_stages_add_finer_scales_with_the_configured_steps(self):
        settings = fast_settings()
        with mock.patch.object(start_images, "run_in_batches", wraps=strategies.run_in_batches) as wrapped:
            run = create_oips(self.ascent, [0, 1], "coarse_to_fine", seed=4, inits_per_map=2, settings=settings)
        self.assertEqual([call.kwargs["steps"] for call in wrapped.call_args_list], [10, 20, 60])
        self.assertEqual([call.kwargs.get("conv_criterion") for call in wrapped.call_args_list], [0.0, 0.0, None])
        self.assertEqual(run.strategy, ["coarse_to_fine"] * 4)
        self.assertEqual(run.result.loss_history.shape, (4, 60))
        seeds = starts.start_seeds(4, run.streams)
        coarse = starts.multiscale(seeds, self.ascent.image_shape, cells=(3,), factors=(0.5,))
        self.assertAllClose(run.start_images, coarse)
        # The final stage starts from the stage-2 image with the finest scale added.
        second_stage = wrapped.call_args_list[1]
        raw = 0.5 * starts.scale_noise(seeds, self.ascent.image_shape, 3, 0) + 0.5 * starts.scale_noise(
            seeds, self.ascent.image_shape, 6, 1
        )
        epsilon = settings.step_size(self.ascent)
        stage_result = second_stage.args[0](second_stage.args[1], second_stage.args[2], 20, epsilon, 0.0)
        expected = starts.add_scale(
            stage_result.images, raw, 0.5 * starts.scale_noise(seeds, self.ascent.image_shape, 12, 2)
        )
        self.assertAllClose(wrapped.call_args_list[2].args[1], expected, atol=1e-5)

    def test_same_seed_same_result(self):
        settings = fast_settings()
        first = create_oips(self.ascent, [0], "coarse_to_fine", seed=1, inits_per_map=2, settings=settings)
        again = create_oips(self.ascent, [0], "coarse_to_fine", seed=1, inits_per_map=2, settings=settings)
        other = create_oips(self.ascent, [0], "coarse_to_fine", seed=2, inits_per_map=2, settings=settings)
        self.assertAllEqual(first.result.images, again.result.images)
        self.assertNotAllClose(first.start_images, other.start_images)

    def test_adding_scales_without_ascent_gives_the_multiscale_start(self):
        seeds = starts.start_seeds(9, range(4))
        shape = (SIZE, SIZE, 1)
        cells, factors = (3, 6, 12), (0.5, 0.3, 0.2)
        raw = factors[0] * starts.scale_noise(seeds, shape, cells[0], 0)
        images = tf.image.per_image_standardization(raw)
        for scale in (1, 2):
            added = factors[scale] * starts.scale_noise(seeds, shape, cells[scale], scale)
            images = starts.add_scale(images, raw, added)
            raw += added
        self.assertAllClose(images, starts.multiscale(seeds, shape, cells, factors), atol=1e-5)

    def test_stage_steps_must_match_the_scales(self):
        with self.assertRaisesRegex(OIPGraphError, r"coarse_to_fine_steps must give 2 step counts .* got \[20\]"):
            create_oips(self.ascent, [0], "coarse_to_fine", settings=fast_settings(coarse_to_fine_steps=(20,)))
        with self.assertRaisesRegex(OIPGraphError, r"coarse_to_fine_steps must be positive integers, got \[20, 0\]"):
            create_oips(self.ascent, [0], "coarse_to_fine", settings=fast_settings(coarse_to_fine_steps=(20, 0)))


def fake_result(map_index, loss, status, steps) -> AscentResult:
    count = len(map_index)
    loss = np.asarray(loss, np.float32)
    return AscentResult(
        map_index=np.asarray(map_index, np.int32),
        images=np.full([count, 2, 2, 1], steps, np.float32),
        loss=loss,
        loss_history=np.tile(loss[:, None], [1, steps]),
        steps_run=np.full([count], steps, np.int32),
        status=np.asarray(status, np.int32),
        snapshots=np.zeros([count, 3, 2, 2, 1], np.float32),
        snapshot_steps=np.tile(np.array([0, steps // 2, steps], np.int32), (count, 1)),
    )


@contextlib.contextmanager
def stand_in_stages(stand_ins: dict):
    """auto's stages replaced by `stand_ins` (stage name -> function with the stage's signature)."""
    stages = {"random": "random_strategy", "precursor": "precursor_stage", "preactivation": "preactivation_strategy"}
    with contextlib.ExitStack() as stack:
        for name, function in stand_ins.items():
            stack.enter_context(mock.patch.object(auto, stages[name], function))
        yield


class AutoEscalationTest(tf.test.TestCase):
    """The escalation logic with stand-in stages: which pairs go where, and how results merge."""

    def test_pairs_escalate_only_while_without_an_oip(self):
        # random fires for maps 0 and 1; precursor for map 2 and has no start for map 4;
        # preactivation for map 3; map 4 never fires.
        fires = {"random": {0, 1}, "precursor": {2}, "preactivation": {3}}
        steps = {"random": 10, "precursor": 40, "preactivation": 30}
        calls = []

        def stand_in(name):
            def run(ascent, map_index, init_index, seed, settings, *precursor_form):
                calls.append((name, map_index.tolist()))
                rows = np.flatnonzero(map_index != 4) if name == "precursor" else np.arange(len(map_index))
                map_index, init_index = map_index[rows], init_index[rows]
                fired = np.isin(map_index, list(fires[name]))
                status = np.where(fired, STATUS_COMPLETED, STATUS_NO_ACTIVATION)
                result = fake_result(map_index, fired * (1.0 + map_index), status, steps[name])
                streams = starts.pair_stream(map_index, init_index)
                attempt = OIPRun(result, result.images, init_index, seed, streams, [name] * len(map_index))
                return (rows, attempt) if name == "precursor" else attempt

            return run

        ascent = OIPAscent(large_scale_model(), "conv")
        with stand_in_stages({name: stand_in(name) for name in steps}):
            run = auto.auto_strategy(ascent, np.arange(5, dtype=np.int32), np.zeros(5, np.int32), 0, fast_settings())
        self.assertEqual(calls, [("random", [0, 1, 2, 3, 4]), ("precursor", [2, 3, 4]), ("preactivation", [3, 4])])
        # Map 4 had no precursor start: it keeps random's result until the wake-up replaces it.
        self.assertEqual(run.strategy, ["random", "random", "precursor", "preactivation", "preactivation"])
        self.assertEqual(run.result.status_names, ["completed"] * 4 + ["no_activation"])
        self.assertAllClose(run.result.loss, [1.0, 2.0, 3.0, 4.0, 0.0])
        self.assertAllEqual(run.result.steps_run, [10, 10, 40, 30, 30])
        self.assertAllClose(run.start_images[:, 0, 0, 0], [10, 10, 40, 30, 30])
        self.assertEqual(
            [(stage.name, stage.pairs, stage.fired) for stage in run.stages],
            [("random", 5, 2), ("precursor", 3, 1), ("preactivation", 2, 1)],
        )
        # Histories are widened to the longest run, repeating each pair's final loss.
        self.assertEqual(run.result.loss_history.shape, (5, 40))
        self.assertAllClose(run.result.loss_history[0], np.full(40, 1.0))
        # Different step budgets: snapshot steps per pair.
        self.assertAllEqual(run.result.snapshot_steps, [[0, 5, 10], [0, 5, 10], [0, 20, 40], [0, 15, 30], [0, 15, 30]])

    def test_a_plan_record_of_an_older_version_is_planned_again(self):
        def random_stand_in(ascent, map_index, init_index, seed, settings):
            result = fake_result(map_index, np.ones(len(map_index)), np.full(len(map_index), STATUS_COMPLETED), 10)
            streams = starts.pair_stream(map_index, init_index)
            return OIPRun(result, result.images, init_index, seed, streams, ["random"] * len(map_index))

        older = {"random": {"pairs": 2, "image_steps": 20.0}, "order": ["precursor"], "precursor": None}
        saved = []
        settings = fast_settings(plan_record=older, on_plan=saved.append)
        ascent = OIPAscent(large_scale_model(), "conv")
        with stand_in_stages({"random": random_stand_in}):
            run = auto.auto_strategy(ascent, np.arange(2, dtype=np.int32), np.zeros(2, np.int32), 0, settings)
        self.assertEqual(run.strategy, ["random", "random"])
        self.assertEqual(saved, [{"random": {"pairs": 2, "fired_pairs": 2, "fired_image_steps": 20.0}}])

    def test_layers_without_a_pre_activation_stop_after_the_precursor(self):
        inputs = keras.Input((SIZE, SIZE, 1))
        features = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(inputs)
        ascent = OIPAscent(keras.Model(inputs, keras.layers.MaxPooling2D(2, name="pool")(features)), "pool")
        never = fake_result([0], [0.0], [STATUS_NO_ACTIVATION], 10)

        def stand_in(ascent, map_index, init_index, seed, settings, *precursor_form):
            streams = starts.pair_stream(map_index, init_index)
            attempt = OIPRun(never, never.images, init_index, seed, streams, ["stand-in"])
            return (np.arange(1), attempt) if precursor_form else attempt

        wake = mock.Mock()
        stand_ins = {"random": stand_in, "precursor": stand_in, "preactivation": wake}
        with stand_in_stages(stand_ins):
            run = create_oips(ascent, [0], "auto", settings=fast_settings())
        wake.assert_not_called()
        self.assertEqual(run.result.status_names, ["no_activation"])
        self.assertEqual([stage.name for stage in run.stages], ["random", "precursor"])
        with self.assertRaisesRegex(OIPGraphError, "layer pool has no pre-activation to ascend"):
            create_oips(ascent, [0], "preactivation", settings=fast_settings())


class ResultsTest(tf.test.TestCase):
    def test_select_and_replace_pairs(self):
        base = fake_result([0, 1, 2], [1.0, 0.0, 0.0], [0, 2, 2], 10)
        replacement = fake_result([2], [5.0], [0], 10)
        merged = results.replace_pairs(base, [2], replacement)
        self.assertAllClose(merged.loss, [1.0, 0.0, 5.0])
        self.assertAllEqual(merged.status, [0, 2, 0])
        self.assertAllEqual(merged.snapshot_steps, [[0, 5, 10]] * 3)
        self.assertAllClose(base.loss, [1.0, 0.0, 0.0])  # the inputs stay as they were
        picked = results.select_pairs(merged, [2, 0])
        self.assertAllEqual(picked.map_index, [2, 0])
        self.assertAllClose(picked.loss, [5.0, 1.0])
        with self.assertRaisesRegex(ValueError, "2 rows for 1 replacement pairs"):
            results.replace_pairs(base, [0, 1], replacement)


class SettingsTest(tf.test.TestCase):
    def test_bad_settings_give_one_line_errors(self):
        ascent = OIPAscent(large_scale_model(), "conv")
        cases = [
            ({"steps": 0}, "steps must be a positive integer, got 0"),
            ({"precursor_top_n": 0}, "precursor_top_n must be a positive integer, got 0"),
            ({"precursor_scan_steps": -1}, "precursor_scan_steps must be a positive integer, got -1"),
            ({"precursor_grid": 0}, "precursor_grid must be a positive integer, got 0"),
            ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
            ({"wake_steps": 0}, "wake_steps must be a positive integer, got 0"),
        ]
        for overrides, message in cases:
            with self.subTest(**overrides):
                with self.assertRaises(OIPGraphError) as caught:
                    create_oips(ascent, [0], "auto", settings=fast_settings(**overrides))
                self.assertEqual(str(caught.exception), message)
        with self.assertRaisesRegex(OIPGraphError, "values must hold at least one cell value"):
            create_oips(ascent, [0], "precursor", settings=fast_settings(precursor_values=()))

    def test_every_strategy_runs_through_create_oips(self):
        ascent = OIPAscent(large_scale_model(), "conv")
        for name in strategies.STRATEGIES:
            with self.subTest(strategy=name):
                run = create_oips(ascent, [0], name, inits_per_map=2, settings=fast_settings(steps=15))
                self.assertLen(run, 2)
                self.assertEqual(run.result.images.shape, (2, SIZE, SIZE, 1))
                self.assertEqual(run.start_images.shape, (2, SIZE, SIZE, 1))
                self.assertEqual(run.result.loss_history.shape, (2, 15))
                self.assertTrue(all(strategy == (name if name != "auto" else "random") for strategy in run.strategy))


def red_minus_green_model() -> keras.Model:
    """An RGB image -> a 1x1 map: relu(mean(red - green) - 1.9), after a separate ReLU layer (no wake-up).

    A gray pattern has red = green and never fires it; random multi-scale starts
    stay below the threshold; a red (or green-free) colour pattern gets above it.
    """
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    conv = keras.layers.Conv2D(1, SIZE, name="conv")
    model = keras.Model(inputs, keras.layers.ReLU(name="relu")(conv(inputs)))
    kernel = np.zeros((SIZE, SIZE, 3, 1), np.float32)
    kernel[:, :, 0, 0], kernel[:, :, 1, 0] = 1 / SIZE**2, -1 / SIZE**2
    conv.set_weights([kernel, np.array([-1.9], np.float32)])
    return model


class PrecursorColorsTest(tf.test.TestCase):
    def test_auto_scans_gray_by_default_and_the_colours_of_the_settings(self):
        # Gray stays the default for RGB models (BENCHMARKS.md, "RGB precursor colours"): a map that only a
        # colour fires gets its OIP when the settings ask for colours, from auto's screen and the per-map scan.
        ascent = OIPAscent(red_minus_green_model(), "relu")
        self.assertEqual(PrecursorScan(ascent).colors, ((1.0, 1.0, 1.0),))
        gray = create_oips(ascent, [0], "auto", settings=fast_settings(steps=20))
        self.assertEqual(gray.result.status_names, ["no_activation"])
        self.assertEqual([stage.name for stage in gray.stages], ["random", "precursor"])
        primaries = ((1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
        for strategy in ("auto", "precursor"):
            with self.subTest(strategy=strategy):
                run = create_oips(ascent, [0], strategy, settings=fast_settings(steps=20, precursor_colors=primaries))
                self.assertEqual(run.strategy, ["precursor"])
                self.assertGreater(run.result.loss[0], 0.0)
                red = run.start_images[0]
                self.assertGreater(red[..., 0].mean(), red[..., 1].mean())


if __name__ == "__main__":
    tf.test.main()
