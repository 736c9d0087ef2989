"""`oipgraph`: OIPs for the feature maps of one layer, as files and TensorBoard summaries.

Example:
    oipgraph --layer=Conv2D_3 --maps=all --out=oips

writes `oips/grid.png` (all maps, labelled), `oips/maps/map_NNN.png`,
`oips/oips.npz`, `oips/catalog.json` and TensorBoard summaries under
`oips/tensorboard` (`tensorboard --logdir oips/tensorboard`). An interrupted run
continues with the same command plus `--resume`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
from typing import Any

import numpy as np
from absl import flags

from oipgraph import outputs
from oipgraph.ascent import OIPAscent
from oipgraph.ascent.domain import pixels_to_domain
from oipgraph.ascent.results import AscentResult
from oipgraph.cli import flags as cli_flags
from oipgraph.cli.compute import compute_maps
from oipgraph.cli.outlock import OutputLock
from oipgraph.core import errors, interrupts
from oipgraph.models.loading import shipped_model_path
from oipgraph.outputs import catalog, datasets, examples
from oipgraph.outputs.run_progress import RunProgress
from oipgraph.strategies import parse_maps

FLAGS = flags.FLAGS

# The arrays every saved chunk holds (`OIPRun.arrays`), checked when --resume loads it.
RUN_ARRAYS = (
    *(field.name for field in dataclasses.fields(AscentResult)),
    "init_index",
    "seed_stream",
    "strategy",
    "start_images",
)


def model_sha256(path: str | None) -> str:
    """SHA-256 (hex) of the model file's bytes (None: the shipped model): part of the run's fingerprint."""
    digest = hashlib.sha256()
    with open(path or shipped_model_path(), "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str]) -> None:
    """Runs the layer; Ctrl-C (SIGINT) and `kill` (SIGTERM) end it with one line and exit code 130 / 143.

    The signal is raised at the next point between TensorFlow calls (`interrupts.deferred`): within about
    half a second during an ascent; every map whose result was final is saved, the others are computed by
    `--resume`. A second one ends it at once.
    """
    del argv
    run: dict[str, Any] = {}
    try:
        with interrupts.deferred(terminate=True):
            run_layer(run)
    except (KeyboardInterrupt, interrupts.Terminated) as interruption:
        terminated = isinstance(interruption, interrupts.Terminated)
        what = "terminated" if terminated else "interrupted"
        if run.get("written"):
            message = f"{what} after the run was complete: all of its outputs are written"
        elif "progress" in run:
            done = run["progress"].saved_maps()
            total = sum(len(chunk) for chunk in run["chunks"])
            message = f"{what} with {done} of {total} maps saved; rerun with --resume to continue"
        else:
            message = f"{what} before anything was written"
        sys.stderr.write(f"\noipgraph: {message}\n")
        sys.exit(143 if terminated else 130)


def run_layer(run: dict[str, Any]) -> None:
    """Checks everything, then computes and writes the run; fills `run` with its progress, chunks and `written`."""
    settings = cli_flags.check_flags()
    fingerprint = model_sha256(FLAGS.model) if FLAGS.model is None or os.path.isfile(FLAGS.model) else None
    ascent = cli_flags.build_ascent()
    maps = parse_maps(FLAGS.maps, ascent.num_maps, FLAGS.layer, ascent.objective.target_kind)
    cli_flags.check_run_size(ascent, maps)
    settings = cli_flags.fit_memory(settings, ascent)
    dataset_file = cli_flags.dataset_path()
    dataset = datasets.load_dataset(dataset_file, ascent.image_shape) if dataset_file else None
    if dataset is None:
        print("oipgraph: no --dataset: the OIPs are not compared with dataset images")
    inits = FLAGS.inits_per_map
    out = FLAGS.out
    logdir = FLAGS.logdir or os.path.join(out, "tensorboard")
    run_name = f"{FLAGS.layer.replace('/', '__')}-{FLAGS.strategy}-seed{FLAGS.seed}"  # outer/inner: one folder
    OutputLock(out).check_free()
    catalog.check_tensorboard_run(logdir, run_name, out)
    progress = RunProgress(out)
    progress.check_start(FLAGS.resume, FLAGS.overwrite)
    maps_per_chunk = max(1, FLAGS.batch_size // inits)  # Not the memory-fitted batch: chunks are part of the run.
    chunks = [maps[begin : begin + maps_per_chunk] for begin in range(0, len(maps), maps_per_chunk)]
    header = {
        "model": os.path.abspath(FLAGS.model) if FLAGS.model else "shipped:mnist_cnn.keras",
        "model_sha256": fingerprint,
        "layer": FLAGS.layer,
        "maps": maps,
        "strategy": FLAGS.strategy,
        "steps": FLAGS.steps,
        "epsilon": settings.step_size(ascent),
        "conv_criterion": FLAGS.conv_criterion,
        "seed": FLAGS.seed,
        "inits_per_map": inits,
        "batch_size": FLAGS.batch_size,
        "escalation_budget": FLAGS.escalation_budget,
        **ascent.objective.describe(),
        **{key: value for key, value in ascent.recipe.describe().items() if key != "transforms"},
        **ascent.transforms.describe(),
        "input_range": ascent.domain.name,
        "dataset": os.path.abspath(dataset_file) if dataset_file else None,
    }
    # Everything is checked: from here on the run writes into --out, holding its lock.
    interrupts.check()
    run.update(progress=progress, chunks=chunks)
    with OutputLock(out):
        if FLAGS.overwrite and os.path.lexists(os.path.join(logdir, run_name)):
            shutil.rmtree(os.path.join(logdir, run_name))  # The run's own (checked above).
        saved = progress.begin(header, FLAGS.resume, FLAGS.overwrite)
        finished = progress.verified_groups(saved, RUN_ARRAYS, maps, inits, print_warning)
        compute_maps(
            progress, chunks, finished, ascent, settings, FLAGS.strategy, FLAGS.seed, inits, FLAGS.escalation_budget
        )
        write_run(progress, maps, ascent, header, out, logdir, run_name, dataset)
    run["written"] = True


def print_warning(line: str) -> None:
    sys.stderr.write(f"oipgraph: warning: {line}\n")
    sys.stderr.flush()


def write_run(
    progress: RunProgress,
    maps: list[int],
    ascent: OIPAscent,
    header: dict,
    out: str,
    logdir: str,
    run_name: str,
    dataset: datasets.Dataset | None,
) -> None:
    """Writes the run's outputs from its saved maps.

    With a `dataset`, its top images per map are found (one compiled pass) before the outputs are written.
    """
    inits, num_maps = header["inits_per_map"], len(maps)
    pairs = progress.load_run(maps)
    pairs["fired"] = ascent.objective.fired(pairs["loss"], pairs["status"])
    found = None
    if dataset is not None:
        kind = ascent.objective.target_kind
        print(f"oipgraph: scoring {len(dataset.images)} images of {dataset.source} for every {kind}")
        # The objective itself scores the dataset (all maps or units at once), on images in the model's domain.
        found = examples.find_examples(
            dataset,
            ascent.objective.all_targets,
            ascent.num_maps,
            batch_size=examples.batch_size_for(ascent.feature_model),
            preprocess=pixels_to_domain(ascent.domain, from_uint8=dataset.images.dtype == np.uint8),
        )
        del dataset
    given = [name for name in cli_flags.RUN_FLAGS if FLAGS[name].value is not None]
    command = " ".join(["oipgraph", *(f"--{name}={FLAGS[name].value}" for name in given)])
    interrupts.check()  # The last point to stop at: from here the outputs are written in full.
    print(f"oipgraph: writing {out}/grid.png, maps/, oips.npz, catalog.json and TensorBoard summaries to {logdir}")
    document = outputs.write_outputs(
        out, logdir, run_name, pairs, inits, {**header, "command": command}, ascent.domain, found
    )
    progress.finish()
    fired = sum(entry["fired"] for entry in document["maps"])
    print(
        f"{fired} of {num_maps} {ascent.objective.target_kind}s of {FLAGS.layer} have an OIP;"
        f" wrote {out}/grid.png, {out}/catalog.json, "
        f"{out}/oips.npz; TensorBoard: {logdir}" + examples.run_summary_text(document)
    )


def run() -> None:
    """Console-script entry point."""
    errors.run(main, flag_module=cli_flags.__name__)


if __name__ == "__main__":
    run()
