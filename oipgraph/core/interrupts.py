"""Ctrl-C and `kill` that stop a run between TensorFlow calls, never inside one.

Python raises `KeyboardInterrupt` wherever the main thread is when the signal
arrives. Inside TensorFlow's eager code that can crash the process: with
TensorFlow 2.21 a SIGINT that lands while `EagerTensor` converts a value ends
in a segmentation fault (2 of 30 interrupts of a loop of `starts.multiscale`),
and one that lands in a `__del__` is printed as "Exception ignored" and lost
(about 3 in 100).

Within `deferred()`, the first SIGINT (and SIGTERM, if asked) is only recorded;
`check()` raises it at the points where no TensorFlow call is under way:
between the ascent's segments (about every half second), between the precursor
scan's chunks, between the command's chunks of maps, and when the block ends.
A second signal while one is pending raises at once, as Python would have
done: a way out of a long call (tracing a large model, one compiled scan).

Example:
    with interrupts.deferred():
        for batch in batches:
            run(batch)          # a Ctrl-C here is raised...
            interrupts.check()  # ...here, as KeyboardInterrupt
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["Terminated", "check", "deferred"]

# Signal numbers received inside a `deferred` block and not raised yet (at most one).
_pending: list[int] = []


class Terminated(Exception):
    """Raised for SIGTERM inside `deferred(terminate=True)`, so that `kill` ends a run like Ctrl-C does."""


def _interruption(signum: int) -> BaseException:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _record(signum: int, frame: object) -> None:
    del frame
    if _pending:
        _pending.clear()
        raise _interruption(signum)
    _pending.append(signum)


def check() -> None:
    """Raises the pending interruption, if any: `KeyboardInterrupt` for SIGINT, `Terminated` for SIGTERM."""
    if _pending:
        raise _interruption(_pending.pop())


@contextlib.contextmanager
def deferred(terminate: bool = False) -> Iterator[None]:
    """Within the block, SIGINT (and SIGTERM if `terminate`) is raised by `check()`, not where it lands.

    A pending interruption is raised when the block ends normally. The block
    takes a signal only in the main thread and only from Python's own handling
    (the default `KeyboardInterrupt` handler for SIGINT; for SIGTERM, any
    handler: `terminate` is for a program's main function), so a handler that
    the caller installed stays in charge; nested blocks leave the signals to
    the outermost. The previous handlers are back when the block ends.

    Args:
        terminate: Also take SIGTERM, which `check()` raises as `Terminated`.
    """
    taken: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM) if terminate else (signal.SIGINT,):
            current = signal.getsignal(signum)
            if current is not _record and (signum == signal.SIGTERM or current is signal.default_int_handler):
                taken[signum] = signal.signal(signum, _record)
    try:
        yield
    except BaseException:
        if taken:
            _pending.clear()  # The block failed anyway; a stale request must not stop a later block.
        raise
    finally:
        for signum, previous in taken.items():
            signal.signal(signum, previous)
    check()
