"""Tests of what natural-image models get: the fourier parameterization, the adam step, lucid's transforms,
presets and `--preprocess`. Each compiled piece is compared with an eager step-by-step reference written from
the formulas in the modules' docstrings."""

import json
import os

import keras
import numpy as np
import tensorflow as tf
from helpers import keras_seed, run_command, seeded_conv
from oipgraph.export.servable import OIPServable

from oipgraph import starts
from oipgraph.ascent import STANDARDIZED, OIPAscent, Transforms, ValueRange
from oipgraph.ascent.parameterizations import Fourier, build_parameterization
from oipgraph.ascent.parameterizations.color import COLOR_MATRIX
from oipgraph.ascent.presets import resolve_recipe
from oipgraph.ascent.transforms import parse_transforms, standard_transforms
from oipgraph.core.errors import OIPGraphError
from oipgraph.models.preprocessing import ImageNetPreprocessing, reference, with_preprocessing
from oipgraph.outputs.run_progress import RunProgress
from oipgraph.strategies import StrategySettings, create_oips

SIZE = 16
RANGE = ValueRange(0.0, 255.0)
# Adam's constants as Kingma & Ba give them (the module's own are not imported, so that a change there fails).
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-8


def rgb_model() -> keras.Model:
    """Two small ReLU convolutions on 16x16 RGB images in [0, 255] (scaled inside)."""
    with keras_seed(3):
        inputs = keras.Input((SIZE, SIZE, 3))
        x = keras.layers.Rescaling(1 / 255.0)(inputs)
        x = seeded_conv(6, 3, "conv1", seed=1, activation="relu")(x)
        x = seeded_conv(5, 3, "conv2", seed=2, activation="relu")(x)
        return keras.Model(inputs, x)


def range_starts(count: int, seed: int = 0) -> np.ndarray:
    noise = starts.multiscale(starts.start_seeds(seed, range(count)), (SIZE, SIZE, 3))
    return np.asarray(RANGE.from_standardized(noise))


def numpy_fourier_image(params: np.ndarray, domain, decorrelate: bool, decay: float) -> np.ndarray:
    """The fourier module docstring's formula, in NumPy."""
    batch, height, half, double = params.shape
    channels = double // 2
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(height)[None, :]
    scale = np.sqrt(height * height) / np.maximum(np.sqrt(fy**2 + fx**2), 1.0 / height) ** decay
    spectrum = (params[..., :channels] + 1j * params[..., channels:]) * scale[None, :, :, None]
    signal = np.fft.irfft2(spectrum, s=(height, height), axes=(1, 2)) / 4.0
    if decorrelate:
        signal = signal @ COLOR_MATRIX.T
    if isinstance(domain, ValueRange):
        return domain.low + (domain.high - domain.low) / (1 + np.exp(-signal))
    centred = signal - signal.mean(axis=(1, 2, 3), keepdims=True)
    deviation = np.maximum(centred.std(axis=(1, 2, 3), keepdims=True), 1 / np.sqrt(signal[0].size))
    return centred / deviation


class FourierTest(tf.test.TestCase):
    def test_image_is_the_documented_formula(self):
        params = np.random.default_rng(0).normal(0, 0.05, (2, SIZE, SIZE // 2 + 1, 6)).astype(np.float32)
        for domain, decorrelate in ((RANGE, True), (RANGE, False), (STANDARDIZED, True)):
            with self.subTest(domain=domain.name, decorrelate=decorrelate):
                fourier = Fourier((SIZE, SIZE, 3), domain, decorrelate=decorrelate)
                expected = numpy_fourier_image(params, domain, decorrelate, fourier.decay)
                self.assertAllClose(fourier.to_image(params), expected, atol=1e-3 * (domain.step_scale or 1))

    def test_round_trip_image_to_parameter_to_image(self):
        for shape, domain in (
            ((SIZE, SIZE, 3), RANGE),
            ((SIZE, SIZE, 1), ValueRange(-1.0, 1.0)),
            ((15, 15, 3), STANDARDIZED),
        ):
            with self.subTest(shape=shape, domain=domain.name):
                fourier = Fourier(shape, domain)
                noise = starts.multiscale(starts.start_seeds(1, range(3)), shape)
                images = np.asarray(domain.from_standardized(noise))
                back = fourier.to_image(fourier.from_image(images))
                span = 1.0 if domain is STANDARDIZED else domain.high - domain.low
                self.assertAllClose(back, images, atol=1e-4 * span)
                self.assertEqual(fourier.from_image(images).shape[1:], fourier.param_shape)

    def test_decay_follows_the_image_size(self):
        for side, decay in ((224, 1.0), (128, 1.0), (64, 1.25), (32, 1.5), (16, 1.5)):
            self.assertAlmostEqual(Fourier((side, side, 3), RANGE).decay, decay)
        self.assertEqual(Fourier((32, 32, 3), RANGE, decay=0.5).decay, 0.5)

    def test_one_channel_images_are_not_decorrelated(self):
        self.assertFalse(Fourier((SIZE, SIZE, 1), RANGE).decorrelate)
        self.assertTrue(Fourier((SIZE, SIZE, 3), RANGE).decorrelate)

    def test_unknown_parameterization_is_refused(self):
        with self.assertRaisesRegex(OIPGraphError, "unknown parameterization 'voxels'; choose one of pixels, fourier"):
            build_parameterization("voxels", (SIZE, SIZE, 3), RANGE)


class StepRuleTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = rgb_model()

    def eager_reference(self, ascent, rule, images, maps, steps, learning_rate):
        """The loop of step.py/loop.py written out: x = to_image(p), g = d objective(x) / d p, the rule's update."""
        parameterization = ascent.parameterization
        params = parameterization.from_image(images)
        m, v = tf.zeros_like(params), tf.zeros_like(params)
        for step in range(steps):
            with tf.GradientTape() as tape:
                tape.watch(params)
                loss = tf.reduce_sum(ascent.map_loss(parameterization.to_image(params), maps))
            gradient = tape.gradient(loss, params)
            if rule == "adam":
                m = BETA_1 * m + (1 - BETA_1) * gradient
                v = BETA_2 * v + (1 - BETA_2) * gradient**2
                m_hat, v_hat = m / (1 - BETA_1 ** (step + 1)), v / (1 - BETA_2 ** (step + 1))
                params = params + learning_rate * parameterization.step_scale * m_hat / (np.sqrt(v_hat) + EPSILON)
            else:
                rms = np.sqrt(np.mean(np.square(gradient), axis=(1, 2, 3), keepdims=True))
                params = params + learning_rate * parameterization.step_scale * gradient / (rms + 1e-7)
            params = parameterization.project(params)
        return np.asarray(parameterization.to_image(params))

    def test_loop_follows_the_eager_reference(self):
        images, maps = range_starts(3), np.array([0, 2, 4], np.int32)
        for param in ("pixels", "fourier"):
            for rule, rate in (("normalized", 0.02), ("adam", 0.05)):
                with self.subTest(param=param, rule=rule):
                    ascent = OIPAscent(self.model, "conv2", domain=RANGE, param=param, optimizer=rule)
                    result = ascent(images, maps, steps=12, epsilon=rate, conv_criterion=0.0)
                    expected = self.eager_reference(ascent, rule, images, maps, 12, rate)
                    self.assertAllClose(result.images, expected, atol=2e-3, rtol=1e-4)

    def test_a_pair_is_the_same_alone_and_beside_pairs_that_stop(self):
        # Map 3 of a layer that never fires stops at step 11 (no_activation); adam's moments of the other pairs
        # must stay with them when the loop compacts the running pairs.
        images, maps = range_starts(4, seed=2), np.array([0, 1, 2, 4], np.int32)
        ascent = OIPAscent(self.model, "conv2", domain=RANGE, preset="natural")
        together = ascent(images, maps, steps=30, conv_criterion=1e-3, seeds=starts.start_seeds(5, range(4)))
        self.assertGreater(len(set(together.steps_run.tolist())), 1, together.steps_run)
        for pair in range(4):
            alone = ascent(
                images[pair : pair + 1],
                maps[pair : pair + 1],
                steps=30,
                conv_criterion=1e-3,
                seeds=starts.start_seeds(5, range(4))[pair : pair + 1],
            )
            self.assertAllClose(alone.images[0], together.images[pair], atol=1e-4)
            self.assertEqual(alone.steps_run[0], together.steps_run[pair])

    def test_same_seed_same_result(self):
        ascent = OIPAscent(self.model, "conv2", domain=RANGE, preset="natural")
        seeds = starts.start_seeds(7, range(2))
        first = ascent(range_starts(2), [0, 1], steps=15, conv_criterion=0.0, seeds=seeds)
        again = ascent(range_starts(2), [0, 1], steps=15, conv_criterion=0.0, seeds=seeds)
        self.assertAllEqual(first.images, again.images)
        self.assertAllEqual(first.snapshots[:, -1], first.images)
        self.assertAllGreaterEqual(first.images, 0.0)
        self.assertAllLessEqual(first.images, 255.0)


class TransformsTest(tf.test.TestCase):
    def test_standard_set_scales_with_the_image(self):
        self.assertEqual(standard_transforms((128, 128, 3)), Transforms(4, 0.1, 10.0, 2, 12))
        self.assertEqual(standard_transforms((32, 32, 3)), Transforms(1, 0.1, 10.0, 1, 3))
        self.assertEqual(parse_transforms("standard", (128, 96, 3)), Transforms(4, 0.1, 10.0, 2, 12))
        self.assertEqual(parse_transforms("none", (32, 32, 3)), Transforms())
        self.assertEqual(parse_transforms("jitter=3, rotate=5", (32, 32, 3)), Transforms(jitter=3, rotate=5.0))

    def test_reproducible_from_the_seed_and_the_identity_when_off(self):
        images = tf.constant(range_starts(3))
        seeds = starts.start_seeds(4, range(3))
        transforms = standard_transforms((SIZE, SIZE, 3))
        first = transforms(images, seeds, tf.constant(5), 127.5)
        self.assertAllEqual(first, transforms(images, seeds, tf.constant(5), 127.5))
        self.assertNotAllClose(first, transforms(images, seeds, tf.constant(6), 127.5))
        self.assertIs(Transforms()(images, seeds, tf.constant(5)), images)

    def test_rotation_turns_about_the_centre_and_pad_fills_with_grey(self):
        # A 90-degree turn is beyond the bound, so check a known angle through the draws: with rotate only,
        # the image's centre stays and a radially symmetric blob is unchanged.
        grid = np.arange(SIZE) - (SIZE - 1) / 2
        blob = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / 8.0)
        images = tf.constant(np.repeat(blob[None, :, :, None], 2, axis=0).astype(np.float32))
        seeds = starts.start_seeds(0, range(2))
        turned = Transforms(rotate=30.0)(images, seeds, tf.constant(1))
        self.assertAllClose(turned[:, 4:-4, 4:-4], images[:, 4:-4, 4:-4], atol=0.03)
        ramp = tf.constant(np.tile(grid[None, None, :, None], (2, SIZE, 1, 1)).astype(np.float32))
        self.assertNotAllClose(Transforms(rotate=30.0)(ramp, seeds, tf.constant(1)), ramp, atol=0.5)
        shifted = Transforms(jitter=6, pad=6)(tf.zeros([2, SIZE, SIZE, 1]), seeds, tf.constant(2), fill_value=9.0)
        values = set(np.unique(shifted.numpy()).tolist())
        self.assertIn(9.0, values)  # Where the shifted image does not reach: the domain's grey, not reflection.


class PresetTest(tf.test.TestCase):
    def test_presets_resolved_per_domain(self):
        for domain, preset in ((STANDARDIZED, "articles"), (RANGE, "natural"), (ValueRange(-1.0, 1.0), "natural")):
            with self.subTest(domain=domain.name):
                recipe = resolve_recipe(domain, (32, 32, 3), "auto")
                self.assertEqual(recipe.preset, preset)
        articles = resolve_recipe(RANGE, (32, 32, 3))
        self.assertEqual((articles.param, articles.optimizer, articles.learning_rate), ("pixels", "normalized", 0.01))
        self.assertFalse(articles.transforms.active)
        natural = resolve_recipe(RANGE, (32, 32, 3), "natural")
        self.assertEqual((natural.param, natural.optimizer, natural.learning_rate), ("fourier", "normalized", 0.05))
        self.assertEqual(natural.transforms, standard_transforms((32, 32, 3)))
        mixed = resolve_recipe(RANGE, (32, 32, 3), "natural", optimizer="adam", transforms="none")
        self.assertEqual((mixed.param, mixed.optimizer, mixed.learning_rate), ("fourier", "adam", 0.05))
        self.assertFalse(mixed.transforms.active)
        self.assertIn(
            "preset natural (images in 0,255): fourier parameterization",
            resolve_recipe(RANGE, (8, 8, 3), "auto").line(),
        )

    def test_bad_pieces_are_refused_with_one_line(self):
        for kwargs, message in (
            (dict(preset="fancy"), "unknown preset 'fancy'; choose one of auto, articles, natural"),
            (dict(optimizer="sgd"), "unknown optimizer 'sgd'; choose one of normalized, adam"),
            (dict(learning_rate=0.0), "learning_rate must be a finite number > 0, got 0.0"),
            (dict(learning_rate=1e9), "learning_rate=1e\\+09 is above the limit of 100"),
            (dict(transforms="rotate=46"), "rotate must be degrees in \\[0, 45\\], got 46.0"),
            (dict(transforms="pad=-1"), "pad must be an integer number of pixels in \\[0, 1024\\], got -1"),
        ):
            with self.subTest(**kwargs), self.assertRaisesRegex(OIPGraphError, message):
                resolve_recipe(RANGE, (32, 32, 3), **kwargs)


class PreprocessingTest(tf.test.TestCase):
    def test_equal_to_keras_preprocess_input(self):
        images = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
        for mode in ("caffe", "tf", "torch"):
            with self.subTest(mode=mode):
                self.assertAllClose(ImageNetPreprocessing(mode)(images), reference(images, mode), atol=1e-4)

    def test_the_model_behind_it_sees_preprocessed_images_and_keeps_its_layer_names(self):
        model = rgb_model()
        wrapped = with_preprocessing(model, "caffe")
        images = np.random.default_rng(2).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
        self.assertAllClose(wrapped(images), model(reference(images, "caffe")), atol=1e-4)
        ascent = OIPAscent(wrapped, "conv2", domain=RANGE)
        self.assertEqual(ascent.num_maps, 5)

    def test_needs_rgb(self):
        inputs = keras.Input((8, 8, 1))
        model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
        with self.assertRaisesRegex(OIPGraphError, "needs a model with an RGB image input"):
            with_preprocessing(model, "torch")


class EveryStageTest(tf.test.TestCase):
    """auto (random, precursor screen, wake-up), the export and the command run the natural preset too."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = rgb_model()

    def test_auto_runs_every_stage_on_the_natural_preset(self):
        ascent = OIPAscent(self.model, "conv2", domain=RANGE, preset="natural")
        settings = StrategySettings(steps=20, wake_steps=20, precursor_values=(0.2, 0.8), precursor_grid=2)
        run = create_oips(ascent, range(5), "auto", seed=1, settings=settings)
        self.assertEqual(run.result.images.shape, (5, SIZE, SIZE, 3))
        self.assertEqual(run.stages[0].name, "random")
        self.assertAllGreaterEqual(run.result.images, 0.0)
        self.assertAllLessEqual(run.result.images, 255.0)
        self.assertTrue(set(run.strategy) <= {"random", "precursor", "preactivation"}, run.strategy)

    def test_random_starts_are_the_noise_of_the_parameterization(self):
        seeds = starts.start_seeds(4, starts.pair_stream(np.arange(3), np.zeros(3, np.int64)))
        settings = StrategySettings(steps=1)
        for preset, noise in (("natural", starts.fourier(seeds, (SIZE, SIZE, 3))), ("articles", None)):
            ascent = OIPAscent(self.model, "conv2", domain=RANGE, preset=preset)
            if noise is None:
                noise = starts.multiscale(seeds, (SIZE, SIZE, 3), *settings.scales(SIZE))
            run = create_oips(ascent, range(3), "random", seed=4, settings=settings)
            self.assertAllClose(run.start_images, RANGE.from_standardized(noise), atol=1e-4, msg=preset)
            woken = create_oips(ascent, range(3), "preactivation", seed=4, settings=settings)
            self.assertAllClose(woken.start_images, run.start_images, msg=preset)

    def test_the_served_ascent_is_the_natural_ascent(self):
        servable = OIPServable(self.model, domain=RANGE, layers=["conv2"], preset="natural")
        ascent = OIPAscent(self.model, "conv2", domain=RANGE, preset="natural")
        images = range_starts(2, seed=3)
        served = servable.optimize_functions["conv2"](
            tf.constant(images), tf.constant([0, 2]), tf.constant(15), tf.constant(0.05)
        )
        local = ascent(images, [0, 2], steps=15, epsilon=0.05, seeds=np.zeros([2, 2], np.int64))
        self.assertEqual(servable.ascents["conv2"].recipe.param, "fourier")
        self.assertAllClose(served["images"], local.images, atol=1e-3)

    def test_the_command_prints_and_records_the_preset(self):
        root = self.get_temp_dir()
        inputs = keras.Input((SIZE, SIZE, 3))
        plain = keras.Model(inputs, seeded_conv(4, 3, "conv", seed=3, activation="relu")(inputs))
        model_path = os.path.join(root, "rgb.keras")
        plain.save(model_path)
        out = os.path.join(root, "run")
        args = [f"--model={model_path}", "--layer=conv", "--preprocess=caffe", "--strategy=random", "--steps=8"]
        done = run_command("oipgraph", *args, f"--out={out}", "--dataset=")
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        self.assertIn("preset natural (images in 0,255): fourier parameterization, normalized step", done.stdout)
        with open(os.path.join(out, "catalog.json")) as file:
            document = json.load(file)
        self.assertEqual(
            (document["preset"], document["param"], document["optimizer"]), ("natural", "fourier", "normalized")
        )
        self.assertEqual(document["preprocess"], "caffe")
        self.assertEqual(document["rotate"], 10.0)
        self.assertEqual({entry["start_kind"] for entry in document["maps"]}, {"fourier"})
        # --resume compares the saved settings: a run started with another preset is refused.
        progress = RunProgress(os.path.join(root, "partial"))
        settings = {key: document[key] for key in ("preset", "param", "optimizer", "learning_rate", "model_sha256")}
        progress.begin(settings, resume=False)
        with self.assertRaisesRegex(
            OIPGraphError, "--resume with other settings: preset was 'natural', now 'articles'"
        ):
            progress.begin({**settings, "preset": "articles"}, resume=True)


if __name__ == "__main__":
    tf.test.main()
