"""Every executor runs a call's pairs in LocalExecutor's batches (issue 27: a batch's float rounding can depend on
its size, so the same batches give the same outputs), without a cluster: `ClusterExecutor._run` with a stand-in
coordinator that runs each scheduled chunk here (tests/cluster_test.py runs real clusters, distribute_test.py
real logical devices)."""

import threading

import numpy as np
import tensorflow as tf

from oipgraph import starts
from oipgraph.ascent import OIPAscent
from oipgraph.ascent.results import AscentResult
from oipgraph.distribute.cluster import ClusterExecutor, WorkerSilent
from oipgraph.distribute.devices import deal
from oipgraph.distribute.executors import LocalExecutor

# (pairs, batch_size): one batch, several, a short last one, batches of one pair.
CASES = [(7, 256), (7, 4), (7, 2), (12, 3), (9, 3), (2, 256), (5, 1), (1, 1)]


def expected_batches(total: int, batch_size: int) -> list[list[int]]:
    """The local batches, written out: batch_size consecutive pairs each, the last one shorter."""
    return [list(range(begin, min(begin + batch_size, total))) for begin in range(0, total, batch_size)]


def fake_result(map_index: np.ndarray) -> AscentResult:
    count = len(map_index)
    return AscentResult(
        map_index=np.asarray(map_index, np.int32),
        images=np.zeros([count, 1, 1, 1], np.float32),
        loss=np.zeros([count], np.float32),
        loss_history=np.zeros([count, 1], np.float32),
        steps_run=np.ones([count], np.int32),
        status=np.zeros([count], np.int32),
        snapshots=np.zeros([count, 1, 1, 1, 1], np.float32),
        snapshot_steps=np.zeros([count, 1], np.int32),
    )


class RecordingAscent:
    """Stands in for `OIPAscent.__call__` in LocalExecutor: records the rows (= map indices) of every batch."""

    def __init__(self):
        self.calls: list[list[int]] = []

    def __call__(self, images, map_index, steps, epsilon, conv_criterion, seeds, report):
        self.calls.append(np.asarray(map_index).tolist())
        return fake_result(map_index)


class Remote:
    """Stands in for a `RemoteValue`: done at once (or never), `fetch` gives the closure's outputs."""

    def __init__(self, outputs, done: bool = True):
        self._status_available_event = threading.Event()
        if done:
            self._status_available_event.set()
        self.outputs = outputs

    def fetch(self):
        return self.outputs


class LocalCoordinator:
    """Stands in for `ClusterCoordinator`: runs each scheduled chunk here and now; records its map indices.

    Chunks from the `never_done`-th on never come back (a silent worker holds them)."""

    def __init__(self, run_chunk, never_done: int | None = None):
        self.run_chunk, self.never_done, self.chunks = run_chunk, never_done, []

    def schedule(self, function, args):
        self.chunks.append(np.asarray(args[1]).tolist())
        done = self.never_done is None or len(self.chunks) <= self.never_done
        return Remote(self.run_chunk(function, args) if done else None, done)


class Watch:
    """Stands in for `WorkerWatch`: all is well, or a worker is silent from the `silent_after`-th check on."""

    def __init__(self, silent_after: int | None = None):
        self.checks, self.silent_after = 0, silent_after

    def check(self):
        self.checks += 1
        if self.silent_after is not None and self.checks >= self.silent_after:
            raise WorkerSilent("--cluster: worker 1 at 127.0.0.1:1 has not answered for 3 s (--worker_timeout)")


def offline_cluster_executor(coordinator, workers: int = 2, watch: Watch | None = None) -> ClusterExecutor:
    """A ClusterExecutor that never connected: `coordinator` and `watch` stand in for the cluster."""
    executor = ClusterExecutor.__new__(ClusterExecutor)
    executor.workers = [f"127.0.0.1:{2223 + index}" for index in range(workers)]
    executor.coordinator, executor.watch = coordinator, watch or Watch()
    executor.description, executor._functions, executor._told = "offline", {}, True
    return executor


def fake_outputs(args) -> dict[str, np.ndarray]:
    result = fake_result(np.asarray(args[1]))
    return {name: getattr(result, name) for name in ("images", "loss", "steps_run", "status", "snapshots")} | {
        "snapshot_steps": np.zeros([1], np.int32)
    }


class BatchesTest(tf.test.TestCase):
    def local_batches(self, total: int, batch_size: int) -> list[list[int]]:
        ascent = RecordingAscent()
        arguments = (np.zeros([total, 1, 1, 1], np.float32), np.arange(total, dtype=np.int32), 5, 0.1, 0.0)
        LocalExecutor()._run(ascent, *arguments, np.zeros([total, 2], np.int64), batch_size, None, None)
        return ascent.calls

    def test_local_batches_are_batch_size_consecutive_pairs(self):
        for total, batch_size in CASES:
            self.assertEqual(self.local_batches(total, batch_size), expected_batches(total, batch_size))

    def test_every_device_gets_whole_local_batches(self):
        for total, batch_size in CASES:
            local = self.local_batches(total, batch_size)
            for replicas in (1, 2, 3, 4):
                rounds = deal(total, batch_size, replicas)
                self.assertLen(rounds, -(-len(local) // replicas))
                dealt = []
                for number, (shares, real) in enumerate(rounds):
                    self.assertLen(shares, replicas)
                    self.assertEqual(real, min(replicas, len(local) - number * replicas))
                    dealt += [share.tolist() for share in shares[:real]]
                    # The devices left without a batch repeat the round's last pair; their results are dropped.
                    for padding in shares[real:]:
                        self.assertEqual(padding.tolist(), [int(shares[real - 1][-1])])
                self.assertEqual(dealt, local, (total, batch_size, replicas))

    def test_every_cluster_chunk_is_a_local_batch_whatever_the_workers(self):
        for total, batch_size in CASES:
            local = self.local_batches(total, batch_size)
            for workers in (1, 2, 3):
                coordinator = LocalCoordinator(lambda function, args: fake_outputs(args))
                executor = offline_cluster_executor(coordinator, workers)
                executor._scheduled = lambda ascent: None
                arguments = (np.zeros([total, 1, 1, 1], np.float32), np.arange(total, dtype=np.int32), 5, 0.1, 0.0)
                result = executor._run(None, *arguments, np.zeros([total, 2], np.int64), batch_size, None, None)
                self.assertEqual(coordinator.chunks, local, (total, batch_size, workers))
                self.assertAllEqual(result.map_index, np.arange(total))


class OfflineClusterTest(tf.test.TestCase):
    """`ClusterExecutor._run` with the real frozen function, its chunks run here: results, progress, callbacks."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ascent = OIPAscent.from_file(None, "Conv2D_3")
        cls.maps = np.array([0, 5, 9, 17, 33, 64, 127], np.int32)
        cls.seeds = starts.start_seeds(0, np.arange(7))
        cls.images = starts.multiscale(cls.seeds, cls.ascent.image_shape).numpy()

    def arguments(self):
        return (self.ascent, self.images, self.maps, 40, 0.01, 5e-4, self.seeds, 3)

    def test_the_chunks_give_the_local_results_and_report_as_they_come_back(self):
        coordinator = LocalCoordinator(lambda function, args: function(*args))
        executor, shares, returned = offline_cluster_executor(coordinator), [], []
        got = executor.run_pairs(*self.arguments(), progress=shares.append, returned=lambda *two: returned.append(two))
        expected = LocalExecutor().run_pairs(*self.arguments())
        self.assertEqual(coordinator.chunks, [[0, 5, 9], [17, 33, 64], [127]])
        for name in ("map_index", "images", "loss", "loss_history", "steps_run", "status", "snapshots"):
            self.assertAllEqual(getattr(got, name), getattr(expected, name), msg=name)
        self.assertEqual(shares[-1], 1.0)
        self.assertEqual(returned[-1], (7, 7))

    def test_a_silent_worker_ends_the_call_with_the_chunks_that_came_back(self):
        # Chunks 1 and 2 come back, chunk 3 never does; the watch reports the silence at its 3rd check.
        coordinator = LocalCoordinator(lambda function, args: function(*args), never_done=2)
        executor = offline_cluster_executor(coordinator, watch=Watch(silent_after=3))
        with self.assertRaisesRegex(WorkerSilent, "worker 1 at 127.0.0.1:1 has not answered") as raised:
            executor.run_pairs(*self.arguments())
        self.assertAllEqual(raised.exception.rows, np.arange(6))
        expected = LocalExecutor().run_pairs(*self.arguments())
        self.assertAllEqual(raised.exception.result.images, expected.images[:6])
        self.assertAllEqual(raised.exception.result.map_index, self.maps[:6])


if __name__ == "__main__":
    tf.test.main()
