"""The flags of `oipgraph` that choose its hardware: `--devices`, `--cluster`, `--worker_timeout`.

`make_executor` runs after the other flags are checked and before the model loads (logical CPU devices
and the cluster connection must come before TensorFlow's runtime starts): it checks the cluster file and
every address in it, connects, and returns the `PairExecutor` that the strategies' final ascents go to
(None: this process's one device). None of these flags is part of the run's settings: `--resume` may
continue a run on other hardware.
"""

from __future__ import annotations

import math
import os
import sys

from absl import flags

from oipgraph.core import limits
from oipgraph.core.errors import OIPGraphError
from oipgraph.distribute.executors import PairExecutor

FLAGS = flags.FLAGS
DEFAULT_WORKER_TIMEOUT_S = 120.0
# Seconds the preflight waits for each address's TCP connection.
PREFLIGHT_TIMEOUT_S = 10.0

flags.DEFINE_string(
    "devices",
    "all",
    "Devices of this process the ascents run on: 'all' (every GPU; one CPU device without GPUs) or a number N"
    " (N GPUs, or N logical CPU devices sharing the cores).",
)
flags.DEFINE_string(
    "cluster",
    None,
    "JSON file with TF_CONFIG's cluster dict ({'chief': [this process's HOST:PORT], 'worker': [...], optional"
    " 'ps': [...]}): the ascents run on the workers (start oipgraph-worker for every worker and ps first).",
)
flags.DEFINE_float(
    "worker_timeout",
    DEFAULT_WORKER_TIMEOUT_S,
    "--cluster: seconds a worker may go without answering before the run ends (exit 2; finished maps are saved).",
)

_state: dict[str, bool] = {"cluster": False}


def check_hardware_flags() -> None:
    """Checks the flags' values (not the cluster's addresses); writes nothing."""
    timeout = FLAGS.worker_timeout
    if not (math.isfinite(timeout) and 0 < timeout <= limits.MAX_WORKER_TIMEOUT_S):
        raise OIPGraphError(f"--worker_timeout must be seconds in (0, {limits.MAX_WORKER_TIMEOUT_S}], got {timeout}")
    from oipgraph.distribute.devices import check_devices_flag

    check_devices_flag(FLAGS.devices)
    if FLAGS.cluster is not None and FLAGS["devices"].present:
        raise OIPGraphError("--cluster runs the ascents on its workers: leave out --devices")


def make_executor() -> PairExecutor | None:
    """The executor of `--cluster` or `--devices`, connected and with every address checked; None for one device.

    Prints one line saying where the ascents run, unless on this process's one device.
    """
    if FLAGS.cluster is not None:
        from oipgraph.distribute.cluster import ClusterExecutor
        from oipgraph.distribute.cluster_file import load_cluster_file, preflight

        cluster = load_cluster_file(FLAGS.cluster)
        preflight(cluster, min(PREFLIGHT_TIMEOUT_S, FLAGS.worker_timeout))
        _state["cluster"] = True
        executor = ClusterExecutor(cluster, FLAGS.worker_timeout)
        print(f"oipgraph: the ascents run on {executor.description}; the precursor screen and wake-up here", flush=True)
        return executor
    from oipgraph.distribute.devices import DeviceExecutor, make_devices

    devices = make_devices(FLAGS.devices)
    if len(devices) == 1:
        return None
    executor = DeviceExecutor(devices)
    print(f"oipgraph: the ascents run on {executor.description}")
    return executor


def end_process(code: object) -> None:
    """After a `--cluster` run: flushes and ends the process with `code` at once (`os._exit`), because
    TensorFlow's coordinator threads keep waiting for a lost or silent worker. Returns otherwise."""
    if not _state["cluster"]:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))
