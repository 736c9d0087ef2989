"""Tests of dataset examples: loading (outputs.datasets), the top-k pass and comparison (outputs.examples), CLI."""

import contextlib
import glob
import json
import os
import subprocess
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_one_line_error, large_scale_model, start, write_npz
from tensorboard.backend.event_processing import event_accumulator

from oipgraph.core.errors import OIPGraphError
from oipgraph.models import layer_lookup, mnist
from oipgraph.outputs import datasets, examples

SHAPE = (8, 8, 1)


def numpy_standardize(images: np.ndarray) -> np.ndarray:
    """tf.image.per_image_standardization's formula: (x - mean) / max(std, 1 / sqrt(pixels)), per image."""
    images = images.astype(np.float64)
    axes = tuple(range(1, images.ndim))
    mean = images.mean(axis=axes, keepdims=True)
    std = np.maximum(images.std(axis=axes, keepdims=True), 1 / np.sqrt(np.prod(images.shape[1:])))
    return ((images - mean) / std).astype(np.float32)


def brute_force_top(scores: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per column of scores [N, T], the indices [T, k] of the k largest (lower index first among equals) and values."""
    order = np.argsort(-scores.T, axis=1, kind="stable")[:, :top_k]
    return order, np.take_along_axis(scores.T, order, axis=1)


def tiny_conv_model() -> keras.Model:
    """8x8x1 -> Conv2D 3x3, 6 relu maps (6x6); map 5 never fires (bias -100)."""
    inputs = keras.Input(SHAPE)
    layer = keras.layers.Conv2D(6, 3, activation="relu", name="conv")
    model = keras.Model(inputs, layer(inputs))
    kernel = np.random.default_rng(1).normal(size=(3, 3, 1, 6)).astype(np.float32)
    layer.set_weights([kernel, np.array([0.5, 0.0, -0.5, 1.0, 0.2, -100.0], np.float32)])
    return model


def random_dataset(count: int = 300, dtype=np.uint8) -> datasets.Dataset:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, [count, *SHAPE]).astype(dtype)
    return datasets.Dataset(images, "random", [f"images[{index}]" for index in range(count)])


class FindExamplesTest(tf.test.TestCase):
    def check_against_brute_force(self, found, scores, top_k, dataset):
        expected_indices, expected_values = brute_force_top(scores, top_k)
        self.assertEqual(found.indices.shape, (scores.shape[1], min(top_k, len(scores))))
        self.assertAllClose(found.values, expected_values, atol=1e-5, rtol=1e-5)
        # The chosen images really have those values (whatever the order among near-equal values).
        self.assertAllClose(np.take_along_axis(scores.T, found.indices, axis=1), expected_values, atol=1e-5)
        self.assertAllEqual(found.indices, expected_indices)
        self.assertAllClose(found.best_values, expected_values[:, 0], atol=1e-5)
        self.assertEqual(found.num_images, len(scores))
        self.assertEqual(found.names[0], [dataset.names[index] for index in found.indices[0]])

    def test_channel_top_9_is_the_brute_force_top_over_several_batches(self):
        model = tiny_conv_model()
        dataset = random_dataset()
        scores, num_targets = examples.feature_scores(model)
        self.assertEqual(num_targets, 6)
        # 300 images in batches of 64: four full batches and a last one of 44.
        found = examples.find_examples(dataset, scores, num_targets, batch_size=64)
        inputs = numpy_standardize(dataset.images)
        brute = model(inputs).numpy().mean(axis=(1, 2))
        self.check_against_brute_force(found, brute, 9, dataset)
        self.assertAllClose(found.images, inputs[found.indices], atol=1e-5)
        # A map that never fires: all values 0, the lowest indices first.
        self.assertAllEqual(found.indices[5], np.arange(9))
        self.assertAllEqual(found.values[5], np.zeros(9))

    def test_units_with_own_preprocessing_and_fewer_images_than_top_k(self):
        inputs = keras.Input(SHAPE)
        model = keras.Model(inputs, keras.layers.Dense(4, name="dense")(keras.layers.Flatten()(inputs)))
        for count, top_k in [(200, 9), (5, 9), (40, 1)]:
            with self.subTest(count=count, top_k=top_k):
                dataset = random_dataset(count, np.float32)
                scores, num_targets = examples.feature_scores(model)
                found = examples.find_examples(
                    dataset, scores, num_targets, top_k=top_k, batch_size=16, preprocess=lambda x: x / 255.0
                )
                brute = model(dataset.images / 255.0).numpy()
                self.check_against_brute_force(found, brute, top_k, dataset)
                self.assertAllClose(found.images, dataset.images[found.indices] / 255.0)

    def test_any_scores_callable(self):
        dataset = random_dataset(50)
        # Two targets: the negated pixel at (1, 2) and the pixel at (0, 0), of standardized images.
        scores = lambda images: tf.stack([-images[:, 1, 2, 0], images[:, 0, 0, 0]], axis=1)
        found = examples.find_examples(dataset, scores, 2, top_k=3, batch_size=7)
        inputs = numpy_standardize(dataset.images)
        brute = np.stack([-inputs[:, 1, 2, 0], inputs[:, 0, 0, 0]], axis=1)
        self.check_against_brute_force(found, brute, 3, dataset)

    def test_bad_arguments_name_the_value(self):
        dataset = random_dataset(10)
        scores, num_targets = examples.feature_scores(tiny_conv_model())
        cases = [
            ({"top_k": 0}, "top_k must be a positive integer, got 0"),
            ({"top_k": 101}, "top_k must be <= 100, got 101"),
            ({"batch_size": -1}, "batch_size must be a positive integer, got -1"),
            ({"batch_size": 65537}, "batch_size must be <= 65536, got 65537"),
            ({"num_targets": 0}, "num_targets must be a positive integer, got 0"),
        ]
        for overrides, message in cases:
            with self.subTest(overrides=overrides):
                arguments = {"scores": scores, "num_targets": num_targets, **overrides}
                with self.assertRaisesRegex(OIPGraphError, message):
                    examples.find_examples(dataset, **arguments)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "dataset scores contain NaN or Inf"):
            examples.find_examples(dataset, lambda images: tf.fill([tf.shape(images)[0], 1], np.inf), 1)
        with self.assertRaisesRegex(OIPGraphError, r"layer output shape \(None, 6, 6\)"):
            inputs = keras.Input(SHAPE)
            examples.feature_scores(
                keras.Model(
                    inputs, keras.layers.Reshape((6, 6))(keras.layers.Dense(36)(keras.layers.Flatten()(inputs)))
                )
            )


class BatchSizeTest(tf.test.TestCase):
    def test_batch_size_keeps_layer_outputs_bounded(self):
        self.assertEqual(examples.batch_size_for(tiny_conv_model()), examples.DEFAULT_BATCH_SIZE)
        inputs = keras.Input((224, 224, 3))
        model = keras.Model(inputs, keras.layers.Conv2D(64, 3, padding="same")(inputs))
        self.assertEqual(examples.batch_size_for(model), 2**25 // (224 * 224 * 64))

    def test_nested_base_counts_its_layers_at_the_traced_size(self):
        # A variable-size base run at 64x64: its own layers were first called on (None, None, C) tensors.
        base = keras.applications.MobileNetV2(input_shape=(None, None, 3), alpha=0.35, include_top=False, weights=None)
        inputs = keras.Input((None, None, 3))
        transfer = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(base(inputs))))
        model = layer_lookup.with_image_size(transfer, (64, 64))
        target = "block_1_expand_relu"  # 32x32x48: larger than the input and every layer before it.
        feature_model = layer_lookup.resolve_layer(model, target).feature_model
        target_values = int(np.prod(layer_lookup.output_shape(model, f"{base.name}/{target}")[1:]))
        self.assertGreater(target_values, 64 * 64 * 3)
        self.assertEqual(examples.batch_size_for(feature_model), 2**25 // target_values)


class CompareTest(tf.test.TestCase):
    def test_ratio_beats_and_undefined_ratios(self):
        oip_loss = np.array([2.0, 0.5, 1.0, 0.3, 0.0, 0.7])
        best = np.array([1.0, 1.0, 0.0, -0.2, 0.0, 0.5], np.float32)
        has_oip = np.array([True, True, True, True, False, False])
        comparison = examples.compare(oip_loss, best, has_oip)
        self.assertAllClose(comparison.ratio[:2], [2.0, 0.5])
        self.assertAllClose(comparison.ratio[5], 1.4)
        self.assertTrue(np.all(np.isnan(comparison.ratio[2:5])))
        # Best <= 0: no ratio, but an OIP above it still beats it; a map without OIP beats nothing.
        self.assertAllEqual(comparison.beats, [True, False, True, True, False, False])
        self.assertEqual(comparison.num_beating, 3)
        self.assertAllClose(comparison.median_ratio(), 1.25)  # Of 2.0 and 0.5: map 5 has no OIP.
        self.assertIsNone(examples.compare([1.0], [0.0]).median_ratio())
        with self.assertRaisesRegex(ValueError, "shapes differ"):
            examples.compare([1.0, 2.0], [1.0])


def write_png(path: str, image: np.ndarray) -> None:
    with open(path, "wb") as file:
        file.write(tf.io.encode_png(image).numpy())


class LoadDatasetTest(tf.test.TestCase):
    def test_folder_of_images(self):
        folder = self.get_temp_dir()
        rng = np.random.default_rng(3)
        grey = rng.integers(0, 256, [8, 8, 1], dtype=np.uint8)
        rgb = rng.integers(0, 256, [8, 8, 3], dtype=np.uint8)
        rgba = rng.integers(0, 256, [8, 8, 4], dtype=np.uint8)
        large = rng.integers(0, 256, [20, 16, 1], dtype=np.uint8)
        write_png(os.path.join(folder, "b_grey.png"), grey)
        write_png(os.path.join(folder, "c_rgb.PNG"), rgb)
        write_png(os.path.join(folder, "d_rgba.png"), rgba)
        write_png(os.path.join(folder, "e_large.png"), large)
        jpeg = tf.io.encode_jpeg(rgb, quality=90).numpy()
        with open(os.path.join(folder, "a_photo.jpg"), "wb") as file:
            file.write(jpeg)
        with open(os.path.join(folder, "notes.txt"), "w") as file:
            file.write("not an image")
        os.makedirs(os.path.join(folder, "sub.png"))
        dataset = datasets.load_dataset(folder, SHAPE)
        self.assertEqual(dataset.names, ["a_photo.jpg", "b_grey.png", "c_rgb.PNG", "d_rgba.png", "e_large.png"])
        self.assertEqual((dataset.images.shape, dataset.images.dtype), ((5, *SHAPE), np.uint8))
        self.assertAllEqual(dataset.images[1], grey)

        def as_grey(image):
            return tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))), tf.uint8).numpy()

        self.assertAllEqual(dataset.images[2], as_grey(rgb))
        self.assertAllEqual(dataset.images[3], as_grey(rgba[..., :3]))
        self.assertAllEqual(dataset.images[0], as_grey(tf.io.decode_jpeg(jpeg)))
        resized = tf.image.resize(tf.cast(large[None], tf.float32), [8, 8], antialias=True)[0]
        self.assertAllEqual(dataset.images[4], tf.cast(tf.round(resized), tf.uint8))
        rgb_dataset = datasets.load_dataset(folder, (4, 4, 3))
        self.assertEqual(rgb_dataset.images.shape, (5, 4, 4, 3))
        self.assertAllEqual(rgb_dataset.images[1, ..., 0], rgb_dataset.images[1, ..., 2])

    def test_npz_layouts(self):
        folder = self.get_temp_dir()
        mnist_path = write_npz(folder)
        dataset = datasets.load_dataset(mnist_path, (28, 28, 1))
        (x_train, _), (x_test, _) = mnist.load_mnist(mnist_path)
        self.assertAllEqual(dataset.images[..., 0], np.concatenate([x_train, x_test]))
        self.assertEqual(dataset.names[255:257], ["x_train[255]", "x_test[0]"])
        self.assertEqual(dataset.images.dtype, np.uint8)

        floats = np.random.default_rng(4).normal(size=[7, 8, 8, 3]).astype(np.float64)
        for name, arrays in [("keyed.npz", {"images": floats, "labels": np.arange(7)}), ("single.npz", {"x": floats})]:
            with self.subTest(name=name):
                path = os.path.join(folder, name)
                np.savez(path, **arrays)
                dataset = datasets.load_dataset(path, (8, 8, 3))
                self.assertEqual(dataset.images.dtype, np.float32)
                self.assertAllClose(dataset.images, floats)
        path = os.path.join(folder, "only_test.npz")
        np.savez(path, x_test=np.zeros([3, 16, 16], np.uint8))
        dataset = datasets.load_dataset(path, SHAPE)
        self.assertEqual((dataset.images.shape, dataset.names[0]), ((3, *SHAPE), "x_test[0]"))

    def test_each_bad_dataset_fails_with_one_line_naming_it(self):
        folder = self.get_temp_dir()

        def npz(name, **arrays):
            path = os.path.join(folder, name)
            np.savez(path, **arrays)
            return path

        text = os.path.join(folder, "text.npz")
        with open(text, "w") as file:
            file.write("plain text")
        empty_folder = os.path.join(folder, "empty")
        os.makedirs(empty_folder)
        broken_folder = os.path.join(folder, "broken")
        os.makedirs(broken_folder)
        write_png(os.path.join(broken_folder, "a.png"), np.zeros([8, 8, 1], np.uint8))
        with open(os.path.join(broken_folder, "b.png"), "wb") as file:
            file.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
        huge_folder = os.path.join(folder, "huge")
        os.makedirs(huge_folder)
        write_png(os.path.join(huge_folder, "big.png"), np.zeros([40, 12, 1], np.uint8))
        images = np.zeros([3, 8, 8], np.uint8)
        nan_images = np.full([2, 8, 8], np.nan, np.float32)
        cases = [
            (os.path.join(folder, "missing.npz"), {}, f"dataset not found: {folder}/missing.npz"),
            (text, {}, "is neither a folder of images nor an .npz archive"),
            (npz("keys.npz", a=images, b=images), {}, "has no x_train/x_test or 'images' array; found a, b"),
            (npz("rank.npz", images=np.zeros([3, 8], np.uint8)), {}, r"images has shape \(3, 8\); expected"),
            (npz("channels.npz", images=np.zeros([3, 8, 8, 2])), {}, r"images has shape \(3, 8, 8, 2\)"),
            (npz("bool.npz", images=images.astype(bool)), {}, "images has dtype bool; integer or float"),
            (npz("strings.npz", images=np.array(["a"])), {}, "images has dtype <U1; integer or float"),
            (npz("none.npz", x_train=np.zeros([0, 8, 8], np.uint8)), {}, "holds no images"),
            (npz("nan.npz", images=nan_images), {}, "images has NaN or Inf pixels"),
            (npz("many.npz", images=images), {"MAX_IMAGES": 2}, "holds 3 images; at most 2 are allowed"),
            (npz("side.npz", images=images), {"MAX_IMAGE_SIDE": 4}, "images of 8x8 pixels; sides must be 1..4"),
            (npz("bytes.npz", images=images), {"MAX_BYTES": 100}, "images take 192 bytes; at most 100"),
            (
                npz("big.npz", images=images.astype(np.float16)),
                {"MAX_BYTES": 700},
                "the converted images take 768 bytes",
            ),
            (empty_folder, {}, f"dataset folder {empty_folder} holds no .png, .jpg, .jpeg images"),
            (broken_folder, {}, f"dataset image {broken_folder}/b.png is unreadable"),
            (huge_folder, {"MAX_IMAGE_SIDE": 32}, f"{huge_folder}/big.png is 40x12 pixels; sides must be at most 32"),
        ]
        for path, limits, message in cases:
            with self.subTest(path=path, limits=limits):
                patched = mock.patch.multiple(datasets, **limits) if limits else contextlib.nullcontext()
                with patched, self.assertRaisesRegex(OIPGraphError, message) as err:
                    datasets.load_dataset(path, SHAPE)
                self.assertNotIn("\n", str(err.exception))


def run_oipgraph(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return start("oipgraph", *args, env=env)


@pytest.mark.heavy
class CommandLineTest(tf.test.TestCase):
    def test_runs_with_and_without_a_dataset(self):
        root = self.get_temp_dir()
        model = large_scale_model()
        model_path = os.path.join(root, "model.keras")
        model.save(model_path)
        images = np.random.default_rng(5).integers(0, 256, [150, 12, 12], dtype=np.uint8)
        np.savez(os.path.join(root, "data.npz"), images=images)
        fake_mnist = write_npz(root)
        env = {name: value for name, value in os.environ.items() if name != mnist.ENV_VAR}
        common = ["--steps=20", "--seed=1"]
        model_args = [f"--model={model_path}", "--layer=conv", *common]
        runs = {
            "dataset": run_oipgraph(*model_args, f"--dataset={root}/data.npz", f"--out={root}/with", env=env),
            "none": run_oipgraph(*model_args, f"--out={root}/without", env={**env, mnist.ENV_VAR: fake_mnist}),
            "mnist": run_oipgraph("--maps=0-1", *common, f"--out={root}/mnist", env={**env, mnist.ENV_VAR: fake_mnist}),
            "bad": run_oipgraph("--maps=0", f"--dataset={root}/nothing", f"--out={root}/bad", env=env),
        }
        done = {name: (process.communicate(timeout=300), process.returncode) for name, process in runs.items()}

        (stdout, stderr), code = done["dataset"]
        self.assertEqual(code, 0, stderr[-3000:])
        with open(os.path.join(root, "with", "catalog.json")) as file:
            document = json.load(file)
        inputs = numpy_standardize(images[..., None])
        brute = model(inputs).numpy().mean(axis=(1, 2))
        expected_indices, expected_values = brute_force_top(brute, 9)
        beating = 0
        for entry in document["maps"]:
            k = entry["map_index"]
            best = expected_values[k, 0]
            self.assertAllClose(entry["best_dataset_loss"], best, atol=1e-5)
            self.assertEqual(entry["dataset_top_indices"], expected_indices[k].tolist())
            self.assertAllClose(entry["dataset_top_losses"], expected_values[k], atol=1e-5)
            self.assertEqual(entry["dataset_top_names"], [f"images[{i}]" for i in expected_indices[k]])
            if best > 0:
                self.assertAllClose(entry["ratio"], entry["loss"] / best)
            else:
                self.assertIsNone(entry["ratio"])
            beats = entry["status"] != "no_activation" and entry["loss"] > max(best, 0)
            self.assertEqual(entry["beats_best_dataset_image"], beats)
            beating += beats
        self.assertEqual(document["dataset_examples"]["num_images"], 150)
        self.assertEqual(document["dataset_examples"]["oips_beating_best"], beating)
        self.assertIn(f"; {beating} of 4 OIPs beat the best of 150 dataset images (median oip_loss", stdout)
        self.assertNotIn("no --dataset", stdout)
        arrays = np.load(os.path.join(root, "with", "oips.npz"))
        self.assertAllEqual(arrays["dataset_top_indices"], expected_indices)
        self.assertAllClose(arrays["dataset_top_images"], inputs[expected_indices], atol=1e-5)
        # The map's PNG: its OIP, a gap of 12 pixels, then 9 dataset images, each 12 * 4 pixels + 2.
        picture = tf.io.decode_png(tf.io.read_file(os.path.join(root, "with", "maps", "map_001.png")))
        self.assertEqual(picture.shape, (50, 50 + 12 + 9 * 50, 3))
        [run_dir] = glob.glob(os.path.join(root, "with", "tensorboard", "*"))
        events = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.TENSORS: 0})
        events.Reload()
        strip = events.Tensors("map_001/5_dataset_examples")[0].tensor_proto.string_val
        self.assertAllEqual(tf.io.decode_png(strip[2]), picture)

        (stdout, stderr), code = done["none"]
        self.assertEqual(code, 0, stderr[-3000:])
        self.assertEqual(stdout.count("no --dataset: the OIPs are not compared with dataset images"), 1)
        with open(os.path.join(root, "without", "catalog.json")) as file:
            document = json.load(file)
        self.assertIsNone(document["dataset"])
        self.assertNotIn("dataset_examples", document)
        self.assertNotIn("ratio", document["maps"][0])

        (stdout, stderr), code = done["mnist"]
        self.assertEqual(code, 0, stderr[-3000:])
        with open(os.path.join(root, "mnist", "catalog.json")) as file:
            document = json.load(file)
        self.assertEqual(document["dataset"], fake_mnist)
        self.assertEqual(document["dataset_examples"]["num_images"], 320)
        self.assertIn("OIPs beat the best of 320 dataset images", stdout)

        (stdout, stderr), code = done["bad"]
        self.assertEqual(code, 2)
        assert_one_line_error(self, stderr, "oipgraph", f"dataset not found: {root}/nothing")
        self.assertFalse(os.path.exists(os.path.join(root, "bad")))


if __name__ == "__main__":
    tf.test.main()
