"""Runs many invocations of one of the package's commands with one TensorFlow import: forks after the import.

    python forked_commands.py CASES.json   (CASES.json: {"program": "/venv/bin/oipgraph", "cases": [[ARG, ...], ...]})

With "prelude": MODULE in CASES.json, that module of tests/ is imported after the command's, before the first
fork: a test's stand-in for a part of the command (tests/silent_command.py), in every case.

Most of what a bad invocation of a command costs is importing TensorFlow (about 4 s of CPU each), which is
the same for every invocation. This script imports what the command imports, the way the command does it
(`oipgraph/__init__.py`: TF_CPP_MIN_LOG_LEVEL=3 and TensorFlow's load log sent to /dev/null, unless the user
set a log level; TensorFlow's Python logger at ERROR), but runs no TensorFlow op, so TensorFlow has started
none of its threads yet (the only other thread is OpenBLAS's idle worker, which handles fork) and forking is
safe. Each child then does what the command does from there on, in a fresh copy of that state: it starts
TensorFlow's runtime with oipgraph's own quiet start-up (`oipgraph._import_tensorflow_quietly`), runs the
console script's entry point with its arguments as `sys.argv`, and ends through `sys.exit` and the
interpreter's whole shutdown, as the console script does. Its stdout and stderr go to files. What the shared
import wrote is prepended to every case's output, so a line that the import printed counts for every case,
as it would in the command. The imported objects are frozen (`gc.freeze`) before the first fork, so that
the children do not copy their memory pages.

Prints one JSON line: a list with `{"returncode", "stdout", "stderr", "cpu_seconds"}` per case, in order.
A case that runs longer than `timeout` seconds (default 300) is killed and reported with returncode null.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from importlib import metadata

import oipgraph  # As in the command: oipgraph first (it chooses TensorFlow's kernels), before TensorFlow.

PARALLEL = 2  # Cases at a time, unless the request says "parallel".


@contextlib.contextmanager
def captured(fd: int, path: str):
    """Points `fd` at the file `path` (created or emptied) until the block ends."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(fd)
    redirect(fd, path)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved, fd)
        os.close(saved)


def redirect(fd: int, path: str) -> None:
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(target, fd)
    os.close(target)


def import_like_the_command(entry_point: metadata.EntryPoint, quiet: bool, scratch: str):
    """Imports TensorFlow as `oipgraph/__init__.py` does for a command, without running an op, then the entry
    point's module. Returns the entry point and what the imports wrote to stdout and to stderr."""
    out, tf_err, err = (os.path.join(scratch, name) for name in ("import.out", "import_tf.err", "import.err"))
    if quiet:
        # This script is its own child process (helpers.run_forked), never imported by a test: it sets the
        # variable for itself and its forks, as `oipgraph/__init__.py` does in the command's own process.
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with captured(1, out):
        with captured(2, os.devnull if quiet else tf_err):
            import tensorflow as tf  # The part of the import that the command hides.

            if quiet:
                tf.get_logger().setLevel("ERROR")
        with captured(2, err):
            main = entry_point.load()
    return main, read(out), read(tf_err) + read(err)


def read(path: str) -> str:
    if not os.path.exists(path):
        return ""
    with open(path) as file:
        return file.read()


def run_child(program: str, args: list[str], out_path: str, err_path: str, main) -> None:
    """In the forked child: the command from its runtime start-up to its exit. Never returns."""
    redirect(1, out_path)
    redirect(2, err_path)
    sys.argv = [program, *args]
    if not oipgraph._user_wants_tensorflow_logs(sys.argv):
        oipgraph._import_tensorflow_quietly()
    sys.exit(main())  # As the console script ends: SystemExit through the interpreter's shutdown.


def main() -> None:
    with open(sys.argv[1]) as file:
        request = json.load(file)
    program, cases, timeout = request["program"], request["cases"], request.get("timeout", 300)
    parallel = request.get("parallel", PARALLEL)
    name = os.path.basename(program)
    if name not in oipgraph.COMMANDS:
        sys.exit(f"forked_commands: {name} is not one of {sorted(oipgraph.COMMANDS)}")
    [entry_point] = metadata.entry_points(group="console_scripts", name=name)
    # The command decides at its import whether TensorFlow starts quietly: the same for every case here.
    quiet = {not oipgraph._user_wants_tensorflow_logs([program, *args]) for args in cases}
    if len(quiet) != 1:
        sys.exit("forked_commands: some cases ask for TensorFlow's logs (--verbosity, -v) and some do not")
    scratch = tempfile.mkdtemp(prefix="forked_commands_")
    main_function, import_out, import_err = import_like_the_command(entry_point, quiet.pop(), scratch)
    if request.get("prelude"):
        importlib.import_module(request["prelude"])
    # The imported objects stay out of the children's garbage collections (gc.freeze's documented use before
    # fork): otherwise each child's collections and shutdown touch, and so copy, all of their memory pages
    # (about 0.8 s of CPU per child). The child still ends through the interpreter's whole shutdown.
    gc.freeze()
    results: list[dict | None] = [None] * len(cases)
    running: dict[int, tuple[int, float]] = {}  # pid: (case, start)
    pending = list(range(len(cases)))

    def paths(case: int) -> tuple[str, str]:
        return os.path.join(scratch, f"{case}.out"), os.path.join(scratch, f"{case}.err")

    def collect(pid: int, status: int | None, usage: resource.struct_rusage) -> None:
        case, _ = running.pop(pid)
        out_path, err_path = paths(case)
        stdout, stderr = read(out_path), read(err_path)
        code = None if status is None else os.waitstatus_to_exitcode(status)
        results[case] = {
            "returncode": code,
            "stdout": import_out + stdout,
            "stderr": import_err + stderr,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
        }

    while pending or running:
        while pending and len(running) < parallel:
            case = pending.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                run_child(program, cases[case], *paths(case), main_function)
            running[pid] = (case, time.monotonic())
        pid, status, usage = os.wait4(-1, os.WNOHANG)
        if pid:
            collect(pid, status, usage)
            continue
        for pid, (_, started) in list(running.items()):
            if time.monotonic() - started > timeout:
                os.kill(pid, 9)
                collect(pid, None, os.wait4(pid, 0)[2])
        time.sleep(0.01)
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
