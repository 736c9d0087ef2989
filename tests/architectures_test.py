"""Users' own models: keras.applications bases, residual RGB CNNs, nested models, Rescaling inputs.

A matrix of models built here with random weights (`weights=None`, no
download), saved as .keras files, and for each several target layers, some
after a merge (Add, Concatenate, Multiply):

- the fast and plain formulations (`OIPAscent(..., fast=False)`) agree on the
  loss and gradient of one step;
- `oipgraph --model=... --layer=... --maps=0-1 --steps=3` runs (one layer after
  a merge per model);
- the chosen layers export (`OIPServable(model, layers=...)`, and
  `oipgraph-export --layers` for the nested model) and serve in a `python -I`
  child process where oipgraph cannot be imported.

Inputs are 32x32, the smallest size keras.applications accepts for
MobileNetV2, ResNet50 and EfficientNetB0; the layers are shallow where depth
would only add tracing time. The slow parts are the CLI runs and the exports
(about 10-20 s each on a 2-core machine, most of it TensorFlow start-up and
tracing); the whole file takes a few minutes there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from unittest import mock

import helpers
import keras
import pytest
import tensorflow as tf
from helpers import HIDE_OIPGRAPH, assert_one_line_error, finish, run_forked, start
from oipgraph.export import export_savedmodel, versions
from oipgraph.export import layers as export_layers
from oipgraph.export.servable import OIPServable

from oipgraph.ascent import OIPAscent
from oipgraph.ascent.step import loss_and_gradient
from oipgraph.core.errors import OIPGraphError
from oipgraph.models import layer_lookup
from oipgraph.models.loading import ModelError, check_image_model, load_model

SIZE = 32
# The nested base's name: keras.applications names it after alpha and the (variable) input size.
BASE = "mobilenetv2_0.35_None"


def small_residual_cnn() -> keras.Model:
    """An RGB CNN with BatchNorm, a residual Add, separable and depthwise convs, Concatenate and Multiply."""
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.SeparableConv2D(8, 3, activation="relu", name="separable")(x)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.Concatenate(name="concat")([x, keras.layers.Activation("tanh", name="tanh")(x)])
    x = keras.layers.Multiply(name="multiply")([x, x])
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.3, name="dropout")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(5, activation="softmax", name="classes")(x), name="residual_cnn")


def rescaling_cnn() -> keras.Model:
    """A CNN for [0, 255] images: it starts with Rescaling(1/255)."""
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 255, name="rescaling")(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(x)
    x = keras.layers.AveragePooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="top")(x)
    return keras.Model(inputs, keras.layers.Flatten(name="flatten")(x), name="rescaling_cnn")


def transfer_model() -> keras.Model:
    """The usual transfer-learning shape: a variable-size keras.applications base inside a Sequential."""
    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(None, None, 3), alpha=0.35)
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(name="pooled"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ],
        name="transfer",
    )


def applications(name: str, **kwargs) -> keras.Model:
    return getattr(keras.applications, name)(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3), **kwargs)


# name: (builder, layers checked fast vs plain, CLI layer (after a merge), exported layers)
MATRIX = {
    "residual_cnn": (
        small_residual_cnn,
        ("conv1", "bn1", "add", "separable", "depthwise", "concat", "multiply", "pool", "dropout", "classes"),
        "add",
        ("add", "multiply"),
    ),
    "rescaling_cnn": (rescaling_cnn, ("conv", "pool", "top"), "top", ("top",)),
    "mobilenet_v2": (
        lambda: applications("MobileNetV2", alpha=0.35),
        ("Conv1", "block_1_expand", "block_1_depthwise_relu", "block_2_add", "out_relu"),
        "block_2_add",
        ("block_2_add",),
    ),
    "resnet50": (
        lambda: applications("ResNet50"),
        ("conv1_relu", "conv2_block1_1_conv", "conv2_block1_add", "conv2_block1_out"),
        "conv2_block1_add",
        ("conv2_block1_add",),
    ),
    "efficientnet_b0": (
        lambda: applications("EfficientNetB0"),
        ("stem_activation", "block1a_se_excite", "block1a_project_bn", "block2a_expand_activation"),
        "block1a_se_excite",
        ("block1a_se_excite",),
    ),
    "transfer": (
        transfer_model,
        (f"{BASE}/block_2_add", "block_1_expand", "Conv1_relu", "pooled", "head"),
        f"{BASE}/block_2_add",
        (f"{BASE}/block_2_add", "head"),
    ),
}

# Runs in `python -I`: loads every export with plain TensorFlow (oipgraph hidden), serves each optimize_
# signature and serving_default for maps 0 and 1 of the initial images, and prints what it got.
CHILD_SCRIPT = (
    HIDE_OIPGRAPH
    + r"""
import numpy as np
import tensorflow as tf

report = {}
for path in sys.argv[1:]:
    loaded = tf.saved_model.load(path)
    images = loaded.signatures["initial_images"](seed=tf.constant(1, tf.int64), batch=tf.constant(2))["images"]
    served = {}
    for name, function in sorted(loaded.signatures.items()):
        if name.startswith("optimize_") or name == "serving_default":
            outputs = function(images=images, map_index=tf.constant([0, 1]), steps=tf.constant(3),
                               epsilon=tf.constant(0.01))
            served[name] = {"loss": outputs["loss"].numpy().tolist(), "shape": list(outputs["images"].shape),
                            "finite": bool(np.isfinite(outputs["images"].numpy()).all())}
    report[path] = {"signatures": sorted(loaded.signatures), "served": served}
report["oipgraph_modules"] = sorted(name for name in sys.modules if name.split(".")[0] == "oipgraph")
print(json.dumps(report))
"""
)


@pytest.mark.heavy
class ArchitectureMatrixTest(tf.test.TestCase):
    """Every model of the matrix, through the API, the CLI and the export."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.temp_dir = tempfile.mkdtemp(prefix="architectures_test_")
        cls.paths = {}
        with helpers.keras_seed(0):
            for name, (builder, *_) in MATRIX.items():
                cls.paths[name] = os.path.join(cls.temp_dir, f"{name}.keras")
                builder().save(cls.paths[name])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.temp_dir, ignore_errors=True)
        super().tearDownClass()

    def test_fast_and_plain_agree_on_loss_and_gradient(self):
        images = tf.random.stateless_normal([2, SIZE, SIZE, 3], seed=[1, 2])
        for name, (_, layers, *_) in MATRIX.items():
            model = load_model(self.paths[name])
            for layer in layers:
                with self.subTest(model=name, layer=layer):
                    fast = OIPAscent(model, layer)
                    plain = OIPAscent(model, layer, fast=False)
                    # The two targets the images excite most (random weights leave some ReLU maps dead).
                    targets = tf.math.top_k(tf.reduce_mean(plain.objective.all_targets(images), axis=0), k=2).indices
                    fast_loss, fast_gradient = loss_and_gradient(lambda x: fast.map_loss(x, targets), images)
                    plain_loss, plain_gradient = loss_and_gradient(lambda x: plain.map_loss(x, targets), images)
                    scale = float(tf.reduce_max(tf.abs(plain_gradient)))
                    self.assertGreater(scale, 0.0, msg="the gradient must not vanish, or the comparison says nothing")
                    self.assertAllClose(fast_loss, plain_loss, rtol=1e-4, atol=1e-5)
                    self.assertAllClose(fast_gradient / scale, plain_gradient / scale, rtol=0, atol=1e-4)

    def test_fast_paths_apply_inside_nested_models(self):
        model = load_model(self.paths["transfer"])
        ascent = OIPAscent(model, "block_1_expand")  # A stride-1 1x1 conv inside the base.
        self.assertTrue(ascent.objective.sliced)
        inner = model.layers[0].get_layer("block_1_expand")
        self.assertIs(ascent.objective.layer, inner)
        self.assertEqual(ascent.num_maps, inner.filters)

    def test_cli_runs_a_layer_after_a_merge(self):
        outs = {name: os.path.join(self.temp_dir, f"cli_{name}") for name in MATRIX}
        cases = [
            [f"--model={self.paths[name]}", f"--layer={layer}", "--maps=0-1", "--steps=3", f"--out={outs[name]}"]
            for name, (_, _, layer, _) in MATRIX.items()
        ]
        # All runs after one TensorFlow import (each still the whole command, in its own process).
        for (name, (_, _, layer, _)), result in zip(MATRIX.items(), run_forked("oipgraph", cases)):
            with self.subTest(model=name, layer=layer):
                self.assertEqual(result.returncode, 0, msg=result.stderr[-3000:])
                with open(os.path.join(outs[name], "catalog.json")) as handle:
                    catalog = json.load(handle)
                self.assertEqual([entry["map_index"] for entry in catalog["maps"]], [0, 1])
                self.assertTrue(os.path.isfile(os.path.join(outs[name], "grid.png")))

    def test_chosen_layers_export_and_serve_without_oipgraph(self):
        export_paths, expected = [], {}
        export_dirs = {name: os.path.join(self.temp_dir, f"export_{name}") for name in MATRIX}
        # The transfer model through the command, with a nested name in --layers; it runs while the others export.
        command = start(
            "oipgraph-export",
            f"--model={self.paths['transfer']}",
            f"--layers={','.join(MATRIX['transfer'][3])}",
            f"--export_dir={export_dirs['transfer']}",
        )
        self.addCleanup(command.kill)  # A no-op once it has ended.
        for name, (_, _, _, layers) in MATRIX.items():
            export_dir = export_dirs[name]
            if name == "transfer":
                result = finish(command)
                self.assertEqual(result.returncode, 0, msg=result.stderr[-3000:])
                path = os.path.join(export_dir, "1")
            else:
                servable = OIPServable(load_model(self.paths[name]), layers=layers)
                path = export_savedmodel.write_savedmodel(servable, export_dir)
            self.assertEqual(os.listdir(export_dir), ["1"])  # No temporary folder left.
            export_paths.append(path)
            suffixes = [export_layers.signature_suffix(layer) for layer in layers]
            expected[path] = sorted(
                ["serving_default", "initial_images"]
                + [f"optimize_{suffix}" for suffix in suffixes]
                + [f"precursor_{suffix}" for suffix, layer in zip(suffixes, layers) if layer != "head"]
            )
        result = subprocess.run(
            [sys.executable, "-I", "-c", CHILD_SCRIPT, *export_paths],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=self.temp_dir,
        )
        self.assertEqual(result.returncode, 0, msg=result.stderr[-3000:])
        report = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertEqual(report.pop("oipgraph_modules"), [])
        for path, signatures in expected.items():
            with self.subTest(export=path):
                self.assertEqual(report[path]["signatures"], signatures)
                for name, served in report[path]["served"].items():
                    self.assertEqual(served["shape"], [2, SIZE, SIZE, 3], msg=name)
                    self.assertTrue(served["finite"], msg=name)
        self.assertIn(f"optimize_{BASE.replace('.', '_')}__block_2_add", report[export_paths[-1]]["served"])


class LayerLookupTest(tf.test.TestCase):
    """Names, errors and the feature models of `layer_lookup`."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        with helpers.keras_seed(0):
            cls.transfer = transfer_model()
            cls.residual = small_residual_cnn()

    def test_nested_layer_by_qualified_and_own_name(self):
        inner = self.transfer.layers[0].get_layer("block_2_add")
        for name in (f"{BASE}/block_2_add", "block_2_add"):
            with self.subTest(name=name):
                resolved = layer_lookup.resolve_layer(self.transfer, name)
                self.assertEqual(resolved.name, f"{BASE}/block_2_add")
                self.assertIs(resolved.layer, inner)
                self.assertEqual(
                    tuple(resolved.feature_model.output.shape), (None, 8, 8, 8)
                )  # 32 / 4, alpha 0.35: 8 maps
                self.assertNotIn(self.transfer.layers[0], resolved.feature_model.layers)  # Inlined: flat.

    def test_nested_feature_model_computes_what_the_model_computes(self):
        images = tf.random.stateless_normal([2, SIZE, SIZE, 3], seed=[3, 4])
        features = layer_lookup.resolve_layer(self.transfer, "out_relu").feature_model
        base = self.transfer.layers[0]
        self.assertAllClose(features(images, training=False), base(images, training=False), rtol=1e-5, atol=1e-6)

    def test_unknown_layer_lists_usable_layers(self):
        with self.assertRaisesRegex(
            OIPGraphError, "unknown layer 'nope'; usable layers: conv1, bn1, relu1, conv2, add"
        ):
            layer_lookup.resolve_layer(self.residual, "nope")
        with self.assertRaisesRegex(OIPGraphError, f"usable layers: {BASE}/Conv1, {BASE}/bn_Conv1"):
            layer_lookup.resolve_layer(self.transfer, "nope")

    def test_input_layer_is_not_a_target(self):
        with self.assertRaisesRegex(OIPGraphError, "'image' is the model's input"):
            layer_lookup.resolve_layer(self.residual, "image")
        self.assertNotIn("image", layer_lookup.usable_layer_names(self.residual))

    def test_ambiguous_own_name_asks_for_the_qualified_one(self):
        inputs = keras.Input((SIZE, SIZE, 3))
        first = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(2, 3, name="conv")], name="a")
        second = keras.Sequential([keras.Input((30, 30, 2)), keras.layers.Conv2D(2, 3, name="conv")], name="b")
        model = keras.Model(inputs, second(first(inputs)))
        with self.assertRaisesRegex(OIPGraphError, "'conv' is ambiguous; use one of: a/conv, b/conv"):
            layer_lookup.resolve_layer(model, "conv")
        self.assertEqual(layer_lookup.resolve_layer(model, "a/conv").feature_model.output.shape[1:], (30, 30, 2))
        # A flat Keras model cannot hold two layers of one name: a clear error, not a crash (not supported).
        with self.assertRaisesRegex(OIPGraphError, "'b/conv': The name \"conv\" is used 2 times"):
            layer_lookup.resolve_layer(model, "b/conv")

    def test_merge_layers_keep_their_inputs(self):
        for name in ("add", "concat", "multiply"):
            with self.subTest(layer=name):
                features = layer_lookup.resolve_layer(self.residual, name).feature_model
                inputs_model = layer_lookup.layer_input_model(features)
                self.assertIsInstance(inputs_model.output, list)
                self.assertLen(inputs_model.output, 2)

    def test_module_and_signature_names(self):
        self.assertEqual(layer_lookup.module_name(f"{BASE}/block_2_add"), "mobilenetv2_0_35_None__block_2_add")
        self.assertEqual(export_layers.signature_suffix("base.v2/conv-1"), "base_v2__conv_1")
        self.assertEqual(OIPAscent(self.transfer, "block_1_expand_relu").name, "oip_ascent_block_1_expand_relu")


class ImageSizeTest(tf.test.TestCase):
    """`--image_size=H,W` for a model whose input has a variable size."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.temp_dir = tempfile.mkdtemp(prefix="image_size_test_")
        with helpers.keras_seed(0):
            cls.model = keras.applications.MobileNetV2(
                weights=None, include_top=False, input_shape=(None, None, 3), alpha=0.35
            )
            cls.path = os.path.join(cls.temp_dir, "variable.keras")
            cls.model.save(cls.path)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.temp_dir, ignore_errors=True)
        super().tearDownClass()

    def start_cli(self, *args: str) -> subprocess.Popen:
        out = tempfile.mkdtemp(dir=self.temp_dir)
        return start("oipgraph", f"--model={self.path}", f"--out={out}", "--maps=0", *args)

    def test_api_rebuilds_on_a_fixed_size(self):
        with self.assertRaisesRegex(ModelError, "variable image size; give one with --image_size=H,W"):
            check_image_model(self.model)
        fixed = layer_lookup.with_image_size(self.model, (48, 40))
        self.assertEqual(check_image_model(fixed), (48, 40, 3))
        ascent = OIPAscent(fixed, "block_2_add")
        self.assertEqual(ascent.objective.map_shape, (12, 10))
        images = tf.random.stateless_normal([1, 48, 40, 3], seed=[5, 6])
        self.assertAllClose(fixed(images), self.model(images), rtol=1e-5, atol=1e-6)
        self.assertEqual(check_image_model(load_model(self.path, (32, 32))), (32, 32, 3))

    def test_bad_image_sizes(self):
        fixed = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(1, 3)])
        for size, message in [
            ("abc", "--image_size must be two integers H,W, got 'abc'"),
            ("32", "--image_size must be two integers H,W, got '32'"),
            ("0,32", "--image_size sides must be in 1..4096, got '0,32'"),
            ("32,99999", "--image_size sides must be in 1..4096"),
        ]:
            with self.subTest(size=size):
                with self.assertRaisesRegex(OIPGraphError, message):
                    layer_lookup.parse_image_size(size)
        with self.assertRaisesRegex(OIPGraphError, "height 9 differs from the model's fixed input height 8"):
            layer_lookup.with_image_size(fixed, (9, 8))
        with self.assertRaisesRegex(OIPGraphError, "cannot run on 2x2 images"):
            layer_lookup.with_image_size(self.model, (2, 2))

    def test_cli(self):
        # All three at once: each a whole command, its own process.
        run = self.start_cli("--image_size=32,32", "--layer=block_1_expand_relu", "--steps=2")
        refusals = [
            ((), "variable image size; give one with --image_size=H,W"),
            (("--image_size=32",), "--image_size must be two integers H,W, got '32'"),
        ]
        refused = [self.start_cli(*args, "--layer=block_1_expand_relu") for args, _ in refusals]
        result = finish(run)
        self.assertEqual(result.returncode, 0, msg=result.stderr[-3000:])
        for (args, message), process in zip(refusals, refused):
            with self.subTest(args=args):
                result = finish(process)
                self.assertEqual(result.returncode, 2)
                assert_one_line_error(self, result.stderr, "oipgraph", message)


class ExportChoiceTest(tf.test.TestCase):
    """Which layers `oipgraph-export` takes by default, and a clean directory after a failure."""

    def test_default_serving_layer_is_the_deepest_nonlinear_spatial_layer(self):
        with helpers.keras_seed(0):
            for name, expected in [
                ("MobileNetV2", "out_relu"),
                ("ResNet50", "conv5_block3_out"),
                ("EfficientNetB0", "top_activation"),
            ]:
                with self.subTest(model=name):
                    model = applications(name)
                    self.assertEqual(export_layers.default_layers(model), [expected])  # Deep: the default only.
            small = small_residual_cnn()
            self.assertEqual(export_layers.serving_layer(small, ["conv1", "bn1", "add"]), "add")
            self.assertEqual(export_layers.serving_layer(small, ["conv1", "bn1"]), "bn1")
            self.assertEqual(
                export_layers.default_layers(small), ["conv1", "conv2", "separable", "depthwise", "tanh", "classes"]
            )

    def test_bad_layer_choices(self):
        model = small_residual_cnn()
        for layers, message in [
            (["nope"], "unknown layer 'nope'"),
            ([" "], "--layers must name at least one layer"),
            (["add", "add"], "--layers names a layer twice"),
            (["image"], "is the model's input"),
        ]:
            with self.subTest(layers=layers):
                with self.assertRaisesRegex(OIPGraphError, message):
                    export_layers.chosen_layers(model, layers)

    def test_interrupted_save_and_killed_export_leave_nothing(self):
        export_dir = tempfile.mkdtemp(prefix="export_interrupt_")
        self.addCleanup(shutil.rmtree, export_dir, ignore_errors=True)
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        stale = os.path.join(export_dir, f"{versions.TEMP_PREFIX}{int(dead.stdout)}-abc")
        os.mkdir(stale)  # What an export killed with SIGKILL leaves.

        def terminated_save(module, path, signatures):
            with open(os.path.join(path, "saved_model.pb"), "wb") as handle:
                handle.write(b"partial")
            os.kill(os.getpid(), signal.SIGTERM)

        previous = signal.getsignal(signal.SIGTERM)
        with mock.patch.object(tf.saved_model, "save", side_effect=terminated_save):
            with self.assertRaises(KeyboardInterrupt):
                export_savedmodel.write_savedmodel(mock.Mock(spec=OIPServable), export_dir)
        self.assertEqual(os.listdir(export_dir), [])
        self.assertEqual(signal.getsignal(signal.SIGTERM), previous)


if __name__ == "__main__":
    tf.test.main()
