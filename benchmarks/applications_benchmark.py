"""A user's model: image-steps per second of the compiled OIPAscent against the eager loop, and a profile.

The model is a `keras.applications` base (default MobileNetV2 at 96x96,
`include_top=False`, random weights: nothing is downloaded), the layer a
middle one (default `block_6_expand_relu`: the ReLU6 after block 6's 1x1
expansion, 12x12x192 at 96x96, with five inverted-residual blocks of
depthwise convolutions, BatchNormalization and two residual `Add`s below it;
a nonlinearity, so its maps fire or not as the articles' do). Images live in
`--input_range` (MobileNetV2 takes [-1, 1] after its `preprocess_input`,
which is not part of the model): `domain=ValueRange(-1, 1)`.

Variants, interleaved in `--rounds` rounds in one process (ratio = median over
rounds of rate / the eager loop's rate in the same round):

* eager: the articles' loop (`eager_reference.eager_loop`): one image, one
  GradientTape per step in Python, the same step and domain as the ascent;
* compiled: `OIPAscent.optimize`, the whole loop in one `tf.while_loop`, for
  each of `--batch_sizes` pairs, all on `--map_index` (which must fire on every
  start; by default the map whose weakest start fires most), convergence off,
  so every pair runs every step.

`--profile_steps` (> 0) then traces one compiled call of that many steps for
each of `--profile_batches` with `tf.profiler.experimental` and prints the
sums of op times per Keras layer class (forward, backward, and the loop's own
ops), per op type and for the costliest ops, read from the trace's XPlane.
Each op counts its time on its inter-op thread, so ops that overlap on the two
cores both count and the sum can exceed the wall time. The loop records its 8
snapshots within the profiled steps, so their share is that of a short run.

Usage:
    python benchmarks/applications_benchmark.py [--application=MobileNetV2] [--image_size=96,96]
        [--layer=block_6_expand_relu] [--batch_sizes=16,32,64] [--rounds=5] [--profile_steps=40]
"""

from __future__ import annotations

# First: importing oipgraph turns on TensorFlow's oneDNN kernels, which TensorFlow reads when it loads.
import oipgraph  # noqa: F401

# isort: split
import collections
import glob
import os
import re
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from eager_reference import eager_loop, timed
from machine import machine_description

from oipgraph import starts
from oipgraph.ascent import STATUS_NO_ACTIVATION, OIPAscent
from oipgraph.ascent.domain import parse_domain

FLAGS = flags.FLAGS
flags.DEFINE_string("application", "MobileNetV2", "A keras.applications model (include_top=False, weights=None).")
flags.DEFINE_list("image_size", ["96", "96"], "Input height and width.")
flags.DEFINE_string("layer", "block_6_expand_relu", "Layer whose map is optimized.")
flags.DEFINE_integer(
    "map_index", -1, "Map of the layer (must fire on every start); -1: the map whose weakest start fires most."
)
flags.DEFINE_string("input_range", "-1,1", "The model's input domain: LOW,HIGH or standardized.")
flags.DEFINE_list("batch_sizes", ["16", "32", "64"], "Pairs per compiled call.")
flags.DEFINE_integer("steps", 40, "Steps per timed compiled call.")
flags.DEFINE_integer("eager_steps", 30, "Steps of the timed eager loop.")
flags.DEFINE_integer("rounds", 5, "Timed rounds; each runs every variant once.")
flags.DEFINE_integer("profile_steps", 40, "Steps of the profiled compiled call (0: no profile).")
flags.DEFINE_list("profile_batches", ["16", "64"], "Pairs of each profiled compiled call.")
flags.DEFINE_integer("top_ops", 25, "Costliest ops (by name) to list in the profile.")
flags.DEFINE_integer("seed", 0, "Seed of the weights and start images.")

# Op types that only call other ops (their events span their callees' time): left out of the sums.
CALL_OP_TYPES = {"StatefulPartitionedCall", "PartitionedCall", "While", "StatelessWhile", "If", "StatelessIf"}
# TensorFlow's trace names op events "NAME:TYPE".
OP_EVENT = re.compile(r"^(?P<name>[^:]+):(?P<type>[A-Za-z0-9_]+)$")


def build_model() -> keras.Model:
    keras.utils.set_random_seed(FLAGS.seed)
    height, width = (int(size) for size in FLAGS.image_size)
    application = getattr(keras.applications, FLAGS.application)
    return application(input_shape=(height, width, 3), include_top=False, weights=None)


def compiled_call(ascent: OIPAscent, images: tf.Tensor, map_index: tf.Tensor, steps: int) -> np.ndarray:
    """One `optimize` call without convergence stop; the pairs' statuses."""
    seeds = tf.zeros([tf.size(map_index), 2], tf.int64)
    outputs = ascent.optimize(images, map_index, tf.constant(steps), tf.constant(0.01), tf.constant(0.0), seeds)
    return outputs["status"].numpy()


def op_events(logdir: str) -> list[tuple[str, str, float]]:
    """(op name, op type, seconds) of every op run in the trace in `logdir`, calls of other ops left out."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # TensorFlow's own copy of the trace's proto.

    path = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as trace:
        space.ParseFromString(trace.read())
    events = []
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                match = OP_EVENT.match(plane.event_metadata[event.metadata_id].name)
                if match and match["type"] not in CALL_OP_TYPES:
                    events.append((match["name"], match["type"], event.duration_ps * 1e-12))
    return events


def layer_class_names(model: keras.Model) -> dict[str, str]:
    """Layer name -> class name for every layer of `model`, nested models' layers included."""
    names = {}
    for layer in model.layers:
        names[layer.name] = type(layer).__name__
        if isinstance(layer, keras.Model):
            names.update(layer_class_names(layer))
    return names


def op_group(name: str, layer_classes: dict[str, str]) -> str:
    """Which part of the step an op belongs to: the Keras layer class it computes, forward or backward, or the loop.

    Ops of the loop itself (bookkeeping, compaction, snapshots) are named `while/...`; the step's ops carry the
    Keras layer's name (with a `_N` suffix per call) and, for the gradient, a `gradient_tape/` prefix.
    """
    if name.startswith("while/"):
        return "the loop's own ops (state, compaction, snapshots)"
    direction = "backward" if "gradient_tape/" in name else "forward"
    for part in name.split("/"):
        layer_class = layer_classes.get(re.sub(r"_\d+$", "", part))
        if layer_class:
            return f"{layer_class} {direction}"
    return f"other {direction} (objective, step update)"


def print_table(title: str, seconds_by_key: collections.Counter, steps: int, total: float, limit: int) -> None:
    print(f"  {title:90s} {'ms/step':>8s} {'share':>6s}")
    for key, seconds in seconds_by_key.most_common(limit):
        print(f"  {key[-90:]:90s} {seconds / steps * 1e3:8.2f} {seconds / total:6.1%}")


def profile(ascent: OIPAscent, images: tf.Tensor, map_index: tf.Tensor) -> None:
    """Traces one compiled call of `--profile_steps` steps and prints where its op time goes."""
    steps, batch = FLAGS.profile_steps, int(map_index.shape[0])
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        started = time.perf_counter()
        compiled_call(ascent, images, map_index, steps)
        wall = time.perf_counter() - started
        tf.profiler.experimental.stop()
        events = op_events(logdir)
    layer_classes = layer_class_names(ascent.feature_model)
    by_type, by_group, by_name, counts = (collections.Counter() for _ in range(4))
    for name, op_type, seconds in events:
        by_type[op_type] += seconds
        counts[op_type] += 1
        by_group[op_group(name, layer_classes)] += seconds
        by_name[f"{re.sub(r'features_[^/]*/', '', name)} [{op_type.removeprefix('_MklNative')}]"] += seconds
    total = sum(by_type.values())
    print(
        f"profile: batch {batch}, {steps} steps, wall {wall:.2f} s under the profiler ({wall / steps * 1e3:.0f} ms per"
        f" step); sum of op times {total:.2f} s ({total / steps * 1e3:.0f} ms per step, {total / wall:.2f}x wall)"
    )
    print_table("by layer", by_group, steps, total, 30)
    print_table(
        "by op type (ops per step)",
        collections.Counter(
            {f"{op_type} ({counts[op_type] / steps:.0f})": seconds for op_type, seconds in by_type.items()}
        ),
        steps,
        total,
        20,
    )
    print_table(f"costliest {FLAGS.top_ops} ops", by_name, steps, total, FLAGS.top_ops)


def main(argv: list[str]) -> None:
    del argv
    model = build_model()
    domain = parse_domain(FLAGS.input_range)
    ascent = OIPAscent(model, FLAGS.layer, domain=domain)
    print(f"machine: {machine_description()}")
    print(
        f"{FLAGS.application} {ascent.image_shape}, layer {FLAGS.layer} ({ascent.num_maps} maps), input range"
        f" {domain.describe()}, {len(model.layers)} layers"
    )
    batch_sizes = [int(size) for size in FLAGS.batch_sizes]
    all_images = ascent.domain.from_standardized(
        starts.multiscale(starts.start_seeds(FLAGS.seed, range(max(batch_sizes))), ascent.image_shape)
    )
    if FLAGS.map_index < 0:
        weakest = np.min(ascent.objective.all_targets(all_images).numpy(), axis=0)
        FLAGS.map_index = int(np.argmax(weakest))
        print(f"map {FLAGS.map_index}: its loss is {weakest[FLAGS.map_index]:.3g} or more on every start")
    image = all_images[:1]
    eager = lambda: eager_loop(ascent, image, FLAGS.map_index, FLAGS.eager_steps)  # noqa: E731
    started = time.perf_counter()
    eager()  # Warm-up.
    print(f"eager warm-up {time.perf_counter() - started:.1f} s")
    calls = {}
    for batch in batch_sizes:
        images, map_index = all_images[:batch], tf.fill([batch], FLAGS.map_index)
        started = time.perf_counter()
        status = compiled_call(ascent, images, map_index, FLAGS.steps)  # Tracing.
        print(f"compiled batch {batch}: first call (tracing included) {time.perf_counter() - started:.1f} s")
        if np.any(status == STATUS_NO_ACTIVATION):
            raise SystemExit(f"map {FLAGS.map_index} does not fire on every start; pick another --map_index")
        calls[batch] = lambda images=images, map_index=map_index: compiled_call(ascent, images, map_index, FLAGS.steps)
    rates = collections.defaultdict(list)
    for _ in range(FLAGS.rounds):  # --rounds=0: the profile alone.
        rates["eager"].append(FLAGS.eager_steps / timed(eager))
        for batch, call in calls.items():
            rates[f"compiled batch {batch}"].append(batch * FLAGS.steps / timed(call))
    eager_rates = np.array(rates.get("eager", []))
    for name, values in rates.items():
        ratios = np.array(values) / eager_rates
        per_round = ", ".join(f"{value:.1f}" for value in values)
        print(
            f"{name:20s} median {np.median(values):8.1f} image-steps/s (rounds: {per_round});"
            f" {np.median(ratios):5.1f}x eager (per round: {', '.join(f'{ratio:.1f}' for ratio in ratios)})"
        )
    print(f"machine: {machine_description()}")
    for batch in (int(size) for size in FLAGS.profile_batches if FLAGS.profile_steps > 0):
        images = ascent.domain.from_standardized(
            starts.multiscale(starts.start_seeds(FLAGS.seed, range(batch)), ascent.image_shape)
        )
        profile(ascent, images, tf.fill([batch], FLAGS.map_index))


if __name__ == "__main__":
    app.run(main)
