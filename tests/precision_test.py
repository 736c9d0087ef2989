"""`precision=`: the bfloat16 copy of a model, the ascent in bfloat16, and what `auto` picks."""

import os
import tempfile
from unittest import mock

import helpers
import keras
import numpy as np
import tensorflow as tf

from oipgraph.ascent import OIPAscent
from oipgraph.core.errors import OIPGraphError
from oipgraph.models import precision
from oipgraph.objectives import build_objective
from oipgraph.starts import multiscale, start_seeds
from oipgraph.strategies import StrategySettings, create_oips


def small_model() -> keras.Model:
    """8 maps of a conv-pool-conv stack behind a Rescaling layer, and a softmax head."""
    inputs = keras.Input((12, 12, 1))
    scaled = keras.layers.Rescaling(0.5, name="scale")(inputs)
    features = helpers.seeded_conv(6, 3, "low", seed=1, activation="relu")(scaled)
    features = keras.layers.MaxPooling2D(2)(features)
    features = helpers.seeded_conv(8, 3, "high", seed=2, activation="relu")(features)
    head = keras.layers.Dense(
        3, activation="softmax", name="head", kernel_initializer=keras.initializers.GlorotUniform(seed=3)
    )
    return keras.Model(inputs, head(keras.layers.Flatten()(features)))


class Bfloat16ModelTest(tf.test.TestCase):
    def test_copy_computes_in_bfloat16_with_rounded_weights_and_keeps_preprocessing_float32(self):
        model = small_model()
        copy = precision.bfloat16_model(model)
        self.assertIs(precision.bfloat16_model(model), copy)  # One copy per model.
        self.assertEqual(copy.get_layer("scale").compute_dtype, "float32")
        for name in ("low", "high", "head"):
            layer, original = copy.get_layer(name), model.get_layer(name)
            self.assertEqual(layer.compute_dtype, "bfloat16")
            self.assertEqual(layer.kernel.dtype, "bfloat16")
            self.assertAllEqual(layer.kernel, tf.cast(original.kernel, tf.bfloat16))
        images = np.random.default_rng(0).normal(size=(4, 12, 12, 1)).astype(np.float32)
        self.assertEqual(copy(images).dtype, tf.bfloat16)
        self.assertAllClose(tf.cast(copy(images), tf.float32), model(images), rtol=0.03, atol=0.01)

    def test_objectives_of_the_copy_return_float32_close_to_the_float32_model(self):
        model = small_model()
        images = tf.constant(np.random.default_rng(1).normal(size=(3, 12, 12, 1)), tf.float32)
        for layer, targets in (("high", [0, 5, 7]), ("head", [0, 1, 2])):
            exact = build_objective(model, layer)(images, tf.constant(targets))
            halved = build_objective(precision.bfloat16_model(model), layer)(images, tf.constant(targets))
            with self.subTest(layer=layer):
                self.assertEqual(halved.dtype, tf.float32)
                self.assertAllClose(halved, exact, rtol=0.03, atol=0.01)


class ResolvePrecisionTest(tf.test.TestCase):
    def test_auto_is_bfloat16_where_the_hardware_has_it(self):
        self.assertEqual(precision.resolve_precision("float32"), "float32")
        self.assertEqual(precision.resolve_precision("bfloat16"), "bfloat16")
        for hardware, expected in ((True, "bfloat16"), (False, "float32")):
            with (
                self.subTest(hardware=hardware),
                mock.patch.object(precision, "has_bfloat16_hardware", return_value=hardware),
            ):
                self.assertEqual(precision.resolve_precision("auto"), expected)
        with self.assertRaisesRegex(OIPGraphError, "unknown precision 'half'; choose one of float32, bfloat16, auto"):
            precision.resolve_precision("half")

    def test_cpu_flags_are_read_from_cpuinfo(self):
        with tempfile.NamedTemporaryFile("w", suffix="cpuinfo", delete=False) as file:
            file.write("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n")
        self.addCleanup(os.remove, file.name)
        self.assertEqual(precision.cpu_bfloat16_flags(file.name), {"avx512_bf16"})
        self.assertEqual(precision.cpu_bfloat16_flags(file.name + ".missing"), set())


class Bfloat16AscentTest(tf.test.TestCase):
    def test_bfloat16_ascent_ends_near_float32_and_scores_in_float32(self):
        model = small_model()
        maps = list(range(8))
        starts = multiscale(start_seeds(0, maps), (12, 12, 1))
        exact = OIPAscent(model, "high", precision="float32")
        halved = OIPAscent(model, "high", precision="bfloat16")
        self.assertEqual(halved.precision, "bfloat16")
        self.assertIs(halved.objective.feature_model.get_layer("high"), model.get_layer("high"))
        ran = {name: ascent(starts, maps, steps=30) for name, ascent in (("exact", exact), ("halved", halved))}
        first_exact, first_halved = ran["exact"].loss_history[:, 0], ran["halved"].loss_history[:, 0]
        # The steps ran in bfloat16: from the same start images, the first loss is close but not the same.
        self.assertNotAllEqual(first_halved, first_exact)
        self.assertAllClose(first_halved, first_exact, rtol=0.02, atol=1e-3)
        # The final losses are the float32 model's, of the returned images.
        self.assertAllClose(ran["halved"].loss, exact.loss(ran["halved"].images, maps), rtol=1e-6, atol=1e-7)
        fired = ran["exact"].loss > 0
        self.assertGreater(fired.sum(), 4)
        ratio = ran["halved"].loss[fired] / ran["exact"].loss[fired]
        self.assertAllClose(np.median(ratio), 1.0, atol=0.03)

    def test_every_strategy_runs_in_bfloat16(self):
        # The wake-up's pre-activation objective calls the convolution op itself (no layer call that casts its
        # float32 input: here the float32 Rescaling's output) on the bfloat16 kernel.
        halved = OIPAscent(small_model(), "low", precision="bfloat16")
        settings = StrategySettings(steps=10, wake_steps=10, precursor_values=(0.2, 0.8), precursor_grid=2)
        for strategy in ("preactivation", "auto"):
            with self.subTest(strategy=strategy):
                run = create_oips(halved, range(6), strategy, settings=settings)
                self.assertEqual(run.result.loss.dtype, np.float32)
                self.assertAllClose(run.result.loss, halved.loss(run.result.images, run.result.map_index), rtol=1e-6)

    def test_bfloat16_needs_an_objective_by_name_and_auto_falls_back(self):
        model = small_model()
        objective = build_objective(model, "high")
        with self.assertRaisesRegex(OIPGraphError, "needs the objective by name"):
            OIPAscent(model, "high", objective=objective, precision="bfloat16")
        with mock.patch.object(precision, "has_bfloat16_hardware", return_value=True):
            self.assertEqual(OIPAscent(model, "high", objective=objective, precision="auto").precision, "float32")
        with self.assertRaisesRegex(OIPGraphError, "unknown precision 'fp16'"):
            OIPAscent(model, "high", precision="fp16")


if __name__ == "__main__":
    tf.test.main()
