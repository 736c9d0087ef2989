"""Where the ascents of many (start image, target) pairs run: the interface, and this process's device.

`run_in_batches` (`oipgraph.strategies.runs`) hands every batched ascent to the `PairExecutor` of its
`StrategySettings`: `LocalExecutor` (the default: the ascent's own segmented call, batch by batch),
`devices.DeviceExecutor` (the pairs spread over several devices of this process) or
`cluster.ClusterExecutor` (chunks of pairs on the workers of a cluster). A pair's result does not depend
on the other pairs of its batch (stateless per-pair seeds), but its float rounding may: oneDNN picks other
kernels for other batch sizes, and an ascent like VGG16's with the natural preset amplifies the difference
into another OIP. So every executor runs a call's pairs in the same batches (`batches`: `batch_size`
consecutive pairs each, the last one shorter), whole, wherever they run, and returns the same results, in
pair order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from oipgraph.ascent import AscentResult, OIPAscent
from oipgraph.ascent.results import concat_results
from oipgraph.core.errors import OIPGraphError

__all__ = ["LocalExecutor", "PairExecutor", "PairsUnfinished", "Progress", "Returned", "batches"]

# Called with the share (0 to 1) of a call's pairs and steps done.
Progress = Callable[[float], None]
# Called with (targets whose pairs have all come back, targets of the call) by executors whose pairs come
# back in pieces (the cluster's chunks).
Returned = Callable[[int, int], None]


def batches(total: int, batch_size: int) -> list[slice]:
    """The batches of a call of `total` pairs: `batch_size` consecutive pairs each, the last one shorter.

    The unit of work of every executor: `LocalExecutor` runs them one after the other, `DeviceExecutor` one
    per device, `ClusterExecutor` one per chunk, so that each pair's result is computed in the same batch
    (the same shapes, the same kernels) wherever it runs.
    """
    return [slice(begin, min(begin + batch_size, total)) for begin in range(0, total, batch_size)]


class PairsUnfinished(OIPGraphError):
    """An executor could not finish a call's pairs (a cluster's worker went silent); some pairs may be done.

    Attributes:
        rows: int64 [R], the call's pairs that finished.
        result: Their `AscentResult` (in the order of `rows`), or None when none finished.
        run: Set by the strategy that made the call, and again by each strategy around it: an `OIPRun` of the
            pairs of its own call whose results are final, for saving (`strategies.unfinished`); else None.
        run_rows: int64 [len(run)], their positions among that strategy's pairs.
    """

    def __init__(self, message: str, rows: np.ndarray | None = None, result: AscentResult | None = None):
        super().__init__(message)
        self.rows = np.zeros([0], np.int64) if rows is None else np.asarray(rows, np.int64)
        self.result, self.run = result, None
        self.run_rows = np.zeros([0], np.int64)


class PairExecutor:
    """Runs the compiled ascent of B pairs somewhere and returns the results in pair order."""

    description = "this process"

    def run_pairs(
        self,
        ascent: OIPAscent,
        images: np.ndarray,
        map_index: np.ndarray,
        steps: int,
        epsilon: float,
        conv_criterion: float,
        seeds: np.ndarray,
        batch_size: int,
        progress: Progress | None = None,
        returned: Returned | None = None,
    ) -> AscentResult:
        """The ascent of pairs (images[b], map_index[b]) with stateless seeds seeds[b].

        Args:
            ascent: The compiled ascent.
            images: float32 [B, H, W, C] start images, in the ascent's domain.
            map_index: int32 [B], the pairs' targets.
            steps, epsilon, conv_criterion: As in `OIPAscent.__call__`.
            seeds: int64 [B, 2], each pair's stateless seed.
            batch_size: Most pairs one device holds at once.
            progress: Called with the share of the pairs' steps done, as they advance.
            returned: Called as pairs come back (executors that return them in pieces).

        Raises:
            OIPGraphError: bad pairs or arguments (`OIPAscent.checked_pairs`), before anything runs.
        """
        images, map_index = ascent.checked_pairs(images, map_index, steps, epsilon, conv_criterion)
        seeds = np.asarray(seeds, np.int64)
        if seeds.shape != (len(map_index), 2):
            raise OIPGraphError(f"seeds must have shape [{len(map_index)}, 2], got {list(seeds.shape)}")
        arguments = (steps, epsilon, conv_criterion, seeds, batch_size, progress, returned)
        return self._run(ascent, images, map_index, *arguments)

    def _run(self, ascent, images, map_index, steps, epsilon, conv_criterion, seeds, batch_size, progress, returned):
        raise NotImplementedError


class LocalExecutor(PairExecutor):
    """The ascent's own call (`OIPAscent.__call__`), `batch_size` pairs at a time, on this process's device."""

    def _run(self, ascent, images, map_index, steps, epsilon, conv_criterion, seeds, batch_size, progress, returned):
        parts, total = [], len(map_index)
        for batch in batches(total, batch_size):

            def report(step: int, steps: int, begin: int = batch.start, end: int = batch.stop) -> None:
                if progress is not None:
                    progress((begin + (end - begin) * step / steps) / total)

            parts.append(ascent(images[batch], map_index[batch], steps, epsilon, conv_criterion, seeds[batch], report))
        return concat_results(parts)
