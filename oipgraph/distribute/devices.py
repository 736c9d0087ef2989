"""Several devices in one process: the pairs of a batch spread over GPUs (or logical CPU devices).

`DeviceExecutor` runs a `tf.distribute.MirroredStrategy` over the devices. A call's pairs run in the local
batches (`executors.batches`), dealt to the devices in rounds, one whole batch per device
(`deal`, `experimental_distribute_values_from_function`): each pair is computed in the batch a local run
computes it in, so its result is the same also where the batch size changes the float rounding. In each
round `strategy.run` runs the segmented loop's pieces on every device's batch at once, inside one
`tf.function` per piece, so the devices
work in parallel and the Python side still sees the loop between segments (progress, Ctrl-C) as in
`OIPAscent.__call__`. The pieces are the ascent's frozen functions (`frozen.FrozenAscent`): every device
holds its own copy of the weights as constants, so no step reads another device's memory, and
MirroredStrategy's variable mirroring and reductions are not needed (the pairs never meet). The batches'
results are joined in device order, which is pair order.

`make_devices(spec)` turns `--devices=all|N` into device names: all GPUs (or N of them), or, on a machine
without a GPU, N logical CPU devices made from the one physical CPU (`tf.config.set_logical_device_
configuration`; they share the cores, so they help tests more than speed). It must run before TensorFlow
initializes its runtime (the first op or device listing of the process).
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from oipgraph.ascent.oip_ascent import FIRST_SEGMENT_STEPS, next_segment
from oipgraph.ascent.results import concat_results, result_from_outputs
from oipgraph.core import interrupts, limits
from oipgraph.core.errors import OIPGraphError
from oipgraph.distribute.executors import PairExecutor, batches
from oipgraph.distribute.frozen import FrozenAscent

__all__ = ["DeviceExecutor", "check_devices_flag", "deal", "make_devices"]


def check_devices_flag(spec: str) -> int | None:
    """The count of `--devices` (None for `all`); raises OIPGraphError (one line) for anything else."""
    if spec.strip() == "all":
        return None
    try:
        count = int(spec)
    except ValueError:
        raise OIPGraphError(f"--devices must be 'all' or a number of devices, got {spec!r}") from None
    return limits.check_int("--devices", count, limits.MAX_DEVICES)


def make_devices(spec: str) -> list[str]:
    """The device names for `--devices=spec`: GPUs if there are any, else logical CPU devices.

    Raises:
        OIPGraphError: a bad spec, more GPUs than the machine has, or TensorFlow already initialized.
    """
    count = check_devices_flag(spec)
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        count = len(gpus) if count is None else count
        if count > len(gpus):
            raise OIPGraphError(f"--devices={spec}: this machine has {len(gpus)} GPU(s)")
        return [f"/device:GPU:{index}" for index in range(count)]
    count = 1 if count is None else count
    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError:
            # The runtime has started: fine if it was started with these devices (the `oipgraph` command
            # makes them on import, `oipgraph/__init__.py`).
            if len(tf.config.list_logical_devices("CPU")) != count:
                raise OIPGraphError(
                    f"--devices={spec}: logical CPU devices must be made before TensorFlow starts its runtime"
                ) from None
    return [f"/device:CPU:{index}" for index in range(count)]


def deal(total: int, batch_size: int, replicas: int) -> list[tuple[list[np.ndarray], int]]:
    """The rounds of a call of `total` pairs on `replicas` devices: (one share per device, real shares).

    Each share is one whole local batch (`executors.batches`, as rows of the call's pairs): the first
    `replicas` batches make the first round, the next ones the next. In the last round the devices left
    without a batch get a repeat of the round's last pair (`strategy.run` needs a share on every device),
    run and dropped: only the first `real` shares of a round are results.
    """
    rounds = []
    shares = [np.arange(batch.start, batch.stop) for batch in batches(total, batch_size)]
    for first in range(0, len(shares), replicas):
        real = shares[first : first + replicas]
        rounds.append((real + [real[-1][-1:]] * (replicas - len(real)), len(real)))
    return rounds


class _ReplicaFunctions:
    """The segmented loop's pieces of one ascent, each run on every device by `strategy.run`."""

    def __init__(self, strategy: tf.distribute.Strategy, ascent):
        frozen = FrozenAscent(ascent)
        self.ascent = ascent  # Held, so that the cache key (its id) stays its own.

        def on_replicas(piece):
            return tf.function(lambda *args: strategy.run(piece, args=args), autograph=False, reduce_retracing=True)

        self.start = on_replicas(frozen.start)
        self.advance = on_replicas(frozen.advance)
        self.finish = on_replicas(frozen.finish)


class DeviceExecutor(PairExecutor):
    """The local batches of each call dealt to `devices` by a `MirroredStrategy`, one per device; results in
    pair order.

    Each device runs whole batches of `batch_size` pairs (`deal`): a GPU in its own memory; logical CPU devices
    share the process's memory, so N of them hold N batches at once (N times what `--memory_budget` sized one
    batch for). A call of fewer batches than devices leaves the others idle (they run one repeated pair).
    """

    def __init__(self, devices: list[str]):
        self.devices = list(devices)
        self.strategy = tf.distribute.MirroredStrategy(self.devices)
        self.replicas = self.strategy.num_replicas_in_sync
        self.description = f"{self.replicas} devices ({', '.join(self.devices)})"
        self._functions: dict[int, _ReplicaFunctions] = {}

    def _functions_of(self, ascent) -> _ReplicaFunctions:
        if id(ascent) not in self._functions:
            self._functions[id(ascent)] = _ReplicaFunctions(self.strategy, ascent)
        return self._functions[id(ascent)]

    def _run(self, ascent, images, map_index, steps, epsilon, conv_criterion, seeds, batch_size, progress, returned):
        functions = self._functions_of(ascent)
        parts, total = [], len(map_index)
        scalars = (tf.constant(int(steps)), tf.constant(float(epsilon)), tf.constant(float(conv_criterion)))
        for shares, real in deal(total, batch_size, self.replicas):
            begin, end = int(shares[0][0]), int(shares[real - 1][-1]) + 1

            def report(step: int, begin: int = begin, end: int = end) -> None:
                if progress is not None:
                    progress((begin + (end - begin) * step / steps) / total)

            parts.append(self._run_round(functions, images, map_index, seeds, shares, real, scalars, report))
        return concat_results(parts)

    def _per_replica(self, array: np.ndarray, shares: list[np.ndarray]):
        return self.strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(array[shares[context.replica_id_in_sync_group]])
        )

    def _local(self, value, replica: int):
        return tf.nest.map_structure(lambda v: self.strategy.experimental_local_results(v)[replica], value)

    def _run_round(self, functions, images, map_index, seeds, shares, real, scalars, report):
        """One round of `deal`: share d (rows of the call's pairs) on device d; the results of the first `real`."""
        steps = int(scalars[0])
        images_r, maps_r, seeds_r = (self._per_replica(array, shares) for array in (images, map_index, seeds))
        histories: list[list[np.ndarray]] = [[] for _ in range(self.replicas)]
        with interrupts.deferred():
            state, segment = functions.start(images_r, maps_r, *scalars, seeds_r), FIRST_SEGMENT_STEPS
            while True:
                replica_states = [self._local(state, replica) for replica in range(self.replicas)]
                running = [
                    int(s["step"]) for s in replica_states if int(s["step"]) < steps and bool(np.any(s["active"]))
                ]
                if not running:  # Running shares are at the same step: all started at 0 and ran to each `end`.
                    break
                interrupts.check()
                started = time.perf_counter()
                end = min(max(running) + segment, steps)
                state, history = functions.advance(state, maps_r, *scalars, seeds_r, tf.constant(end))
                for replica in range(self.replicas):
                    histories[replica].append(self._local(history, replica).numpy())
                segment = next_segment(segment, time.perf_counter() - started)
                report(end)
            outputs = functions.finish(state, maps_r, scalars[0])
        parts = []
        for replica, share in enumerate(shares[:real]):
            values = {key: value.numpy() for key, value in self._local(outputs, replica).items()}
            parts.append(result_from_outputs(map_index[share], values, histories[replica], steps))
        report(steps)
        return concat_results(parts)
