"""End-to-end tests of the `oipgraph` command in subprocesses."""

import glob
import json
import os
import signal
import subprocess
import tempfile
import time

import pytest
import tensorflow as tf
from helpers import (
    assert_one_line_error,
    finish,
    large_scale_model,
    load_arrays,
    own_lines,
    run_command,
    run_forked,
    start,
)
from tensorboard.backend.event_processing import event_accumulator

# Without $OIPGRAPH_MNIST the shipped model's runs compare with no dataset: these tests check the outputs as
# they are without one (tests/examples_test.py covers the dataset examples), and skip the MNIST pass.
ENV = {name: value for name, value in os.environ.items() if name != "OIPGRAPH_MNIST"}


def run_oipgraph(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_command("oipgraph", *args, timeout=timeout, env=ENV)


def folder_state(path: str) -> dict[str, tuple[int, float] | str]:
    """Every file below `path` (hidden ones too) with its size and modification time, and every folder."""
    state: dict[str, tuple[int, float] | str] = {}
    for root, folders, files in os.walk(path):
        state.update({os.path.join(root, name): "folder" for name in folders})
        for name in files:
            file = os.path.join(root, name)
            state[file] = (os.path.getsize(file), os.path.getmtime(file))
    return state


class LayerRunTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp()
        cls.args = [
            "--layer=Conv2D_3",
            "--maps=0-2,7",
            "--strategy=random",
            "--steps=40",
            "--inits_per_map=2",
            "--seed=3",
        ]
        cls.out = os.path.join(cls.root, "run")
        cls.done = run_oipgraph(*cls.args, f"--out={cls.out}")

    def test_succeeds_and_reports(self):
        self.assertEqual(self.done.returncode, 0, self.done.stderr[-3000:])
        self.assertIn("maps of Conv2D_3 have an OIP", self.done.stdout)

    def test_files_agree_and_decode(self):
        with open(os.path.join(self.out, "catalog.json")) as file:
            document = json.load(file)
        arrays = load_arrays(os.path.join(self.out, "oips.npz"))
        self.assertAllEqual(arrays["map_index"], [0, 1, 2, 7])
        self.assertEqual(arrays["images"].shape, (4, 2, 28, 28, 1))
        self.assertEqual(arrays["loss_history"].shape, (4, 2, 40))
        self.assertEqual(arrays["snapshots"].shape, (4, 2, 8, 28, 28, 1))
        self.assertEqual([entry["map_index"] for entry in document["maps"]], [0, 1, 2, 7])
        for row, entry in enumerate(document["maps"]):
            best = arrays["best_init"][row]
            self.assertEqual(entry["init_index"], best)
            self.assertAllClose(entry["loss"], arrays["loss"][row, best])
            self.assertEqual(entry["steps"], arrays["steps_run"][row, best])
            self.assertEqual(entry["status"], ["completed", "converged", "no_activation"][arrays["status"][row, best]])
            self.assertEqual((entry["strategy"], entry["start_kind"], entry["seed"]), ("random", "multiscale", 3))
            self.assertLen(entry["inits"], 2)
            if entry["uniqueness"] is not None:
                self.assertAllClose(entry["uniqueness"], arrays["uniqueness"][row])
                self.assertBetween(entry["uniqueness"], -1.0, 1.0)
        grid = tf.io.decode_png(tf.io.read_file(os.path.join(self.out, "grid.png")))
        tile_h, tile_w = 28 * 3 + 16 + 2, 28 * 3 + 2  # Image, label strip, gap.
        self.assertEqual(grid.shape, (2 * tile_h, 2 * tile_w, 3))
        for map_index in (0, 1, 2, 7):
            picture = tf.io.decode_png(tf.io.read_file(os.path.join(self.out, "maps", f"map_{map_index:03d}.png")))
            self.assertEqual(picture.shape, (28 * 4 + 2, 2 * (28 * 4 + 2), 3))
        self.assertEqual(
            sorted(os.listdir(self.out)), ["catalog.json", "grid.png", "index.html", "maps", "oips.npz", "tensorboard"]
        )
        pictures = {f"map_{k:03d}{kind}.png" for k in (0, 1, 2, 7) for kind in ("", "_oip", "_steps")}
        self.assertEqual(set(os.listdir(os.path.join(self.out, "maps"))), pictures)
        oip = tf.io.decode_png(tf.io.read_file(os.path.join(self.out, "maps", "map_007_oip.png")))
        self.assertEqual(oip.shape, (28, 28, 3))

    def test_tensorboard_tags_and_counts(self):
        [run_dir] = glob.glob(os.path.join(self.out, "tensorboard", "*"))
        self.assertEqual(os.path.basename(run_dir), "Conv2D_3-random-seed3")
        events = event_accumulator.EventAccumulator(run_dir, size_guidance={"tensors": 0})
        events.Reload()
        tags = set(events.Tags()["tensors"])
        expected = {"run/flags", "run/maps", "layer/oips"}
        for map_index in (0, 1, 2, 7):
            expected |= {f"map_{map_index:03d}/{name}" for name in ("2_ascent", "4_variants", "3_loss")}
        self.assertEqual(tags, expected)  # random starts are the ascent's own: no separate 1_start card
        # The ascent card has one image per snapshot step the pair ran, then the OIP at its last step.
        arrays = load_arrays(os.path.join(self.out, "oips.npz"))
        best = arrays["best_init"][3]
        ascent = events.Tensors("map_007/2_ascent")
        steps_run = int(arrays["steps_run"][3, best])
        ran = [int(step) for step in arrays["snapshot_steps"][3, best] if step < steps_run]
        self.assertEqual([event.step for event in ascent], [*ran, steps_run])
        self.assertLen(ascent[0].tensor_proto.string_val, 2 + 1)  # width, height, one PNG
        self.assertLen(events.Tensors("map_007/4_variants")[0].tensor_proto.string_val, 2 + 2)
        self.assertLen(events.Tensors("map_000/3_loss"), 40)
        self.assertEqual([event.step for event in events.Tensors("layer/oips")], [0])  # 4 maps: one page
        table = tf.make_ndarray(events.Tensors("run/maps")[0].tensor_proto).item().decode()
        self.assertIn("| 7 | ", table)
        arrays = load_arrays(os.path.join(self.out, "oips.npz"))
        curve = [float(tf.make_ndarray(event.tensor_proto)) for event in events.Tensors("map_000/3_loss")]
        self.assertAllClose(curve, arrays["loss_history"][0, arrays["best_init"][0]])
        flags_text = tf.make_ndarray(events.Tensors("run/flags")[0].tensor_proto).item().decode()
        self.assertIn("--maps=0-2,7", flags_text)

    def test_same_seed_same_results(self):
        again = os.path.join(self.root, "again")
        done = run_oipgraph(*self.args, f"--out={again}")
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        first, second = load_arrays(os.path.join(self.out, "oips.npz")), load_arrays(os.path.join(again, "oips.npz"))
        self.assertEqual(sorted(first), sorted(second))
        for key in first:
            self.assertAllEqual(first[key], second[key], msg=key)


class AutoStrategyTest(tf.test.TestCase):
    def test_auto_mixes_strategies_with_their_own_step_budgets(self):
        root = self.get_temp_dir()
        model_path = os.path.join(root, "tiny.keras")
        large_scale_model().save(model_path)
        out = os.path.join(root, "run")
        # auto is the default strategy.
        done = run_oipgraph(f"--model={model_path}", "--layer=conv", f"--out={out}")
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        self.assertIn("4 of 4 maps of conv have an OIP", done.stdout)
        with open(os.path.join(out, "catalog.json")) as file:
            document = json.load(file)
        self.assertIsNone(document["steps"])
        self.assertEqual(document["strategy"], "auto")
        # Map 2 (a 4x4 checkerboard) fires for no 3x3 pattern: auto wakes it up instead.
        self.assertEqual(
            [entry["strategy"] for entry in document["maps"]], ["random", "precursor", "preactivation", "preactivation"]
        )
        self.assertEqual(
            [entry["start_kind"] for entry in document["maps"]],
            ["multiscale", "precursor_pattern", "multiscale_preactivation", "multiscale_preactivation"],
        )
        arrays = load_arrays(os.path.join(out, "oips.npz"))
        # Without --steps every strategy runs its own final ascent: precursor 1200 steps, the others 600.
        self.assertAllEqual(arrays["snapshot_steps"][:, 0, -1], [600, 1200, 600, 600])
        self.assertEqual(arrays["loss_history"].shape, (4, 1, 1200))
        self.assertAllGreater(arrays["loss"], 0.0)


@pytest.mark.heavy
class ResumeTest(tf.test.TestCase):
    def test_killed_run_resumes_to_the_same_outputs(self):
        root = self.get_temp_dir()
        # Enough steps that each of the 8 chunks takes about half a second: the kill must land mid-way.
        args = ["--maps=0-15", "--strategy=random", "--steps=200", "--batch_size=2", "--conv_criterion=0"]
        reference = os.path.join(root, "reference")
        # The uninterrupted reference runs beside the run that is killed.
        reference_process = start("oipgraph", *args, f"--out={reference}", env=ENV)
        self.addCleanup(reference_process.kill)  # A no-op once it has ended.

        out = os.path.join(root, "killed")
        process = start(
            "oipgraph", *args, f"--out={out}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
        )
        deadline = time.time() + 240
        while len(glob.glob(os.path.join(out, ".progress", "maps_*.npz"))) < 2 and time.time() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        saved = len(glob.glob(os.path.join(out, ".progress", "maps_*.npz")))
        self.assertBetween(saved, 2, 7, "the run was not killed mid-way")
        self.assertFalse(os.path.exists(os.path.join(out, "catalog.json")))

        # Both refusals after one TensorFlow import (tests/forked_commands.py), one after the other: both are
        # made holding the folder's lock.
        without_resume, other_steps = run_forked(
            "oipgraph",
            [[*args, f"--out={out}"], [*args, f"--out={out}", "--steps=10", "--resume"]],
            env=ENV,
            parallel=1,
        )
        self.assertEqual(without_resume.returncode, 2)
        self.assertIn("holds an interrupted run; pass --resume to continue it", without_resume.stderr)
        self.assertEqual(other_steps.returncode, 2)
        self.assertIn(
            "--resume with other settings: steps was 200, now 10; rerun with the saved settings", other_steps.stderr
        )

        done = finish(reference_process)
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        done = run_oipgraph(*args, f"--out={out}", "--resume")
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        first, second = load_arrays(os.path.join(reference, "oips.npz")), load_arrays(os.path.join(out, "oips.npz"))
        for key in first:
            self.assertAllEqual(first[key], second[key], msg=key)
        with open(os.path.join(reference, "catalog.json")) as file:
            reference_maps = json.load(file)["maps"]
        with open(os.path.join(out, "catalog.json")) as file:
            self.assertEqual(json.load(file)["maps"], reference_maps)
        self.assertFalse(os.path.exists(os.path.join(out, ".progress")))
        self.assertEqual(glob.glob(os.path.join(out, "**", ".tmp-*"), recursive=True), [])

    def test_interrupt_says_how_to_resume(self):
        out = os.path.join(self.get_temp_dir(), "interrupted")
        process = start(
            "oipgraph",
            "--maps=0-15",
            "--strategy=random",
            "--steps=400",
            "--conv_criterion=0",
            "--batch_size=2",
            f"--out={out}",
            stdout=subprocess.DEVNULL,
            env=ENV,
            # As from a terminal: a test runner started in the background (`cmd &`) ignores SIGINT, and children
            # inherit that.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.time() + 240
        while not glob.glob(os.path.join(out, ".progress", "maps_*.npz")) and time.time() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        self.assertEqual(process.returncode, 130, stderr[-2000:])
        self.assertRegex(stderr, r"oipgraph: interrupted with \d+ of 16 maps saved; rerun with --resume to continue")
        self.assertFalse(os.path.exists(os.path.join(out, "catalog.json")))


@pytest.mark.heavy
class BadInvocationTest(tf.test.TestCase):
    def test_each_bad_invocation_exits_2_with_one_line_and_writes_nothing(self):
        root = self.get_temp_dir()
        existing = os.path.join(root, "existing")
        os.makedirs(existing)
        with open(os.path.join(existing, "keep.txt"), "w") as file:
            file.write("keep")
        not_a_model = os.path.join(root, "notes.keras")
        with open(not_a_model, "w") as file:
            file.write("plain text")
        a_file = os.path.join(root, "a_file")
        with open(a_file, "w") as file:
            file.write("x")
        out = os.path.join(existing, "out")
        three_labels = os.path.join(root, "three_labels.txt")
        with open(three_labels, "w") as file:
            file.write("a\nb\nc\n")
        bad_json = os.path.join(root, "bad_labels.json")
        with open(bad_json, "w") as file:
            file.write('{"0": "a", "2": "b"}')
        maps_is_a_file = os.path.join(root, "maps_is_a_file")
        os.makedirs(maps_is_a_file)
        with open(os.path.join(maps_is_a_file, "maps"), "w") as file:
            file.write("not the pictures' folder")
        cases = [
            (["--layer=Conv2D_9"], "unknown layer 'Conv2D_9'"),
            (["--layer=image"], "layer 'image' is the model's input"),
            (["--layer=Dense_1", "--objective=channel"], "objective 'channel' needs a layer with spatial"),
            (["--layer=Dense_2", "--objective=neuron"], "objective 'neuron' needs a layer with spatial"),
            (["--objective=unit"], "objective 'unit' needs a layer with [B, units] output"),
            (["--objective=pixel"], "flag --objective=pixel"),
            (["--objective=neuron", "--neuron=3,0"], "neuron (3, 0) is outside the 3x3 maps of layer 'Conv2D_3'"),
            (["--neuron=a,b"], "--neuron must be two integers ROW,COL, got 'a,b'"),
            (["--neuron=1,1,1"], "--neuron must be two integers ROW,COL, got '1,1,1'"),
            (["--objective=channel", "--neuron=1,1"], "--neuron=1,1 needs --objective=neuron"),
            (["--jitter=-1"], "jitter must be an integer number of pixels in [0, 1024], got -1"),
            (["--scale=2"], "scale must be a fraction in [0, 0.9], got 2.0"),
            (["--input_range=5,1"], "input range must be two finite numbers LOW < HIGH, got 5.0, 1.0"),
            (["--input_range=grey"], "input range must be 'standardized' or LOW,HIGH like 0,255; got 'grey'"),
            (["--layer=Dense_2", "--maps=10"], "unit 10 out of range, layer Dense_2 has units 0..9"),
            (["--maps=128"], "map 128 out of range, layer Conv2D_3 has maps 0..127"),
            (["--maps=0-200"], "map 128 out of range"),
            (["--maps=3-1"], "range 3-1 runs backwards"),
            (["--maps=1,,2"], "--maps='1,,2' is malformed"),
            (["--maps=first"], "--maps='first' is malformed"),
            (["--maps=-1"], "--maps='-1' is malformed"),
            (["--steps=0"], "--steps must be > 0, got 0"),
            (["--steps=-5"], "--steps must be > 0, got -5"),
            (["--steps=ten"], "flag --steps=ten"),
            (["--epsilon=0"], "--epsilon must be a finite number > 0, got 0.0"),
            (["--epsilon=-0.1"], "--epsilon must be a finite number > 0, got -0.1"),
            (["--epsilon=nan"], "--epsilon must be a finite number > 0, got nan"),
            (["--strategy=genetic"], "unknown --strategy='genetic'"),
            (["--preset=fancy"], "flag --preset=fancy"),
            (["--param=voxels"], "flag --param=voxels"),
            (["--optimizer=sgd"], "flag --optimizer=sgd"),
            (["--precision=half"], "flag --precision=half"),
            (["--learning_rate=0"], "--learning_rate must be a finite number > 0, got 0.0"),
            (["--learning_rate=1e39"], "--learning_rate=1e+39 is above the limit of 100"),
            (
                ["--epsilon=0.01", "--learning_rate=0.05"],
                "--epsilon=0.01 and --learning_rate=0.05 are the same setting",
            ),
            (["--transforms=blur=3"], "--transforms='blur=3': expected none, standard or name=value pairs"),
            (["--transforms=rotate=90"], "rotate must be degrees in [0, 45], got 90.0"),
            (["--transforms=jitter=x"], "--transforms='jitter=x': jitter='x' is not a number"),
            (["--transforms=standard", "--jitter=2"], "--jitter and --scale are part of --transforms"),
            (["--preprocess=keras"], "flag --preprocess=keras"),
            (["--preprocess=caffe"], "--preprocess=caffe needs a model with an RGB image input [H, W, 3]"),
            (["--preprocess=tf", "--input_range=0,1"], "--preprocess=tf sets the input range to 0,255"),
            (["--escalation_budget=-1"], "--escalation_budget must be a number in [0, 1000], got -1.0"),
            (["--escalation_budget=nan"], "--escalation_budget must be a number in [0, 1000], got nan"),
            (["--escalation_budget=1e9"], "--escalation_budget must be a number in [0, 1000], got 1000000000.0"),
            (["--memory_budget=0.1"], "--memory_budget must be a number of GiB in [1, 4096], got 0.1"),
            (["--memory_budget=inf"], "--memory_budget must be a number of GiB in [1, 4096], got inf"),
            (["--inits_per_map=0"], "--inits_per_map must be >= 1, got 0"),
            (["--model=/no/such/model.keras"], "model file not found: /no/such/model.keras"),
            ([f"--model={not_a_model}"], "not a Keras model file (a Keras .keras file, or a full Keras 2 model"),
            ([f"--out={a_file}/sub"], "is not a folder"),
            (["--out=/proc/oipgraph_out"], "--out=/proc/oipgraph_out is not writable"),
            (["--unknown_flag=1"], "Unknown command line flag 'unknown_flag'"),
            # Values that Python or TensorFlow cannot represent, or beyond oipgraph.core.limits:
            (["--steps=2147483648"], "--steps=2147483648 is above the limit of 100000"),
            (["--steps=2147483647"], "--steps=2147483647 is above the limit of 100000"),
            (["--steps=100000000"], "--steps=100000000 is above the limit of 100000"),
            (["--steps=100000"], "--batch_size x --steps = 256 x 100000 = 25600000 loss values is above the limit"),
            (["--seed=9223372036854775808"], "--seed=9223372036854775808 is above the limit of 9223372036854775807"),
            (["--seed=-9223372036854775809"], "--seed must be an integer >= -9223372036854775808"),
            (["--epsilon=1e39"], "--epsilon=1e+39 is above the limit of 100"),
            (["--epsilon=1e30"], "--epsilon=1e+30 is above the limit of 100"),
            (["--epsilon=1e-46"], "--epsilon=1e-46 is 0 in float32"),
            (["--conv_criterion=1e39"], "--conv_criterion must be a finite float32 number"),
            (["--inits_per_map=1000000000"], "--inits_per_map=1000000000 is above the limit of 1000"),
            (["--batch_size=1000000"], "--batch_size=1000000 is above the limit of 4096"),
            (["--chunk_maps=0"], "--chunk_maps must be >= 1, got 0"),
            (["--chunk_maps=2049", "--inits_per_map=2"], "--chunk_maps x --inits_per_map=4098 is above the limit"),
            (["--chunk_maps=4096", "--steps=10000"], "--chunk_maps x --inits_per_map x --steps = 4096 x 10000"),
            (
                ["--inits_per_map=1000", "--steps=300"],
                "maps x --inits_per_map x steps = 128 x 1000 x 300 = 38400000 loss values is above the limit",
            ),
            (["--out="], "--out must not be empty"),
            (
                [f"--labels={three_labels}"],
                "--labels has 3 names, but layer Conv2D_3 has 128 maps: give one name per map",
            ),
            ([f"--labels={root}/none.txt"], f"--labels={root}/none.txt: labels file not found"),
            ([f"--labels={bad_json}"], "the JSON object's keys must be the indices 0..1"),
            ([f"--out={maps_is_a_file}"], f"--out={maps_is_a_file} holds a file named maps"),
            (["--resume", "--overwrite"], "pass one of them"),
            (["extra_argument"], "unexpected positional argument(s): extra_argument"),
        ]
        commands = []
        for args, _ in cases:
            out_args = [] if any(arg.startswith("--out") for arg in args) else [f"--out={out}"]
            commands.append([*args, *out_args] if args[0].startswith("--steps") else ["--steps=5", *args, *out_args])
        self.assertGreaterEqual(len(cases), 15)
        before = folder_state(root)
        # One case of each stage as the real command, next to the forked runs: flag parsing (absl), the checks
        # before the model, the model's layer; their answers must be the same.
        real = {
            index: start("oipgraph", *commands[index], env=ENV)
            for index, (args, _) in enumerate(cases)
            if args in (["--steps=ten"], ["--epsilon=nan"], ["--layer=Conv2D_9"])
        }
        self.assertLen(real, 3)
        results = run_forked("oipgraph", commands, env=ENV)
        for (args, message), result in zip(cases, results):
            with self.subTest(args=args):
                self.assertEqual(result.returncode, 2, result.stderr[-2000:])
                assert_one_line_error(self, result.stderr, "oipgraph", message)
        for index, process in real.items():
            done = finish(process)
            with self.subTest(real_command=cases[index][0]):
                self.assertEqual(done.returncode, results[index].returncode)
                self.assertEqual(own_lines(done.stderr), own_lines(results[index].stderr))
                self.assertEqual(done.stdout, results[index].stdout)
        self.assertEqual(folder_state(root), before)


if __name__ == "__main__":
    tf.test.main()
