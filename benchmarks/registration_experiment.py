"""Does TensorFlow hold the chief's GIL while a worker is silent? (issue 27; the findings: `distribute/backstop.py`)

Starts two `oipgraph-worker` processes and a `ps` on 127.0.0.1, connects this process as the chief
(`ParameterServerStrategy`, `ClusterCoordinator`), stops worker 1 with SIGSTOP for `--stop_seconds` (a helper
process sends SIGCONT), and times one call while a Python thread ticks every 0.2 s: if the longest gap
between ticks is as long as the call, the call held the GIL. `--case`:

- `schedule`: `coordinator.schedule` of a new tf.function (its registration on every worker).
- `trace`: `get_concrete_function` of a new tf.function that runs only here.
- `local`: the first call of a new local tf.function.
- `eager`: an eager op on worker 0.
- `connect`: connecting itself, with worker 1 stopped before.

Usage:

    python benchmarks/registration_experiment.py --case=schedule
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app, flags

import oipgraph  # noqa: F401  (before TensorFlow: oipgraph's kernels)
from oipgraph.distribute.cluster_file import free_ports

FLAGS = flags.FLAGS
flags.DEFINE_enum("case", "schedule", ["schedule", "trace", "local", "eager", "connect"], "What to time.")
flags.DEFINE_integer("stop_seconds", 12, "How long worker 1 stays stopped.")

BIN_DIR = os.path.dirname(sys.executable)


def start_tasks(cluster: dict) -> list[subprocess.Popen]:
    env = {name: value for name, value in os.environ.items() if name != "TF_CONFIG"}
    tasks = []
    for task_type, index in (("worker", 0), ("worker", 1), ("ps", 0)):
        config = json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})
        tasks.append(
            subprocess.Popen(
                [os.path.join(BIN_DIR, "oipgraph-worker")],
                env={**env, "TF_CONFIG": config},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    for address in cluster["worker"] + cluster["ps"]:
        host, port = address.rsplit(":", 1)
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
    return tasks


def main(argv):
    del argv
    import tensorflow as tf

    ports = free_ports(4)
    cluster = {
        "chief": [f"127.0.0.1:{ports[0]}"],
        "worker": [f"127.0.0.1:{ports[1]}", f"127.0.0.1:{ports[2]}"],
        "ps": [f"127.0.0.1:{ports[3]}"],
    }
    tasks = start_tasks(cluster)
    ticks: list[float] = []

    def tick():
        while True:
            ticks.append(time.monotonic())
            time.sleep(0.2)

    def stop_worker_1():
        os.kill(tasks[1].pid, signal.SIGSTOP)
        subprocess.Popen(["sh", "-c", f"sleep {FLAGS.stop_seconds}; kill -CONT {tasks[1].pid}"])

    def timed(what: str, call) -> None:
        started = time.monotonic()
        call()
        ended = time.monotonic()
        inside = [moment for moment in ticks if started <= moment <= ended]
        gaps = [b - a for a, b in zip([started, *inside], [*inside, ended])]
        print(f"{what}: {ended - started:.2f} s, {len(inside)} ticks, longest gap {max(gaps):.2f} s", flush=True)

    threading.Thread(target=tick, daemon=True).start()
    try:
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type="chief", task_id=0, rpc_layer="grpc"
        )
        if FLAGS.case == "connect":
            stop_worker_1()
            timed(
                "connecting with worker 1 stopped", lambda: tf.distribute.experimental.ParameterServerStrategy(resolver)
            )
            return
        strategy = tf.distribute.experimental.ParameterServerStrategy(resolver)
        coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
        first = tf.function(lambda x: x * 2.0)
        timed(
            "schedule of a first function, all workers running",
            lambda: coordinator.schedule(first, args=(1.0,)).fetch(),
        )
        stop_worker_1()
        time.sleep(1.0)
        new = tf.function(lambda x: tf.sin(x) * 3.0 + 1.0)
        calls = {
            "schedule": lambda: coordinator.schedule(new, args=(tf.constant(1.0),)),
            "trace": lambda: new.get_concrete_function(tf.TensorSpec([], tf.float32)),
            "local": lambda: new(tf.constant(1.0)),
            "eager": lambda: tf.identity(tf.add(tf.constant(1), 1)),
        }
        if FLAGS.case == "eager":
            with tf.device("/job:worker/replica:0/task:0/device:CPU:0"):
                timed("an eager op on worker 0, worker 1 stopped", calls["eager"])
        else:
            timed(f"{FLAGS.case} of a new function, worker 1 stopped", calls[FLAGS.case])
    finally:
        for task in tasks:
            os.kill(task.pid, signal.SIGCONT)
            task.kill()
            task.wait()
        sys.stdout.flush()
        os._exit(0)  # The coordinator's threads would wait for the workers.


if __name__ == "__main__":
    app.run(main)
