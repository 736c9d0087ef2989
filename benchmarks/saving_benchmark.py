"""What saving every final map at once costs: the shipped model's 128 maps through `oipgraph`, saves timed.

Runs the command in this process (`oipgraph.cli.main`, the default `auto` on all 128 maps of the shipped
CNN's default layer) with `RunProgress.save_group` wrapped in a timer, and reports the groups it saved,
their seconds and their share of the run's wall time. Then, on the run's own pairs, the two ends of the
range: one group of all 128 maps (what saving per chunk cost before issue 26) and 128 groups of one map
(the most a strategy could ask for), each an atomic compressed write (`catalog.atomic_save_npz`: a
temporary file, fsync, rename).

    python benchmarks/saving_benchmark.py [--run_steps=600] [--save_rounds=3]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags
from machine import machine_description

from oipgraph.outputs import run_progress
from oipgraph.outputs.catalog import atomic_save_npz

FLAGS = flags.FLAGS
flags.DEFINE_integer("run_steps", 600, "--steps of the run.")
flags.DEFINE_integer(
    "save_rounds", 3, "Rounds of the one-group and per-map saves (alternated; the median is reported)."
)


def timed_run(out: str, steps: int) -> tuple[float, list[tuple[float, int]], dict[str, np.ndarray]]:
    """Runs `oipgraph --maps=all` into `out`; returns wall seconds, (seconds, maps) per saved group, the groups."""
    from oipgraph.cli import main as cli_main  # Defines the command's flags: imported after this script's.

    original = run_progress.RunProgress.save_group
    saves, groups = [], []

    def save_group(self, arrays):
        started = time.perf_counter()
        original(self, arrays)
        saves.append((time.perf_counter() - started, len(np.unique(arrays["map_index"]))))
        groups.append(arrays)

    run_progress.RunProgress.save_group = save_group
    argv = [sys.argv[0], "--maps=all", f"--steps={steps}", "--dataset=", f"--out={out}"]
    started = time.perf_counter()
    try:
        FLAGS.unparse_flags()
        FLAGS(argv)
        cli_main.main(argv)
    finally:
        run_progress.RunProgress.save_group = original
    pairs = {key: np.concatenate([group[key] for group in groups]) for key in groups[0]}
    return time.perf_counter() - started, saves, pairs


def save_seconds(pairs: dict[str, np.ndarray], maps_per_group: int, folder: str) -> float:
    """Seconds to save `pairs` as atomic groups of `maps_per_group` maps (one pair per map)."""
    started = time.perf_counter()
    for group, begin in enumerate(range(0, len(pairs["map_index"]), maps_per_group)):
        part = {key: value[begin : begin + maps_per_group] for key, value in pairs.items()}
        atomic_save_npz(os.path.join(folder, f"maps_{group:05d}.npz"), part)
    return time.perf_counter() - started


def main(argv: list[str]) -> None:
    del argv
    print(machine_description())
    print(time.strftime("%Y-%m-%d %H:%M"))
    root = tempfile.mkdtemp(prefix="saving_")
    rounds = FLAGS.save_rounds  # Read before the run parses the command's flags anew.
    wall, saves, pairs = timed_run(os.path.join(root, "run"), FLAGS.run_steps)
    seconds = sum(second for second, _ in saves)
    megabytes = sum(value.nbytes for value in pairs.values()) / 2**20
    print(
        f"run: {wall:.1f} s wall, {len(saves)} groups ({[maps for _, maps in saves]} maps), saving {seconds:.3f} s"
        f" = {100 * seconds / wall:.2f} % of the wall time; {megabytes:.1f} MiB of pair arrays"
    )
    timings = {1: [], len(pairs["map_index"]): []}
    for round_index in range(rounds):
        for maps_per_group in sorted(timings, reverse=bool(round_index % 2)):
            folder = tempfile.mkdtemp(dir=root)
            timings[maps_per_group].append(save_seconds(pairs, maps_per_group, folder))
    for maps_per_group, values in sorted(timings.items(), reverse=True):
        groups = -(-len(pairs["map_index"]) // maps_per_group)
        print(
            f"{groups} group(s) of {maps_per_group} map(s): median {np.median(values):.3f} s"
            f" ({', '.join(f'{value:.3f}' for value in values)}) = {100 * np.median(values) / wall:.2f} % of the run"
        )


if __name__ == "__main__":
    app.run(main)
