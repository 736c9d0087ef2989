"""`oipgraph --cluster` and `--devices` end to end: `oipgraph-worker` processes and the command, all in
subprocesses on 127.0.0.1 with free ports; every worker a test starts is stopped by it, also on failure."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf
from helpers import BIN_DIR, assert_one_line_error, finish, load_arrays, own_lines, run_command, run_forked, start

from oipgraph.distribute.cluster_file import free_ports

ENV = {name: value for name, value in os.environ.items() if name not in ("OIPGRAPH_MNIST", "TF_CONFIG")}
# Long enough (about 5 s of ascent on 2 cores) for a worker to be killed or stopped in the middle of it.
RUN = [
    "--maps=0-23",
    "--steps=600",
    "--conv_criterion=0",
    "--strategy=random",
    "--precision=float32",
    "--dataset=",
    "--chunk_maps=24",
    "--batch_size=6",  # 4 batches a call: the workers run them side by side.
]
COMPARED = ("images", "loss", "loss_history", "snapshots")
EQUAL = ("map_index", "init_index", "status", "steps_run", "seed_stream", "start_images")


def address(port: int) -> str:
    return f"127.0.0.1:{port}"


def start_worker(cluster: dict, index: int, log_path: str, task_type: str = "worker") -> subprocess.Popen:
    """Starts `oipgraph-worker` for task (task_type, index) of `cluster` and waits until it accepts connections."""
    return wait_for_worker(launch_worker(cluster, index, log_path, task_type), cluster, index, log_path, task_type)


def launch_worker(cluster: dict, index: int, log_path: str, task_type: str = "worker") -> subprocess.Popen:
    """Starts `oipgraph-worker` for task (task_type, index) of `cluster`; `wait_for_worker` waits for it."""
    config = json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [os.path.join(BIN_DIR, "oipgraph-worker")],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env={**ENV, "TF_CONFIG": config},
        )


def wait_for_worker(
    process: subprocess.Popen, cluster: dict, index: int, log_path: str, task_type: str = "worker"
) -> subprocess.Popen:
    """Waits until the worker from `launch_worker` accepts connections (stops it and fails if it never does)."""
    host, port = cluster[task_type][index].rsplit(":", 1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.2)
    stop_worker(process)
    raise AssertionError(f"oipgraph-worker did not start:\n{open(log_path).read()[-2000:]}")


def stop_worker(process: subprocess.Popen) -> None:
    """SIGTERM (SIGKILL after 30 s, or for a stopped process); waits for the end."""
    if process.poll() is None:
        process.kill() if process_is_stopped(process) else process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def process_is_stopped(process: subprocess.Popen) -> bool:
    with open(f"/proc/{process.pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def wait_for_text(path: str, text: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        with open(path) as file:
            if text in file.read():
                return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.mark.heavy
class ClusterRunTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.folder = tempfile.mkdtemp(prefix="cluster_test_")
        cls.addClassCleanup(shutil.rmtree, cls.folder, ignore_errors=True)
        ports = free_ports(3)
        # Worker 0 serves every run of the class; worker 1 is the class's, or a test's own (killed, stopped).
        cls.cluster = {"chief": [address(ports[0])], "worker": [address(ports[1]), address(ports[2])]}
        # Both workers and the local reference run start at once; then the class waits for each.
        logs = [os.path.join(cls.folder, f"worker{index}.log") for index in range(2)]
        launched = [launch_worker(cls.cluster, index, logs[index]) for index in range(2)]
        for process in launched:
            cls.addClassCleanup(stop_worker, process)
        local = start("oipgraph", *RUN, f"--out={cls.folder}/local", env=ENV)
        cls.addClassCleanup(local.kill)  # A no-op once it has ended.
        cls.workers = [
            wait_for_worker(process, cls.cluster, index, logs[index]) for index, process in enumerate(launched)
        ]
        done = finish(local)
        assert done.returncode == 0, done.stderr[-3000:]
        cls.reference = load_arrays(f"{cls.folder}/local/oips.npz")

    def cluster_file(self, second_worker: str) -> str:
        """A cluster file with a fresh chief port, the class's worker 0 and `second_worker` as worker 1."""
        cluster = {"chief": [address(free_ports(1)[0])], "worker": [self.cluster["worker"][0], second_worker]}
        path = os.path.join(self.folder, f"cluster_{second_worker.replace(':', '_')}_{time.monotonic_ns()}.json")
        with open(path, "w") as file:
            json.dump(cluster, file)
        return path

    def assert_same_outputs(self, out: str) -> None:
        got = load_arrays(os.path.join(out, "oips.npz"))
        for key in COMPARED:
            self.assertAllClose(got[key], self.reference[key], atol=1e-4, rtol=0, msg=key)
        for key in EQUAL:
            self.assertAllEqual(got[key], self.reference[key], msg=key)
        self.assertLen(np.unique(got["map_index"]), 24)

    def test_a_cluster_run_writes_what_a_local_run_writes(self):
        out = os.path.join(self.folder, "cluster")
        done = run_command(
            "oipgraph", *RUN, f"--out={out}", f"--cluster={self.cluster_file(self.cluster['worker'][1])}", env=ENV
        )
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        self.assertIn("the ascents run on 2 workers", done.stdout)
        self.assertIn("24 of 24 maps back from the workers", done.stdout)  # Progress counts the maps that came back.
        self.assert_same_outputs(out)

    def test_several_devices_write_what_one_writes(self):
        out = os.path.join(self.folder, "devices")
        done = run_command("oipgraph", *RUN, f"--out={out}", "--devices=2", env=ENV)
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        self.assertIn("the ascents run on 2 devices", done.stdout)
        self.assert_same_outputs(out)

    def run_with_own_worker(self, name: str, extra: list[str], action, delay: float, timeout: float = 300):
        """Runs the command on worker 0 and a worker of this test; `action(worker)` `delay` seconds after the
        chunks are scheduled (their function is registered by then)."""
        ports = free_ports(1)
        own = address(ports[0])
        path = self.cluster_file(own)
        with open(path) as file:
            cluster = json.load(file)
        worker = start_worker(cluster, 1, os.path.join(self.folder, f"{name}_worker.log"))
        try:
            out, log = os.path.join(self.folder, name), os.path.join(self.folder, f"{name}.out")
            with open(log, "w") as stdout, open(log + ".err", "w") as stderr:
                chief = subprocess.Popen(
                    [os.path.join(BIN_DIR, "oipgraph"), *RUN, f"--out={out}", f"--cluster={path}", *extra],
                    stdout=stdout,
                    stderr=stderr,
                    text=True,
                    env=ENV,
                )
            try:
                wait_for_text(log, "scheduled on the workers", chief)
                time.sleep(delay)
                action(worker)
                chief.wait(timeout)
            finally:
                if chief.poll() is None:
                    chief.kill()
                    chief.wait()
            with open(log) as stdout, open(log + ".err") as stderr:
                return chief.returncode, stdout.read(), stderr.read(), out, own
        finally:
            stop_worker(worker)

    def test_a_killed_worker_loses_nothing(self):
        code, stdout, stderr, out, own = self.run_with_own_worker("killed", [], lambda worker: worker.kill(), 1.0)
        self.assertEqual(code, 0, stderr[-3000:])
        self.assertIn(f"worker 1 at {own} is lost", stderr)
        self.assert_same_outputs(out)

    def test_a_silent_worker_ends_the_run_and_resume_finishes_it(self):
        stop = lambda worker: os.kill(worker.pid, signal.SIGSTOP)  # noqa: E731
        code, stdout, stderr, out, own = self.run_with_own_worker("silent", ["--worker_timeout=3"], stop, 0.3, 120)
        self.assertEqual(code, 2, stderr[-3000:])
        last = own_lines(stderr)[-1]
        self.assertStartsWith(last, f"oipgraph: error: --cluster: worker 1 at {own} has not answered for 3 s")
        self.assertIn("rerun with --resume", last)
        self.assertFalse(os.path.exists(os.path.join(out, "oips.npz")))
        # The same run, resumed on this machine alone.
        done = run_command("oipgraph", *RUN, f"--out={out}", "--resume", env=ENV)
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        self.assert_same_outputs(out)

    def test_a_worker_silent_from_the_start_ends_the_run_with_one_line(self):
        # Stopped before the chief starts: it accepts the preflight's connection (the kernel does) and then answers
        # nothing, so connecting waits for it inside TensorFlow, before the chief's watch runs; the backstop
        # (oipgraph/distribute/backstop.py: a watchdog process and a timer of the C library, which also end a
        # chief whose GIL TensorFlow holds while it registers a function) ends the run.
        own = address(free_ports(1)[0])
        path = self.cluster_file(own)
        with open(path) as file:
            worker = start_worker(json.load(file), 1, os.path.join(self.folder, "held_worker.log"))
        try:
            os.kill(worker.pid, signal.SIGSTOP)
            out = os.path.join(self.folder, "held")
            done = run_command("oipgraph", *RUN, f"--out={out}", f"--cluster={path}", "--worker_timeout=3", env=ENV)
        finally:
            stop_worker(worker)
        self.assertEqual(done.returncode, 2, done.stderr[-3000:])
        self.assertEqual(
            own_lines(done.stderr)[-1],  # After TensorFlow's "default session config" log of the connection.
            f"oipgraph: error: --cluster: worker 1 at {own} has not answered for 3 s (--worker_timeout; the chief"
            " waited for it inside TensorFlow); the maps saved so far stay saved, rerun with --resume to continue",
        )
        self.assertFalse(os.path.exists(os.path.join(out, "oips.npz")))


class ClusterFlagsTest(tf.test.TestCase):
    def test_bad_cluster_files_and_unreachable_workers_end_with_one_line(self):
        folder = self.get_temp_dir()
        chief, closed = free_ports(2)
        files = {
            "missing": None,
            "not_json": "{chief",
            "no_chief": json.dumps({"worker": [address(closed)]}),
            "no_worker": json.dumps({"chief": [address(chief)]}),
            "bad_address": json.dumps({"chief": [address(chief)], "worker": ["127.0.0.1:port"]}),
            "unreachable": json.dumps({"chief": [address(chief)], "worker": [address(closed)]}),
        }
        messages = {
            "missing": "no such file",
            "not_json": "is not JSON",
            "no_chief": "needs exactly one 'chief' address",
            "no_worker": "needs at least one 'worker' address",
            "bad_address": "worker 0: '127.0.0.1:port' is not an address",
            "unreachable": f"worker 0 at {address(closed)} does not answer",
        }
        cases = []
        for name, text in files.items():
            path = os.path.join(folder, f"{name}.json")
            if text is not None:
                with open(path, "w") as file:
                    file.write(text)
            cases.append(["--maps=0", "--steps=5", f"--out={folder}/out_{name}", f"--cluster={path}"])
        cases.append(["--maps=0", f"--out={folder}/out_both", f"--cluster={path}", "--devices=2"])
        cases.append(["--maps=0", f"--out={folder}/out_timeout", "--worker_timeout=0"])
        messages.update(both="leave out --devices", timeout="--worker_timeout must be seconds")
        for (name, message), done in zip(messages.items(), run_forked("oipgraph", cases, env=ENV), strict=True):
            self.assertEqual(done.returncode, 2, name)
            assert_one_line_error(self, done.stderr, "oipgraph", message)
            self.assertFalse(os.path.exists(os.path.join(folder, f"out_{name}")), name)

    def test_the_worker_serves_until_sigterm_and_refuses_a_bad_tf_config(self):
        folder = self.get_temp_dir()
        ports = free_ports(2)
        cluster = {"chief": [address(ports[0])], "worker": [address(ports[1])]}
        worker = start_worker(cluster, 0, os.path.join(folder, "worker.log"))
        try:
            worker.send_signal(signal.SIGTERM)
            self.assertEqual(worker.wait(30), 0)
        finally:
            stop_worker(worker)
        with open(os.path.join(folder, "worker.log")) as log:
            lines = own_lines(log.read())
        self.assertEqual(
            lines,
            [
                f"oipgraph-worker: serving worker 0 at {address(ports[1])}; stop with SIGTERM or Ctrl-C",
                f"oipgraph-worker: stopped (worker 0 at {address(ports[1])})",
            ],
        )
        config = json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})
        done = run_command("oipgraph-worker", env={**ENV, "TF_CONFIG": config}, timeout=120)
        self.assertEqual(done.returncode, 2)
        assert_one_line_error(self, done.stderr, "oipgraph-worker", "task type must be 'worker' or 'ps'")


if __name__ == "__main__":
    tf.test.main()
