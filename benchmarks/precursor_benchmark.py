"""Times the precursor scan against the plain chunked ascent, and checks the halving.

Usage:
    python benchmarks/precursor_benchmark.py                       # map 0 of Conv2D_3
    python benchmarks/precursor_benchmark.py --map=46 --chunk_size=256
    python benchmarks/precursor_benchmark.py --validate_maps=0-127 --skip_plain

The fast path is `PrecursorScan.scan` (one graph: sliced one-channel kernel,
dead starts dropped, successive halving). The plain approach scores every
pattern with `OIPAscent.optimize` (full layer, all `scan_steps` steps, batches
of `--plain_batch`) and takes the top N. Both run in this process on the same
machine; wall and process CPU seconds are printed because on a shared box the
wall time depends on what else runs.

`--validate_maps` compares the default scan with the exhaustive one
(`halving_steps=0`, every pattern gets every step) map by map and exits with
code 1 if any top-N differs.
"""

from __future__ import annotations

# First: importing oipgraph turns on TensorFlow's oneDNN kernels, which TensorFlow reads when it loads.
import oipgraph  # noqa: F401

# isort: split
import resource
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from oipgraph.ascent import DEFAULT_EPSILON, OIPAscent
from oipgraph.strategies import parse_maps
from oipgraph.strategies.precursor import PrecursorScan
from oipgraph.strategies.precursor_run import DEFAULT_SCAN_STEPS, DEFAULT_TOP_N

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Keras model file; default: the shipped MNIST CNN.")
flags.DEFINE_string("layer", "Conv2D_3", "Layer whose map is scanned.")
flags.DEFINE_integer("map", 0, "Map index to time.")
flags.DEFINE_integer("scan_steps", DEFAULT_SCAN_STEPS, "Ascent steps per pattern.")
flags.DEFINE_integer("top_n", DEFAULT_TOP_N, "Best patterns returned.")
flags.DEFINE_integer("chunk_size", None, "Patterns per chunk; default: PrecursorScan's choice.")
flags.DEFINE_integer("repeats", 1, "Timed repetitions of the fast scan (the best is reported).")
flags.DEFINE_integer("plain_batch", 1024, "Batch size of the plain chunked ascent.")
flags.DEFINE_boolean("skip_plain", False, "Do not time the plain approach.")
flags.DEFINE_boolean(
    "breakdown", True, "Also time the exhaustive scan (sliced kernel and dead-start dropping, no halving)."
)
flags.DEFINE_string("validate_maps", "", "Maps to check halving == exhaustive, e.g. '0-127' or '0,5,9'.")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn):
    wall, cpu = time.perf_counter(), cpu_seconds()
    value = fn()
    return value, time.perf_counter() - wall, cpu_seconds() - cpu


def plain_scan(ascent: OIPAscent, scan: PrecursorScan, map_index: int, scan_steps: int, top_n: int, batch: int):
    """Top-N by the plain approach: every pattern, all steps, the full layer, `OIPAscent.optimize`."""
    losses = []
    for begin in range(0, scan.num_patterns, batch):
        images = scan.patterns(tf.range(begin, min(begin + batch, scan.num_patterns)))
        maps = tf.fill([tf.shape(images)[0]], map_index)
        result = ascent.optimize(images, maps, tf.constant(scan_steps), tf.constant(DEFAULT_EPSILON), tf.constant(0.0))
        losses.append(result["loss"])
    top = tf.math.top_k(tf.concat(losses, axis=0), k=top_n)
    return top.values.numpy(), top.indices.numpy()


def validate(ascent: OIPAscent, maps: list[int]) -> bool:
    fast = PrecursorScan(ascent, chunk_size=FLAGS.chunk_size)
    exhaustive = PrecursorScan(ascent, chunk_size=FLAGS.chunk_size, halving_steps=0)
    all_equal = True
    for map_index in maps:
        got, fast_wall, _ = timed(lambda: fast.scan(map_index, FLAGS.scan_steps, FLAGS.top_n))
        want, full_wall, _ = timed(lambda: exhaustive.scan(map_index, FLAGS.scan_steps, FLAGS.top_n))
        same = np.array_equal(got["pattern_index"].numpy(), want["pattern_index"].numpy())
        same &= np.array_equal(got["scores"].numpy(), want["scores"].numpy())
        all_equal &= bool(same)
        print(
            f"validate map {map_index:4d}: {'same' if same else 'DIFFERENT'} top-{FLAGS.top_n}"
            f" (best {want['scores'].numpy()[0]:.4f}; halving {fast_wall:.1f} s, exhaustive {full_wall:.1f} s)",
            flush=True,
        )
        if not same:
            print(f"  halving:    {got['pattern_index'].numpy()} {got['scores'].numpy()}")
            print(f"  exhaustive: {want['pattern_index'].numpy()} {want['scores'].numpy()}")
    print(f"validated {len(maps)} maps: {'all top-N equal' if all_equal else 'MISMATCHES'}")
    return all_equal


def main(argv: list[str]) -> None:
    del argv
    ascent = OIPAscent.from_file(FLAGS.model, FLAGS.layer)
    if FLAGS.validate_maps:
        if not validate(ascent, parse_maps(FLAGS.validate_maps, ascent.num_maps, FLAGS.layer)):
            raise SystemExit(1)
        return
    scan = PrecursorScan(ascent, chunk_size=FLAGS.chunk_size)
    map_index = tf.constant(FLAGS.map)
    print(
        f"{FLAGS.layer} map {FLAGS.map}: {scan.num_patterns} patterns ({scan.grid}x{scan.grid}, values {scan.values}),"
        f" {FLAGS.scan_steps} scan steps, top {FLAGS.top_n}, chunk {scan.chunk_size}, sliced kernel "
        f"{scan.ascent.objective.shared_sliced}"
    )
    _, trace_wall, _ = timed(lambda: scan.scan.get_concrete_function())
    print(f"trace scan graph: {trace_wall:.1f} s")
    runs = [timed(lambda: scan.scan(map_index, FLAGS.scan_steps, FLAGS.top_n)) for _ in range(FLAGS.repeats)]
    fast, fast_wall, fast_cpu = min(runs, key=lambda run: run[1])
    print(f"fast scan (PrecursorScan.scan): {fast_wall:.1f} s wall, {fast_cpu:.1f} s CPU")
    print(f"  top {FLAGS.top_n}: {fast['pattern_index'].numpy()} scores {np.round(fast['scores'].numpy(), 4)}")
    if FLAGS.breakdown:
        exhaustive = PrecursorScan(ascent, chunk_size=FLAGS.chunk_size, halving_steps=0)
        exhaustive.scan.get_concrete_function()
        full, full_wall, full_cpu = timed(lambda: exhaustive.scan(map_index, FLAGS.scan_steps, FLAGS.top_n))
        same = np.array_equal(full["pattern_index"].numpy(), fast["pattern_index"].numpy())
        print(
            f"exhaustive scan (sliced kernel, dead starts dropped, no halving): {full_wall:.1f} s wall, "
            f"{full_cpu:.1f} s CPU; same top-{FLAGS.top_n}: {same}"
        )
    print(
        f"peak memory (max RSS of this process so far): "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    )
    if FLAGS.skip_plain:
        return
    (plain_scores, plain_index), plain_wall, plain_cpu = timed(
        lambda: plain_scan(ascent, scan, FLAGS.map, FLAGS.scan_steps, FLAGS.top_n, FLAGS.plain_batch)
    )
    print(
        f"plain chunked ascent (OIPAscent.optimize, batch {FLAGS.plain_batch}): {plain_wall:.1f} s wall, "
        f"{plain_cpu:.1f} s CPU"
    )
    print(f"  top {FLAGS.top_n}: {plain_index} scores {np.round(plain_scores, 4)}")
    same = np.array_equal(plain_index, fast["pattern_index"].numpy())
    print(
        f"same top-{FLAGS.top_n} patterns: {same}; max score difference "
        f"{np.max(np.abs(plain_scores - fast['scores'].numpy())):.2e}"
    )
    print(f"speed-up: {plain_wall / fast_wall:.1f}x wall, {plain_cpu / max(fast_cpu, 1e-9):.1f}x CPU")


if __name__ == "__main__":
    app.run(main)
