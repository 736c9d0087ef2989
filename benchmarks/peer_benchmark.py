"""Image-steps per second: oipgraph against xplique and tf-keras-vis on the same work, in one process.

The work: the shipped MNIST CNN (`oipgraph.models.loading.load_model()`), layer `Conv2D_3`, maps 0..N-1
(N = 128 by default), one start image per map, 200 steps, all maps in one batch. A tool's rate is
N * steps / wall seconds of one public call (tracing, checks and host copies included), counted as if
every map ran every step. The tools share one process, one TensorFlow and one oneDNN setting, and are
alternated: O P1 O P2 O P1 O P2 O ..., where O is an oipgraph call. Each peer call is divided by the
mean of the two oipgraph calls beside it (the machine's speed drifts; the neighbours see the same
drift); the median of these per-round ratios is the figure.

What each tool does per step (read from its source):

* oipgraph (`OIPAscent(model, layer)(images, maps, steps, epsilon=0.01, conv_criterion=0.0)`): inside
  one compiled `tf.while_loop`: loss_b = mean over positions of map k_b (each pair's map alone), its
  gradient g, x <- per_image_standardization(x + 0.01 * g / (rms(g) + 1e-7)); a pair whose loss and
  mean gradient are 0 for more than 10 steps stops (`no_activation`); convergence stop off. Start:
  `starts.multiscale` (multi-scale noise, standardized per image).
* xplique 2.0.2 (`features_visualizations.optimize(Objective.channel(model, layer, maps), nb_steps=steps,
  use_fft=False, transformations=None, custom_shape=None)`, other arguments its defaults): a Python loop
  of `nb_steps` calls of one `tf.function` step plus an eager `Adam(0.05).apply_gradients`. The step maps
  the pixel variable v [N, H, W, 1] to the image sigmoid(v) rescaled per image to `values_range` (0, 1)
  (min-max), resizes it to the model's size (a no-op at 28x28), runs the model and the loss
  sum_n mean over (H, W, C) of (output_n * one-hot mask of map k_n), i.e. sum_n mean_map_n / 128, and its
  gradient. Start: its own, `tf.random.normal` with mean 0.01 (its `std` argument lands in the mean
  slot) and stddev 1; it takes no start images. The step function is traced anew on every call.
* tf-keras-vis 0.8.7 (`ActivationMaximization(feature_model)(CategoricalScore(maps), seed_input=starts,
  input_modifiers=[], regularizers=[], steps=steps, input_range=(None, None))`): an eager Python loop:
  assign the image to a variable, run the feature model, score_n = mean over positions of
  output[n, ..., k_n] (one slice per map, stacked), loss = -score, its gradient, an eager
  `RMSprop(learning_rate=1.0, rho=0.999)` update, then a clip of the image to the input range (float32
  limits here: the default (0, 255) would cut the negative half of our standardized starts off the
  returned image; the clip runs every step either way). Start: the same multiscale images as oipgraph.

The peers are benchmark-only and live in their own virtual environment, outside the repository
(xplique pins `tensorflow[and-cuda]<=2.20`, so it is installed without its dependencies):

    python3 -m venv /work/peers-venv
    /work/peers-venv/bin/pip install tensorflow-cpu==2.21.* tf-keras==2.21.* tensorflow-probability==0.25.* \\
        tf-keras-vis deprecated einops matplotlib opencv-python-headless scikit-image scikit-learn scipy \\
        absl-py tensorboard numpy
    /work/peers-venv/bin/pip install --no-deps xplique==2.0.2
    /work/peers-venv/bin/pip install --no-deps -e .    # oipgraph itself, from the repository root

`tf-keras` pulls in the `tensorflow` package beside `tensorflow-cpu` (same version, same files); all three
tools then run on Keras 3 (`tf.keras` is Keras 3 unless TF_USE_LEGACY_KERAS=1, which this must not set).

Usage:
    /work/peers-venv/bin/python benchmarks/peer_benchmark.py [--rounds=3] [--image_dir=docs]
    python benchmarks/peer_benchmark.py --tools=oipgraph     # the project's venv: oipgraph alone
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Callable

# oipgraph first: importing it chooses TensorFlow's oneDNN kernels before TensorFlow loads (for every tool).
# isort: off
import oipgraph
from oipgraph import starts
from oipgraph.outputs import summaries
from oipgraph.ascent import OIPAscent
from oipgraph.models.loading import load_model

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

import machine

# isort: on

FLAGS = flags.FLAGS
flags.DEFINE_list("tools", ["oipgraph", "xplique", "tf_keras_vis"], "Tools to run (oipgraph always runs).")
flags.DEFINE_string("layer", "Conv2D_3", "Layer of the shipped model.")
flags.DEFINE_integer("maps", 128, "Maps 0..maps-1 of the layer, one start image each, in one batch.")
flags.DEFINE_integer("steps", 200, "Ascent steps of every tool.")
flags.DEFINE_integer("rounds", 3, "Timed rounds; each round runs every peer once between oipgraph calls.")
flags.DEFINE_string("image_dir", None, "If set, write each tool's final images as IMAGE_DIR/peer_TOOL.png.")

PEERS = {"xplique": "xplique", "tf_keras_vis": "tf_keras_vis"}  # tool name -> module to import


def machine_description() -> str:
    """The machine, plus Keras' version; the oneDNN setting holds for all tools (one process)."""
    return f"{machine.machine_description()}, Keras {keras.__version__}, the same oneDNN for every tool"


def oipgraph_tool(model: keras.Model, maps: np.ndarray) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """oipgraph's public call; returns a run() giving (model-input images [N, H, W, 1], the same images)."""
    ascent = OIPAscent(model, FLAGS.layer)
    images = starts.multiscale(starts.start_seeds(0, maps), ascent.image_shape).numpy()

    def run() -> tuple[np.ndarray, np.ndarray]:
        result = ascent(images, maps, steps=FLAGS.steps, epsilon=0.01, conv_criterion=0.0)
        return result.images, result.images

    return run


def xplique_tool(model: keras.Model, maps: np.ndarray) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """xplique's `optimize`, pixel parameterization, no transformations, one objective per map."""
    from xplique.features_visualizations import Objective, optimize

    def run() -> tuple[np.ndarray, np.ndarray]:
        objective = Objective.channel(model, FLAGS.layer, [int(k) for k in maps])
        images, _ = optimize(objective, nb_steps=FLAGS.steps, use_fft=False, transformations=None, custom_shape=None)
        final = images[-1].numpy()
        return final, final  # Its images are the model's inputs (sigmoid, min-max rescaled to [0, 1]).

    return run


def tf_keras_vis_tool(model: keras.Model, maps: np.ndarray) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """tf-keras-vis ActivationMaximization, plain: no input modifiers, no regularizers, all maps batched."""
    from tf_keras_vis.activation_maximization import ActivationMaximization
    from tf_keras_vis.utils.scores import CategoricalScore

    feature_model = keras.Model(model.inputs, model.get_layer(FLAGS.layer).output)
    visualizer = ActivationMaximization(feature_model)
    images = starts.multiscale(starts.start_seeds(0, maps), feature_model.input_shape[1:]).numpy()

    def run() -> tuple[np.ndarray, np.ndarray]:
        final = visualizer(
            CategoricalScore([int(k) for k in maps]),
            seed_input=images,
            input_modifiers=[],
            regularizers=[],
            steps=FLAGS.steps,
            input_range=(None, None),
        )
        final = np.asarray(final)
        return final, final

    return run


TOOLS = {"oipgraph": oipgraph_tool, "xplique": xplique_tool, "tf_keras_vis": tf_keras_vis_tool}


def timed(run: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[float, np.ndarray]:
    """(image-steps per second, the model-input images) of one call."""
    start = time.perf_counter()
    images, _ = run()
    return FLAGS.maps * FLAGS.steps / (time.perf_counter() - start), images


def main(argv: list[str]) -> None:
    del argv
    sys.stdout.reconfigure(line_buffering=True)  # Show each round as it ends, also when piped to a file.
    unknown = [tool for tool in FLAGS.tools if tool not in TOOLS]
    if unknown or FLAGS.maps <= 0 or FLAGS.steps <= 0 or FLAGS.rounds <= 0:
        raise app.UsageError(
            f"--tools must name {', '.join(TOOLS)} (got {unknown}); --maps, --steps, --rounds must be > 0"
        )
    missing = [peer for peer, module in PEERS.items() if importlib.util.find_spec(module) is None]
    if missing:
        print(f"peers not installed here: {', '.join(missing)} (see this script's docstring); not measured")
    peers = [tool for tool in FLAGS.tools if tool in PEERS and tool not in missing]
    keras.utils.set_random_seed(0)
    model = load_model(None)
    maps = np.arange(FLAGS.maps, dtype=np.int32)
    print(f"oipgraph {oipgraph.__version__}; machine: {machine_description()}")
    if "xplique" in peers or "tf_keras_vis" in peers:
        from importlib.metadata import version

        print("peer versions: " + ", ".join(f"{peer} {version(peer.replace('_', '-'))}" for peer in peers))
    runs = {tool: TOOLS[tool](model, maps) for tool in ["oipgraph", *peers]}
    print(f"work: {FLAGS.layer} maps 0-{FLAGS.maps - 1}, one start each, {FLAGS.steps} steps, one batch")
    finals = {tool: run()[0] for tool, run in runs.items()}  # Warm-up (tracing, first-call allocations).
    rates: dict[str, list[float]] = {tool: [] for tool in runs}
    ratios: dict[str, list[float]] = {peer: [] for peer in peers}
    previous, _ = timed(runs["oipgraph"])
    rates["oipgraph"].append(previous)
    for round_index in range(FLAGS.rounds):
        for peer in peers or [None]:
            if peer is not None:
                rate, finals[peer] = timed(runs[peer])
                rates[peer].append(rate)
            following, finals["oipgraph"] = timed(runs["oipgraph"])
            rates["oipgraph"].append(following)
            if peer is not None:
                ratios[peer].append(rate / ((previous + following) / 2))
                print(f"round {round_index}: {peer} {rate:7.0f}/s, oipgraph {previous:7.0f} and {following:7.0f}/s")
            previous = following
    oip = rates["oipgraph"]
    print(f"oipgraph      median {np.median(oip):7.0f} image-steps/s (min {min(oip):.0f}, max {max(oip):.0f})")
    for peer in peers:
        print(
            f"{peer:13s} median {np.median(rates[peer]):7.0f} image-steps/s; oipgraph / {peer} = "
            f"{np.median(1 / np.array(ratios[peer])):.2f}x (median over {len(ratios[peer])} rounds of "
            f"{', '.join(f'{1 / r:.2f}' for r in ratios[peer])})"
        )
    scoring = OIPAscent(model, FLAGS.layer)
    for tool, images in finals.items():
        activation = scoring.loss(tf.constant(images, tf.float32), maps).numpy()
        print(
            f"{tool}: final mean activation of its map: median {np.median(activation):.3f}, "
            f"{int(np.sum(activation > 0))} of {len(maps)} maps > 0 (as the model sees its final images)"
        )
        if FLAGS.image_dir:
            os.makedirs(FLAGS.image_dir, exist_ok=True)
            path = os.path.join(FLAGS.image_dir, f"peer_{tool}.png")
            grid = summaries.labelled_grid(images, scoring.domain, labels=[int(k) for k in maps], columns=16, scale=1)
            with open(path, "wb") as png:
                png.write(summaries.png_bytes(grid))
            print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
