"""The dataset pass (top-9 images of every map) over a whole dataset, and how OIPs compare with the best image.

Part 1 times `examples.find_examples` for all maps of a layer over all images
(default: MNIST train + test, 70,000 images, all 128 maps of the shipped CNN's
Conv2D_3), in interleaved rounds against the floor (the same compiled loop over
batches that only evaluates the scores, no top-k), for each batch size; the
first call of a process (tracing included, as each `oipgraph` run pays it) is
reported apart. It checks the pass against brute force (all scores at once,
NumPy argsort).

Part 2 runs the strategies (default `random`, 600 steps, as `oipgraph
--maps=all --steps=600`) for all maps and reports per strategy how many OIPs
beat the best dataset image and the median ratio oip_loss / best_dataset_loss.

Usage:
    python benchmarks/examples_benchmark.py --dataset=/path/to/mnist.npz
    python benchmarks/examples_benchmark.py --dataset=mnist.npz --strategies=random,auto --rounds=0
"""

from __future__ import annotations

import oipgraph  # noqa: F401  (first: importing it turns on TensorFlow's oneDNN kernels before TensorFlow loads)

# isort: split
import json
import os
import time

import numpy as np
import tensorflow as tf
from absl import app, flags
from machine import machine_description, onednn_enabled

from oipgraph.ascent import STATUS_NO_ACTIVATION, OIPAscent
from oipgraph.models import mnist
from oipgraph.models.loading import standardize
from oipgraph.outputs import datasets, examples
from oipgraph.strategies import StrategySettings, create_oips

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", None, f"Dataset (.npz or image folder); default ${mnist.ENV_VAR}.")
flags.DEFINE_string("model", None, "Keras model file; default: the shipped MNIST CNN.")
flags.DEFINE_string("layer", "Conv2D_3", "Layer whose maps get dataset examples.")
flags.DEFINE_list("batch_sizes", ["256", "1024", "4096"], "Batch sizes of the pass.")
flags.DEFINE_integer("rounds", 3, "Interleaved timing rounds (0: no timing).")
flags.DEFINE_list("strategies", ["random"], "Strategies whose OIPs are compared with the best dataset images.")
flags.DEFINE_integer("steps", 600, "Final ascent steps of the strategies (None-like 0: each strategy's own).")
flags.DEFINE_string("json_out", None, "Also write the figures to this JSON file.")


def scores_only_pass(scores: examples.Scores, num_targets: int, spec: tf.TensorSpec, batch_size: int):
    """The floor: the same loop over batches and the same scores, summed instead of merged into a top-k."""

    def run(images: tf.Tensor) -> tf.Tensor:
        def body(begin, total):
            batch = standardize(images[begin : begin + batch_size])
            return begin + batch_size, total + tf.reduce_sum(scores(batch), axis=0)

        count = tf.shape(images)[0]
        return tf.while_loop(lambda begin, _: begin < count, body, (0, tf.zeros([num_targets])))[1]

    return tf.function(run, input_signature=[spec])


CPU_SECONDS: list[float] = []  # Process CPU time of each `timed` call, in order.


def timed(function, *args) -> tuple[float, object]:
    """(wall seconds, result) of function(*args); its CPU seconds go to CPU_SECONDS."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    CPU_SECONDS.append(time.process_time() - start_cpu)
    return time.perf_counter() - start, result


def main(argv: list[str]) -> None:
    del argv
    path = FLAGS.dataset or os.environ.get(mnist.ENV_VAR)
    if not path:
        raise app.UsageError(f"pass --dataset or set ${mnist.ENV_VAR}")
    ascent = OIPAscent.from_file(FLAGS.model, FLAGS.layer)
    figures = {
        "machine": machine_description(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "tensorflow": tf.__version__,
        "oneDNN": onednn_enabled(),
    }
    load_seconds, dataset = timed(datasets.load_dataset, path, ascent.image_shape)
    scores, num_maps = examples.feature_scores(ascent.feature_model)
    figures.update(images=len(dataset), maps=num_maps, load_seconds=round(load_seconds, 2))
    print(json.dumps({key: figures[key] for key in ("machine", "date", "tensorflow", "oneDNN")}))
    print(f"{len(dataset)} images {dataset.images.shape[1:]} {dataset.images.dtype}, loaded in {load_seconds:.2f} s")

    first_seconds, found = timed(examples.find_examples, dataset, scores, num_maps)
    figures["first_call_seconds"] = round(first_seconds, 2)
    figures["first_call_cpu_seconds"] = round(CPU_SECONDS[-1], 2)
    print(
        f"first find_examples call (tracing included, batch {examples.DEFAULT_BATCH_SIZE}): {first_seconds:.2f} s "
        f"wall, {CPU_SECONDS[-1]:.2f} s CPU"
    )

    # Brute force: every image's scores at once (in slices that fit), then a stable argsort per map.
    brute_seconds, brute = timed(
        lambda: np.concatenate(
            [
                scores(standardize(tf.constant(dataset.images[begin : begin + 8192]))).numpy()
                for begin in range(0, len(dataset), 8192)
            ]
        )
    )
    order = np.argsort(-brute.T, axis=1, kind="stable")[:, : found.indices.shape[1]]
    top_values = np.take_along_axis(brute.T, order, axis=1)
    chosen_values = np.take_along_axis(brute.T, found.indices, axis=1)
    figures["check"] = {
        "max_abs_value_difference": float(np.max(np.abs(found.values - top_values))),
        "chosen_images_max_abs_difference": float(np.max(np.abs(chosen_values - top_values))),
        "maps_with_identical_indices": int(np.sum(np.all(found.indices == order, axis=1))),
        "brute_force_seconds": round(brute_seconds, 2),
    }
    print(f"check against brute force ({brute_seconds:.2f} s): {figures['check']}")

    spec = tf.TensorSpec([None, *dataset.images.shape[1:]], tf.as_dtype(dataset.images.dtype))
    images = tf.constant(dataset.images)
    batch_sizes = [int(size) for size in FLAGS.batch_sizes]
    floors = {size: scores_only_pass(scores, num_maps, spec, size) for size in batch_sizes}
    passes = {
        size: examples.top_k_pass(scores, num_maps, spec, examples.DEFAULT_TOP_K, size, standardize)
        for size in batch_sizes
    }
    for size in batch_sizes:  # Trace and warm up.
        floors[size](images[:size])
        passes[size](images[:size])
    times = {f"{kind}_{size}": [] for size in batch_sizes for kind in ("pass", "floor")}
    cpu_times = {key: [] for key in times}
    for _ in range(FLAGS.rounds):
        for size in batch_sizes:
            times[f"pass_{size}"].append(timed(lambda: [t.numpy() for t in passes[size](images)])[0])
            cpu_times[f"pass_{size}"].append(CPU_SECONDS[-1])
            times[f"floor_{size}"].append(timed(lambda: floors[size](images).numpy())[0])
            cpu_times[f"floor_{size}"].append(CPU_SECONDS[-1])
    if FLAGS.rounds:
        figures["seconds"] = {key: [round(value, 2) for value in values] for key, values in times.items()}
        figures["cpu_seconds"] = {key: [round(value, 2) for value in values] for key, values in cpu_times.items()}
        for size in batch_sizes:
            ratios = np.array(times[f"pass_{size}"]) / np.array(times[f"floor_{size}"])
            print(
                f"batch {size}: pass median {np.median(times[f'pass_{size}']):.2f} s wall, "
                f"{np.median(cpu_times[f'pass_{size}']):.2f} s CPU; scores-only floor "
                f"{np.median(times[f'floor_{size}']):.2f} s wall, {np.median(cpu_times[f'floor_{size}']):.2f} s CPU; "
                f"pass / floor {np.median(ratios):.2f} (per round {', '.join(f'{r:.2f}' for r in ratios)})"
            )

    settings = StrategySettings(steps=FLAGS.steps or None, batch_size=256)
    maps = list(range(num_maps))
    for strategy in FLAGS.strategies:
        seconds, run = timed(create_oips, ascent, maps, strategy, 0, 1, settings)
        has_oip = (run.result.status != STATUS_NO_ACTIVATION) & (run.result.loss > 0)
        comparison = examples.compare(run.result.loss, found.best_values[run.result.map_index], has_oip)
        ratio = comparison.ratio
        with_oip = has_oip & np.isfinite(ratio)
        figures[strategy] = {
            "seconds": round(seconds, 1),
            "maps_with_oip": int(has_oip.sum()),
            "oips_beating_best": comparison.num_beating,
            "median_ratio_maps_with_oip": comparison.median_ratio(),
            "median_ratio_all_maps": float(np.median(ratio[np.isfinite(ratio)])),
            "ratio_quartiles_maps_with_oip": np.percentile(ratio[with_oip], [25, 75]).round(2).tolist(),
            "maps_with_oip_not_beating": [int(k) for k in run.result.map_index[has_oip & ~comparison.beats]],
            "maps_best_dataset_loss_zero": [int(k) for k in run.result.map_index[comparison.best_dataset_loss <= 0]],
        }
        print(f"{strategy}: {json.dumps(figures[strategy])}")
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as file:
            json.dump(figures, file, indent=2)


if __name__ == "__main__":
    app.run(main)
