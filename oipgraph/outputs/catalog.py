"""Files of a layer-wide run: atomic writes, resumable progress, `oips.npz` and `catalog.json`.

The resumable progress of a run (`OUT/.progress/`) is `run_progress.RunProgress`.
The final files are written to temporary names and renamed into place, so an
interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

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
    atomic_write_with(path, lambda file: file.write(data))


def atomic_write_with(path: str, write: Callable[[BinaryIO], object]) -> None:
    """`write(file)` into a temporary file in `path`'s folder, then fsync and rename it to `path`.

    The modes follow the umask; an error (or an interrupt) inside `write` leaves no file behind.
    """
    directory = os.path.dirname(os.path.abspath(path))
    handle, temp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        make_private_temp_public(temp_path)
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_path, path)
    finally:
        if os.path.exists(temp_path):
            os.remove(temp_path)


def atomic_write_json(path: str, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


def atomic_save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez_compressed` of `arrays`, written straight into the temporary file (`atomic_write_with`).

    Not through a buffer in memory: at 224x224 a run's arrays are GBs, and a buffer and its copy held two
    more compressed copies of them (BENCHMARKS.md, "Real networks").
    """
    atomic_write_with(path, lambda file: np.savez_compressed(file, **arrays))


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
