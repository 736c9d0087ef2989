"""Start-up: what AutoGraph's source conversion costs a short `oipgraph` run.

Runs `oipgraph --maps=0-1 --steps=2` (the shipped model) in child processes, alternating the package as it is
(every `tf.function` with `autograph=False`) and the same with AutoGraph forced on (`tf.function` patched to
`autograph=True` before the package is imported), and prints per run the wall time after the imports and the
child's CPU time (`getrusage`). Example:

    python benchmarks/startup_benchmark.py --rounds=3
"""

from __future__ import annotations

import subprocess
import sys
import tempfile

from absl import app, flags
from machine import machine_description

FLAGS = flags.FLAGS
flags.DEFINE_integer("rounds", 3, "Alternated rounds (AutoGraph on, then off).")

CHILD = """
import resource, sys, time
import tensorflow as tf
if sys.argv[1] == "on":
    plain = tf.function
    tf.function = lambda *args, **kwargs: plain(*args, **{**kwargs, "autograph": True})
from oipgraph.cli import main
sys.argv = ["oipgraph", *sys.argv[2:]]
started = time.perf_counter()
try:
    main.run()
except SystemExit as done:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    seconds = time.perf_counter() - started
    print(f"RESULT {done.code} {seconds:.2f} {usage.ru_utime + usage.ru_stime:.2f}", file=sys.stderr)
"""


def run(mode: str, out: str) -> tuple[float, float]:
    """(wall seconds after the imports, CPU seconds) of one child run with AutoGraph `mode` ("on" or "off")."""
    command = [sys.executable, "-c", CHILD, mode, "--maps=0-1", "--steps=2", "--dataset=", f"--out={out}"]
    done = subprocess.run([*command, "--overwrite"], capture_output=True, text=True, check=True)
    [line] = [line for line in done.stderr.splitlines() if line.startswith("RESULT ")]
    code, wall, cpu = line.split()[1:]
    if code not in ("None", "0"):
        raise RuntimeError(f"oipgraph exited with {code}: {done.stderr[-2000:]}")
    return float(wall), float(cpu)


def main(argv: list[str]) -> None:
    del argv
    print(machine_description())
    with tempfile.TemporaryDirectory(prefix="startup_") as root:
        for round_index in range(FLAGS.rounds):
            for mode in ("on", "off"):
                wall, cpu = run(mode, f"{root}/{mode}")
                print(f"round {round_index + 1}, AutoGraph {mode}: {wall:.2f} s after the imports, {cpu:.2f} s CPU")


if __name__ == "__main__":
    app.run(main)
