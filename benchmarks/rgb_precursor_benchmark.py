"""How precursor patterns should cover colour on an RGB model: gray only, primaries, or opponent colours.

The precursor scan exists for maps that never fire on random start images. On
an RGB model a gray pattern (the same cells in every channel) cannot excite a
map that wants one channel bright and another dark. This script builds small
RGB CNNs (random weights, one per `--seeds` entry; the top conv's biases are
shifted down so that about half of its maps stay dark for random starts),
finds the maps that no random start excites, and compares the colour sets

* gray: the cells copied to every channel (|V|^9 patterns; the default);
* primaries: gray plus red, green and blue (4 x |V|^9);
* opponent: gray plus red-green (1, -1, 0) and yellow-blue (1, 1, -2) (3 x |V|^9)

through the path users run, `auto` (`StrategySettings.precursor_colors`):

* screen: `SharedScreen(...).starts` for all dark maps at once (one forward
  pass per pattern for every map; the 32 best patterns per map get the 10 scan
  steps): the maps that fire on their best pattern (a ReLU map fires on a
  pattern or on none of its ascent steps, so the per-map `PrecursorScan` finds
  the same maps) and the median best scan score (0 for a map without one);
* auto: `create_oips(..., "auto")` on the dark maps (random, then the
  precursor stage, then the pre-activation wake-up for the rest): per stage the
  OIPs found and the CPU time, the median final loss, and, for the maps whose
  OIP comes from a colour pattern but from the wake-up with gray alone, the
  loss ratio of the two.

Within a model the colour sets run in turn, in a rotated order each round
(`--rounds`); results repeat exactly, times are the median over rounds of
process CPU time (all threads), which a shared machine's load moves less than
wall time. A first auto run per model (gray, two maps) traces the ascent.

Usage:
    python benchmarks/rgb_precursor_benchmark.py [--seeds=0,1,2] [--rounds=2] [--maps=0] [--steps=]
"""

from __future__ import annotations

# First: importing oipgraph turns on TensorFlow's oneDNN kernels, which TensorFlow reads when it loads.
import oipgraph  # noqa: F401

# isort: split
import collections
import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from machine import machine_description

from oipgraph import starts
from oipgraph.ascent import STATUS_NO_ACTIVATION, OIPAscent
from oipgraph.starts.patterns import DEFAULT_VALUES
from oipgraph.strategies import StrategySettings, create_oips
from oipgraph.strategies.precursor import PrecursorScan
from oipgraph.strategies.screening import SharedScreen

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the models' weights (one model each) and of the starts.")
flags.DEFINE_integer("maps", 0, "Most dark maps per model (0: all).")
flags.DEFINE_integer("random_starts", 8, "Random starts per map that must all stay dark.")
flags.DEFINE_list("color_sets", ["gray", "primaries", "opponent"], "Colour sets to compare.")
flags.DEFINE_list("values", [str(value) for value in DEFAULT_VALUES], "Cell values of the patterns.")
flags.DEFINE_integer("rounds", 2, "Timed rounds; each runs every colour set once.")
flags.DEFINE_integer("steps", None, "Final ascent steps of auto's stages; default: each stage's own.")

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


def dark_maps(ascent: OIPAscent, seed: int) -> list[int]:
    """The maps on which all `--random_starts` multi-scale starts stop as `no_activation`."""
    count = FLAGS.random_starts
    maps = np.repeat(np.arange(ascent.num_maps, dtype=np.int32), count)
    streams = starts.pair_stream(maps, np.tile(np.arange(count), ascent.num_maps))
    images = starts.multiscale(starts.start_seeds(seed, streams), ascent.image_shape).numpy()
    status = ascent(images, maps, steps=30).status
    dark = [map_id for map_id in range(ascent.num_maps) if np.all(status[maps == map_id] == STATUS_NO_ACTIVATION)]
    return dark[: FLAGS.maps] if FLAGS.maps > 0 else dark


@dataclasses.dataclass
class SetFigures:
    """What one colour set gives on one model's dark maps: results (they repeat) and CPU times per round."""

    patterns: int
    screen_best: np.ndarray | None = None
    screen_cpu: float = 0.0
    final_loss: np.ndarray | None = None
    strategy: np.ndarray | None = None
    fired: np.ndarray | None = None
    auto_cpu: list[float] = dataclasses.field(default_factory=list)
    auto_wall: list[float] = dataclasses.field(default_factory=list)
    stage_cpu: dict[str, list[float]] = dataclasses.field(default_factory=lambda: collections.defaultdict(list))

    @property
    def precursor(self) -> np.ndarray:
        """bool [M]: the maps whose OIP comes from a precursor pattern."""
        return self.strategy == "precursor"

    def median_cpu(self, *stages: str) -> float:
        """Median over rounds of auto's CPU time, or of the sum of the named stages' CPU times."""
        if not stages:
            return float(np.median(self.auto_cpu))
        return float(np.median(np.sum([self.stage_cpu[stage] for stage in stages], axis=0)))


def screen(figures: SetFigures, ascent: OIPAscent, dark: np.ndarray, colors, values) -> None:
    """The shared screen alone (`SharedScreen.starts`, one start per map): each map's best scan score, 0 for none."""
    cpu = time.process_time()
    screened = SharedScreen(PrecursorScan(ascent, values=values, colors=colors)).starts(dark, top_n=1)
    figures.screen_cpu = time.process_time() - cpu
    figures.screen_best = np.zeros(len(dark), np.float32)
    for map_id, score in zip(screened.map_index, screened.scores):
        figures.screen_best[np.flatnonzero(dark == map_id)] = score


def run_auto(figures: SetFigures, ascent: OIPAscent, dark: np.ndarray, seed: int, settings: StrategySettings) -> None:
    """One round of `auto` on the dark maps with the set's colours."""
    cpu, wall = time.process_time(), time.perf_counter()
    run = create_oips(ascent, dark, "auto", seed, settings=settings)
    figures.auto_cpu.append(time.process_time() - cpu)
    figures.auto_wall.append(time.perf_counter() - wall)
    if figures.final_loss is not None and not np.array_equal(figures.final_loss, run.result.loss):
        print("  warning: a repeated round gave other losses")
    figures.final_loss, figures.strategy = run.result.loss, np.asarray(run.strategy)
    figures.fired = ascent.objective.fired(run.result.loss, run.result.status)
    for stage in run.stages:
        figures.stage_cpu[stage.name].append(stage.cpu_seconds)


def ratios_text(ratios: np.ndarray) -> str:
    return ", ".join(f"{ratio:.2f}" for ratio in ratios) or "-"


def report(name: str, figures: SetFigures, gray: SetFigures | None) -> None:
    """Prints one model's figures of one colour set (and against gray's)."""
    dark, oips = len(figures.final_loss), int(figures.fired.sum())
    firing = figures.screen_best > 0
    best = f"{np.median(figures.screen_best[firing]):.3f}" if firing.any() else "-"
    auto_cpu = figures.median_cpu()
    print(
        f"  {name:10s} {figures.patterns:6d} patterns: {int(firing.sum()):2d} of {dark} maps fire on their best"
        f" pattern (median best scan score of those {best}; screen CPU {figures.screen_cpu:.1f} s)"
    )
    stages = ", ".join(f"{stage} {np.median(seconds):.1f} s" for stage, seconds in figures.stage_cpu.items())
    print(
        f"  {'':10s} auto: {oips} of {dark} maps with an OIP, {int(figures.precursor.sum())} from a pattern; median"
        f" final loss {np.median(figures.final_loss):.4f}; CPU {auto_cpu:.1f} s (wall"
        f" {np.median(figures.auto_wall):.1f} s), {oips / auto_cpu:.2f} OIPs per CPU s; stage CPU: {stages}"
    )
    if gray is None:
        return
    gained = figures.precursor & ~gray.precursor
    both = figures.precursor & gray.precursor
    extra_cpu = figures.median_cpu("random", "precursor") - gray.median_cpu("random", "precursor")
    print(
        f"  {'':10s} vs gray: {int(gained.sum())} maps from a pattern instead of the wake-up (loss / gray's"
        f" wake-up loss: {ratios_text(figures.final_loss[gained] / gray.final_loss[gained])}),"
        f" {int(np.sum(~figures.precursor & gray.precursor))} the other way; maps from a pattern in both: loss / gray's"
        f" {ratios_text(figures.final_loss[both] / gray.final_loss[both])}; auto CPU"
        f" {auto_cpu / gray.median_cpu():.2f}x; random + precursor stages {extra_cpu:+.1f} CPU s"
    )


def main(argv: list[str]) -> None:
    del argv
    tf.get_logger().setLevel("ERROR")  # Each colour set's screen is a new tf.function: TensorFlow warns of retracing.
    print(f"machine: {machine_description()}")
    values = tuple(float(value) for value in FLAGS.values)
    settings = StrategySettings(steps=FLAGS.steps, precursor_values=values)
    totals = {name: collections.defaultdict(list) for name in FLAGS.color_sets}
    for model_number, seed in enumerate(int(seed) for seed in FLAGS.seeds):
        ascent = OIPAscent(rgb_cnn(seed), "conv_3")
        dark = np.asarray(dark_maps(ascent, seed), np.int32)
        print(f"model seed {seed}: {len(dark)} maps of conv_3 stay dark for {FLAGS.random_starts} random starts each")
        create_oips(ascent, dark[:2], "auto", seed, settings=settings)  # Traces the ascent and the wake-up.
        figures = {name: SetFigures(len(COLOR_SETS[name]) * len(values) ** 9) for name in FLAGS.color_sets}
        for round_number in range(FLAGS.rounds):
            shift = (model_number + round_number) % len(FLAGS.color_sets)
            for name in FLAGS.color_sets[shift:] + FLAGS.color_sets[:shift]:
                colors = COLOR_SETS[name]
                if round_number == 0:
                    screen(figures[name], ascent, dark, colors, values)
                run_auto(figures[name], ascent, dark, seed, dataclasses.replace(settings, precursor_colors=colors))
        print(f"  ({machine_description()})")
        for name, set_figures in figures.items():
            gray = figures.get("gray") if name != "gray" else None
            report(name, set_figures, gray)
            total = totals[name]
            total["maps"].append(len(dark))
            total["fire"].append(int(np.sum(set_figures.screen_best > 0)))
            total["oips"].append(int(set_figures.fired.sum()))
            total["precursor"].append(int(set_figures.precursor.sum()))
            total["auto_cpu"].append(set_figures.median_cpu())
            total["precursor_cpu"].append(set_figures.median_cpu("random", "precursor"))
            if gray is not None:
                gained = set_figures.precursor & ~gray.precursor
                total["gained_ratios"].extend(set_figures.final_loss[gained] / gray.final_loss[gained])
    print("all models:")
    for name, total in totals.items():
        auto_cpu, precursor_cpu, precursor = (
            sum(total["auto_cpu"]),
            sum(total["precursor_cpu"]),
            sum(total["precursor"]),
        )
        gained = np.array(total["gained_ratios"])
        print(
            f"  {name:10s} {sum(total['fire'])} of {sum(total['maps'])} dark maps fire on a pattern; auto:"
            f" {sum(total['oips'])} OIPs in {auto_cpu:.1f} CPU s ({sum(total['oips']) / auto_cpu:.2f} per CPU s);"
            f" random + precursor stages (auto without the wake-up): {precursor} OIPs in {precursor_cpu:.1f} CPU s"
            f" ({precursor / precursor_cpu:.2f} per CPU s)"
            + (
                f"; maps a colour pattern takes from the wake-up: {len(gained)}, median loss ratio"
                f" {np.median(gained):.2f}"
                if len(gained)
                else ""
            )
        )
    print(f"machine: {machine_description()}")


if __name__ == "__main__":
    app.run(main)
