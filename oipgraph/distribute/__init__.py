"""More hardware: the ascents of many pairs on several devices of one process, or on a cluster's workers.

Modules:
    executors: `PairExecutor`, where `run_in_batches` hands its pairs, and `LocalExecutor` (this process).
    frozen: the ascent's compiled functions with the model's weights frozen in as constants.
    devices: `DeviceExecutor` (several GPUs or logical CPU devices, `tf.distribute.MirroredStrategy`) and
        `make_devices` for `--devices`.
    cluster: `ClusterExecutor` (chunks of pairs on a cluster's workers: `ParameterServerStrategy` and
        `ClusterCoordinator`) and `WorkerWatch`, which ends a run when a worker goes silent.
    cluster_file: the `--cluster` file's checks and the preflight of its addresses.
    worker: `oipgraph-worker`, a `tf.distribute.Server` for the task in TF_CONFIG.

Imports `oipgraph.ascent` and `oipgraph.core`; `oipgraph.strategies` imports it.
"""

from oipgraph.distribute.executors import LocalExecutor, PairExecutor, PairsUnfinished

__all__ = ["LocalExecutor", "PairExecutor", "PairsUnfinished"]
