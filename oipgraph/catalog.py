"""Files of a layer-wide run: atomic writes, resumable progress, `oips.npz` and `catalog.json`.

While a run works, every finished chunk of maps is saved atomically under
`OUT/.progress/`; `--resume` reloads those chunks and computes only the rest.
The final files are written to temporary names and renamed into place, so an
interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np

from oipgraph.errors import OIPGraphError
from oipgraph.results import pad_history

PROGRESS_DIR = ".progress"
RUN_CONFIG = "run.json"
CATALOG = "catalog.json"
OIPS = "oips.npz"


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` via a temporary file in the same folder and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_path, path)
    finally:
        if os.path.exists(temp_path):
            os.remove(temp_path)


def atomic_write_json(path: str, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


def atomic_save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def check_writable_dir(path: str, flag: str = "--out") -> None:
    """Fails unless `path` is (or can be created as) a writable folder. Leaves no file behind."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OIPGraphError(f"{flag}={path} is not a folder: {existing} is a file")
    try:  # Permission bits do not tell for root or read-only file systems: try it.
        with tempfile.TemporaryFile(dir=existing, prefix=".tmp-"):
            pass
    except OSError as err:
        raise OIPGraphError(
            f"{flag}={path} is not writable: cannot create files in {existing} ({err.strerror})"
        ) from None


class RunProgress:
    """The `.progress/` folder of a layer-wide run: its settings and finished chunks."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, PROGRESS_DIR)

    def has_results(self) -> bool:
        """Whether `out_dir` already holds a finished or interrupted run."""
        return os.path.exists(self.path) or os.path.exists(os.path.join(self.out_dir, CATALOG))

    def begin(self, config: dict[str, Any], resume: bool) -> set[int]:
        """Starts or resumes a run; returns the indices of chunks already finished.

        Raises:
            OIPGraphError: results exist but `resume` is off, or `resume` is on
                and the saved run used other settings.
        """
        config_path = os.path.join(self.path, RUN_CONFIG)
        if not resume:
            if self.has_results():
                raise OIPGraphError(
                    f"--out={self.out_dir} already holds a run; pass --resume to continue it or choose another --out"
                )
            os.makedirs(self.path)
            atomic_write_json(config_path, config)
            return set()
        if not os.path.exists(config_path):
            if os.path.exists(os.path.join(self.out_dir, CATALOG)):
                raise OIPGraphError(f"--out={self.out_dir} holds a finished run; nothing to resume")
            os.makedirs(self.path, exist_ok=True)
            atomic_write_json(config_path, config)
            return set()
        with open(config_path) as file:
            saved = json.load(file)
        for key in sorted(set(saved) | set(config)):
            if saved.get(key) != config.get(key):
                raise OIPGraphError(
                    f"--resume with other settings: {key} was {saved.get(key)!r}, now {config.get(key)!r}"
                )
        return {
            int(name[len("chunk_") : -len(".npz")])
            for name in os.listdir(self.path)
            if name.startswith("chunk_") and name.endswith(".npz")
        }

    def chunk_path(self, chunk: int) -> str:
        return os.path.join(self.path, f"chunk_{chunk:05d}.npz")

    def save_chunk(self, chunk: int, arrays: dict[str, np.ndarray]) -> None:
        atomic_save_npz(self.chunk_path(chunk), arrays)

    def load_chunk(self, chunk: int) -> dict[str, np.ndarray]:
        return load_npz(self.chunk_path(chunk))

    def finish(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def merge_pairs(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenates per-pair arrays of chunks in order.

    Loss histories of different lengths (strategies with other step counts) are
    padded with each pair's final loss, as a stopped pair's history is.
    """
    longest = max(chunk["loss_history"].shape[1] for chunk in chunks)
    merged = {}
    for key in chunks[0]:
        parts = [chunk[key] for chunk in chunks]
        if key == "loss_history":
            parts = [pad_history(chunk["loss_history"], chunk["loss"], longest) for chunk in chunks]
        merged[key] = np.concatenate(parts)
    return merged
