"""Tests of the CNN, the shipped model, MNIST loading and the trainer."""

import glob
import os
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf
from helpers import assert_one_line_error, mnist_or_skip, run_command, run_forked, write_npz
from tensorboard.backend.event_processing import event_accumulator

from oipgraph.models import mnist, train
from oipgraph.models.loading import ModelError, build_cnn, conv_layer_names, load_model, shipped_model_path


class ArchitectureTest(tf.test.TestCase):
    def test_layers_shapes_and_parameters(self):
        model = build_cnn()
        expected = [
            ("Conv2D_1", (None, 26, 26, 32)),
            ("Max_Pool_1", (None, 13, 13, 32)),
            ("Conv2D_2", (None, 11, 11, 64)),
            ("Max_Pool_2", (None, 5, 5, 64)),
            ("Conv2D_3", (None, 3, 3, 128)),
            ("Flatten", (None, 1152)),
            ("Dense_1", (None, 70)),
            ("Dense_2", (None, 10)),
        ]
        self.assertEqual([(layer.name, tuple(layer.output.shape)) for layer in model.layers[1:]], expected)
        self.assertEqual(model.count_params(), 174_092)
        self.assertEqual(conv_layer_names(model), ["Conv2D_1", "Conv2D_2", "Conv2D_3"])
        self.assertEqual(model.get_layer("Dense_2").activation.__name__, "softmax")
        self.assertLen(model.losses, 5)  # One L2 term per conv and dense kernel.

    def test_shipped_model_is_package_data_with_the_same_architecture(self):
        self.assertTrue(shipped_model_path().endswith(os.path.join("oipgraph", "assets", "mnist_cnn.keras")))
        shipped = load_model()
        self.assertEqual([layer.name for layer in shipped.layers], [layer.name for layer in build_cnn().layers])
        self.assertEqual(shipped.count_params(), 174_092)

    def test_bad_model_files(self):
        with tempfile.TemporaryDirectory() as directory:
            not_keras = os.path.join(directory, "model.keras")
            with open(not_keras, "w") as file:
                file.write("not a model")
            cases = (
                (os.path.join(directory, "missing.keras"), "model file not found: .*missing.keras"),
                (not_keras, "not a Keras model file .*: .*model.keras"),
                (write_npz(directory), "cannot load Keras model .*mnist.npz"),
            )
            for path, message in cases:
                with self.subTest(path=path), self.assertRaisesRegex(ModelError, message):
                    load_model(path)


class ShippedModelAccuracyTest(tf.test.TestCase):
    def test_test_accuracy_at_least_99_percent(self):
        _, (images, labels) = mnist_or_skip(self)
        self.assertLen(images, 10_000)
        _, accuracy = train.evaluate(load_model(), train.make_dataset(images, labels, 1000))
        self.assertGreaterEqual(accuracy, 0.99)


class MnistLoadingTest(tf.test.TestCase):
    def test_loads_a_valid_file_and_the_env_var(self):
        with tempfile.TemporaryDirectory() as directory:
            path = write_npz(directory)
            (x_train, y_train), (x_test, y_test) = mnist.load_mnist(path)
            self.assertEqual(
                (x_train.shape, y_train.shape, x_test.shape, y_test.shape), ((256, 28, 28), (256,), (64, 28, 28), (64,))
            )
            with mock.patch.dict(os.environ, {mnist.ENV_VAR: path}):
                self.assertAllEqual(mnist.load_mnist()[1][0], x_test)

    def test_bad_files(self):
        with tempfile.TemporaryDirectory() as directory:
            text_file = os.path.join(directory, "text.npz")
            with open(text_file, "w") as file:
                file.write("hello")
            cases = (
                ("missing", os.path.join(directory, "nope.npz"), "MNIST file not found: .*nope.npz"),
                ("not npz", text_file, "MNIST file .*text.npz is not an .npz archive"),
                ("missing key", write_npz(directory, "a.npz", y_test=None), "lacks key\\(s\\) y_test"),
                (
                    "float images",
                    write_npz(directory, "b.npz", x_train=np.zeros([256, 28, 28], np.float32)),
                    "x_train has dtype float32, expected uint8",
                ),
                (
                    "wrong shape",
                    write_npz(directory, "c.npz", x_test=np.zeros([64, 28, 27], np.uint8)),
                    r"x_test has shape \(64, 28, 27\), expected \[N, 28, 28\]",
                ),
                (
                    "label shape",
                    write_npz(directory, "d.npz", y_train=np.zeros([256, 1], np.uint8)),
                    r"y_train has shape \(256, 1\), expected \[N\]",
                ),
                (
                    "count mismatch",
                    write_npz(directory, "e.npz", y_test=np.zeros([63], np.uint8)),
                    "64 test images but 63 labels",
                ),
            )
            for name, path, message in cases:
                with self.subTest(name), self.assertRaisesRegex(mnist.DataError, message):
                    mnist.load_mnist(path)


class TrainingTest(tf.test.TestCase):
    def test_one_epoch_on_a_subset_lowers_the_loss_and_logs_the_l2_share(self):
        (x_train, y_train), (x_test, y_test) = mnist_or_skip(self)
        logdir = self.get_temp_dir()
        config = train.TrainConfig(epochs=1, batch_size=32, learning_rate=0.05)
        subset = (x_train[:640], y_train[:640])
        untrained_loss, _ = train.evaluate(train.build_cnn(), train.make_dataset(*subset, 640))
        model, history = train.train(config, subset, (x_test[:500], y_test[:500]), logdir=logdir, verbose=False)
        trained_loss, _ = train.evaluate(model, train.make_dataset(*subset, 640))
        self.assertLess(trained_loss, 0.7 * untrained_loss)
        self.assertGreater(history["test_accuracy"][0], 0.5)
        self.assertTrue(0.0 < history["l2_share"][0] < 1.0)

        events = event_accumulator.EventAccumulator(os.path.join(logdir, "train"), size_guidance={"tensors": 0})
        events.Reload()
        shares = [float(tf.make_ndarray(event.tensor_proto)) for event in events.Tensors("l2_share")]
        self.assertNotEmpty(shares)
        self.assertTrue(all(0.0 < share < 1.0 for share in shares))
        self.assertContainsSubset(
            {"l2_share", "batch_loss", "learning_rate", "loss", "accuracy"}, events.Tags()["tensors"]
        )
        test_events = event_accumulator.EventAccumulator(os.path.join(logdir, "test"))
        test_events.Reload()
        self.assertContainsSubset({"loss", "accuracy"}, test_events.Tags()["tensors"])

    def test_bad_config(self):
        for overrides, message in (
            (dict(epochs=0), "--epochs must be > 0, got 0"),
            (dict(batch_size=-1), "--batch_size must be > 0, got -1"),
            (dict(learning_rate=0.0), "--learning_rate must be > 0, got 0.0"),
            (dict(momentum=1.0), r"--momentum must be in \[0, 1\), got 1.0"),
            (dict(l2=-0.1), "--l2 must be >= 0, got -0.1"),
        ):
            with self.subTest(message), self.assertRaisesRegex(train.errors.OIPGraphError, message):
                train.TrainConfig(**overrides).validate()


class TrainCommandTest(tf.test.TestCase):
    def test_trains_and_saves_a_loadable_model(self):
        directory = self.get_temp_dir()
        out = os.path.join(directory, "new", "folder", "small.keras")  # Created, as `oipgraph --out` is.
        done = run_command(
            "oipgraph-train",
            f"--mnist={write_npz(directory)}",
            "--epochs=1",
            "--batch_size=64",
            f"--out={out}",
            f"--logdir={directory}/logs",
        )
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        self.assertEqual(load_model(out).count_params(), 174_092)
        self.assertEqual(glob.glob(os.path.join(directory, "**", ".tmp-*"), recursive=True), [])
        self.assertNotEmpty(glob.glob(os.path.join(directory, "logs", "train", "events.out.tfevents.*")))

    def test_bad_invocations_exit_2_with_one_line_and_write_nothing(self):
        directory = self.get_temp_dir()
        data = write_npz(directory)
        out = os.path.join(directory, "never.keras")
        a_file = os.path.join(directory, "a_file")
        with open(a_file, "w") as file:
            file.write("x")
        cases = [
            ([f"--mnist={directory}/missing.npz"], "MNIST file not found"),
            ([f"--mnist={data}", "--epochs=0"], "--epochs must be > 0, got 0"),
            ([f"--mnist={data}", "--epochs=two"], "flag --epochs=two"),
            ([f"--mnist={data}", "--out=model.h5"], "--out must end in .keras, got model.h5"),
            ([f"--mnist={data}", f"--out={a_file}/sub/m.keras"], f"{a_file} is a file, not a folder"),
        ]
        commands = [
            [*args, *([] if any(a.startswith("--out") for a in args) else [f"--out={out}"])] for args, _ in cases
        ]
        # All after one TensorFlow import (tests/forked_commands.py); commands_test runs a bad flag for real.
        for (_, message), done in zip(cases, run_forked("oipgraph-train", commands)):
            with self.subTest(message):
                self.assertEqual(done.returncode, 2, done.stderr[-2000:])
                assert_one_line_error(self, done.stderr, "oipgraph-train", message)
        self.assertFalse(os.path.exists(out))


if __name__ == "__main__":
    tf.test.main()
