"""Tests of input domains: standardized images or a value range, inferred from the model where it says so."""

import os
import tempfile

import helpers
import keras
import numpy as np
import tensorflow as tf
from helpers import run_command

from oipgraph.ascent import OIPAscent
from oipgraph.ascent.domain import STANDARDIZED, ValueRange, infer_domain, parse_domain
from oipgraph.ascent.step import ascent_update
from oipgraph.core.errors import OIPGraphError
from oipgraph.strategies import StrategySettings, create_oips


def raw_pixel_model(maps: int = 16) -> keras.Model:
    """Takes [0, 255] images: Rescaling(1/255), then a ReLU conv with small negative biases.

    Its kernels have a positive mean, so on images around mid-grey most maps fire; on
    standardized images (+-3 becomes +-0.01 after the rescaling) every map sits at its bias.
    """
    with helpers.keras_seed(7):
        inputs = keras.Input((16, 16, 1), name="image")
        x = keras.layers.Rescaling(1 / 255, name="to_unit")(inputs)
        conv = keras.layers.Conv2D(maps, 3, activation="relu", name="conv")
        model = keras.Model(inputs, conv(x))
        rng = np.random.default_rng(0)
        conv.set_weights(
            [rng.normal(0.05, 0.1, [3, 3, 1, maps]).astype(np.float32), np.full([maps], -0.05, np.float32)]
        )
        return model


class InferDomainTest(tf.test.TestCase):
    def test_leading_layers(self):
        def model_with(*layers):
            inputs = keras.Input((8, 8, 3))
            x = inputs
            for layer in layers:
                x = layer(x)
            return keras.Model(inputs, keras.layers.Conv2D(2, 3, name="conv")(x))

        normalization = keras.layers.Normalization(mean=[100.0, 120.0, 110.0], variance=[400.0, 900.0, 100.0])
        cases = [
            (model_with(keras.layers.Rescaling(1 / 255)), ValueRange(0.0, 255.0)),
            (model_with(keras.layers.Rescaling(1 / 127.5, offset=-1)), ValueRange(0.0, 255.0)),
            (model_with(keras.layers.Rescaling(1.0)), ValueRange(0.0, 1.0)),
            (model_with(normalization), ValueRange(60.0, 180.0)),
            (model_with(), STANDARDIZED),
        ]
        for model, expected in cases:
            with self.subTest(expected=expected.name):
                domain, reason = infer_domain(model)
                self.assertEqual(domain, expected)
                self.assertIn(expected.name, reason)

    def test_nested_base_with_its_own_rescaling(self):
        base = keras.applications.EfficientNetB0(weights=None, include_top=False, input_shape=(32, 32, 3))
        model = keras.Sequential([keras.Input((32, 32, 3)), base, keras.layers.GlobalAveragePooling2D()])
        domain, reason = infer_domain(model)
        self.assertEqual(domain, ValueRange(0.0, 255.0))
        self.assertIn("inferred from the leading Rescaling layer 'rescaling", reason)

    def test_parse_domain(self):
        self.assertEqual(parse_domain("standardized"), STANDARDIZED)
        self.assertEqual(parse_domain("0,255"), ValueRange(0.0, 255.0))
        self.assertEqual(parse_domain("-1, 1"), ValueRange(-1.0, 1.0))
        for text, message in (
            ("5,1", "LOW < HIGH, got 5.0, 1.0"),
            ("0,inf", "two finite numbers"),
            ("grey", "'standardized' or LOW,HIGH"),
            ("0,1,2", "'standardized' or LOW,HIGH"),
        ):
            with self.subTest(text), self.assertRaisesRegex(OIPGraphError, message):
                parse_domain(text)


class RawPixelModelTest(tf.test.TestCase):
    def test_the_right_range_makes_most_maps_fire_and_images_stay_inside_it(self):
        model = raw_pixel_model()
        settings = StrategySettings(steps=60)
        inferred = OIPAscent(model, "conv")
        self.assertEqual(inferred.domain, ValueRange(0.0, 255.0))
        in_range = create_oips(inferred, None, "random", seed=0, settings=settings)
        standardized = create_oips(OIPAscent(model, "conv", domain=STANDARDIZED), None, "random", settings=settings)
        fired_in_range = int(inferred.objective.fired(in_range.result.loss, in_range.result.status).sum())
        fired_standardized = int(inferred.objective.fired(standardized.result.loss, standardized.result.status).sum())
        self.assertGreaterEqual(fired_in_range, 12)
        self.assertLessEqual(fired_standardized, 2)
        for images in (in_range.start_images, in_range.result.images, in_range.result.snapshots):
            self.assertAllInRange(images, 0.0, 255.0)
        # The ascent moves the images: they are not just the clipped start.
        self.assertGreater(float(np.abs(in_range.result.images - in_range.start_images).max()), 1.0)

    def test_value_range_step_is_clipped_and_scaled(self):
        domain = ValueRange(0.0, 255.0)
        images = tf.fill([1, 4, 4, 1], 250.0)
        gradient = tf.ones([1, 4, 4, 1])
        stepped = ascent_update(images, gradient, 0.1, domain)
        self.assertAllClose(stepped, tf.fill([1, 4, 4, 1], 255.0))  # 250 + 0.1 * 63.75 > 255: clipped
        stepped = ascent_update(images - 100.0, gradient, 0.1, domain)
        self.assertAllClose(stepped, tf.fill([1, 4, 4, 1], 150.0 + 0.1 * 255 / 4), atol=1e-4)

    def test_the_command_line_says_what_it_inferred(self):
        directory = tempfile.mkdtemp()
        path = os.path.join(directory, "raw.keras")
        raw_pixel_model().save(path)
        out = os.path.join(directory, "run")
        done = run_command("oipgraph", f"--model={path}", "--layer=conv", "--maps=0-3", "--steps=5", f"--out={out}")
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        self.assertIn("input range 0,255, inferred from the leading Rescaling layer 'to_unit'", done.stdout)
        with np.load(os.path.join(out, "oips.npz")) as arrays:
            self.assertAllInRange(arrays["images"], 0.0, 255.0)
            oip = arrays["images"][0, 0]
        # The map's PNG shows the pixel values linearly (0 black, 255 white), not stretched per image.
        picture = tf.io.decode_png(tf.io.read_file(os.path.join(out, "maps", "map_000.png"))).numpy()
        side = 16 * 4  # outputs.MAP_PNG_SCALE
        shown = np.round(np.repeat(oip, 4, axis=0).repeat(4, axis=1))
        self.assertAllClose(picture[:side, :side], np.repeat(shown, 3, axis=-1), atol=1)


if __name__ == "__main__":
    tf.test.main()
