"""`oipgraph-worker`: serves one task of an `oipgraph --cluster` run, described by TF_CONFIG, until stopped.

Example (machine B of a two-machine cluster; FILE.json on machine A holds the same `cluster` dict):
    TF_CONFIG='{"cluster": {"chief": ["a:2222"], "worker": ["b:2223"]}, "task": {"type": "worker", "index": 0}}' \\
        oipgraph-worker

It starts a `tf.distribute.Server` for the task (type `worker` or `ps`) and waits; the chief sends it the
functions to run. SIGTERM or Ctrl-C ends it with one line and exit code 0; a bad TF_CONFIG ends it with one
line and exit code 2.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from oipgraph.core.errors import OIPGraphError
from oipgraph.distribute.cluster_file import split_address

__all__ = ["read_task", "run"]


def read_task(text: str | None) -> tuple[dict[str, list[str]], str, int]:
    """(cluster dict, task type, task index) of a TF_CONFIG text; OIPGraphError (one line) if it is unusable."""
    if not text:
        raise OIPGraphError(
            'TF_CONFIG is not set: it must hold {"cluster": {...}, "task": {"type": ..., "index": ...}}'
        )
    try:
        config = json.loads(text)
    except ValueError as err:
        raise OIPGraphError(f"TF_CONFIG is not JSON: {err}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise OIPGraphError("TF_CONFIG must hold a 'cluster' dict and a 'task' dict")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in ("worker", "ps"):
        raise OIPGraphError(
            f"TF_CONFIG's task type must be 'worker' or 'ps' (the chief is oipgraph), got {task_type!r}"
        )
    addresses = cluster.get(task_type)
    if not isinstance(addresses, list) or not isinstance(index, int) or not 0 <= index < len(addresses):
        raise OIPGraphError(f"TF_CONFIG's task index {index!r} is not one of the cluster's {task_type!r} entries")
    split_address(addresses[index], f"TF_CONFIG's {task_type} {index}")
    return cluster, task_type, index


def main() -> None:
    try:
        cluster, task_type, index = read_task(os.environ.get("TF_CONFIG"))
    except OIPGraphError as err:
        sys.stderr.write(f"oipgraph-worker: error: {err}\n")
        sys.exit(2)
    import tensorflow as tf  # After the checks: a bad TF_CONFIG answers without TensorFlow's start-up.

    address = cluster[task_type][index]
    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        tf.distribute.Server(
            tf.train.ClusterSpec(cluster), job_name=task_type, task_index=index, protocol="grpc", start=True
        )
    except (tf.errors.OpError, ValueError) as err:
        sys.stderr.write(f"oipgraph-worker: error: cannot serve {task_type} {index} at {address}: {err}\n")
        sys.exit(2)
    print(f"oipgraph-worker: serving {task_type} {index} at {address}; stop with SIGTERM or Ctrl-C", flush=True)
    # The server runs in TensorFlow's threads; `Server.join()` would keep signals out of Python (it blocks in
    # C++), so the main thread waits here, where the handlers run.
    while stop["signal"] is None:
        time.sleep(0.2)
    print(f"oipgraph-worker: stopped ({task_type} {index} at {address})", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # A TensorFlow server cannot be shut down in-process; its threads end with the process.


def run() -> None:
    """Console-script entry point."""
    main()
