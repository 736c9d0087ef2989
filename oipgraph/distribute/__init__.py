"""More hardware: the ascents of many pairs on several devices of one process, or on a cluster's workers.

Modules:
    executors: `PairExecutor`, where `run_in_batches` hands its pairs, and `LocalExecutor` (this process).
    frozen: the ascent's compiled functions with the model's weights frozen in as constants.
    devices: `DeviceExecutor` (several GPUs or logical CPU devices, `tf.distribute.MirroredStrategy`) and
        `make_devices` for `--devices`.

Imports `oipgraph.ascent` and `oipgraph.core`; `oipgraph.strategies` imports it.
"""

from oipgraph.distribute.executors import LocalExecutor, PairExecutor

__all__ = ["LocalExecutor", "PairExecutor"]
