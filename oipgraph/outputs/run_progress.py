"""The `.progress/` folder of a layer-wide run: its settings, every finished map, and auto's plans.

While a run works, the pairs of every map are saved as soon as the map's result is final, in groups
(`maps_NNNNN.npz`, one atomic file per group of maps that became final together: per chunk for most
strategies, after each stage for `auto`); `--resume` reloads them and computes only the other maps.
auto's escalation plan of each chunk (`plan_NNNNN.json`) is saved before it runs, so that a resumed
chunk runs the same plan. `merge_pairs` puts the saved pairs back in the run's order: map by map,
init by init, whichever group a map was saved in, so a resumed run's outputs equal an uninterrupted one's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np

from oipgraph.ascent.results import pad_history
from oipgraph.core.errors import OIPGraphError
from oipgraph.outputs.catalog import (
    CATALOG,
    GALLERY,
    GRID,
    MAPS_DIR,
    OIPS,
    PROGRESS_DIR,
    RUN_CONFIG,
    atomic_save_npz,
    atomic_write_json,
    load_npz,
)
from oipgraph.outputs.run_pairs import IMAGE_KEYS, RunPairs

GROUP_PATTERN = re.compile(r"maps_(\d+)\.npz")


class RunProgress:
    """The `.progress/` folder of a layer-wide run: its settings (the fingerprint), saved maps and plans."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, PROGRESS_DIR)
        self.next_group = 0

    def is_finished(self) -> bool:
        """Whether `out_dir` holds a finished run (`catalog.json` is written last)."""
        return os.path.exists(os.path.join(self.out_dir, CATALOG))

    def is_interrupted(self) -> bool:
        return os.path.exists(self.path) and not self.is_finished()

    def has_results(self) -> bool:
        """Whether `out_dir` already holds a finished or interrupted run."""
        return os.path.exists(self.path) or self.is_finished()

    def check_start(self, resume: bool, overwrite: bool) -> None:
        """Refuses a start that would mix with or replace another run; every message's advice works.

        Raises:
            OIPGraphError: a finished run without `overwrite`, or an interrupted one without `resume`.
        """
        if overwrite:
            return
        if self.is_finished():
            if resume:
                raise OIPGraphError(
                    f"--out={self.out_dir} holds a finished run; nothing to resume (pass --overwrite to compute it"
                    " again)"
                )
            raise OIPGraphError(
                f"--out={self.out_dir} already holds a finished run; pass --overwrite to replace it or choose"
                " another --out"
            )
        if self.is_interrupted() and not resume:
            raise OIPGraphError(
                f"--out={self.out_dir} holds an interrupted run; pass --resume to continue it, --overwrite to start"
                " over, or choose another --out"
            )

    def clear(self) -> None:
        """Removes the run's files from `out_dir`: `catalog.json` first, so a half-cleared folder is no finished run."""
        for name in (CATALOG, OIPS, GRID, GALLERY):
            if os.path.lexists(os.path.join(self.out_dir, name)):
                os.remove(os.path.join(self.out_dir, name))
        for folder in (MAPS_DIR, PROGRESS_DIR):
            shutil.rmtree(os.path.join(self.out_dir, folder), ignore_errors=True)

    def begin(self, config: dict[str, Any], resume: bool, overwrite: bool = False) -> list[int]:
        """Starts, resumes or (with `overwrite`) restarts a run; returns the numbers of the groups saved before.

        The returned groups are not yet verified: see `verified_groups`.

        Raises:
            OIPGraphError: see `check_start`; with `resume`, a saved run with other settings or another
                model file (`config["model_sha256"]`), or an unreadable `run.json`.
        """
        self.check_start(resume, overwrite)
        if overwrite:
            self.clear()
        config_path = os.path.join(self.path, RUN_CONFIG)
        if not (resume and os.path.exists(config_path)):
            shutil.rmtree(self.path, ignore_errors=True)
            os.makedirs(self.path)
            atomic_write_json(config_path, config)
            return []
        try:
            with open(config_path) as file:
                saved = json.load(file)
        except (OSError, ValueError) as err:
            raise OIPGraphError(f"{config_path} is unreadable ({err}); pass --overwrite to start over") from None
        if saved.get("model_sha256") != config.get("model_sha256"):
            raise OIPGraphError(
                f"--resume with another model: the model file changed since the run started (sha256"
                f" {str(saved.get('model_sha256'))[:12]}..., now {str(config.get('model_sha256'))[:12]}...);"
                " restore it or pass --overwrite to start over"
            )
        for key in sorted(set(saved) | set(config)):
            if saved.get(key) != config.get(key):
                raise OIPGraphError(
                    f"--resume with other settings: {key} was {saved.get(key)!r}, now {config.get(key)!r};"
                    " rerun with the saved settings or pass --overwrite to start over"
                )
        groups = sorted(int(match.group(1)) for match in map(GROUP_PATTERN.fullmatch, os.listdir(self.path)) if match)
        self.next_group = groups[-1] + 1 if groups else 0
        return groups

    def group_path(self, group: int) -> str:
        return os.path.join(self.path, f"maps_{group:05d}.npz")

    def save_group(self, arrays: dict[str, np.ndarray]) -> None:
        """Saves the pairs of maps whose results are final (arrays [P, ...] of whole maps) as the next group."""
        atomic_save_npz(self.group_path(self.next_group), arrays)
        self.next_group += 1

    def load_group(self, group: int) -> dict[str, np.ndarray]:
        return load_npz(self.group_path(group))

    def saved_groups(self) -> list[int]:
        if not os.path.isdir(self.path):
            return []
        return sorted(int(match.group(1)) for match in map(GROUP_PATTERN.fullmatch, os.listdir(self.path)) if match)

    def plan_path(self, chunk: int) -> str:
        return os.path.join(self.path, f"plan_{chunk:05d}.json")

    def save_plan(self, chunk: int, record: dict) -> None:
        atomic_write_json(self.plan_path(chunk), record)

    def load_plan(self, chunk: int) -> dict | None:
        """The saved plan of `chunk`, or None (none saved, or unreadable: then it is planned again)."""
        try:
            with open(self.plan_path(chunk)) as file:
                record = json.load(file)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def group_problem(self, arrays: dict[str, np.ndarray], keys: Collection[str], inits: int, allowed: set[int]):
        """Why a loaded group cannot be used, or None: keys, lengths, and whole maps of `allowed` in init order."""
        if set(arrays) != set(keys):
            return f"holds arrays {sorted(arrays)}, expected {sorted(keys)}"
        map_index = np.asarray(arrays["map_index"]).reshape(-1)
        if any(value.shape[0] != len(map_index) for value in arrays.values() if value.ndim):
            return "holds arrays of different lengths"
        if len(map_index) == 0 or len(map_index) % inits:
            return f"holds {len(map_index)} pairs, not whole maps of {inits} inits"
        maps = map_index.reshape(-1, inits)
        if np.any(maps != maps[:, :1]) or np.any(arrays["init_index"].reshape(-1, inits) != np.arange(inits)):
            return "holds maps whose pairs are not whole or out of order"
        if not set(maps[:, 0].tolist()) <= allowed or len(set(maps[:, 0].tolist())) != len(maps):
            return "holds maps that are not this run's or saved twice"
        return None

    def verified_groups(
        self, groups: Sequence[int], keys: Collection[str], maps: Sequence[int], inits: int, warn: Callable[[str], None]
    ) -> list[int]:
        """The maps (in run order) whose saved groups are whole; a damaged group is removed, with a warning.

        Args:
            groups: Group numbers found on disk (`begin`).
            keys: The arrays every group holds.
            maps: The run's maps; inits: pairs per map.
            warn: Called with one line per damaged group.
        """
        allowed, done = set(int(m) for m in maps), set()
        for group in groups:
            try:  # Reading every array checks each one's CRC-32 (npz is a zip file).
                arrays = self.load_group(group)
            except Exception as err:  # noqa: BLE001 - zipfile, zlib, NumPy and OS errors all mean "damaged".
                problem = f"unreadable ({type(err).__name__}: {err})"
            else:
                problem = self.group_problem(arrays, keys, inits, allowed - done)
            if problem is None:
                done |= set(np.asarray(arrays["map_index"]).reshape(-1).tolist())
                continue
            warn(f"{self.group_path(group)} is damaged ({problem}); computing its maps again")
            os.remove(self.group_path(group))
        return [int(m) for m in maps if int(m) in done]

    def saved_maps(self) -> int:
        """How many maps the saved groups hold (readable or not: for the interruption message)."""
        count = 0
        for group in self.saved_groups():
            try:
                with np.load(self.group_path(group), allow_pickle=False) as archive:
                    count += len(set(archive["map_index"].reshape(-1).tolist()))
            except Exception:  # noqa: BLE001 - a damaged group counts as not saved.
                continue
        return count

    def load_run(self, maps: Sequence[int]) -> RunPairs:
        """Every saved pair, ordered map by map as `maps` lists them (init by init within a map).

        The small arrays are read now; the image arrays (`run_pairs.IMAGE_KEYS`) group by group as the writer
        asks for them (`RunPairs.blocks`), so writing the outputs holds one group's images at a time.
        """
        paths = [self.group_path(group) for group in self.saved_groups()]
        groups = []
        for path in paths:
            with np.load(path, allow_pickle=False) as archive:
                groups.append({key: archive[key] for key in archive.files if key not in IMAGE_KEYS})
        destinations = pair_destinations([group["map_index"] for group in groups], maps)
        small = merge_pairs(groups, maps)

        def blocks():
            for path, rows in zip(paths, destinations):
                with np.load(path, allow_pickle=False) as archive:
                    yield rows, {key: archive[key] for key in IMAGE_KEYS}

        return RunPairs(small, blocks)

    def finish(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def merge_pairs(groups: list[dict[str, np.ndarray]], maps: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Concatenates per-pair arrays of groups, then (with `maps`) orders the pairs by their map's place in `maps`.

    Loss histories of different lengths (strategies with other step counts) are padded with each pair's
    final loss, as a stopped pair's history is. Within a map the pairs keep their (init) order. The groups'
    arrays are taken out of `groups` as they are merged, so that a run's results (at 224x224 mostly
    snapshots) are held about once, not twice.
    """
    longest = max(group["loss_history"].shape[1] for group in groups)
    for group in groups:
        group["loss_history"] = pad_history(group["loss_history"], group["loss"], longest)
    if maps is None:
        sizes = np.cumsum([0] + [len(group["map_index"]) for group in groups])
        destinations = [np.arange(begin, end) for begin, end in zip(sizes[:-1], sizes[1:])]
    else:
        destinations = pair_destinations([group["map_index"] for group in groups], maps)
    total = sum(len(rows) for rows in destinations)
    merged = {}
    for key in list(groups[0]):
        dtype = np.result_type(*(group[key].dtype for group in groups))  # Strings: the widest.
        merged[key] = np.empty((total, *groups[0][key].shape[1:]), dtype)
        for group, rows in zip(groups, destinations):
            merged[key][rows] = group.pop(key)
    return merged


def pair_destinations(map_indices: list[np.ndarray], maps: Sequence[int]) -> list[np.ndarray]:
    """Where each group's pairs go in the run's order: per group int [P_g], places in the merged arrays.

    The run's order is map by map as `maps` lists them; a map's pairs keep their order within their group.

    Args:
        map_indices: Per group, int [P_g], the map of each of its pairs.
        maps: The run's maps, in order (every map of the groups among them).
    """
    place = {int(map_id): position for position, map_id in enumerate(maps)}
    sizes = np.cumsum([0] + [len(group) for group in map_indices])
    concatenated = np.concatenate(map_indices) if map_indices else np.zeros([0], np.int64)
    order = np.argsort([place[int(m)] for m in concatenated], kind="stable")
    rows = np.argsort(order, kind="stable")  # Where each concatenated pair goes.
    return [rows[begin:end] for begin, end in zip(sizes[:-1], sizes[1:])]
