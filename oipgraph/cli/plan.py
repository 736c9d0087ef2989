"""One layer's run of `oipgraph`, planned: every check that needs the model, before anything is written.

`plan_layer` builds the layer's ascent, parses its maps, checks the run's size, the labels' count and the
output folder, and assembles the run's header (its settings: what `--resume` compares and `catalog.json`
keeps). `main.run_planned` then computes and writes it.
"""

from __future__ import annotations

import dataclasses
import os

import keras
from absl import flags

from oipgraph.ascent import OIPAscent
from oipgraph.cli import flags as cli_flags
from oipgraph.cli import layers
from oipgraph.cli.outlock import OutputLock
from oipgraph.outputs import catalog, labels
from oipgraph.outputs.run_progress import RunProgress
from oipgraph.strategies import StrategySettings, parse_maps
from oipgraph.strategies.budget import chunk_maps, result_bytes_per_pair

FLAGS = flags.FLAGS


@dataclasses.dataclass
class LayerPlan:
    """One layer's checked run: where it writes, what it computes, and whether a finished run is kept."""

    layer: str
    ascent: OIPAscent
    maps: list[int]
    chunks: list[list[int]]
    header: dict
    out: str
    logdir: str
    run_name: str
    progress: RunProgress
    settings: StrategySettings  # The run's, with the batch fitted to the memory budget for this layer.
    finished: bool = False  # A multi-layer --resume keeps this layer's finished run.


def plan_layer(
    layer: str,
    out: str,
    model: keras.Model,
    settings: StrategySettings,
    names: list[str] | None,
    fingerprint: str | None,
    dataset_file: str | None,
    several: bool,
    first: bool,
) -> LayerPlan:
    """Checks one layer's run (its ascent, maps, sizes, labels, folder) before anything is written."""
    ascent = cli_flags.build_ascent(model, layer, tell_domain=first)
    maps = parse_maps(FLAGS.maps, ascent.num_maps, layer, ascent.objective.target_kind)
    cli_flags.check_run_size(ascent, maps)
    inits = FLAGS.inits_per_map
    # Not the memory-fitted batch: chunks are part of the run (the same for the same settings).
    result_bytes = result_bytes_per_pair(ascent.image_shape, ascent.num_snapshots)
    maps_per_chunk = FLAGS.chunk_maps or chunk_maps(FLAGS.batch_size, inits, result_bytes)
    chunks = [maps[begin : begin + maps_per_chunk] for begin in range(0, len(maps), maps_per_chunk)]
    layer_settings = cli_flags.fit_memory(settings, ascent, len(chunks[0]) * inits)
    if names is not None:
        labels.check_count(names, ascent.num_maps, layer, ascent.objective.target_kind)
    logdir = FLAGS.logdir or os.path.join(out, "tensorboard")
    run_name = f"{layer.replace('/', '__')}-{FLAGS.strategy}-seed{FLAGS.seed}"  # outer/inner: one folder
    catalog.check_output_entries(out)
    OutputLock(out).check_free()
    catalog.check_tensorboard_run(logdir, run_name, out)
    progress = RunProgress(out)
    header = {
        "model": os.path.abspath(FLAGS.model) if FLAGS.model else "shipped:mnist_cnn.keras",
        "model_sha256": fingerprint,
        "layer": layer,
        "maps": maps,
        "strategy": FLAGS.strategy,
        "steps": FLAGS.steps,
        "epsilon": settings.step_size(ascent),
        "conv_criterion": FLAGS.conv_criterion,
        "seed": FLAGS.seed,
        "inits_per_map": inits,
        "batch_size": FLAGS.batch_size,
        **({"chunk_maps": FLAGS.chunk_maps} if FLAGS.chunk_maps else {}),  # Part of the run where given.
        "escalation_budget": FLAGS.escalation_budget,
        **ascent.objective.describe(),
        **{key: value for key, value in ascent.recipe.describe().items() if key != "transforms"},
        **ascent.transforms.describe(),
        "preprocess": FLAGS.preprocess,
        "input_range": ascent.domain.name,
        "precision": ascent.precision,
        "dataset": os.path.abspath(dataset_file) if dataset_file else None,
        "labels": os.path.abspath(FLAGS.labels) if FLAGS.labels else None,
    }
    plan = LayerPlan(layer, ascent, maps, chunks, header, out, logdir, run_name, progress, layer_settings)
    if several and FLAGS.resume and progress.is_finished():
        layers.check_finished_settings(out, header)
        plan.finished = True
    else:
        progress.check_start(FLAGS.resume, FLAGS.overwrite)
    return plan
