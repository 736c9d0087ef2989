"""Export time and size of the OIP SavedModel (`oipgraph-export`).

Run:
    python benchmarks/export_benchmark.py [--model=FILE.keras] [--repeats=3] [--steps=100]

Prints the time to build the servable module (one ascent per conv layer, all
signatures traced) and to write it, for a first export in a fresh process and
the median of the repeats after it (new modules, so every repeat traces
again), then the SavedModel's size on disk, its load time with plain
`tf.saved_model.load`, and one `serving_default` call.
"""

from __future__ import annotations

# First: importing oipgraph turns on TensorFlow's oneDNN kernels, which TensorFlow reads when it loads.
import oipgraph  # noqa: F401

# isort: split
import os
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags
from oipgraph.export import export_savedmodel

from oipgraph import starts
from oipgraph.model import load_model

# --model (default: the shipped MNIST CNN) is oipgraph-export's flag, defined on import.
FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 3, "Exports timed after the first one.", lower_bound=0)
flags.DEFINE_integer("steps", 100, "Ascent steps of the timed serving_default call.", lower_bound=1)


def timed_export(model, export_dir: str) -> tuple[float, float, str]:
    """Builds and writes one export; returns (build seconds, write seconds, version path)."""
    started = time.perf_counter()
    servable = export_savedmodel.OIPServable(model)  # Traces every signature; the save reuses the traces.
    built = time.perf_counter()
    path = export_savedmodel.write_savedmodel(servable, export_dir)
    return built - started, time.perf_counter() - built, path


def size_report(path: str) -> list[tuple[str, int]]:
    """Sizes in bytes: the whole version directory, saved_model.pb and the variables."""
    return [
        ("total", export_savedmodel.directory_size(path)),
        ("saved_model.pb", os.path.getsize(os.path.join(path, "saved_model.pb"))),
        ("variables/", export_savedmodel.directory_size(os.path.join(path, "variables"))),
    ]


def main(argv: list[str]) -> None:
    del argv
    model = load_model(FLAGS.model)
    with tempfile.TemporaryDirectory(prefix="export_benchmark_") as export_dir:
        runs = [timed_export(model, export_dir) for _ in range(1 + FLAGS.repeats)]
        first_build, first_write, path = runs[0]
        print(f"model: {FLAGS.model or 'shipped MNIST CNN'}")
        print(
            f"first export:  {first_build + first_write:6.2f} s  (build+trace {first_build:.2f} s, save "
            f"{first_write:.2f} s)"
        )
        if FLAGS.repeats:
            totals = [build + write for build, write, _ in runs[1:]]
            builds = [build for build, _, _ in runs[1:]]
            writes = [write for _, write, _ in runs[1:]]
            print(
                f"median export: {statistics.median(totals):6.2f} s  (build+trace {statistics.median(builds):.2f} s, "
                f"save {statistics.median(writes):.2f} s; {FLAGS.repeats} repeats)"
            )
        for name, size in size_report(path):
            print(f"size {name:15s} {size / 2**20:7.2f} MiB ({size} bytes)")

        started = time.perf_counter()
        loaded = tf.saved_model.load(path)
        print(f"load:          {time.perf_counter() - started:6.2f} s  ({len(loaded.signatures)} signatures)")
        serve = loaded.signatures[export_savedmodel.SERVING_DEFAULT]
        image_shape = tuple(model.inputs[0].shape[1:])
        images = tf.constant(starts.multiscale(starts.start_seeds(0, [0]), image_shape))
        arguments = dict(
            images=images, map_index=tf.constant([0]), steps=tf.constant(FLAGS.steps), epsilon=tf.constant(0.01)
        )
        serve(**arguments)  # The first call builds the executor.
        started = time.perf_counter()
        outputs = serve(**arguments)
        elapsed = time.perf_counter() - started
        print(
            f"serving_default, 1 image, {FLAGS.steps} steps: {elapsed * 1000:.0f} ms (steps run "
            f"{int(np.asarray(outputs['steps_run'])[0])})"
        )


if __name__ == "__main__":
    app.run(main)
