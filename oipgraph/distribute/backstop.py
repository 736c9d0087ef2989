"""The chief's backstop for a worker that goes silent while TensorFlow holds Python's GIL.

Once the chief is connected to a cluster, every function its TensorFlow context defines (the first
`ClusterCoordinator.schedule` of a tf.function, but also any trace, even of a function that runs only here)
is registered on every worker, and TensorFlow waits for their answers inside a C++ call that holds the GIL
(benchmarks/registration_experiment.py: 11.0 s for a worker stopped 11 s, during which a Python thread
ticking every 0.2 s ticked at most twice). A silent worker then holds the chief, and `cluster.WorkerWatch`
with it. Two pieces that need no GIL end such a run with the one line and exit code 2:

- The dead man's timer (`DeadMansTimer`): a POSIX timer of the chief (`timer_create` through ctypes,
  `SIGEV_THREAD`) whose expiry calls the C library's `_exit(2)` from a thread of its own. A Python thread
  pushes it back every `BEAT_SECONDS`: it expires only once Python has been held for `hold_seconds` (the
  worker timeout + the watch's grace, at least the watchdog's probing time, + `MARGIN_SECONDS`).
- The watchdog: this file run as a script (no TensorFlow), fed the same beats through a pipe. When they stop
  it probes every task as a gRPC client starts (a TCP connection and HTTP/2's preface: a server answers with
  its settings at once, a stopped process never, a dead one refuses); once the chief has been held for the
  timeout + the grace it writes the line naming the silent task and says so through a second pipe (a chief
  free again ends at its next beat, exit code 2); the timer ends a held one. Without such a timer (not
  Linux) the watchdog ends the chief with SIGKILL (exit code 137).

Connecting waits for every task too, with the GIL free but before `cluster.WorkerWatch` runs (12.0 s for a
worker stopped 12 s): `Backstop.waiting` stops the beats around it. Every map is saved as soon as it is
final, so a run ended here loses only the pairs in flight, which `--resume` computes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

__all__ = ["Backstop", "DeadMansTimer", "probe"]

BEAT_SECONDS = 1.0
# The watchdog starts probing once the beats are this late.
LATE_SECONDS = 3.0
PROBE_SECONDS = 2.0
# Seconds between the watchdog's line and the timer's expiry.
MARGIN_SECONDS = 3.0
# HTTP/2's client connection preface and an empty SETTINGS frame.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


class _Sigevent(ctypes.Structure):  # Linux's struct sigevent on 64-bit machines (64 bytes).
    _fields_ = [
        ("value", ctypes.c_void_p),
        ("signo", ctypes.c_int),
        ("notify", ctypes.c_int),
        ("function", ctypes.c_void_p),
        ("attribute", ctypes.c_void_p),
        ("pad", ctypes.c_int * 8),
    ]


class _Timespec(ctypes.Structure):
    _fields_ = [("seconds", ctypes.c_long), ("nanoseconds", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("interval", _Timespec), ("value", _Timespec)]


class DeadMansTimer:
    """A timer of this process that calls `_exit(code)` when it expires, without Python (Linux only).

    `DeadMansTimer.create(code)` is None where the C library has no such timer.
    """

    CLOCK_MONOTONIC, SIGEV_THREAD = 1, 2

    def __init__(self, libc: ctypes.CDLL, settime, timer: ctypes.c_void_p):
        self._libc, self._settime, self._timer = libc, settime, timer

    @classmethod
    def create(cls, code: int) -> DeadMansTimer | None:
        if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            create = getattr(libc, "timer_create", None)
            settime = getattr(libc, "timer_settime", None)
            if create is None or settime is None:  # glibc before 2.34: in librt.
                rt = ctypes.CDLL(ctypes.util.find_library("rt"), use_errno=True)
                create, settime = rt.timer_create, rt.timer_settime
            exit_now = ctypes.cast(libc._exit, ctypes.c_void_p).value
        except (OSError, AttributeError, TypeError):
            return None
        create.argtypes = [ctypes.c_int, ctypes.POINTER(_Sigevent), ctypes.POINTER(ctypes.c_void_p)]
        settime.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        event = _Sigevent(value=code, notify=cls.SIGEV_THREAD, function=exit_now)
        timer = ctypes.c_void_p()
        if create(cls.CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(timer)) != 0:
            return None
        return cls(libc, settime, timer)

    def arm(self, seconds: float) -> None:
        """Expires `seconds` from now (0: never), replacing the previous expiry."""
        whole = int(seconds)
        spec = _Itimerspec(value=_Timespec(whole, int((seconds - whole) * 1e9)))
        self._settime(self._timer, 0, ctypes.byref(spec), None)


class Backstop:
    """The dead man's timer, the watchdog process and the thread that feeds both (see the module docstring).

    Start it before connecting to the cluster (connecting waits for the workers too); it lasts until the
    process ends or `stop`.
    """

    def __init__(self, tasks: dict[str, str], timeout: float, grace: float):
        """Starts the watchdog for `tasks` (name, e.g. "worker 0": address) and arms the timer.

        Args:
            tasks: The tasks whose silence holds this process (its own `ps` server, if any, left out).
            timeout: `--worker_timeout`, seconds.
            grace: The seconds `cluster.WorkerWatch` gives the main thread before it ends the run itself.
        """
        line_after = max(timeout + grace, LATE_SECONDS + PROBE_SECONDS)  # The watchdog needs that long.
        self.hold_seconds = line_after + MARGIN_SECONDS
        self.timer = DeadMansTimer.create(2)
        config = {
            "names": list(tasks),
            "addresses": list(tasks.values()),
            "timeout": timeout,
            "line_after": line_after,
            "hold": self.hold_seconds,
            "chief": os.getpid(),
            "timer": self.timer is not None,
        }
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        os.set_blocking(self.process.stdout.fileno(), False)
        self._stopped, self._suspended, self._waiting = threading.Event(), False, False
        self.beat()
        threading.Thread(target=self._beat_forever, name="oipgraph-backstop", daemon=True).start()
        self._handle_suspend()

    def _handle_suspend(self) -> None:
        """Ctrl-Z (SIGTSTP) disarms the timer while the process is suspended, which otherwise would expire
        during the pause and end the process as soon as it continues. (SIGSTOP cannot be caught.)"""
        if self.timer is None or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTSTP) not in (signal.SIG_DFL, None):
            return

        def on_suspend(signum, frame):
            self._suspended = True
            self.timer.arm(0)
            signal.signal(signal.SIGTSTP, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTSTP)  # Suspended here, until SIGCONT.
            signal.signal(signal.SIGTSTP, on_suspend)
            self._suspended = False
            self.beat()

        signal.signal(signal.SIGTSTP, on_suspend)

    @contextlib.contextmanager
    def waiting(self):
        """A block in which the main thread waits for the cluster with the GIL released and nothing else
        watches the workers (connecting): it counts as held, so a silent task ends the run as above."""
        self._waiting = True
        try:
            yield
        finally:
            self._waiting = False
            self.beat()

    def beat(self) -> bool:
        """Pushes the timer back and tells the watchdog that Python runs (not inside `waiting`); True once the
        watchdog has ended the run."""
        try:
            if not self._waiting:
                if self.timer is not None and not self._suspended:
                    self.timer.arm(self.hold_seconds)
                os.write(self.process.stdin.fileno(), b".")
            return b"!" in os.read(self.process.stdout.fileno(), 64)
        except (BlockingIOError, BrokenPipeError, OSError):
            return False

    def _beat_forever(self) -> None:
        while not self._stopped.wait(BEAT_SECONDS):
            if self.beat():  # The watchdog wrote the line while Python was held; Python is free now.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(2)

    def stop(self) -> None:
        """Disarms the timer and ends the watchdog."""
        self._stopped.set()
        if self.timer is not None:
            self.timer.arm(0)
        self.process.stdin.close()
        self.process.wait()


def probe(address: str, timeout: float = PROBE_SECONDS) -> str:
    """How a gRPC server at `address` answers a new connection: `answers`, `silent` (nothing within
    `timeout` seconds: a stopped process, a lost network) or `refuses` (no process listens)."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as connection:
            connection.settimeout(timeout)
            connection.sendall(PREFACE)
            return "answers" if connection.recv(16) else "refuses"
    except TimeoutError:
        return "silent"
    except OSError:
        return "refuses"


def _probe_all(addresses: list[str]) -> list[str]:
    answers = ["answers"] * len(addresses)

    def one(index: int) -> None:
        answers[index] = probe(addresses[index])

    threads = [threading.Thread(target=one, args=(index,), daemon=True) for index in range(len(addresses))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def _line(config: dict, silent_since: list[float | None], held: float) -> str:
    silent = [index for index, since in enumerate(silent_since) if since is not None]
    if silent:
        index = min(silent, key=lambda index: silent_since[index])
        problem = (
            f"--cluster: {config['names'][index]} at {config['addresses'][index]} has not answered for"
            f" {config['timeout']:g} s (--worker_timeout; the chief waited for it inside TensorFlow)"
        )
    else:
        problem = (
            f"--cluster: the chief has waited {held:.0f} s inside TensorFlow for the workers"
            f" ({', '.join(config['addresses'])}), longer than --worker_timeout allows"
        )
    return f"oipgraph: error: {problem}; the maps saved so far stay saved, rerun with --resume to continue\n"


def _stopped(pid: int) -> bool:
    """Whether process `pid` is stopped (SIGSTOP, SIGTSTP), from Linux's /proc; False where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def watchdog(config: dict) -> None:
    """The watchdog process: reads the beats from stdin until it closes (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the chief's to handle.
    count = len(config["addresses"])
    last, silent_since, looked = time.monotonic(), [None] * count, time.monotonic()
    while True:
        if select.select([0], [], [], BEAT_SECONDS)[0]:
            if not os.read(0, 4096):
                return  # The chief has ended.
            last, silent_since = time.monotonic(), [None] * count
            continue
        now = time.monotonic()
        # A suspended chief (Ctrl-Z suspends this process too: a long gap since the last look) is not held.
        if now - looked > LATE_SECONDS + PROBE_SECONDS or _stopped(config["chief"]):
            last, silent_since = now, [None] * count
        looked = now
        if now - last < LATE_SECONDS:
            continue
        for index, answer in enumerate(_probe_all(config["addresses"])):
            silent_since[index] = (silent_since[index] or now) if answer == "silent" else None
        looked = time.monotonic()
        held = looked - last
        if held < config["line_after"]:
            continue
        try:
            os.write(2, _line(config, silent_since, held).encode())
            os.write(1, b"!")
        except OSError:  # The chief has ended meanwhile.
            return
        deadline = last + config["hold"] + (2 * BEAT_SECONDS if config["timer"] else 0.0)
        while time.monotonic() < deadline:  # The timer ends the chief (or the chief itself, if free again).
            if select.select([0], [], [], BEAT_SECONDS)[0] and not os.read(0, 4096):
                return
        os.kill(config["chief"], signal.SIGKILL)
        return


if __name__ == "__main__":
    watchdog(json.loads(sys.argv[1]))
