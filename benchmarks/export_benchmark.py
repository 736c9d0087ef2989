"""Export time, peak memory and size of the OIP SavedModel (`oipgraph-export`).

Run:
    python benchmarks/export_benchmark.py [--model=FILE.keras] [--repeats=3] [--steps=100]
    python benchmarks/export_benchmark.py --application=MobileNetV2 --image_size=96,96 \\
        --layers=block_6_expand_relu,out_relu --repeats=0

Prints the time to build the servable module (one ascent per exported layer,
all signatures traced) and to write it, for a first export in a fresh process
and the median of the repeats after it (new modules, so every repeat traces
again), the process's peak resident memory (`ru_maxrss`, which includes
loading TensorFlow and building the model), then the SavedModel's size on
disk, its load time with plain `tf.saved_model.load`, and one
`serving_default` call.

`--application=NAME` builds `keras.applications.NAME(weights=None,
include_top=False)` (random weights, no download) on `--image_size` instead of
loading `--model`. Run one configuration per process: the peak memory is the
process's. To profile where the build time goes, add `--profile=N` (prints the
N most expensive functions of the first export, from cProfile).
"""

from __future__ import annotations

# First: importing oipgraph turns on TensorFlow's oneDNN kernels, which TensorFlow reads when it loads.
import oipgraph  # noqa: F401

# isort: split
import cProfile
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from oipgraph.export import export_savedmodel, versions
from oipgraph.export.servable import SERVING_DEFAULT, OIPServable

from oipgraph import starts
from oipgraph.models import layer_lookup
from oipgraph.models.loading import load_model

# --model (default: the shipped MNIST CNN), --layers and --image_size are oipgraph-export's flags, defined on import.
FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 3, "Exports timed after the first one.", lower_bound=0)
flags.DEFINE_integer("steps", 100, "Ascent steps of the timed serving_default call.", lower_bound=1)
flags.DEFINE_string("application", None, "keras.applications model to build with random weights, e.g. MobileNetV2.")
flags.DEFINE_integer("profile", 0, "Print this many functions of the first export's cProfile (0: no profile).")


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, GiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build_model() -> keras.Model:
    """The model to export: a keras.applications model with random weights, or --model."""
    image_size = layer_lookup.parse_image_size(FLAGS.image_size)
    if FLAGS.application is None:
        return load_model(FLAGS.model, image_size)
    if image_size is None:
        raise app.UsageError("--application needs --image_size=H,W")
    constructor = getattr(keras.applications, FLAGS.application)
    return constructor(weights=None, include_top=False, input_shape=(*image_size, 3))


def timed_export(model, export_dir: str) -> tuple[float, float, str]:
    """Builds and writes one export; returns (build seconds, write seconds, version path).

    Also prints the process CPU time of the export: tracing is single-threaded Python, so on a machine
    shared with other jobs the CPU time is what the export costs on an idle one.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    servable = OIPServable(model, layers=FLAGS.layers)
    built = time.perf_counter()
    path = export_savedmodel.write_savedmodel(servable, export_dir)  # Traces every signature (once).
    finished = time.perf_counter()
    print(f"export: wall {finished - started:.2f} s, CPU {time.process_time() - cpu_started:.2f} s")
    return built - started, finished - built, path


def size_report(path: str) -> list[tuple[str, int]]:
    """Sizes in bytes: the whole version directory, saved_model.pb and the variables."""
    return [
        ("total", versions.directory_size(path)),
        ("saved_model.pb", os.path.getsize(os.path.join(path, "saved_model.pb"))),
        ("variables/", versions.directory_size(os.path.join(path, "variables"))),
    ]


def main(argv: list[str]) -> None:
    del argv
    model = build_model()
    print(f"model: {FLAGS.application or FLAGS.model or 'shipped MNIST CNN'} {tuple(model.inputs[0].shape[1:])}")
    print(
        f"cpu: {os.cpu_count()} cores visible, {len(os.sched_getaffinity(0))} usable; python {sys.version.split()[0]}"
    )
    print(f"peak memory after building the model: {peak_rss_gib():.2f} GiB")
    with tempfile.TemporaryDirectory(prefix="export_benchmark_") as export_dir:
        profiler = cProfile.Profile() if FLAGS.profile else None
        if profiler:
            profiler.enable()
        runs = [timed_export(model, export_dir)]
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(FLAGS.profile)
        first_peak = peak_rss_gib()
        runs += [timed_export(model, export_dir) for _ in range(FLAGS.repeats)]
        first_build, first_write, path = runs[0]
        print(
            f"first export:  {first_build + first_write:6.2f} s  (build+trace {first_build:.2f} s, save "
            f"{first_write:.2f} s); peak memory {first_peak:.2f} GiB"
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
        print(f"signatures: {', '.join(sorted(loaded.signatures))}")
        serve = loaded.signatures[SERVING_DEFAULT]
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
    print(f"peak memory of the whole run: {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    app.run(main)
