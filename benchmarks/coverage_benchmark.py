"""Counts the maps of a layer that get an OIP, per strategy (default: random and auto on Conv2D_3).

A map has an OIP when its pair (init 0) ends with a status other than
`no_activation` and a final loss > 0.

Usage:
    python benchmarks/coverage_benchmark.py                      # random and auto, shipped CNN
    python benchmarks/coverage_benchmark.py --strategies=auto --maps=0-31 --verbose

The auto run takes many minutes on a 2-core CPU (it scans 19,683 patterns for
every map that random and coarse_to_fine leave without activation); run it in
the background with a log file.
"""

from __future__ import annotations

# First: importing oipgraph turns on TensorFlow's oneDNN kernels, which TensorFlow reads when it loads.
import oipgraph  # noqa: F401

# isort: split
import collections
import json
import time

import numpy as np
from absl import app, flags

from oipgraph.ascent import STATUS_NO_ACTIVATION, OIPAscent
from oipgraph.strategies import STRATEGIES, StrategySettings, create_oips, parse_maps

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Keras model file; default: the shipped MNIST CNN.")
flags.DEFINE_string("layer", "Conv2D_3", "Layer whose maps are counted.")
flags.DEFINE_list("strategies", ["random", "auto"], f"Strategies to compare: {', '.join(STRATEGIES)}.")
flags.DEFINE_string("maps", "all", "Maps: 'all' or ranges like '0-31,40'.")
flags.DEFINE_integer("seed", 0, "Seed of the start images.")
flags.DEFINE_integer("steps", None, "Final ascent steps; default: each strategy's own.")
flags.DEFINE_integer("batch_size", 256, "Pairs per ascent call.")
flags.DEFINE_boolean("verbose", False, "Progress bars.")
flags.DEFINE_string("json_out", None, "Also write the figures to this JSON file.")


def main(argv: list[str]) -> None:
    del argv
    ascent = OIPAscent.from_file(FLAGS.model, FLAGS.layer)
    maps = parse_maps(FLAGS.maps, ascent.num_maps, FLAGS.layer)
    settings = StrategySettings(steps=FLAGS.steps, batch_size=FLAGS.batch_size, verbose=FLAGS.verbose)
    figures = {}
    for strategy in FLAGS.strategies:
        start = time.perf_counter()
        run = create_oips(ascent, maps, strategy, FLAGS.seed, settings=settings)
        seconds = time.perf_counter() - start
        has_oip = (run.result.status != STATUS_NO_ACTIVATION) & (run.result.loss > 0)
        by_strategy = collections.Counter(name for name, ok in zip(run.strategy, has_oip) if ok)
        missing = [int(map_index) for map_index, ok in zip(run.map_index, has_oip) if not ok]
        figures[strategy] = {
            "maps": len(maps),
            "with_oip": int(has_oip.sum()),
            "seconds": round(seconds, 1),
            "oips_by_strategy": dict(by_strategy),
            "without_oip": missing,
            "mean_loss": float(np.mean(run.result.loss[has_oip])) if has_oip.any() else 0.0,
        }
        print(
            f"{strategy}: {int(has_oip.sum())} of {len(maps)} maps of {FLAGS.layer} have an OIP"
            f" ({seconds:.0f} s); by strategy {dict(by_strategy)}; without: {missing}",
            flush=True,
        )
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as file:
            json.dump(
                {"layer": FLAGS.layer, "seed": FLAGS.seed, "steps": FLAGS.steps, "figures": figures}, file, indent=2
            )


if __name__ == "__main__":
    app.run(main)
