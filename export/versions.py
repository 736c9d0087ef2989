"""TF Serving's version directories: their numbers, and writing a new one atomically.

TF Serving loads `EXPORT_DIR/<version>/` for numeric versions and ignores other
names. `write_version` fills a hidden temporary folder and renames it to the
version directory only when complete; the folder of an export that was killed
outright (`.tmp-oipgraph-export-<pid>-*`, its process gone) is removed by the
next export into the same directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator

from oipgraph.core.errors import OIPGraphError

TEMP_PREFIX = ".tmp-oipgraph-export-"
_VERSION_NAME = re.compile(r"[0-9]+")
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"([0-9]+)-")


def existing_versions(export_dir: str) -> list[int]:
    """The numeric version directories under `export_dir` (what TF Serving loads), sorted."""
    if not os.path.isdir(export_dir):
        return []
    return sorted(
        int(entry.name)
        for entry in os.scandir(export_dir)
        if _VERSION_NAME.fullmatch(entry.name) and entry.is_dir(follow_symlinks=True)
    )


def next_version(export_dir: str) -> int:
    """One more than the highest existing version under `export_dir`, or 1."""
    versions = existing_versions(export_dir)
    return versions[-1] + 1 if versions else 1


def check_export_dir(export_dir: str, version: int | None) -> None:
    """Checks that `export_dir` can take a new version before anything expensive runs.

    Raises:
        OIPGraphError: empty path, a path that is not a directory, a version < 1
            or an existing version directory.
    """
    if not export_dir:
        raise OIPGraphError("--export_dir must name a directory, got an empty value")
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise OIPGraphError(f"export directory is not a directory: {export_dir}")
    if version is not None:
        if isinstance(version, bool) or version < 1:
            raise OIPGraphError(f"version must be an integer >= 1, got {version!r}")
        path = os.path.join(export_dir, str(version))
        if os.path.lexists(path):
            raise OIPGraphError(f"version directory already exists: {path}")


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (so that cleanup runs) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_dirs(export_dir: str) -> list[str]:
    """Removes the temporary folders that killed exports (dead process ids) left in `export_dir`; returns them."""
    removed = []
    if not os.path.isdir(export_dir):
        return removed
    for entry in os.scandir(export_dir):
        match = _TEMP_NAME.match(entry.name)
        if match and entry.is_dir(follow_symlinks=False) and not _process_alive(int(match.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


def write_version(export_dir: str, version: int | None, write: Callable[[str], None]) -> str:
    """Creates `export_dir/<version>/` atomically: `write(path)` fills a temporary folder that is then renamed.

    The temporary folder is hidden inside `export_dir` (TF Serving ignores
    non-numeric names, and the rename stays on one file system) and renamed to
    the version directory when `write` returns, so a server polling `export_dir`
    never sees a partial version and a failed or interrupted write (an error,
    Ctrl-C, SIGTERM) leaves none behind, nor the temporary folder. Temporary
    folders of killed exports are removed first (`remove_stale_temp_dirs`).

    Args:
        export_dir: TF Serving's base path for the model; created if missing.
        version: Version number (>= 1); None for one more than the highest
            existing version, or 1.
        write: Writes the version's files into the folder it is given.

    Returns:
        The path of the new version directory.

    Raises:
        OIPGraphError: see `check_export_dir`; an existing version directory is
            never overwritten, also when one appears while `write` runs.
    """
    check_export_dir(export_dir, version)
    os.makedirs(export_dir, exist_ok=True)
    remove_stale_temp_dirs(export_dir)
    if version is None:
        version = next_version(export_dir)
    final_path = os.path.join(export_dir, str(version))
    with _sigterm_raises():
        temp_path = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=export_dir)
        try:
            # mkdtemp makes the directory private (0700); the version directory gets
            # the usual umask permissions, so a server running as another user can read it.
            os.chmod(temp_path, 0o777 & ~_umask())
            write(temp_path)
            # os.rename would silently replace an empty directory created meanwhile.
            if os.path.lexists(final_path):
                raise OIPGraphError(f"version directory already exists: {final_path}")
            try:
                os.rename(temp_path, final_path)
            except OSError as err:
                raise OIPGraphError(f"cannot create version directory {final_path}: {err.strerror}") from err
        finally:
            if os.path.isdir(temp_path):
                shutil.rmtree(temp_path, ignore_errors=True)
    return final_path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def directory_size(path: str) -> int:
    """Total size in bytes of the files under `path`."""
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)
