"""Tests of the SavedModel export: signatures, self-containedness, bad inputs, the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from unittest import mock

import helpers
import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import HIDE_OIPGRAPH, run_command, run_forked
from oipgraph.export import export_savedmodel, versions
from oipgraph.export.servable import OPTIMIZE_OUTPUTS, OIPServable
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

from oipgraph import starts
from oipgraph.ascent import DEFAULT_CONV_CRITERION, STATUS_CONVERGED, OIPAscent
from oipgraph.core.errors import OIPGraphError
from oipgraph.models.loading import load_model

LAYERS = ("Conv2D_1", "Conv2D_2", "Conv2D_3")
DENSE_LAYERS = ("Dense_1", "Dense_2")  # The unit objective; Dense_2's logits are the classes.
NUM_MAPS = {"Conv2D_1": 32, "Conv2D_2": 64, "Conv2D_3": 128, "Dense_1": 70, "Dense_2": 10}
IMAGE_SHAPE = (28, 28, 1)
OPTIMIZE_SIGNATURES = ("serving_default",) + tuple(f"optimize_{layer}" for layer in LAYERS + DENSE_LAYERS)
PRECURSOR_SIGNATURES = tuple(f"precursor_{layer}" for layer in LAYERS)
ALL_SIGNATURES = OPTIMIZE_SIGNATURES + PRECURSOR_SIGNATURES + ("initial_images",)
PYTHON_BOUND_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
# Small budgets keep the file fast; epsilon 3e-4 makes Conv2D_1 pairs converge
# within 24 steps, so the fixed convergence criterion is exercised.
TEST_STEPS = 24
TEST_EPSILON = 3e-4
TEST_MAPS = np.array([0, 5, 17, 31], np.int32)
TEST_SEED = 7
# One scan step keeps a full precursor scan (19,683 patterns) at a few seconds;
# these maps have non-zero scores after it.
PRECURSOR_MAPS = {"Conv2D_1": 3, "Conv2D_2": 3, "Conv2D_3": 0}

# Runs in a child process started with `python -I`: loads the SavedModel with
# plain TensorFlow, calls every signature with the inputs in an npz file, and
# saves all outputs to another npz ("<signature>/<name>" keys). oipgraph is
# installed in this venv (editable, through a .pth hook that -I keeps), so the
# child hides it explicitly: anything in the SavedModel that needed oipgraph
# would fail to load or run.
CHILD_SCRIPT = (
    HIDE_OIPGRAPH
    + r"""
try:
    import oipgraph  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    sys.exit("oipgraph is importable in the child process")

import numpy as np
import tensorflow as tf

export_path, inputs_path, outputs_path = sys.argv[1:]
loaded = tf.saved_model.load(export_path)
inputs = np.load(inputs_path)
outputs = {}
for signature_name, function in loaded.signatures.items():
    prefix = signature_name + "/"
    arguments = {key[len(prefix):]: tf.constant(inputs[key]) for key in inputs.files if key.startswith(prefix)}
    for output_name, value in function(**arguments).items():
        outputs[prefix + output_name] = value.numpy()
np.savez(outputs_path, **outputs)
print(json.dumps({
    "signatures": sorted(loaded.signatures),
    "oipgraph_modules": sorted(name for name in sys.modules if name.split(".")[0] == "oipgraph"),
    "isolated": bool(sys.flags.isolated),
}))
"""
)


# Runs in a child process started with `python -I` (oipgraph hidden as above): sends each hostile
# request of the table to the loaded SavedModel and reports, per case, the error type, its message,
# the seconds it took and how much the process's peak memory grew. Each signature is first called once
# with another refused request, so that the timings leave out the one-time graph instantiation.
HOSTILE_SCRIPT = (
    CHILD_SCRIPT[: CHILD_SCRIPT.index("export_path, inputs_path")]
    + r"""
import resource
import time

export_path, cases_path = sys.argv[1:]
loaded = tf.saved_model.load(export_path)
with open(cases_path) as handle:
    cases = json.load(handle)


def call(signature, arguments):
    tensors = {
        name: tf.constant(np.asarray(value["value"], value["dtype"])
                          if "value" in value else np.full(value["shape"], value["fill"], value["dtype"]))
        for name, value in arguments.items()
    }
    try:
        loaded.signatures[signature](**tensors)
    except Exception as error:  # noqa: BLE001 - reported to the parent.
        return type(error).__name__, str(error)
    return None, ""


report = {}
for case in cases:
    call(case["signature"], case["warmup"])
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    error, message = call(case["signature"], case["arguments"])
    report[case["name"]] = {
        "error": error,
        "message": message,
        "seconds": time.perf_counter() - started,
        "peak_growth_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024,
    }
print(json.dumps(report))
"""
)


def start_images(seed: int, batch: int) -> np.ndarray:
    """The reference start images: `starts.multiscale` with per-image seeds."""
    return starts.multiscale(starts.start_seeds(seed, range(batch)), IMAGE_SHAPE).numpy()


def fixed_inputs() -> dict[str, dict[str, np.ndarray]]:
    """Inputs for every signature of the shipped model's export."""
    optimize_inputs = {
        "images": start_images(TEST_SEED, len(TEST_MAPS)),
        "map_index": TEST_MAPS,
        "steps": np.int32(TEST_STEPS),
        "epsilon": np.float32(TEST_EPSILON),
    }
    inputs = {name: optimize_inputs for name in OPTIMIZE_SIGNATURES}
    for layer in DENSE_LAYERS:
        inputs[f"optimize_{layer}"] = {**optimize_inputs, "map_index": TEST_MAPS % NUM_MAPS[layer]}
    inputs["initial_images"] = {"seed": np.int64(2**40 + TEST_SEED), "batch": np.int32(3)}
    for layer, map_index in PRECURSOR_MAPS.items():
        inputs[f"precursor_{layer}"] = {
            "map_index": np.int32(map_index),
            "scan_steps": np.int32(1),
            "top_n": np.int32(2),
        }
    return inputs


def as_tensors(arguments: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    return {name: tf.constant(value) for name, value in arguments.items()}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("oipgraph-export: error: ")]


def saved_model_ops(export_path: str) -> set[str]:
    """Every op type in a SavedModel: graph_def nodes and all library functions."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(export_path, "saved_model.pb"), "rb") as handle:
        saved_model.ParseFromString(handle.read())
    ops = set()
    for meta_graph in saved_model.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return ops


def parse_saved_model_cli_show(text: str) -> dict[str, dict[str, dict[str, tuple[str, str]]]]:
    """`saved_model_cli show --all` output as {signature: {"inputs"|"outputs": {name: (dtype, shape)}}}."""
    signatures: dict[str, dict[str, dict[str, tuple[str, str]]]] = {}
    blocks = re.split(r"^signature_def\['([^']+)'\]:$", text, flags=re.MULTILINE)
    for name, body in zip(blocks[1::2], blocks[2::2]):
        entries = {"inputs": {}, "outputs": {}}
        for kind, key, dtype, shape in re.findall(
            r"(inputs|outputs)\['([^']+)'\] tensor_info:\s+dtype: (\w+)\s+shape: ([^\n]+)", body
        ):
            entries[kind][key] = (dtype, shape.strip())
        signatures[name] = entries
    return signatures


@pytest.mark.heavy
class ExportedSavedModelTest(tf.test.TestCase):
    """One export of the shipped model, checked from every side."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.temp_dir = tempfile.mkdtemp(prefix="export_test_")
        cls.export_dir = os.path.join(cls.temp_dir, "oipgraph")
        cls.model = load_model()
        cls.servable = OIPServable(cls.model)
        cls.export_path = export_savedmodel.write_savedmodel(cls.servable, cls.export_dir)
        cls.loaded = tf.saved_model.load(cls.export_path)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.temp_dir, ignore_errors=True)
        super().tearDownClass()

    def test_layout_is_tf_serving_version_directory(self):
        self.assertEqual(self.export_path, os.path.join(self.export_dir, "1"))
        self.assertEqual(os.listdir(self.export_dir), ["1"])  # No temporary directory left.
        self.assertTrue(tf.saved_model.contains_saved_model(self.export_path))
        self.assertTrue(os.path.isfile(os.path.join(self.export_path, "variables", "variables.index")))
        plain_dir = os.path.join(self.temp_dir, "plain")
        os.makedirs(plain_dir, exist_ok=True)
        self.assertEqual(os.stat(self.export_path).st_mode, os.stat(plain_dir).st_mode)  # Not mkdtemp's 0700.

    def test_signature_names(self):
        self.assertCountEqual(self.loaded.signatures, ALL_SIGNATURES)
        self.assertEqual(self.servable.deepest_layer, "Conv2D_3")

    def test_child_process_without_oipgraph_matches_in_process_module(self):
        inputs = fixed_inputs()
        inputs_path = os.path.join(self.temp_dir, "child_inputs.npz")
        outputs_path = os.path.join(self.temp_dir, "child_outputs.npz")
        np.savez(
            inputs_path,
            **{f"{name}/{key}": value for name, arguments in inputs.items() for key, value in arguments.items()},
        )
        child = subprocess.Popen(
            [sys.executable, "-I", "-c", CHILD_SCRIPT, self.export_path, inputs_path, outputs_path],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.temp_dir,
        )
        try:
            # The in-process results are computed while the child runs.
            signatures = self.servable.signatures()
            expected_outputs = {name: signatures[name](**as_tensors(arguments)) for name, arguments in inputs.items()}
            stdout, stderr = child.communicate(timeout=300)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        self.assertEqual(child.returncode, 0, msg=stderr[-3000:])
        report = json.loads(stdout.strip().splitlines()[-1])
        self.assertTrue(report["isolated"])
        self.assertEqual(report["oipgraph_modules"], [])
        self.assertCountEqual(report["signatures"], ALL_SIGNATURES)
        child_outputs = np.load(outputs_path)
        for name, expected in expected_outputs.items():
            for key, value in expected.items():
                with self.subTest(signature=name, output=key):
                    self.assertAllEqual(child_outputs[f"{name}/{key}"], value.numpy())
            self.assertCountEqual(
                [key for key in child_outputs.files if key.startswith(name + "/")],
                [f"{name}/{key}" for key in expected],
            )

    def test_optimize_signatures_equal_the_library_ascent(self):
        for name in OPTIMIZE_SIGNATURES:
            arguments = fixed_inputs()[name]
            layer = "Conv2D_3" if name == "serving_default" else name[len("optimize_") :]
            with self.subTest(signature=name):
                served = self.loaded.signatures[name](**as_tensors(arguments))
                reference = OIPAscent(self.model, layer)(
                    arguments["images"],
                    arguments["map_index"],
                    steps=TEST_STEPS,
                    epsilon=TEST_EPSILON,
                    conv_criterion=DEFAULT_CONV_CRITERION,
                )
                self.assertCountEqual(served, OPTIMIZE_OUTPUTS)
                for key in OPTIMIZE_OUTPUTS:
                    self.assertAllEqual(served[key], getattr(reference, key))
                self.assertEqual(served["loss_history"].shape, (len(TEST_MAPS), TEST_STEPS))
                self.assertEqual(served["snapshots"].shape, (len(TEST_MAPS), 8) + IMAGE_SHAPE)
                self.assertEqual(served["status"].dtype, tf.int32)
                self.assertEqual(served["steps_run"].dtype, tf.int32)
                if layer == "Conv2D_1":
                    self.assertIn(STATUS_CONVERGED, served["status"].numpy())

    def test_initial_images_equal_multiscale_starts(self):
        for seed, batch in [(0, 1), (2**40 + TEST_SEED, 3), (-5, 2)]:
            with self.subTest(seed=seed, batch=batch):
                images = self.loaded.signatures["initial_images"](
                    seed=tf.constant(seed, tf.int64), batch=tf.constant(batch, tf.int32)
                )["images"]
                self.assertAllEqual(images, start_images(seed, batch))

    def test_no_python_bound_ops(self):
        ops = saved_model_ops(self.export_path)
        # The walk must reach the function library, where the ascent lives.
        self.assertContainsSubset({"Conv2D", "Conv2DBackpropInput", "StatelessRandomUniformV2"}, ops)
        self.assertTrue({"While", "StatelessWhile"} & ops)
        self.assertEmpty(ops & PYTHON_BOUND_OPS)
        self.assertEmpty({op for op in ops if op_def_registry.get(op) is None}, "ops unknown to core TensorFlow")

    def test_python_bound_op_check_finds_py_function(self):
        module = tf.Module()
        module.double = tf.function(
            lambda x: tf.py_function(lambda v: 2 * v, [x], tf.float32), input_signature=[tf.TensorSpec([], tf.float32)]
        )
        path = os.path.join(self.temp_dir, "py_function_model")
        tf.saved_model.save(module, path, signatures=module.double.get_concrete_function())
        self.assertIn("EagerPyFunc", saved_model_ops(path))

    def test_saved_model_cli_show_lists_documented_signatures(self):
        show = run_command("saved_model_cli", "show", "--all", "--dir", self.export_path)
        self.assertEqual(show.returncode, 0, msg=show.stderr[-3000:])
        listed = parse_saved_model_cli_show(show.stdout)
        listed.pop("__saved_model_init_op", None)
        optimize = {
            "inputs": {
                "images": ("DT_FLOAT", "unknown_rank"),
                "map_index": ("DT_INT32", "(-1)"),
                "steps": ("DT_INT32", "()"),
                "epsilon": ("DT_FLOAT", "()"),
            },
            "outputs": {
                "images": ("DT_FLOAT", "(-1, 28, 28, 1)"),
                "loss": ("DT_FLOAT", "(-1)"),
                "loss_history": ("DT_FLOAT", "(-1, -1)"),
                "status": ("DT_INT32", "(-1)"),
                "steps_run": ("DT_INT32", "(-1)"),
                "snapshots": ("DT_FLOAT", "(-1, 8, 28, 28, 1)"),
            },
        }
        expected = {name: optimize for name in OPTIMIZE_SIGNATURES}
        expected["initial_images"] = {
            "inputs": {"seed": ("DT_INT64", "()"), "batch": ("DT_INT32", "()")},
            "outputs": {"images": ("DT_FLOAT", "(-1, 28, 28, 1)")},
        }
        for name in PRECURSOR_SIGNATURES:
            expected[name] = {
                "inputs": {
                    "map_index": ("DT_INT32", "()"),
                    "scan_steps": ("DT_INT32", "()"),
                    "top_n": ("DT_INT32", "()"),
                },
                "outputs": {"images": ("DT_FLOAT", "(-1, 28, 28, 1)"), "scores": ("DT_FLOAT", "(-1)")},
            }
        self.assertEqual(listed, expected)

    def test_saved_model_cli_run_serving_default(self):
        images = start_images(0, 1)
        images_path = os.path.join(self.temp_dir, "cli_images.npy")
        outdir = os.path.join(self.temp_dir, "cli_outputs")
        np.save(images_path, images)
        run = run_command(
            "saved_model_cli",
            "run",
            "--dir",
            self.export_path,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"images={images_path}",
            "--input_exprs",
            "map_index=[0];steps=3;epsilon=0.01",
            "--outdir",
            outdir,
        )
        self.assertEqual(run.returncode, 0, msg=run.stderr[-3000:])
        expected = self.loaded.signatures["serving_default"](
            images=tf.constant(images), map_index=tf.constant([0]), steps=tf.constant(3), epsilon=tf.constant(0.01)
        )
        self.assertCountEqual(os.listdir(outdir), [f"{key}.npy" for key in OPTIMIZE_OUTPUTS])
        for key, value in expected.items():
            self.assertAllClose(np.load(os.path.join(outdir, f"{key}.npy")), value, rtol=1e-5, atol=1e-6, msg=key)

    def test_tf1_session_loader_runs_the_signatures(self):
        # TF Serving loads a SavedModel into a session: restore op, then feeds and
        # fetches by tensor name. Variables that only the TF2 object graph
        # restores would fail here ("Could not find variable").
        inputs = fixed_inputs()
        names = [
            name for name in ALL_SIGNATURES if name not in ("precursor_Conv2D_2", "precursor_Conv2D_3")
        ]  # Runtime.
        with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
            meta_graph = tf.compat.v1.saved_model.loader.load(session, [tf.saved_model.SERVING], self.export_path)
            session_outputs = {}
            for name in names:
                signature = meta_graph.signature_def[name]
                feed = {signature.inputs[key].name: value for key, value in inputs[name].items()}
                session_outputs[name] = session.run({key: info.name for key, info in signature.outputs.items()}, feed)
        for name in names:
            expected = self.loaded.signatures[name](**as_tensors(inputs[name]))
            self.assertCountEqual(session_outputs[name], expected)
            for key, value in expected.items():
                with self.subTest(signature=name, output=key):
                    self.assertAllClose(session_outputs[name][key], value, rtol=1e-5, atol=1e-6)

    def test_predict_request_example_runs(self):
        request_text = (resources.files("oipgraph.export") / "predict_request.json").read_text()
        request = json.loads(request_text)
        self.assertCountEqual(request, ["signature_name", "inputs"])
        signature = self.loaded.signatures[request["signature_name"]]
        specs = signature.structured_input_signature[1]
        self.assertCountEqual(request["inputs"], specs)  # TF Serving rejects missing or extra inputs.
        tensors = {name: tf.constant(value, dtype=specs[name].dtype) for name, value in request["inputs"].items()}
        outputs = signature(**tensors)
        steps = request["inputs"]["steps"]
        self.assertEqual(outputs["images"].shape, (1,) + IMAGE_SHAPE)
        self.assertEqual(outputs["loss_history"].shape, (1, steps))
        self.assertNotEqual(int(outputs["status"][0]), 2, "the example map should react to the example image")
        self.assertGreater(float(outputs["loss"][0]), float(outputs["loss_history"][0, 0]))
        # The example image is the first start image of seed 0, rounded for JSON.
        self.assertAllClose(tensors["images"], start_images(0, 1), atol=1e-4, rtol=0)

    def test_models_config_names_the_base_path(self):
        config = (resources.files("oipgraph.export") / "models.config").read_text()
        body = "\n".join(line for line in config.splitlines() if not line.lstrip().startswith("#"))
        self.assertEqual(body.count("{"), body.count("}"))
        self.assertRegex(body, r"model_config_list\s*{\s*config\s*{")
        self.assertRegex(body, r'\bname:\s*"oipgraph"')
        self.assertRegex(body, r'\bbase_path:\s*"/models/oipgraph"')
        self.assertRegex(body, r'\bmodel_platform:\s*"tensorflow"')

    def test_hostile_requests_are_refused_fast_in_a_plain_tensorflow_process(self):
        def tensor(dtype, value=None, shape=None, fill=0.0):
            return {"dtype": dtype, "value": value} if shape is None else {"dtype": dtype, "shape": shape, "fill": fill}

        image = {"images": tensor("float32", shape=[1, 28, 28, 1], fill=0.5), "map_index": tensor("int32", [0])}
        optimize = {**image, "steps": tensor("int32", 10), "epsilon": tensor("float32", 0.01)}
        scan = {"map_index": tensor("int32", 0), "scan_steps": tensor("int32", 1), "top_n": tensor("int32", 8)}
        starts = {"seed": tensor("int64", 0), "batch": tensor("int32", 1)}
        warmups = {
            "serving_default": {**optimize, "steps": tensor("int32", 0)},
            "initial_images": {**starts, "batch": tensor("int32", 0)},
            "precursor_Conv2D_3": {**scan, "scan_steps": tensor("int32", 0)},
        }
        # (case, signature, changed inputs, what the message must say)
        table = [
            ("steps 2^31-1", "serving_default", {"steps": tensor("int32", 2**31 - 1)}, r"steps must be <= 100000"),
            (
                "batch x steps",
                "serving_default",
                {
                    "images": tensor("float32", shape=[4096, 28, 28, 1], fill=0.5),
                    "map_index": tensor("int32", shape=[4096], fill=0),
                    "steps": tensor("int32", 5000),
                },
                r"batch x steps .* must be <= 16777216",
            ),
            (
                "batch 4097",
                "serving_default",
                {
                    "images": tensor("float32", shape=[4097, 28, 28, 1], fill=0.5),
                    "map_index": tensor("int32", shape=[4097], fill=0),
                },
                r"images batch \(pairs per request\) must be <= 4096",
            ),
            ("epsilon 1e30", "serving_default", {"epsilon": tensor("float32", 1e30)}, r"epsilon must be <= 100"),
            (
                "pixels 3e38",
                "serving_default",
                {"images": tensor("float32", shape=[1, 28, 28, 1], fill=3e38)},
                r"images pixel magnitude must be <= 1e\+06",
            ),
            (
                "empty batch",
                "serving_default",
                {
                    "images": tensor("float32", shape=[0, 28, 28, 1]),
                    "map_index": tensor("int32", shape=[0]),
                },
                r"images batch \(pairs per request\) must be > 0",
            ),
            ("scalar map_index", "serving_default", {"map_index": tensor("int32", 0)}, r"map_index must be a vector"),
            ("batch 10^6", "initial_images", {"batch": tensor("int32", 1_000_000)}, r"batch must be <= 4096"),
            (
                "scan_steps 2^31-1",
                "precursor_Conv2D_3",
                {"scan_steps": tensor("int32", 2**31 - 1)},
                r"scan_steps must be <= 1000",
            ),
            ("top_n 2000", "precursor_Conv2D_3", {"top_n": tensor("int32", 2000)}, r"top_n must be <= 1024"),
        ]
        good = {"serving_default": optimize, "initial_images": starts, "precursor_Conv2D_3": scan}
        cases = [
            {
                "name": name,
                "signature": signature,
                "arguments": {**good[signature], **changes},
                "warmup": warmups[signature],
            }
            for name, signature, changes, _ in table
        ]
        cases_path = os.path.join(self.temp_dir, "hostile_cases.json")
        with open(cases_path, "w") as handle:
            json.dump(cases, handle)
        child = subprocess.run(
            [sys.executable, "-I", "-c", HOSTILE_SCRIPT, self.export_path, cases_path],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=self.temp_dir,
        )
        self.assertEqual(child.returncode, 0, msg=child.stderr[-3000:])
        report = json.loads(child.stdout.strip().splitlines()[-1])
        for name, _, _, message in table:
            with self.subTest(case=name):
                outcome = report[name]
                self.assertEqual(outcome["error"], "InvalidArgumentError", msg=outcome["message"][-2000:])
                self.assertRegex(outcome["message"], message)
                self.assertLess(outcome["seconds"], 1.0)
                self.assertLess(outcome["peak_growth_mib"], 300)

    def test_bad_inputs_fail_in_graph(self):
        images, maps = fixed_inputs()["serving_default"]["images"], TEST_MAPS
        nan_images = images.copy()
        nan_images[1, 3, 4, 0] = np.nan
        for name in OPTIMIZE_SIGNATURES:
            good = fixed_inputs()[name]
            num_maps = NUM_MAPS["Conv2D_3" if name == "serving_default" else name[len("optimize_") :]]
            cases = [
                (
                    "map index too large",
                    {"map_index": np.array([0, 1, num_maps, 2], np.int32)},
                    rf"map_index must be < {num_maps}",
                ),
                ("map index negative", {"map_index": np.array([0, -1, 2, 3], np.int32)}, r"map_index must be >= 0"),
                ("map index per image", {"map_index": maps[:2]}, r"map_index needs one entry per image"),
                ("rank 3 images", {"images": images[0]}, r"images must have shape \[batch, 28, 28, 1\]"),
                ("rank 5 images", {"images": images[None]}, r"images must have shape \[batch, 28, 28, 1\]"),
                (
                    "wrong image size",
                    {"images": np.zeros([4, 27, 28, 1], np.float32)},
                    r"images must have shape \[batch, 28, 28, 1\]",
                ),
                (
                    "wrong channels",
                    {"images": np.zeros([4, 28, 28, 3], np.float32)},
                    r"images must have shape \[batch, 28, 28, 1\]",
                ),
                ("NaN pixels", {"images": nan_images}, r"images contain NaN"),
                ("zero steps", {"steps": np.int32(0)}, r"steps must be > 0"),
                ("negative steps", {"steps": np.int32(-3)}, r"steps must be > 0"),
                ("zero epsilon", {"epsilon": np.float32(0)}, r"epsilon must be > 0"),
                ("negative epsilon", {"epsilon": np.float32(-0.01)}, r"epsilon must be > 0"),
                ("NaN epsilon", {"epsilon": np.float32(np.nan)}, r"epsilon must be > 0"),
            ]
            for case, changes, message in cases:
                with self.subTest(signature=name, case=case):
                    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
                        self.loaded.signatures[name](**as_tensors({**good, **changes}))
        for batch in (0, -2):
            with self.subTest(signature="initial_images", batch=batch):
                with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"batch must be > 0"):
                    self.loaded.signatures["initial_images"](seed=tf.constant(0, tf.int64), batch=tf.constant(batch))
        for layer in LAYERS:
            name = f"precursor_{layer}"
            good = {"map_index": 1, "scan_steps": 1, "top_n": 2}
            cases = [
                ("map index too large", {"map_index": NUM_MAPS[layer]}, rf"map_index must be < {NUM_MAPS[layer]}"),
                ("map index negative", {"map_index": -1}, r"map_index must be >= 0"),
                ("zero scan steps", {"scan_steps": 0}, r"scan_steps must be > 0"),
                ("zero top_n", {"top_n": 0}, r"top_n must be > 0"),
                ("top_n above the patterns", {"top_n": 3**9 + 1}, r"top_n must be <= 19683"),
            ]
            for case, changes, message in cases:
                with self.subTest(signature=name, case=case):
                    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
                        self.loaded.signatures[name](
                            **{key: tf.constant(value, tf.int32) for key, value in {**good, **changes}.items()}
                        )


class WriteSavedModelTest(tf.test.TestCase):
    """Version numbering and atomic writes, without running a real export."""

    def setUp(self):
        super().setUp()
        self.export_dir = tempfile.mkdtemp(prefix="write_savedmodel_test_")
        self.addCleanup(shutil.rmtree, self.export_dir, ignore_errors=True)

    def test_next_version_after_highest_numeric_directory(self):
        self.assertEqual(versions.next_version(os.path.join(self.export_dir, "missing")), 1)
        self.assertEqual(versions.next_version(self.export_dir), 1)
        for name in ("1", "3", "10", "latest", ".tmp-oipgraph-export-x"):
            os.mkdir(os.path.join(self.export_dir, name))
        with open(os.path.join(self.export_dir, "99"), "w") as handle:
            handle.write("a file, not a version")
        self.assertEqual(versions.existing_versions(self.export_dir), [1, 3, 10])
        self.assertEqual(versions.next_version(self.export_dir), 11)

    def test_failed_save_leaves_no_version_directory(self):
        servable = mock.Mock(spec=OIPServable)

        def half_write(module, path, signatures):
            with open(os.path.join(path, "saved_model.pb"), "wb") as handle:
                handle.write(b"partial")
            raise OSError("disk full")

        with mock.patch.object(tf.saved_model, "save", side_effect=half_write):
            with self.assertRaisesRegex(OSError, "disk full"):
                export_savedmodel.write_savedmodel(servable, self.export_dir, version=4)
        self.assertEqual(os.listdir(self.export_dir), [])

    def test_existing_version_is_never_overwritten(self):
        existing = os.path.join(self.export_dir, "2")
        os.mkdir(existing)
        with self.assertRaisesRegex(OIPGraphError, re.escape(f"version directory already exists: {existing}")):
            export_savedmodel.write_savedmodel(mock.Mock(spec=OIPServable), self.export_dir, version=2)
        self.assertEqual(os.listdir(existing), [])

    def test_version_created_during_save_is_not_replaced(self):
        final = os.path.join(self.export_dir, "5")

        def racing_save(module, path, signatures):
            with open(os.path.join(path, "saved_model.pb"), "wb") as handle:
                handle.write(b"new")
            os.mkdir(final)  # Another exporter (or a person) takes the version meanwhile.

        with mock.patch.object(tf.saved_model, "save", side_effect=racing_save):
            with self.assertRaises(OIPGraphError):
                export_savedmodel.write_savedmodel(mock.Mock(spec=OIPServable), self.export_dir, version=5)
        self.assertEqual(os.listdir(self.export_dir), ["5"])
        self.assertEqual(os.listdir(final), [])


class OtherModelExportTest(tf.test.TestCase):
    """Any Keras model with an NHWC image input exports, not only the shipped CNN."""

    def test_rgb_model_of_other_size(self):
        with helpers.keras_seed(0):
            inputs = keras.Input(shape=(12, 10, 3))
            features = keras.layers.Conv2D(4, 3, activation="relu", name="low")(inputs)
            features = keras.layers.MaxPooling2D(2)(features)
            features = keras.layers.Conv2D(6, 3, activation="relu", name="high")(features)
            outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(features))
            model = keras.Model(inputs, outputs)
        export_dir = tempfile.mkdtemp(prefix="other_model_export_")
        self.addCleanup(shutil.rmtree, export_dir, ignore_errors=True)
        servable = OIPServable(model)
        loaded = tf.saved_model.load(export_savedmodel.write_savedmodel(servable, export_dir, version=7))

        self.assertCountEqual(
            loaded.signatures,
            [
                "serving_default",
                "optimize_low",
                "optimize_high",
                "optimize_head",
                "initial_images",
                "precursor_low",
                "precursor_high",
            ],
        )
        images = loaded.signatures["initial_images"](seed=tf.constant(3, tf.int64), batch=tf.constant(2))["images"]
        self.assertAllEqual(images, starts.multiscale(starts.start_seeds(3, range(2)), (12, 10, 3)))
        arguments = dict(images=images, map_index=tf.constant([5, 0]), steps=tf.constant(4), epsilon=tf.constant(0.01))
        served = loaded.signatures["serving_default"](**arguments)
        self.assertEqual(served["snapshots"].shape, (2, 8, 12, 10, 3))
        reference = OIPAscent(model, "high")(images, [5, 0], steps=4, epsilon=0.01)
        self.assertAllEqual(served["images"], reference.images)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"map_index must be < 4"):
            loaded.signatures["optimize_low"](**{**arguments, "map_index": tf.constant([0, 4])})

    def test_bfloat16_export_loads_and_runs_like_the_library_ascent(self):
        with helpers.keras_seed(0):
            inputs = keras.Input(shape=(10, 10, 1))
            features = keras.layers.Conv2D(4, 3, activation="relu", name="low")(inputs)
            model = keras.Model(inputs, keras.layers.Conv2D(6, 3, activation="relu", name="high")(features))
        export_dir = tempfile.mkdtemp(prefix="bfloat16_export_")
        self.addCleanup(shutil.rmtree, export_dir, ignore_errors=True)
        servable = OIPServable(model, layers=["high"], precision="bfloat16")
        loaded = tf.saved_model.load(export_savedmodel.write_savedmodel(servable, export_dir))
        self.assertIn(tf.bfloat16, {variable.dtype for variable in loaded.model_variables})
        images = loaded.signatures["initial_images"](seed=tf.constant(1, tf.int64), batch=tf.constant(3))["images"]
        arguments = dict(
            images=images, map_index=tf.constant([0, 5, 2]), steps=tf.constant(5), epsilon=tf.constant(0.01)
        )
        served = loaded.signatures["optimize_high"](**arguments)
        self.assertEqual(served["loss"].dtype, tf.float32)
        reference = OIPAscent(model, "high", precision="bfloat16")(images, [0, 5, 2], steps=5, epsilon=0.01)
        self.assertAllClose(served["images"], reference.images, rtol=1e-5, atol=1e-5)
        self.assertAllClose(served["loss"], reference.loss, rtol=1e-5, atol=1e-6)

    def test_model_without_conv_layer_is_rejected(self):
        inputs = keras.Input(shape=(8, 8, 1))
        model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
        with self.assertRaisesRegex(OIPGraphError, "no Conv2D layer"):
            OIPServable(model)


@pytest.mark.heavy
class ExportCommandTest(tf.test.TestCase):
    """`oipgraph-export` as a user runs it."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.temp_dir = tempfile.mkdtemp(prefix="export_cli_test_")
        # The refusals of test_bad_flags and test_missing_model_fails_without_version_directory, all after one
        # TensorFlow import (tests/forked_commands.py); each test checks its own.
        cls.bad_flags_dir = os.path.join(cls.temp_dir, "bad_flags")
        cls.missing_model_dir = os.path.join(cls.temp_dir, "missing_model")
        os.mkdir(cls.missing_model_dir)
        cls.missing = os.path.join(cls.temp_dir, "no_such_model.keras")
        cls.bad_flag_cases = [
            ([], "--export_dir"),
            ([f"--export_dir={cls.bad_flags_dir}", "--version=0"], "--version"),
            ([f"--export_dir={cls.bad_flags_dir}", "extra"], "unexpected positional argument(s): extra"),
            ([f"--export_dir={cls.bad_flags_dir}", "--precision=fp16"], "flag --precision=fp16"),
        ]
        cls.missing_model_cases = [
            [f"--model={cls.missing}", f"--export_dir={cls.missing_model_dir}", *extra]
            for extra in ([], ["--version=3"])
        ]
        results = run_forked("oipgraph-export", [args for args, _ in cls.bad_flag_cases] + cls.missing_model_cases)
        cls.bad_flag_results = results[: len(cls.bad_flag_cases)]
        cls.missing_model_results = results[len(cls.bad_flag_cases) :]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.temp_dir, ignore_errors=True)
        super().tearDownClass()

    def assertUsageError(self, result: subprocess.CompletedProcess, message: str) -> None:
        self.assertEqual(result.returncode, 2, msg=result.stderr[-3000:])
        self.assertNotIn("Traceback", result.stderr)
        lines = error_lines(result.stderr)
        self.assertLen(lines, 1, msg=result.stderr[-3000:])
        self.assertIn(message, lines[0])

    def test_versions_count_up_and_existing_version_fails(self):
        export_dir = os.path.join(self.temp_dir, "models", "oipgraph")
        # Version 1 is the default export; version 2 only one layer, which numbers the same and traces far less.
        # Both after one TensorFlow import (tests/forked_commands.py), one after the other.
        exports = (("1", []), ("2", ["--layers=Conv2D_1"]))
        results = run_forked(
            "oipgraph-export", [[f"--export_dir={export_dir}", *extra] for _, extra in exports], parallel=1
        )
        for (version, _), result in zip(exports, results):
            self.assertEqual(result.returncode, 0, msg=result.stderr[-3000:])
            self.assertIn(os.path.join(export_dir, version), result.stdout)
            self.assertTrue(tf.saved_model.contains_saved_model(os.path.join(export_dir, version)))
        self.assertCountEqual(os.listdir(export_dir), ["1", "2"])
        before = sorted(os.listdir(os.path.join(export_dir, "1")))
        modified = os.path.getmtime(os.path.join(export_dir, "1", "saved_model.pb"))

        result = run_command("oipgraph-export", f"--export_dir={export_dir}", "--version=1")
        self.assertUsageError(result, f"version directory already exists: {os.path.join(export_dir, '1')}")
        self.assertEqual(sorted(os.listdir(os.path.join(export_dir, "1"))), before)
        self.assertEqual(os.path.getmtime(os.path.join(export_dir, "1", "saved_model.pb")), modified)
        self.assertCountEqual(os.listdir(export_dir), ["1", "2"])

    def test_missing_model_fails_without_version_directory(self):
        for args, result in zip(self.missing_model_cases, self.missing_model_results):
            with self.subTest(flags=args[2:]):
                self.assertUsageError(result, f"model file not found: {self.missing}")
        self.assertEqual(os.listdir(self.missing_model_dir), [])

    def test_bad_flags(self):
        for (args, message), result in zip(self.bad_flag_cases, self.bad_flag_results):
            with self.subTest(args=args):
                self.assertUsageError(result, message)
        self.assertFalse(os.path.exists(self.bad_flags_dir))


if __name__ == "__main__":
    tf.test.main()
