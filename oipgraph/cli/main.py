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
from oipgraph.cli import hardware, layers
from oipgraph.cli import plan as plan_module
from oipgraph.cli.compute import compute_maps
from oipgraph.cli.outlock import OutputLock
from oipgraph.core import errors, interrupts
from oipgraph.models.loading import shipped_model_path
from oipgraph.outputs import datasets, examples
from oipgraph.outputs.run_progress import RunProgress

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
            run_layers(run)
    except (KeyboardInterrupt, interrupts.Terminated) as interruption:
        terminated = isinstance(interruption, interrupts.Terminated)
        what = "terminated" if terminated else "interrupted"
        layers_text = ""
        if run.get("several"):
            layers_text = f" ({run['layers_done']} of {run['layers_total']} layers written)"
        if run.get("written"):
            message = f"{what} after the run was complete: all of its outputs are written"
        elif "progress" in run:
            done = run["progress"].saved_maps()
            total = sum(len(chunk) for chunk in run["chunks"])
            of_layer = f" of layer {run['layer']}" if run.get("several") else ""
            message = (
                f"{what} with {done} of {total} maps{of_layer} saved{layers_text}; rerun with --resume to continue"
            )
        elif run.get("layers_done"):
            message = f"{what}{layers_text}; rerun with --resume to continue"
        else:
            message = f"{what} before anything was written"
        sys.stderr.write(f"\noipgraph: {message}\n")
        sys.exit(143 if terminated else 130)


def run_layers(run: dict[str, Any]) -> None:
    """Checks everything for every layer, then computes and writes each; fills `run` with the progress.

    One layer (`--layer=NAME`) writes into --out; several (`--layer=A,B` or `all`) write each into
    `OUT/<layer>/` (`layers.folder_name`) and, last, the top gallery `OUT/index.html`.
    """
    settings = cli_flags.check_flags()
    hardware.check_hardware_flags()
    names = cli_flags.read_labels()
    fingerprint = model_sha256(FLAGS.model) if FLAGS.model is None or os.path.isfile(FLAGS.model) else None
    # Before the model loads: logical devices and the cluster connection precede TensorFlow's runtime.
    settings = dataclasses.replace(settings, executor=hardware.make_executor())
    model = cli_flags.load_flag_model()
    chosen = layers.layer_list(model, FLAGS.layer)
    several = layers.is_multi_layer(FLAGS.layer)
    if several:
        layers.check_top_folder(FLAGS.out, names)
    dataset_file = cli_flags.dataset_path()
    plans = []
    for layer in chosen:
        out = os.path.join(FLAGS.out, layers.folder_name(layer)) if several else FLAGS.out
        plans.append(
            plan_module.plan_layer(layer, out, model, settings, names, fingerprint, dataset_file, several, not plans)
        )
    dataset = datasets.load_dataset(dataset_file, plans[0].ascent.image_shape) if dataset_file else None
    if dataset is None:
        print("oipgraph: no --dataset: the OIPs are not compared with dataset images")
    # Everything is checked: from here on the run writes into --out, holding each layer folder's lock.
    interrupts.check()
    run.update(layers_done=0, layers_total=len(plans), several=several)
    for plan in plans:
        if plan.finished:
            print(f"oipgraph: {plan.out} holds the finished run of layer {plan.layer}; kept")
        else:
            if several:
                print(f"oipgraph: layer {plan.layer} -> {plan.out}")
            run_planned(run, plan, dataset, names)
        run["layers_done"] += 1
    if several:
        layers.write_top_index(FLAGS.out, [(plan.out, plan.layer) for plan in plans])
        print(f"oipgraph: wrote {os.path.join(FLAGS.out, 'index.html')}, the gallery of {len(plans)} layers")
    run["written"] = True


def run_planned(
    run: dict[str, Any],
    plan: plan_module.LayerPlan,
    dataset: datasets.Dataset | None,
    names: list[str] | None,
) -> None:
    """Computes (or resumes) and writes one planned layer, holding its folder's lock."""
    run.update(progress=plan.progress, chunks=plan.chunks, layer=plan.layer)
    inits = FLAGS.inits_per_map
    with OutputLock(plan.out):
        if FLAGS.overwrite and os.path.lexists(os.path.join(plan.logdir, plan.run_name)):
            shutil.rmtree(os.path.join(plan.logdir, plan.run_name))  # The run's own (checked above).
        saved = plan.progress.begin(plan.header, FLAGS.resume, FLAGS.overwrite)
        finished = plan.progress.verified_groups(saved, RUN_ARRAYS, plan.maps, inits, print_warning)
        compute_maps(
            plan.progress,
            plan.chunks,
            finished,
            plan.ascent,
            plan.settings,
            FLAGS.strategy,
            FLAGS.seed,
            inits,
            FLAGS.escalation_budget,
        )
        write_run(
            plan.progress, plan.maps, plan.ascent, plan.header, plan.out, plan.logdir, plan.run_name, dataset, names
        )
    run.pop("progress")


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
    names: list[str] | None = None,
) -> None:
    """Writes the run's outputs from its saved maps.

    With a `dataset`, its top images per map are found (one compiled pass) before the outputs are written;
    `names` are the layer's labels (`--labels`).
    """
    inits, num_maps = header["inits_per_map"], len(maps)
    pairs = progress.load_run(maps)
    pairs.small["fired"] = ascent.objective.fired(pairs.small["loss"], pairs.small["status"])
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
    print(
        f"oipgraph: writing {out}/grid.png, maps/, oips.npz, index.html, catalog.json and TensorBoard summaries"
        f" to {logdir}"
    )
    document = outputs.write_outputs(
        out, logdir, run_name, pairs, inits, {**header, "command": command}, ascent.domain, found, names
    )
    progress.finish()
    fired = sum(entry["fired"] for entry in document["maps"])
    print(
        f"{fired} of {num_maps} {ascent.objective.target_kind}s of {header['layer']} have an OIP;"
        f" wrote {out}/index.html (the gallery), {out}/grid.png, {out}/catalog.json, "
        f"{out}/oips.npz; TensorBoard: {logdir}" + examples.run_summary_text(document)
    )


def run() -> None:
    """Console-script entry point."""
    errors.adopt_key_flags(hardware.__name__)
    try:
        errors.run(main, flag_module=cli_flags.__name__)
    except SystemExit as exit_request:
        hardware.end_process(exit_request.code)
        raise


if __name__ == "__main__":
    run()
