"""Image-steps per second: the compiled OIPAscent against the articles' eager loop.

All variants optimize the same map of the same layer of the shipped model, in
one process, one after the other, and the ratios are printed:

* eager: the articles' way, one image at a time, one Python iteration per step
  with GradientTape (and the per-step zero-activation check on the host);
* step_function: a plain batched `tf.function` around one step, called from Python;
* compiled: `OIPAscent.optimize`, the whole loop in one `tf.while_loop`;
* compiled_plain: the same loop on the plain Keras layer output (`OIPAscent(fast=False)`:
  no per-pair sliced map, no col2im input gradient), to show what those add;
* compiled_transforms: the compiled loop with jitter 2 and scale 0.1 (`transforms.Transforms`);
* compiled_unit: the compiled loop on the class logits of `Dense_2` (unit objective), unit 0.

Usage:
    python benchmarks/ascent_benchmark.py [--layer=Conv2D_3] [--map_index=0] [--batch_sizes=128,256,512]
"""

from __future__ import annotations

# First: importing oipgraph turns on TensorFlow's oneDNN kernels, which TensorFlow reads when it loads.
import oipgraph  # noqa: F401

# isort: split
import numpy as np
import tensorflow as tf
from absl import app, flags
from eager_reference import eager_loop, timed
from machine import machine_description

from oipgraph import starts
from oipgraph.ascent import OIPAscent, ascent_update
from oipgraph.ascent.transforms import Transforms
from oipgraph.models.loading import load_model

FLAGS = flags.FLAGS
flags.DEFINE_string("layer", "Conv2D_3", "Layer of the shipped model.")
flags.DEFINE_integer("map_index", 0, "Map to optimize (one that fires for random starts).")
flags.DEFINE_list("batch_sizes", ["128", "256", "512"], "Batch sizes of the batched variants.")
flags.DEFINE_integer("steps", 200, "Steps per timed batched run.")
flags.DEFINE_integer("eager_steps", 100, "Steps of the eager loop.")
flags.DEFINE_integer("repeats", 5, "Timed rounds; each round runs every variant once.")


def main(argv: list[str]) -> None:
    del argv
    model = load_model(None)
    ascent = OIPAscent(model, FLAGS.layer)
    plain = OIPAscent(model, FLAGS.layer, fast=False)
    transformed = OIPAscent(model, FLAGS.layer, transforms=Transforms(jitter=2, scale=0.1))
    unit = OIPAscent(model, "Dense_2")
    print(f"machine: {machine_description()}")
    image = starts.multiscale(starts.start_seeds(0, [0]), ascent.image_shape)

    @tf.function
    def one_step(images, map_index):
        seeds = tf.zeros([tf.size(map_index), 2], tf.int64)
        loss, grad = ascent.loss_and_gradient(images, map_index, seeds, tf.constant(0))
        return loss, ascent_update(images, grad, 0.01)

    def step_function_run(images, map_index):
        for _ in range(FLAGS.steps):
            loss, images = one_step(images, map_index)
            loss.numpy()  # Like the eager loop, look at the loss on the host every step.

    def compiled_run(images, map_index, module=ascent):
        seeds = tf.stack([tf.zeros_like(map_index, tf.int64), tf.range(tf.size(map_index, tf.int64))], axis=1)
        steps, epsilon, no_convergence = tf.constant(FLAGS.steps), tf.constant(0.01), tf.constant(0.0)
        module.optimize(images, map_index, steps, epsilon, no_convergence, seeds)["loss"].numpy()

    eager = lambda: eager_loop(ascent, image, FLAGS.map_index, FLAGS.eager_steps)  # noqa: E731
    eager()  # Warm-up.
    for batch in (int(size) for size in FLAGS.batch_sizes):
        images = starts.multiscale(starts.start_seeds(0, range(batch)), ascent.image_shape)
        map_index = tf.fill([batch], FLAGS.map_index)
        unit_maps = tf.zeros([batch], tf.int32)
        (
            step_function_run(images, map_index),
            compiled_run(images, map_index),
            compiled_run(images, map_index, plain),
            compiled_run(images, map_index, transformed),
            compiled_run(images, unit_maps, unit),
        )  # Tracing.
        rates = {name: [] for name in ("eager", "step_function", "compiled", "compiled_plain")}
        rates.update(compiled_transforms=[], compiled_unit=[])
        # The machine's speed drifts: interleave the variants and compare within each round.
        for _ in range(FLAGS.repeats):
            rates["eager"].append(FLAGS.eager_steps / timed(eager))
            rates["step_function"].append(batch * FLAGS.steps / timed(lambda: step_function_run(images, map_index)))
            rates["compiled"].append(batch * FLAGS.steps / timed(lambda: compiled_run(images, map_index)))
            rates["compiled_plain"].append(batch * FLAGS.steps / timed(lambda: compiled_run(images, map_index, plain)))
            rates["compiled_transforms"].append(
                batch * FLAGS.steps / timed(lambda: compiled_run(images, map_index, transformed))
            )
            rates["compiled_unit"].append(batch * FLAGS.steps / timed(lambda: compiled_run(images, unit_maps, unit)))
        eager_rates = np.array(rates["eager"])
        summary = ", ".join(
            f"{name} {max(values):8.1f} image-steps/s ({np.median(np.array(values) / eager_rates):5.1f}x eager)"
            for name, values in rates.items()
        )
        print(f"batch {batch:4d}: {summary}")
        gain = np.median(np.array(rates["compiled"]) / np.array(rates["compiled_plain"]))
        print(f"            compiled / compiled_plain: {gain:.2f}x (median over rounds)")
    print("(best rate of each variant; the ratio is the median over rounds of rate / eager rate in the same round)")


if __name__ == "__main__":
    app.run(main)
