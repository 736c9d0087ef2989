"""Peak memory of writing a layer's outputs from its saved groups: a deep layer's 512 maps at 224 x 224.

Writing is the last phase of `oipgraph` (`cli.main.write_run`: `RunProgress.load_run`, then
`outputs.write_outputs`). This benchmark makes a synthetic `.progress/` of `--maps` maps at
`--image_size` (groups of `--group_maps` maps, as a run saves them; images uniform noise in [0, 255], which
compresses about as badly as real OIPs), then writes the outputs from it in a child process per code tree
(`--code`: folders holding an `oipgraph` package, e.g. a `git worktree` of an older commit; the current tree by
default), and reports each child's peak RSS (its VmHWM) and wall time. Rounds alternate the trees.

    git worktree add /tmp/before <commit>
    python benchmarks/write_memory_benchmark.py --code=/tmp/before,. --rounds=1

Needs about 3x the images' bytes of disk in `--work_dir` (the saved groups, the staged arrays, `oips.npz`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
from absl import app, flags
from machine import machine_description

FLAGS = flags.FLAGS
flags.DEFINE_integer("maps", 512, "Maps of the synthetic run (one init each).")
flags.DEFINE_integer("image_size", 224, "Height and width of its RGB images.")
flags.DEFINE_integer("group_maps", 64, "Maps per saved group (the command's default chunk at 224 x 224).")
flags.DEFINE_integer("steps", 10, "Length of each pair's loss history.")
flags.DEFINE_list("code", ["."], "Code trees to compare (folders with an `oipgraph` package).")
flags.DEFINE_integer("rounds", 1, "Alternated rounds over --code.")
flags.DEFINE_string("work_dir", None, "Where the synthetic run goes (default: a temporary folder).")

SNAPSHOTS = 8
# The child: what `cli.main.write_run` does after the ascent (old trees: load_run returned a dict).
CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    from oipgraph.ascent.domain import ValueRange
    from oipgraph.outputs import write_outputs
    from oipgraph.outputs.run_progress import RunProgress
    source, out, maps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pairs = RunProgress(source).load_run(list(range(maps)))
    small = pairs if isinstance(pairs, dict) else pairs.small
    small["fired"] = small["loss"] > 0
    header = {"seed": 0, "command": "oipgraph --maps=all"}
    write_outputs(out, out + "/tensorboard", "run", pairs, 1, header, ValueRange(0.0, 255.0))
    with open("/proc/self/status") as status:
        print([line.split()[1] for line in status if line.startswith("VmHWM:")][0])
    """
)


def make_run(folder: str) -> float:
    """Writes the synthetic `.progress/` groups into `folder`; returns the images' GiB."""
    os.makedirs(os.path.join(folder, ".progress"))
    size, rng = FLAGS.image_size, np.random.default_rng(0)
    for group, begin in enumerate(range(0, FLAGS.maps, FLAGS.group_maps)):
        count = min(FLAGS.group_maps, FLAGS.maps - begin)
        arrays = {
            "map_index": np.arange(begin, begin + count, dtype=np.int32),
            "init_index": np.zeros(count, np.int32),
            "images": rng.uniform(0, 255, [count, size, size, 3]).astype(np.float32),
            "start_images": rng.uniform(0, 255, [count, size, size, 3]).astype(np.float32),
            "snapshots": rng.uniform(0, 255, [count, SNAPSHOTS, size, size, 3]).astype(np.float32),
            "snapshot_steps": np.tile(np.arange(SNAPSHOTS, dtype=np.int32), [count, 1]),
            "loss": rng.uniform(1, 2, count).astype(np.float32),
            "loss_history": rng.uniform(0, 1, [count, FLAGS.steps]).astype(np.float32),
            "steps_run": np.full(count, FLAGS.steps, np.int32),
            "status": np.zeros(count, np.int32),
            "seed_stream": np.arange(begin, begin + count, dtype=np.int64),
            "strategy": np.array(["random"] * count),
        }
        np.savez_compressed(os.path.join(folder, ".progress", f"maps_{group:05d}.npz"), **arrays)
    return FLAGS.maps * (2 + SNAPSHOTS) * size * size * 3 * 4 / 2**30


def write_once(code: str, source: str, out: str) -> tuple[float, float]:
    """Writes the outputs with the `oipgraph` of `code` in a child: (peak RSS GiB, wall seconds)."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    env = {**os.environ, "PYTHONPATH": os.path.abspath(code), "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-c", CHILD, source, out, str(FLAGS.maps)], env=env, stdout=subprocess.PIPE, check=True
    )
    # The child's own high-water mark (VmHWM, KiB): `ru_maxrss` of a child starts at its parent's peak, which
    # here held the synthetic groups while making them.
    return int(child.stdout.split()[-1]) / 2**20, time.monotonic() - started


def main(argv: list[str]) -> None:
    del argv
    work = FLAGS.work_dir or tempfile.mkdtemp(prefix="write_memory_")
    print(machine_description())
    print(time.strftime("%Y-%m-%d %H:%M"))
    source = os.path.join(work, "run")
    if not os.path.isdir(os.path.join(source, ".progress")):
        gib = make_run(source)
        print(f"synthetic run: {FLAGS.maps} maps at {FLAGS.image_size}x{FLAGS.image_size}, {gib:.2f} GiB of images")
    for round_index in range(FLAGS.rounds):
        for code in FLAGS.code:
            rss, seconds = write_once(code, source, os.path.join(work, "out"))
            print(f"round {round_index}: {code}: peak RSS {rss:.2f} GiB, {seconds:.0f} s", flush=True)
    if FLAGS.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
