"""Several machines: chunks of pairs on the workers of a cluster, through `ParameterServerStrategy`.

`ClusterExecutor` connects this process, the chief, to the tasks of a `--cluster` file
(`ParameterServerStrategy`, which needs a `ps` task: without one in the file the chief serves one itself
on a free port; it holds nothing, because the weights travel inside the function). A call's chunks are
its local batches (`executors.batches`: the pairs a local run computes together, so that a pair's result
does not depend on where it ran, also where the batch size changes the float rounding), and each chunk is
a closure that `ClusterCoordinator.schedule` hands to whichever worker is free; when a worker
fails (its process is killed, its machine lost), the coordinator puts its closure back and another worker
runs it. The closure calls the ascent's `optimize` frozen (`frozen.FrozenAscent`): its graph holds the
weights as constants, so it is registered once per worker with them, and the loop's steps read nothing
remote.

A worker that does not answer at all (a stopped process, a lost network) would hold its closure forever:
`WorkerWatch` pings every worker from a thread of its own (a tiny op on the worker's CPU) and the run ends
with `WorkerSilent` (one line naming the address; the CLI saves what finished and exits 2) once a worker
has not answered for `--worker_timeout` seconds, or when no worker has been reachable for that long.
A worker that refuses (killed) answers at once: its chunks run elsewhere. While TensorFlow holds the GIL
(every new function is registered on every worker) or the chief connects, the watch cannot run: then
`backstop.Backstop` (a watchdog process and a timer of the C library) ends the run with the line and exit
code 2.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import tensorflow as tf

from oipgraph.ascent.results import concat_results, result_from_outputs
from oipgraph.core import interrupts
from oipgraph.distribute.backstop import Backstop
from oipgraph.distribute.cluster_file import ClusterFile, free_ports, split_address
from oipgraph.distribute.executors import PairExecutor, PairsUnfinished, batches
from oipgraph.distribute.frozen import FrozenAscent

__all__ = ["ClusterExecutor", "WorkerSilent", "WorkerWatch"]

PING_SECONDS = 1.0
POLL_SECONDS = 0.1
# Seconds the main thread has to take up a silent worker before the watch ends the process itself.
GRACE_SECONDS = 10.0


class WorkerSilent(PairsUnfinished):
    """A worker did not answer within the timeout (or no worker was reachable): the run cannot go on."""


def worker_device(index: int) -> str:
    return f"/job:worker/replica:0/task:{index}/device:CPU:0"


class WorkerWatch:
    """Pings every worker every `PING_SECONDS` from a daemon thread per worker, and watches the answers.

    `problem()` names the first worker whose last answer (a result, or a refusal) is older than `timeout`
    seconds, or says that every worker has refused for `timeout` seconds; `check()` raises it as
    `WorkerSilent` in the calling (main) thread. The main thread may itself be stuck in TensorFlow at that
    moment (an op waiting for the silent worker): if it has not taken up the problem `GRACE_SECONDS` later,
    a monitor thread writes the one line and ends the process with exit code 2 (every map saved until then
    stays saved). Where TensorFlow holds the GIL instead (it registers a new function on every worker, a
    silent one too), these threads cannot run: `backstop.Backstop` ends the run then.
    """

    def __init__(self, addresses: list[str], timeout: float):
        self.addresses, self.timeout = list(addresses), float(timeout)
        now = time.monotonic()
        self.last_answer = [now] * len(addresses)
        self.refused_since: list[float | None] = [None] * len(addresses)
        self._stopped, self._taken_up = threading.Event(), threading.Event()
        for index in range(len(addresses)):
            threading.Thread(target=self._ping, args=(index,), name=f"oipgraph-ping-{index}", daemon=True).start()
        threading.Thread(target=self._monitor, name="oipgraph-watch", daemon=True).start()

    def _ping(self, index: int) -> None:
        while not self._stopped.is_set():
            try:
                with tf.device(worker_device(index)):
                    int(tf.add(tf.constant(1), 1))
                self.refused_since[index] = None
            except (tf.errors.OpError, RuntimeError):
                if self.refused_since[index] is None:
                    self.refused_since[index] = time.monotonic()
                    sys.stderr.write(
                        f"oipgraph: worker {index} at {self.addresses[index]} is lost (it refuses connections);"
                        " its chunks run on the other workers\n"
                    )
            self.last_answer[index] = time.monotonic()
            self._stopped.wait(PING_SECONDS)

    def problem(self) -> str | None:
        """One line naming the silent worker (or the unreachable cluster), or None while all is well."""
        now = time.monotonic()
        for index, answered in enumerate(self.last_answer):
            if now - answered > self.timeout:
                return (
                    f"--cluster: worker {index} at {self.addresses[index]} has not answered for {self.timeout:g} s"
                    " (--worker_timeout)"
                )
        refused = [since for since in self.refused_since if since is not None]
        if len(refused) == len(self.addresses) and now - max(refused) > self.timeout:
            return (
                f"--cluster: no worker has been reachable for {self.timeout:g} s (--worker_timeout):"
                f" {', '.join(self.addresses)}"
            )
        return None

    def check(self) -> None:
        problem = self.problem()
        if problem is not None:
            self._taken_up.set()
            raise WorkerSilent(problem)

    def _monitor(self) -> None:
        noticed = None
        while not self._stopped.wait(PING_SECONDS):
            problem = self.problem()
            if problem is None or self._taken_up.is_set():
                noticed = None
                continue
            noticed = noticed or time.monotonic()
            if time.monotonic() - noticed > GRACE_SECONDS:
                sys.stdout.flush()
                sys.stderr.write(
                    f"oipgraph: error: {problem}; the maps saved so far stay saved, rerun with --resume to continue\n"
                )
                sys.stderr.flush()
                os._exit(2)

    def stop(self) -> None:
        self._stopped.set()


class ClusterExecutor(PairExecutor):
    """Chunks of each call's pairs scheduled on a cluster's workers; results in pair order.

    Connecting changes this process's TensorFlow context for good (its eager ops may run on the cluster's
    devices): make one per process, before the model loads, and end the process with `os._exit` after its
    outputs are written (TensorFlow's coordinator keeps waiting for a lost worker to come back).
    """

    def __init__(self, cluster: ClusterFile, worker_timeout: float):
        spec = cluster.as_dict()
        tasks = {f"worker {index}": address for index, address in enumerate(cluster.workers)}
        tasks.update({f"ps {index}": address for index, address in enumerate(cluster.ps)})
        # First: connecting, like every function this process defines from then on, waits for every task
        # while TensorFlow holds the GIL (`backstop`).
        self.backstop = Backstop(tasks, worker_timeout, GRACE_SECONDS)
        self._ps_server = None
        if not cluster.ps:
            host, _ = split_address(cluster.chief, "chief")
            spec["ps"] = [f"{host}:{free_ports(1, host)[0]}"]
            self._ps_server = tf.distribute.Server(
                tf.train.ClusterSpec(spec), job_name="ps", task_index=0, protocol="grpc", start=True
            )
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(spec), task_type="chief", task_id=0, rpc_layer="grpc"
        )
        with self.backstop.waiting():  # Until every task answers; nothing else watches them yet.
            self.strategy = tf.distribute.experimental.ParameterServerStrategy(resolver)
            self.coordinator = tf.distribute.coordinator.ClusterCoordinator(self.strategy)
        self.workers = list(cluster.workers)
        self.watch = WorkerWatch(self.workers, worker_timeout)
        self.description = f"{len(self.workers)} workers ({', '.join(self.workers)})"
        self._functions: dict[int, tuple] = {}
        self._told = False

    def _scheduled(self, ascent):
        """The tf.function a closure runs: the ascent's frozen `optimize` (built once per ascent)."""
        if id(ascent) not in self._functions:
            frozen = FrozenAscent(ascent).optimize

            def optimize_chunk(images, map_index, steps, epsilon, conv_criterion, seeds):
                return frozen(images, map_index, steps, epsilon, conv_criterion, seeds)

            function = tf.function(optimize_chunk, autograph=False, input_signature=ascent.optimize.input_signature)
            self._functions[id(ascent)] = (ascent, function)
        return self._functions[id(ascent)][1]

    def _run(self, ascent, images, map_index, steps, epsilon, conv_criterion, seeds, batch_size, progress, returned):
        """One chunk per local batch (`batches`): a call of fewer batches than workers leaves some idle."""
        function = self._scheduled(ascent)
        total = len(map_index)
        scalars = (tf.constant(int(steps)), tf.constant(float(epsilon)), tf.constant(float(conv_criterion)))
        pieces = batches(total, batch_size)
        remotes = [
            self.coordinator.schedule(
                function,
                args=(tf.constant(images[rows]), tf.constant(map_index[rows]), *scalars, tf.constant(seeds[rows])),
            )
            for rows in pieces
        ]
        if not self._told:  # Once: the chunks' function is traced and registered, the workers run them now.
            print(
                f"oipgraph: {len(pieces)} chunks of up to {pieces[0].stop} pairs (the local batches) scheduled on the"
                " workers",
                flush=True,
            )
            self._told = True
        back = np.zeros(total, bool)
        pending = set(range(len(pieces)))
        while pending:
            interrupts.check()
            try:
                self.watch.check()
            except WorkerSilent as silent:
                finished = [index for index in range(len(pieces)) if index not in pending]
                if finished:
                    rows = np.concatenate([np.arange(total)[pieces[index]] for index in finished])
                    result = concat_results(
                        [self._result(remotes[index], map_index[pieces[index]], steps) for index in finished]
                    )
                    raise WorkerSilent(str(silent), rows, result) from None
                raise
            # A RemoteValue has no public non-blocking "is it ready"; its status event is set when its values are.
            finished = [index for index in pending if remotes[index]._status_available_event.is_set()]
            if not finished:
                time.sleep(POLL_SECONDS)
                continue
            pending.difference_update(finished)
            for index in finished:
                back[pieces[index]] = True
            if progress is not None:
                progress(float(back.mean()))
            if returned is not None:
                maps = np.unique(map_index)
                complete = np.setdiff1d(maps, map_index[~back])
                returned(len(complete), len(maps))
        return concat_results([self._result(remote, map_index[rows], steps) for rows, remote in zip(pieces, remotes)])

    @staticmethod
    def _result(remote, map_index: np.ndarray, steps: int):
        values = {key: np.asarray(value) for key, value in remote.fetch().items()}
        return result_from_outputs(map_index, values, [], steps)
