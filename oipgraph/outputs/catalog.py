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
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from oipgraph.ascent.results import pad_history
from oipgraph.core.errors import OIPGraphError

PROGRESS_DIR = ".progress"
RUN_CONFIG = "run.json"
CATALOG = "catalog.json"
OIPS = "oips.npz"
GRID = "grid.png"
MAPS_DIR = "maps"
GALLERY = "index.html"
# Output names and whether each is a folder; an existing entry of the other kind is refused up front.
OUTPUT_ENTRIES = ((CATALOG, False), (OIPS, False), (GRID, False), (GALLERY, False), (MAPS_DIR, True))
# In a TensorBoard run folder written by oipgraph: the real path of the --out it belongs to.
TENSORBOARD_OWNER = ".oipgraph-out"


def current_umask() -> int:
    """The process's umask (read from /proc where it can be, without changing it; else set and restored)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_private_temp_public(path: str, directory: bool = False) -> None:
    """Gives a `tempfile.mkstemp`/`mkdtemp` path (0600/0700) the modes any tool's new file gets: 0666/0777 & ~umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` via a temporary file in the same folder and a rename; modes follow the umask."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        make_private_temp_public(temp_path)
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


def check_output_entries(out_dir: str) -> None:
    """Fails if an entry of `out_dir` that the run writes exists as the wrong kind (e.g. a file named `maps`)."""
    for name, is_folder in OUTPUT_ENTRIES:
        path = os.path.join(out_dir, name)
        if os.path.lexists(path) and os.path.isdir(path) != is_folder:
            kind = "file" if is_folder else "folder"
            raise OIPGraphError(
                f"--out={out_dir} holds a {kind} named {name} where the run writes its {name}; move it away or"
                " choose another --out"
            )


def tensorboard_owner(run_dir: str) -> str | None:
    """The --out (real path) that wrote TensorBoard run `run_dir`, or None if unknown (not written by oipgraph)."""
    try:
        with open(os.path.join(run_dir, TENSORBOARD_OWNER)) as file:
            return file.read().strip() or None
    except OSError:
        return None


def check_tensorboard_run(logdir: str, run_name: str, out_dir: str) -> None:
    """Fails if LOGDIR/RUN_NAME exists and belongs to another --out: only a run's own summaries are replaced."""
    run_dir = os.path.join(logdir, run_name)
    if not os.path.lexists(run_dir):
        return
    owner = tensorboard_owner(run_dir)
    if owner != os.path.realpath(out_dir):
        whose = f"the run in --out={owner}" if owner else "another run"
        raise OIPGraphError(
            f"--logdir={logdir} already holds TensorBoard run {run_name} of {whose}; choose another --logdir"
            " (oipgraph replaces only a run's own summaries)"
        )


class RunProgress:
    """The `.progress/` folder of a layer-wide run: its settings (the fingerprint) and finished chunks."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, PROGRESS_DIR)

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

    def begin(self, config: dict[str, Any], resume: bool, overwrite: bool = False) -> set[int]:
        """Starts, resumes or (with `overwrite`) restarts a run; returns the indices of chunks saved before.

        The returned chunks are not yet verified: see `verified_chunks`.

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
            return set()
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
        return {
            int(name[len("chunk_") : -len(".npz")])
            for name in os.listdir(self.path)
            if name.startswith("chunk_") and name.endswith(".npz") and name[len("chunk_") : -len(".npz")].isdigit()
        }

    def chunk_path(self, chunk: int) -> str:
        return os.path.join(self.path, f"chunk_{chunk:05d}.npz")

    def save_chunk(self, chunk: int, arrays: dict[str, np.ndarray]) -> None:
        atomic_save_npz(self.chunk_path(chunk), arrays)

    def load_chunk(self, chunk: int) -> dict[str, np.ndarray]:
        return load_npz(self.chunk_path(chunk))

    def chunk_problem(self, chunk: int, keys: Collection[str], map_index: np.ndarray) -> str | None:
        """Why saved chunk `chunk` cannot be used, or None if it is whole.

        Reading every array checks each one's CRC-32 (npz is a zip file); then the keys, the pairs'
        maps (int [P], what the chunk must hold) and the arrays' common length are compared.
        """
        try:
            arrays = self.load_chunk(chunk)
        except Exception as err:  # noqa: BLE001 - zipfile, zlib, NumPy and OS errors all mean "damaged".
            return f"unreadable ({type(err).__name__}: {err})"
        if set(arrays) != set(keys):
            return f"holds arrays {sorted(arrays)}, expected {sorted(keys)}"
        if not np.array_equal(np.asarray(arrays["map_index"]).reshape(-1), np.asarray(map_index).reshape(-1)):
            return "holds other maps than this run's chunk"
        lengths = {key: value.shape[0] for key, value in arrays.items() if value.ndim}
        if any(length != len(map_index) for length in lengths.values()):
            return f"arrays of other lengths than {len(map_index)} pairs"
        return None

    def verified_chunks(
        self,
        chunks: set[int],
        keys: Collection[str],
        chunk_map_index: Callable[[int], np.ndarray],
        warn: Callable[[str], None],
    ) -> set[int]:
        """The chunks among `chunks` that are whole; a damaged one is removed (to be recomputed) with a warning.

        Args:
            chunks: Chunk indices found on disk (`begin`).
            keys: The arrays every chunk holds.
            chunk_map_index: Chunk index -> int [P], the map of each of its pairs; indices without a
                chunk in this run raise IndexError.
            warn: Called with one line per damaged chunk.
        """
        whole = set()
        for chunk in sorted(chunks):
            try:
                expected = chunk_map_index(chunk)
            except IndexError:
                problem = "not a chunk of this run"
            else:
                problem = self.chunk_problem(chunk, keys, expected)
            if problem is None:
                whole.add(chunk)
                continue
            warn(f"{self.chunk_path(chunk)} is damaged ({problem}); computing its maps again")
            os.remove(self.chunk_path(chunk))
        return whole

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
