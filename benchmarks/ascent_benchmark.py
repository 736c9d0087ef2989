"""Image-steps per second: the compiled OIPAscent against the articles' eager loop.

All variants optimize the same map of the same layer of the shipped model, in
one process, one after the other, and the ratios are printed:

* eager: the articles' way, one image at a time, one Python iteration per step
  with GradientTape (and the per-step zero-activation check on the host);
* step_function: a plain batched `tf.function` around one step, called from Python;
* compiled: `OIPAscent.optimize`, the whole loop in one `tf.while_loop`.

Usage:
    python benchmarks/ascent_benchmark.py [--layer=Conv2D_3] [--map_index=0] [--batch_sizes=128,512]
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from oipgraph import starts
from oipgraph.ascent import OIPAscent, ascent_update

FLAGS = flags.FLAGS
flags.DEFINE_string("layer", "Conv2D_3", "Layer of the shipped model.")
flags.DEFINE_integer("map_index", 0, "Map to optimize (one that fires for random starts).")
flags.DEFINE_list("batch_sizes", ["128", "512"], "Batch sizes of the batched variants.")
flags.DEFINE_integer("steps", 200, "Steps per timed batched run.")
flags.DEFINE_integer("eager_steps", 100, "Steps of the eager loop.")
flags.DEFINE_integer("repeats", 5, "Timed rounds; each round runs every variant once.")


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def eager_loop(ascent: OIPAscent, image: tf.Tensor, map_index: int, steps: int, epsilon: float = 0.01) -> None:
    """The articles' loop for one image."""
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(image)
            loss = tf.reduce_mean(ascent.feature_model(image)[0, :, :, map_index])
        grad = tape.gradient(loss, image)
        grad = grad / (tf.sqrt(tf.reduce_mean(tf.square(grad))) + 1e-7)
        if float(loss) == 0.0 and float(tf.reduce_mean(grad)) == 0.0:
            break
        image = tf.image.per_image_standardization(image + epsilon * grad)


def main(argv: list[str]) -> None:
    del argv
    ascent = OIPAscent.from_file(None, FLAGS.layer)
    print(f"machine: {platform.machine()}, {tf.config.threading.get_intra_op_parallelism_threads() or 'default'} intra-op threads, "
          f"cpus={len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f}, TensorFlow {tf.__version__}")
    image = starts.multiscale(starts.start_seeds(0, [0]), ascent.image_shape)

    @tf.function
    def one_step(images, map_index):
        loss, grad = ascent.loss_and_gradient(images, map_index)
        return loss, ascent_update(images, grad, 0.01)

    def step_function_run(images, map_index):
        for _ in range(FLAGS.steps):
            loss, images = one_step(images, map_index)
            loss.numpy()  # Like the eager loop, look at the loss on the host every step.

    def compiled_run(images, map_index):
        ascent.optimize(images, map_index, tf.constant(FLAGS.steps), tf.constant(0.01), tf.constant(0.0))["loss"].numpy()

    eager = lambda: eager_loop(ascent, image, FLAGS.map_index, FLAGS.eager_steps)  # noqa: E731
    eager()  # Warm-up.
    for batch in (int(size) for size in FLAGS.batch_sizes):
        images = starts.multiscale(starts.start_seeds(0, range(batch)), ascent.image_shape)
        map_index = tf.fill([batch], FLAGS.map_index)
        step_function_run(images, map_index), compiled_run(images, map_index)  # Warm-up (tracing).
        rates = {"eager": [], "step_function": [], "compiled": []}
        # The machine's speed drifts: interleave the variants and compare within each round.
        for _ in range(FLAGS.repeats):
            rates["eager"].append(FLAGS.eager_steps / timed(eager))
            rates["step_function"].append(batch * FLAGS.steps / timed(lambda: step_function_run(images, map_index)))
            rates["compiled"].append(batch * FLAGS.steps / timed(lambda: compiled_run(images, map_index)))
        eager_rates = np.array(rates["eager"])
        summary = ", ".join(
            f"{name} {max(values):8.1f} image-steps/s ({np.median(np.array(values) / eager_rates):5.1f}x eager)"
            for name, values in rates.items()
        )
        print(f"batch {batch:4d}: {summary}")
    print("(best rate of each variant; the ratio is the median over rounds of rate / eager rate in the same round)")


if __name__ == "__main__":
    app.run(main)
