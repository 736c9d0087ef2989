"""Joining, selecting and replacing the pairs of `AscentResult`s (NumPy only)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from oipgraph.ascent import AscentResult


def concat_results(parts: Sequence[AscentResult]) -> AscentResult:
    """Joins results of batches that ran with the same step count."""
    if len(parts) == 1:
        return parts[0]
    return AscentResult(
        **{
            field.name: np.concatenate([getattr(part, field.name) for part in parts])
            for field in dataclasses.fields(AscentResult)
            if field.name != "snapshot_steps"
        },
        snapshot_steps=parts[0].snapshot_steps,
    )


def select_pairs(result: AscentResult, rows: np.ndarray | Sequence[int]) -> AscentResult:
    """The pairs `rows` of `result`, in that order."""
    rows = np.asarray(rows, dtype=np.int64)
    steps = np.asarray(result.snapshot_steps)
    return AscentResult(
        **{
            field.name: getattr(result, field.name)[rows]
            for field in dataclasses.fields(AscentResult)
            if field.name != "snapshot_steps"
        },
        snapshot_steps=steps[rows] if steps.ndim == 2 else steps,
    )


def _padded_history(history: np.ndarray, final_loss: np.ndarray, width: int) -> np.ndarray:
    """Widens a loss history to `width` steps; the added steps repeat the final loss, as for frozen pairs."""
    missing = width - history.shape[1]
    if missing == 0:
        return history
    return np.concatenate([history, np.repeat(final_loss[:, None], missing, axis=1)], axis=1)


def _per_pair_steps(result: AscentResult) -> np.ndarray:
    steps = np.asarray(result.snapshot_steps)
    return steps if steps.ndim == 2 else np.tile(steps, (len(result), 1))


def replace_pairs(base: AscentResult, rows: np.ndarray | Sequence[int], replacement: AscentResult) -> AscentResult:
    """`base` with pairs `rows` replaced by the pairs of `replacement` (same order).

    The results may come from runs with different step budgets: the loss
    histories are widened to the longer one (repeating each pair's final loss),
    and `snapshot_steps` becomes per pair ([B, F]) when the budgets differ.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) != len(replacement):
        raise ValueError(f"{len(rows)} rows for {len(replacement)} replacement pairs")
    width = max(base.loss_history.shape[1], replacement.loss_history.shape[1])
    merged = {}
    for field in dataclasses.fields(AscentResult):
        if field.name in ("snapshot_steps", "loss_history"):
            continue
        values = np.array(getattr(base, field.name), copy=True)
        values[rows] = getattr(replacement, field.name)
        merged[field.name] = values
    history = _padded_history(base.loss_history, base.loss, width).copy()
    history[rows] = _padded_history(replacement.loss_history, replacement.loss, width)
    if np.ndim(base.snapshot_steps) == 1 and np.array_equal(base.snapshot_steps, replacement.snapshot_steps):
        snapshot_steps = base.snapshot_steps
    else:
        snapshot_steps = _per_pair_steps(base).copy()
        snapshot_steps[rows] = _per_pair_steps(replacement)
    return AscentResult(**merged, loss_history=history, snapshot_steps=snapshot_steps)
