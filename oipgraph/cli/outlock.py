"""An exclusive lock on an output folder, so that two `oipgraph` processes never write one run at once.

The lock is `fcntl.flock` on `OUT/.lock`, taken without waiting: a second writer (a `--resume` started
while the first run still works) fails at once with one line naming the holder's process id. The
kernel drops the lock when its holder exits, however it exits, so a killed run never leaves a stale
lock. The file holds the holder's pid (for the message) and is removed when the lock is released.
"""

from __future__ import annotations

import fcntl
import os
from types import TracebackType

from oipgraph.core.errors import OIPGraphError

LOCK_FILE = ".lock"


class OutputLock:
    """`with OutputLock(out):` holds the exclusive lock on folder `out` (created if missing).

    Raises:
        OIPGraphError: another process holds the lock.
    """

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, LOCK_FILE)
        self._fd: int | None = None

    def check_free(self) -> None:
        """Fails now if another process holds the lock; creates nothing (for checks before anything is written)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            self._refuse(fd)
        os.close(fd)

    def _refuse(self, fd: int) -> None:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise OIPGraphError(
            f"--out={self.out_dir} is in use by another oipgraph process (pid {holder}); wait for it to end or"
            " choose another --out"
        )

    def acquire(self) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._refuse(fd)
            # A holder that released meanwhile removed the file we opened: lock the current one instead.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Removes the lock file, then unlocks (a waiting opener of the removed file retries)."""
        if self._fd is None:
            return
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
