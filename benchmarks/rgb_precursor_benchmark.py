"""How precursor patterns should cover colour on an RGB model: gray only, primaries, or opponent colours.

The precursor scan exists for maps that never fire on random start images. On
an RGB model a gray pattern (the same cells in every channel) cannot excite a
map that wants one channel bright and another dark. This script builds a small
RGB CNN (random weights, biases shifted down so that about half of its top
maps stay dark for random starts), finds the maps that no random start
excites, and scans each with three colour sets:

* gray: the cells copied to every channel (|V|^9 patterns);
* primaries: gray plus red, green and blue (4 x |V|^9);
* opponent: gray plus red-green (1, -1, 0) and yellow-blue (1, 1, -2) (3 x |V|^9).

For each set it prints how many of those maps fire on their best pattern
(score > 0 after the scan steps), the median best score, and the scan time.

Usage:
    python benchmarks/rgb_precursor_benchmark.py [--maps=16] [--seed=0]
"""

from __future__ import annotations

# First: importing oipgraph turns on TensorFlow's oneDNN kernels, which TensorFlow reads when it loads.
import oipgraph  # noqa: F401

# isort: split
import time

import keras
import numpy as np
from absl import app, flags

from oipgraph import starts
from oipgraph.ascent import STATUS_NO_ACTIVATION, OIPAscent
from oipgraph.precursor import PrecursorScan

FLAGS = flags.FLAGS
flags.DEFINE_integer("maps", 16, "Most dark maps to scan.")
flags.DEFINE_integer("seed", 0, "Seed of the model's weights and the random starts.")
flags.DEFINE_integer("random_starts", 8, "Random starts per map that must all stay dark.")

COLOR_SETS = {
    "gray": ((1.0, 1.0, 1.0),),
    "primaries": ((1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "opponent": ((1.0, 1.0, 1.0), (1.0, -1.0, 0.0), (1.0, 1.0, -2.0)),
}


def rgb_cnn(seed: int) -> keras.Model:
    """32x32x3 -> three ReLU convs with max-pooling; the top conv's biases are shifted down."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv_1")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(32, 3, activation="relu", name="conv_2")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    top = keras.layers.Conv2D(64, 3, activation="relu", name="conv_3")
    model = keras.Model(inputs, top(x))
    kernel, _ = top.get_weights()
    rng = np.random.default_rng(seed)
    top.set_weights([kernel, -np.abs(rng.normal(0.6, 0.3, [64])).astype(np.float32)])
    return model


def main(argv: list[str]) -> None:
    del argv
    ascent = OIPAscent(rgb_cnn(FLAGS.seed), "conv_3")
    maps = np.repeat(np.arange(ascent.num_maps, dtype=np.int32), FLAGS.random_starts)
    streams = starts.pair_stream(maps, np.tile(np.arange(FLAGS.random_starts), ascent.num_maps))
    images = starts.multiscale(starts.start_seeds(FLAGS.seed, streams), ascent.image_shape).numpy()
    result = ascent(images, maps, steps=30)
    dark = [
        int(map_index)
        for map_index in range(ascent.num_maps)
        if np.all(result.status[maps == map_index] == STATUS_NO_ACTIVATION)
    ][: FLAGS.maps]
    print(f"{len(dark)} maps of conv_3 stay dark for {FLAGS.random_starts} random starts each: {dark}")
    for name, colors in COLOR_SETS.items():
        scan = PrecursorScan(ascent, colors=colors)
        started = time.perf_counter()
        best = np.array([scan.run(map_index, top_n=1).scores[0] for map_index in dark])
        seconds = time.perf_counter() - started
        print(
            f"{name:10s} {scan.num_patterns:6d} patterns: {int(np.sum(best > 0)):2d} of {len(dark)} maps fire,"
            f" median best score {np.median(best):.4f}, {seconds:.0f} s"
        )


if __name__ == "__main__":
    app.run(main)
