"""A stand-in for a cluster whose worker goes silent mid-call (a test helper, not part of the package).

`SilentWorker(call, after)` runs every call here, as `LocalExecutor` runs it, except call `call` (counted from
1), which computes its first `after` pairs and then raises `WorkerSilent` with them, as `ClusterExecutor`
does when a worker stops answering (`rows`: the pairs that came back; the rest never do). The first pairs run
as one batch: on the shipped CNN a pair's result does not depend on its batch (bit for bit), so they equal an
uninterrupted run's. tests/silent_command.py puts it into the `oipgraph` command.
"""

from __future__ import annotations

import numpy as np

from oipgraph.distribute.cluster import WorkerSilent
from oipgraph.distribute.executors import LocalExecutor

SILENCE = "--cluster: worker 1 at 127.0.0.1:9 has not answered for 3 s (--worker_timeout)"


class SilentWorker(LocalExecutor):
    """Call `call` ends after `after` pairs with `WorkerSilent`; `log`, a file, gets one line per call."""

    description = "a stand-in cluster"

    def __init__(self, call: int, after: int, log: str | None = None):
        self.call, self.after, self.log, self.calls = call, after, log, 0

    def _run(self, ascent, images, map_index, steps, epsilon, conv_criterion, seeds, batch_size, progress, returned):
        self.calls += 1
        if self.log:
            with open(self.log, "a") as file:
                file.write(f"{self.calls} {len(map_index)} {steps}\n")
        arguments = (steps, epsilon, conv_criterion)
        if self.calls != self.call:
            return super()._run(ascent, images, map_index, *arguments, seeds, batch_size, progress, returned)
        done = min(self.after, len(map_index))
        first = slice(0, done)
        result = super()._run(ascent, images[first], map_index[first], *arguments, seeds[first], done, None, None)
        raise WorkerSilent(SILENCE, np.arange(done), result if done else None)
