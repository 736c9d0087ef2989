"""Several devices in one process: the pairs of a batch spread over GPUs (or logical CPU devices).

`DeviceExecutor` runs a `tf.distribute.MirroredStrategy` over the devices. A call's pairs are split into
one contiguous share per device (`experimental_distribute_values_from_function`), and `strategy.run` runs
the segmented loop's pieces on every share at once, inside one `tf.function` per piece, so the devices
work in parallel and the Python side still sees the loop between segments (progress, Ctrl-C) as in
`OIPAscent.__call__`. The pieces are the ascent's frozen functions (`frozen.FrozenAscent`): every device
holds its own copy of the weights as constants, so no step reads another device's memory, and
MirroredStrategy's variable mirroring and reductions are not needed (the pairs never meet). The shares'
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
from oipgraph.ascent.results import concat_results, result_from_outputs, select_pairs
from oipgraph.core import interrupts, limits
from oipgraph.core.errors import OIPGraphError
from oipgraph.distribute.executors import PairExecutor
from oipgraph.distribute.frozen import FrozenAscent

__all__ = ["DeviceExecutor", "check_devices_flag", "make_devices"]


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
    """The pairs of each call spread over `devices` by a `MirroredStrategy`; results in pair order.

    A call holds `batch_size` pairs per GPU (each has its own memory), or `batch_size` in all on logical
    CPU devices (they share the process's memory, which `--memory_budget` sized the batch for).
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
        on_gpus = all("GPU" in device.upper() for device in self.devices)
        per_call = batch_size * self.replicas if on_gpus else max(batch_size, self.replicas)
        parts, total = [], len(map_index)
        scalars = (tf.constant(int(steps)), tf.constant(float(epsilon)), tf.constant(float(conv_criterion)))
        for begin in range(0, total, per_call):
            end = min(begin + per_call, total)

            def report(step: int, begin: int = begin, end: int = end) -> None:
                if progress is not None:
                    progress((begin + (end - begin) * step / steps) / total)

            batch = slice(begin, end)
            parts.append(self._run_call(functions, images[batch], map_index[batch], seeds[batch], scalars, report))
        return concat_results(parts)

    def _per_replica(self, array: np.ndarray, shares: list[np.ndarray]):
        return self.strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(array[shares[context.replica_id_in_sync_group]])
        )

    def _local(self, value, replica: int):
        return tf.nest.map_structure(lambda v: self.strategy.experimental_local_results(v)[replica], value)

    def _run_call(self, functions, images, map_index, seeds, scalars, report):
        """One call: B pairs in contiguous shares, one per device (fewer pairs than devices: repeats of the
        last pair fill the shares, and their results are dropped)."""
        count, steps = len(map_index), int(scalars[0])
        rows = np.concatenate([np.arange(count), np.full(max(0, self.replicas - count), count - 1)])
        shares = np.array_split(rows, self.replicas)
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
        for replica, share in enumerate(shares):
            values = {key: value.numpy() for key, value in self._local(outputs, replica).items()}
            parts.append(result_from_outputs(map_index[share], values, histories[replica], steps))
        report(steps)
        return select_pairs(concat_results(parts), np.arange(count))
