"""The per-pair record of an ascent, and joining, selecting and replacing its pairs (NumPy only).

`AscentResult` is the one record that travels from the compiled ascent to the
disk: every field has the pair axis first, `snapshot_steps` included (one row
of steps per pair, also when all pairs ran the same budget). Results of runs
with different step budgets join by widening the shorter loss histories with
each pair's final loss (`pad_history`), as a pair that stopped early is padded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from oipgraph.objectives.base import STATUS_NAMES


@dataclasses.dataclass
class AscentResult:
    """Results of an ascent for B pairs, as NumPy arrays.

    Attributes:
        map_index: int32 [B], the target (map or unit) of each pair.
        images: float32 [B, H, W, C], the final images.
        loss: float32 [B], the objective at `images`.
        loss_history: float32 [B, steps], the loss at each step; a pair that
            stopped early repeats its final loss.
        steps_run: int32 [B], gradient evaluations per pair.
        status: int32 [B], 0 completed, 1 converged, 2 no_activation.
        snapshots: float32 [B, F, H, W, C], images at `snapshot_steps`.
        snapshot_steps: int32 [B, F], the step of each snapshot of each pair.
    """

    map_index: np.ndarray
    images: np.ndarray
    loss: np.ndarray
    loss_history: np.ndarray
    steps_run: np.ndarray
    status: np.ndarray
    snapshots: np.ndarray
    snapshot_steps: np.ndarray

    @property
    def status_names(self) -> list[str]:
        return [STATUS_NAMES[code] for code in self.status]

    def __len__(self) -> int:
        return len(self.map_index)


def pad_history(history: np.ndarray, final_loss: np.ndarray, width: int) -> np.ndarray:
    """float32 [B, width]: loss histories [B, T <= width] widened by repeating each pair's final loss [B]."""
    missing = width - history.shape[1]
    if missing == 0:
        return history
    return np.concatenate([history, np.repeat(np.asarray(final_loss)[:, None], missing, axis=1)], axis=1)


def concat_results(parts: Sequence[AscentResult]) -> AscentResult:
    """Joins results in order; loss histories of different lengths are padded to the longest."""
    if len(parts) == 1:
        return parts[0]
    width = max(part.loss_history.shape[1] for part in parts)
    fields = {}
    for field in dataclasses.fields(AscentResult):
        values = [getattr(part, field.name) for part in parts]
        if field.name == "loss_history":
            values = [pad_history(part.loss_history, part.loss, width) for part in parts]
        fields[field.name] = np.concatenate(values)
    return AscentResult(**fields)


def select_pairs(result: AscentResult, rows: np.ndarray | Sequence[int]) -> AscentResult:
    """The pairs `rows` of `result`, in that order."""
    rows = np.asarray(rows, dtype=np.int64)
    return AscentResult(**{field.name: getattr(result, field.name)[rows] for field in dataclasses.fields(AscentResult)})


def replace_pairs(base: AscentResult, rows: np.ndarray | Sequence[int], replacement: AscentResult) -> AscentResult:
    """`base` with pairs `rows` replaced by the pairs of `replacement` (same order).

    The results may come from runs with different step budgets: the loss
    histories are widened to the longer one (`pad_history`).
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) != len(replacement):
        raise ValueError(f"{len(rows)} rows for {len(replacement)} replacement pairs")
    width = max(base.loss_history.shape[1], replacement.loss_history.shape[1])
    merged = {}
    for field in dataclasses.fields(AscentResult):
        if field.name == "loss_history":
            values = pad_history(base.loss_history, base.loss, width).copy()
            values[rows] = pad_history(replacement.loss_history, replacement.loss, width)
        else:
            values = np.array(getattr(base, field.name), copy=True)
            values[rows] = getattr(replacement, field.name)
        merged[field.name] = values
    return AscentResult(**merged)


def result_from_outputs(
    map_index: np.ndarray, outputs: dict[str, np.ndarray], histories: Sequence[np.ndarray], steps: int
) -> AscentResult:
    """The `AscentResult` of B pairs from the compiled loop's final outputs and its loss history.

    Args:
        map_index: int32 [B], the pairs' targets.
        outputs: The NumPy values of the loop's final outputs (`images`, `loss`, `steps_run`, `status`,
            `snapshots`, and `snapshot_steps` int32 [F] shared by all pairs or [B, F]); a `loss_history`
            float32 [B, T] among them is kept and widened to `steps`.
        histories: Without a `loss_history` in `outputs`: the loop's segments, float32 [T_s, B] each in
            step order (T = sum of T_s <= steps); their steps, then each pair's final loss up to `steps`.
        steps: The step budget of the call.
    """
    outputs = dict(outputs)
    if "loss_history" not in outputs:
        joined = np.concatenate(histories, axis=0).T if len(histories) else np.zeros([len(map_index), 0], np.float32)
        outputs["loss_history"] = joined
    outputs["loss_history"] = pad_history(outputs["loss_history"], outputs["loss"], int(steps))
    if np.ndim(outputs["snapshot_steps"]) == 1:
        outputs["snapshot_steps"] = np.tile(outputs["snapshot_steps"], (len(map_index), 1))
    return AscentResult(map_index=np.asarray(map_index, np.int32), **outputs)
