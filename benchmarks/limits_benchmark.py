"""Peak memory of the largest requests that `oipgraph.core.limits` allows, on the shipped model's SavedModel.

Exports the shipped model once, then runs each request in a fresh process that loads the SavedModel
with plain TensorFlow (as TF Serving would) and reports its peak RSS after loading and after the
request (`ru_maxrss`). The requests:

- `optimize, 4096 x 4096, dead map`: serving_default with the largest batch (4096 pairs) and the most
  steps that batch may take (4096: batch x steps = 2^24). The map (3 of Conv2D_3) never fires for
  random starts, so every pair stops after 11 steps and the run is short, but the outputs are full
  size: loss_history [4096, 4096] is assembled from the history and the final losses.
- `optimize, 4096 x 16, live map`: the largest batch on a map that fires (map 0), a few steps: the
  activations and gradients of 4096 pairs in one step, plus snapshots [4096, 8, 28, 28, 1].
- The two together bound the largest allowed ascent request: a run of 4096 live pairs for 4096 steps
  (an hour of compute) holds at most both peaks' growth at once (its history grows to the same
  64 MiB while the step's activations come and go).
- `initial_images, 4096`, `precursor, top_n 1024` (the exhaustive scan of all 19,683 patterns;
  scan_steps only adds time, not memory: the scan is chunked).

Usage: python benchmarks/limits_benchmark.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, resource, sys, time
import tensorflow as tf

path, signature, arguments = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
loaded = tf.saved_model.load(path)
function = loaded.signatures[signature]
loaded_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
tensors = {}
for name, value in arguments.items():
    if name == "images":
        starts = loaded.signatures["initial_images"]
        tensors[name] = starts(seed=tf.constant(0, tf.int64), batch=tf.constant(value))["images"]
    else:
        tensors[name] = tf.constant(value[0], value[1])
started = time.perf_counter()
outputs = function(**tensors)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
shapes = {key: list(value.shape) for key, value in outputs.items()}
print(json.dumps({"loaded_gib": loaded_peak, "peak_gib": peak, "seconds": seconds, "shapes": shapes}))
"""

REQUESTS = {
    "optimize, 4096 x 4096, dead map": (
        "serving_default",
        {"images": 4096, "map_index": [[3] * 4096, "int32"], "steps": [4096, "int32"], "epsilon": [0.01, "float32"]},
    ),
    "optimize, 4096 x 16, live map": (
        "serving_default",
        {"images": 4096, "map_index": [[0] * 4096, "int32"], "steps": [16, "int32"], "epsilon": [0.01, "float32"]},
    ),
    "initial_images, 4096": ("initial_images", {"seed": [0, "int64"], "batch": [4096, "int32"]}),
    "precursor, top_n 1024, scan_steps 2": (
        "precursor_Conv2D_3",
        {"map_index": [0, "int32"], "scan_steps": [2, "int32"], "top_n": [1024, "int32"]},
    ),
}


def main() -> None:
    from oipgraph.export import export_savedmodel

    with tempfile.TemporaryDirectory() as root:
        path = export_savedmodel.export(None, os.path.join(root, "export"))
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {time.ctime()}")
        for name, (signature, arguments) in REQUESTS.items():
            child = subprocess.run(
                [sys.executable, "-c", CHILD, path, signature, json.dumps(arguments)],
                capture_output=True,
                text=True,
                check=False,
            )
            if child.returncode != 0:
                print(f"{name}: failed\n{child.stderr[-3000:]}")
                continue
            report = json.loads(child.stdout.strip().splitlines()[-1])
            print(
                f"{name}: peak RSS {report['peak_gib']:.2f} GiB (after loading {report['loaded_gib']:.2f} GiB,"
                f" growth {report['peak_gib'] - report['loaded_gib']:.2f} GiB), {report['seconds']:.1f} s,"
                f" outputs {report['shapes']}"
            )


if __name__ == "__main__":
    main()
