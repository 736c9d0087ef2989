"""Counts the maps of a layer that get an OIP, per strategy, and times the default `oipgraph` command.

A map has an OIP when its pair (init 0) ends with a status other than
`no_activation` and a final loss > 0.

Usage:
    python benchmarks/coverage_benchmark.py                      # auto (stage by stage) and random, shipped CNN
    python benchmarks/coverage_benchmark.py --command            # also `oipgraph --maps=all` end to end
    python benchmarks/coverage_benchmark.py --json_out=new.json --reference=old.json   # losses vs an earlier run

For `auto` it prints every stage: the pairs it ran on, the OIPs it found and
its wall time. `--command` runs the README's main command (`oipgraph
--maps=all`, default strategy) in a child process and reports its wall time
including start-up, its CPU time (user + system) and the maps with an OIP
from its `catalog.json`. `--reference` compares the per-map losses with those
of the same strategy in a JSON written earlier by `--json_out`: the median
loss of both and the median per-map ratio. The machine's load average is
printed with every figure: on a shared machine the wall times move with it.
"""

from __future__ import annotations

# First: importing oipgraph turns on TensorFlow's oneDNN kernels, which TensorFlow reads when it loads.
import oipgraph  # noqa: F401

# isort: split
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from oipgraph.ascent import STATUS_NO_ACTIVATION, OIPAscent
from oipgraph.strategies import STRATEGIES, StrategySettings, create_oips, parse_maps

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Keras model file; default: the shipped MNIST CNN.")
flags.DEFINE_string("layer", "Conv2D_3", "Layer whose maps are counted.")
flags.DEFINE_list("strategies", ["auto", "random"], f"Strategies to compare: {', '.join(STRATEGIES)}.")
flags.DEFINE_string("maps", "all", "Maps: 'all' or ranges like '0-31,40'.")
flags.DEFINE_integer("seed", 0, "Seed of the start images.")
flags.DEFINE_integer("steps", None, "Final ascent steps; default: each strategy's own.")
flags.DEFINE_integer("batch_size", 256, "Pairs per ascent call.")
flags.DEFINE_boolean("verbose", False, "Progress bars.")
flags.DEFINE_boolean("command", False, "Also run `oipgraph --maps=all` (the default command) and time it.")
flags.DEFINE_string("json_out", None, "Also write the figures (with per-map losses) to this JSON file.")
flags.DEFINE_string("reference", None, "A JSON from --json_out of an earlier run to compare the losses with.")


def load_average() -> str:
    return "load average " + ", ".join(f"{value:.1f}" for value in os.getloadavg())


def compare(strategy: str, losses: dict[int, float], reference: dict) -> str:
    """The median loss of this run and of the reference's `strategy`, and the median per-map ratio."""
    old = {int(entry["map"]): entry["loss"] for entry in reference["figures"].get(strategy, {}).get("per_map", [])}
    common = sorted(set(old) & set(losses))
    if not common:
        return f"reference has no {strategy} losses for these maps"
    new_losses = np.array([losses[map_id] for map_id in common])
    old_losses = np.array([old[map_id] for map_id in common])
    changed = new_losses != old_losses
    ratios = new_losses[old_losses > 0] / old_losses[old_losses > 0]
    return (
        f"median loss {np.median(new_losses):.3f} vs reference {np.median(old_losses):.3f} over {len(common)} maps;"
        f" median per-map ratio {np.median(ratios):.3f}; over the {int(changed.sum())} maps whose loss changed:"
        f" median ratio {np.median(new_losses[changed] / np.maximum(old_losses[changed], 1e-12)):.3f},"
        f" {int(np.sum(new_losses[changed] >= old_losses[changed]))} not lower"
        if changed.any()
        else f"every one of {len(common)} maps has the reference's loss"
    )


def run_command() -> dict:
    """Runs `oipgraph --maps=all` (default strategy) in a child process; wall, CPU and maps with an OIP."""
    with tempfile.TemporaryDirectory() as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = load_average()
        start = time.perf_counter()
        command = [sys.executable, "-m", "oipgraph.cli.main", "--maps=all", f"--out={out}"]
        if FLAGS.model:
            command.append(f"--model={FLAGS.model}")
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(os.path.join(out, "catalog.json")) as file:
            catalog = json.load(file)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    fired = sum(bool(entry["fired"]) for entry in catalog["maps"])
    strategies = collections.Counter(entry.get("strategy") for entry in catalog["maps"] if entry["fired"])
    figures = {
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "maps": len(catalog["maps"]),
        "with_oip": fired,
        "strategy": catalog.get("strategy"),
        "oips_by_strategy": dict(strategies),
    }
    print(
        f"oipgraph --maps=all: {fired} of {len(catalog['maps'])} maps have an OIP; {seconds:.1f} s wall including"
        f" start-up, {cpu:.1f} s CPU; by strategy {dict(strategies)} ({load} before,"
        f" {load_average().split(' ', 2)[2]} after)",
        flush=True,
    )
    return figures


def main(argv: list[str]) -> None:
    del argv
    reference = None
    if FLAGS.reference:
        with open(FLAGS.reference) as file:
            reference = json.load(file)
    figures = {}
    if FLAGS.command:
        figures["command"] = run_command()
    ascent = OIPAscent.from_file(FLAGS.model, FLAGS.layer)
    maps = parse_maps(FLAGS.maps, ascent.num_maps, FLAGS.layer)
    settings = StrategySettings(steps=FLAGS.steps, batch_size=FLAGS.batch_size, verbose=FLAGS.verbose)
    for strategy in FLAGS.strategies:
        load = load_average()
        start, cpu_start = time.perf_counter(), time.process_time()
        run = create_oips(ascent, maps, strategy, FLAGS.seed, settings=settings)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        has_oip = (run.result.status != STATUS_NO_ACTIVATION) & (run.result.loss > 0)
        by_strategy = collections.Counter(name for name, ok in zip(run.strategy, has_oip) if ok)
        missing = [int(map_index) for map_index, ok in zip(run.map_index, has_oip) if not ok]
        losses = {int(map_index): float(loss) for map_index, loss in zip(run.map_index, run.result.loss)}
        figures[strategy] = {
            "maps": len(maps),
            "with_oip": int(has_oip.sum()),
            "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu, 1),
            "oips_by_strategy": dict(by_strategy),
            "without_oip": missing,
            "mean_loss": float(np.mean(run.result.loss[has_oip])) if has_oip.any() else 0.0,
            "median_loss": float(np.median(run.result.loss)),
            "stages": [vars(stage) for stage in run.stages],
            "per_map": [
                {"map": map_id, "loss": losses[map_id], "strategy": name}
                for map_id, name in zip(run.map_index.tolist(), run.strategy)
            ],
        }
        print(
            f"{strategy}: {int(has_oip.sum())} of {len(maps)} maps of {FLAGS.layer} have an OIP"
            f" ({seconds:.1f} s wall, {cpu:.1f} s CPU, {load} before); by strategy {dict(by_strategy)};"
            f" without: {missing}; median loss {np.median(run.result.loss):.3f}",
            flush=True,
        )
        for stage in run.stages:
            print(
                f"  stage {stage.name}: {stage.fired} of {stage.pairs} pairs got an OIP in {stage.seconds:.1f} s"
                f" ({stage.cpu_seconds:.1f} s CPU)",
                flush=True,
            )
        if reference is not None:
            print(f"  {compare(strategy, losses, reference)}", flush=True)
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as file:
            json.dump(
                {"layer": FLAGS.layer, "seed": FLAGS.seed, "steps": FLAGS.steps, "figures": figures}, file, indent=2
            )


if __name__ == "__main__":
    app.run(main)
