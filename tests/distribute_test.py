"""oipgraph.distribute without a cluster: frozen functions, several logical devices (in a subprocess: they are
global state), the `--cluster` file's checks and TF_CONFIG's (tests/cluster_test.py runs real clusters)."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from oipgraph import starts
from oipgraph.ascent import OIPAscent, ValueRange
from oipgraph.core.errors import OIPGraphError
from oipgraph.distribute import backstop
from oipgraph.distribute.cluster_file import free_ports, load_cluster_file, preflight
from oipgraph.distribute.frozen import FrozenAscent
from oipgraph.distribute.worker import read_task

DEVICES_SCRIPT = """
import json, sys
import numpy as np
from oipgraph.distribute.devices import DeviceExecutor, make_devices
devices = make_devices("3")  # Before anything starts TensorFlow's runtime.
from oipgraph import starts
from oipgraph.ascent import OIPAscent, ValueRange
from oipgraph.distribute.executors import LocalExecutor
ascent = OIPAscent.from_file(None, "Conv2D_3")
images = starts.multiscale(starts.start_seeds(0, range(7)), ascent.image_shape).numpy()
maps = np.array([0, 5, 9, 17, 33, 64, 127], np.int32)
seeds = starts.start_seeds(0, np.arange(7))
executor, shares = DeviceExecutor(devices), []
report = {"devices": devices}
given = []  # The rows each device gets, per round (recorded from the map_index shares).
per_replica = executor._per_replica
def recording(array, rows):
    if array.dtype == np.int32:
        given.append([share.tolist() for share in rows])
    return per_replica(array, rows)
executor._per_replica = recording
# One batch; 4 batches in 2 rounds; 3 batches in one round; fewer pairs than devices.
for count, batch in ((7, 256), (7, 2), (7, 3), (2, 256)):
    args = (ascent, images[:count], maps[:count], 40, 0.01, 5e-4, seeds[:count], batch)
    given.clear()
    local, spread = LocalExecutor().run_pairs(*args), executor.run_pairs(*args, progress=shares.append)
    report[f"{count}/{batch}"] = {
        "rounds": list(given),
        "images": float(np.abs(local.images - spread.images).max()),
        "history": float(np.abs(local.loss_history - spread.loss_history).max()),
        "same": bool((local.status == spread.status).all() and (local.steps_run == spread.steps_run).all()
                     and (local.map_index == spread.map_index).all()),
        "statuses": sorted(set(local.status.tolist())),
    }
report["shares"] = shares
print(json.dumps(report))
"""


# A chief with the backstop (loaded from its file: no TensorFlow), then: held inside a C call that keeps the GIL
# (as TensorFlow's registration of a function on a silent worker does), or free, or suspended.
BACKSTOP_SCRIPT = """
import ctypes, importlib.util, sys, time
spec = importlib.util.spec_from_file_location("backstop", sys.argv[1])
backstop = importlib.util.module_from_spec(spec)
spec.loader.exec_module(backstop)
chief = backstop.Backstop({"worker 0": sys.argv[2], "worker 1": sys.argv[3]}, timeout=1.0, grace=1.0)
print("armed", flush=True)
if sys.argv[4] == "held":
    ctypes.PyDLL(None).sleep(60)  # The GIL stays held: no Python thread runs.
elif sys.argv[4] == "waiting":
    with chief.waiting():  # As while connecting: the GIL is free, nothing else watches the workers.
        time.sleep(60)
else:
    time.sleep(14)
print("ended by itself", flush=True)
"""


def serve(answer: bool) -> tuple[socket.socket, str]:
    """A listening socket on 127.0.0.1: it answers every connection with a byte, or never accepts one (the
    kernel still completes the connection, as for a stopped process)."""
    server = socket.create_server(("127.0.0.1", 0))
    if answer:

        def accept():
            while True:
                try:
                    connection, _ = server.accept()
                except OSError:
                    return
                with connection:
                    connection.recv(64)
                    connection.sendall(b"x")

        threading.Thread(target=accept, daemon=True).start()
    return server, f"127.0.0.1:{server.getsockname()[1]}"


class BackstopTest(tf.test.TestCase):
    def test_a_held_chief_ends_with_one_line_naming_the_silent_worker_and_exit_code_2(self):
        (answering, live), (silent_server, silent) = serve(True), serve(False)
        self.addCleanup(answering.close)
        self.addCleanup(silent_server.close)
        self.assertEqual(backstop.probe(live), "answers")
        self.assertEqual(backstop.probe(silent, timeout=0.5), "silent")
        self.assertEqual(backstop.probe(f"127.0.0.1:{free_ports(1)[0]}"), "refuses")
        started = time.monotonic()
        children = {
            mode: subprocess.Popen(
                [sys.executable, "-c", BACKSTOP_SCRIPT, backstop.__file__, live, silent, mode],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for mode in ("held", "waiting", "free", "suspended")
        }
        for child in children.values():
            self.addCleanup(child.kill)
            self.assertEqual(child.stdout.readline(), "armed\n")
        # Suspended (Ctrl-Z) for longer than the timer's 8 s: it must not fire when the chief continues.
        children["suspended"].send_signal(signal.SIGTSTP)
        time.sleep(10)
        children["suspended"].send_signal(signal.SIGCONT)
        outputs = {mode: child.communicate(timeout=60) for mode, child in children.items()}
        for mode in ("held", "waiting"):
            self.assertEqual(children[mode].returncode, 2, outputs[mode][1])
            self.assertEqual(outputs[mode][0], "")  # Not "ended by itself".
            line = (
                f"oipgraph: error: --cluster: worker 1 at {silent} has not answered for 1 s (--worker_timeout; the"
                " chief waited for it inside TensorFlow); the maps saved so far stay saved, rerun with --resume to"
                " continue"
            )
            self.assertEqual(outputs[mode][1].strip().splitlines(), [line], mode)
        for mode in ("free", "suspended"):
            self.assertEqual(children[mode].returncode, 0, outputs[mode][1])
            self.assertEqual(outputs[mode], ("ended by itself\n", ""))
        self.assertLess(time.monotonic() - started, 40)


class FrozenAscentTest(tf.test.TestCase):
    def test_frozen_functions_equal_the_ascent_and_read_no_variable(self):
        ascent = OIPAscent.from_file(None, "Conv2D_3")
        images = starts.multiscale(starts.start_seeds(0, range(3)), ascent.image_shape)
        arguments = (images, tf.constant([1, 2, 3]), tf.constant(25), tf.constant(0.01), tf.constant(5e-4))
        seeds = tf.zeros([3, 2], tf.int64)
        frozen = FrozenAscent(ascent)
        expected, got = ascent.optimize(*arguments, seeds), frozen.optimize(*arguments, seeds)
        for key in expected:
            self.assertAllEqual(expected[key], got[key], msg=key)
        # The weights are constants of the graph: nothing is read from a variable, here or on another machine.
        for function in (frozen.optimize, frozen.start, frozen.advance, frozen.finish):
            self.assertEmpty(function.frozen.captured_inputs)
            graphs = [function.frozen.graph.as_graph_def()]
            ops = {node.op for graph in graphs for node in graph.node}
            ops |= {node.op for graph in graphs for f in graph.library.function for node in f.node_def}
            self.assertNoCommonElements(ops, {"ReadVariableOp", "VarHandleOp", "VariableV2"})
            self.assertIn("Const", ops)

    def test_a_fourier_ascent_with_transforms_freezes_to_the_same_results(self):
        # The natural preset: a Fourier parameterization (its scale once was a captured eager tensor, which
        # freezing broke) and random transforms.
        inputs = keras.Input([16, 16, 3])
        features = keras.layers.Conv2D(
            4, 3, activation="relu", name="conv", kernel_initializer=keras.initializers.GlorotUniform(1)
        )(inputs)
        model = keras.Model(inputs, features)
        ascent = OIPAscent(model, "conv", domain=ValueRange(0.0, 255.0), preset="natural", precision="float32")
        self.assertEqual(ascent.parameterization.name, "fourier")
        seeds = starts.start_seeds(0, np.arange(3))
        images = ascent.domain.from_standardized(starts.multiscale(seeds, ascent.image_shape))
        arguments = (images, tf.constant([0, 1, 3]), tf.constant(15), tf.constant(0.05), tf.constant(0.0))
        arguments = (*arguments, tf.constant(seeds))
        expected, got = ascent.optimize(*arguments), FrozenAscent(ascent).optimize(*arguments)
        self.assertAllEqual(expected["images"], got["images"])


class DeviceExecutorTest(tf.test.TestCase):
    def test_three_logical_devices_give_the_local_results(self):
        done = subprocess.run([sys.executable, "-c", DEVICES_SCRIPT], capture_output=True, text=True, timeout=300)
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        report = json.loads(done.stdout.strip().splitlines()[-1])
        self.assertLen(report["devices"], 3)
        # Every device runs one whole local batch (LocalExecutor's: batch_size consecutive pairs); devices left
        # without one in the last round repeat the round's last pair.
        self.assertEqual(report["7/256"]["rounds"], [[[0, 1, 2, 3, 4, 5, 6], [6], [6]]])
        self.assertEqual(report["7/2"]["rounds"], [[[0, 1], [2, 3], [4, 5]], [[6], [6], [6]]])
        self.assertEqual(report["7/3"]["rounds"], [[[0, 1, 2], [3, 4, 5], [6]]])
        self.assertEqual(report["2/256"]["rounds"], [[[0, 1], [1], [1]]])
        for case in ("7/256", "7/2", "7/3", "2/256"):
            self.assertTrue(report[case]["same"], case)
            self.assertLessEqual(report[case]["images"], 1e-5, case)
            self.assertLessEqual(report[case]["history"], 1e-5, case)
        # Some pairs stop early (no activation), so some devices' shares end before the others'.
        self.assertContainsSubset([0, 2], report["7/256"]["statuses"])
        self.assertEqual(report["shares"][-1], 1.0)
        self.assertAllInRange(report["shares"], 0.0, 1.0)


class ClusterFileTest(tf.test.TestCase):
    def write(self, text: str) -> str:
        path = os.path.join(self.get_temp_dir(), f"cluster_{abs(hash(text))}.json")
        with open(path, "w") as file:
            file.write(text)
        return path

    def test_bad_files_are_named_in_one_line(self):
        good_chief, good_worker = '"chief": ["127.0.0.1:2222"]', '"worker": ["127.0.0.1:2223"]'
        cases = [
            (None, "no such file"),
            ("{not json", "is not JSON"),
            ("[1, 2]", "must hold a JSON object"),
            (f"{{{good_worker}}}", "exactly one 'chief'"),
            (f'{{"chief": ["a:1", "b:2"], {good_worker}}}', "exactly one 'chief'"),
            (f"{{{good_chief}}}", "at least one 'worker'"),
            (f'{{{good_chief}, "worker": []}}', "at least one 'worker'"),
            (f'{{{good_chief}, "worker": "127.0.0.1:2223"}}', "must be a list"),
            (f'{{{good_chief}, "worker": ["127.0.0.1"]}}', "'127.0.0.1' is not an address"),
            (f'{{{good_chief}, "worker": ["127.0.0.1:99999"]}}', "port in 1..65535"),
            (f'{{{good_chief}, "worker": ["host name:1"]}}', "is not an address"),
            (f'{{{good_chief}, "worker": [2223]}}', "is not an address"),
            (f'{{{good_chief}, "worker": ["127.0.0.1:2222"]}}', "given twice"),
            (f'{{{good_chief}, {good_worker}, "evaluator": ["x:1"]}}', "unknown task type 'evaluator'"),
        ]
        for text, message in cases:
            path = os.path.join(self.get_temp_dir(), "missing.json") if text is None else self.write(text)
            with self.assertRaisesRegex(OIPGraphError, message, msg=text):
                load_cluster_file(path)
            try:
                load_cluster_file(path)
            except OIPGraphError as err:
                self.assertNotIn("\n", str(err))
                self.assertIn(path, str(err))

    def test_a_whole_tf_config_and_ps_are_read(self):
        cluster = {"chief": ["127.0.0.1:2222"], "worker": ["127.0.0.1:2223", "[::1]:2224"], "ps": ["127.0.0.1:2225"]}
        read = load_cluster_file(self.write(json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})))
        self.assertEqual(read.as_dict(), cluster)
        self.assertEqual(load_cluster_file(self.write(json.dumps(cluster))).workers, cluster["worker"])

    def test_preflight_names_the_address_that_does_not_answer(self):
        with tempfile.TemporaryDirectory() as folder:
            chief, port = free_ports(2)  # Nothing listens there.
            path = os.path.join(folder, "c.json")
            with open(path, "w") as file:
                json.dump({"chief": [f"127.0.0.1:{chief}"], "worker": [f"127.0.0.1:{port}"]}, file)
            with self.assertRaisesRegex(OIPGraphError, f"worker 0 at 127.0.0.1:{port} does not answer"):
                preflight(load_cluster_file(path), timeout=2)


class WorkerConfigTest(tf.test.TestCase):
    def test_tf_config_is_checked(self):
        cluster = {"chief": ["a:1"], "worker": ["b:2"], "ps": ["c:3"]}
        self.assertEqual(read_task(json.dumps({"cluster": cluster, "task": {"type": "ps", "index": 0}}))[1:], ("ps", 0))
        for text, message in [
            (None, "TF_CONFIG is not set"),
            ("{", "not JSON"),
            ("[]", "'cluster' dict and a 'task' dict"),
            (json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}}), "'worker' or 'ps'"),
            (json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}), "task index 1"),
        ]:
            with self.assertRaisesRegex(OIPGraphError, message):
                read_task(text)


if __name__ == "__main__":
    tf.test.main()
