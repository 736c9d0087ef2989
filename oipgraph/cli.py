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
import signal
import sys
from typing import Any

import keras
import numpy as np
from absl import flags

from oipgraph import catalog, datasets, errors, examples, limits, mnist, outputs
from oipgraph.ascent import DEFAULT_CONV_CRITERION, DEFAULT_EPSILON, DEFAULT_STEPS, OIPAscent
from oipgraph.domain import parse_domain, pixels_to_domain
from oipgraph.errors import OIPGraphError
from oipgraph.layer_lookup import parse_image_size
from oipgraph.model import load_model, shipped_model_path
from oipgraph.objectives import OBJECTIVES
from oipgraph.outlock import OutputLock
from oipgraph.results import AscentResult
from oipgraph.strategies import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_PRECURSOR_STEPS,
    STRATEGIES,
    StrategySettings,
    create_oips,
    parse_maps,
)
from oipgraph.transforms import MAX_JITTER, MAX_SCALE, Transforms

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Keras model file (.keras); default: the shipped MNIST CNN.")
flags.DEFINE_string(
    "layer", "Conv2D_3", "Layer whose feature maps get OIPs; `outer/inner` (or a unique inner name) in nested models."
)
flags.DEFINE_string(
    "image_size", None, "H,W: run a model whose image input has a variable size (include_top=False) on HxW images."
)
flags.DEFINE_string("maps", "all", "Maps to optimize: 'all' or a list like '0-7,12'.")
flags.DEFINE_string("strategy", "auto", f"Start strategy: {', '.join(STRATEGIES)}.")
flags.DEFINE_integer(
    "steps",
    None,
    "Maximum steps of the final ascent per OIP; default: the strategy's own (600; coarse_to_fine 400, precursor 1200).",
)
flags.DEFINE_float("epsilon", DEFAULT_EPSILON, "Ascent step size.")
flags.DEFINE_float(
    "conv_criterion", DEFAULT_CONV_CRITERION, "Relative loss change that counts as converged (<= 0: run all steps)."
)
flags.DEFINE_integer("seed", 0, "Seed of the start images; same seed and inputs, same results.")
flags.DEFINE_integer("inits_per_map", 1, "Start images (OIPs) per map; > 1 also reports how unique a map's OIP is.")
flags.DEFINE_integer("batch_size", DEFAULT_BATCH_SIZE, "Pairs (map, start image) optimized at once.")
flags.DEFINE_string("out", "oips", "Output folder.")
flags.DEFINE_string("logdir", None, "TensorBoard log folder; default OUT/tensorboard.")
flags.DEFINE_string(
    "dataset",
    None,
    "Images to compare the OIPs with (top 9 per map, ratio oip_loss / best dataset value): a Keras-format .npz "
    f"or a folder of PNG/JPEG images; default for the shipped model: ${mnist.ENV_VAR} when set; '' for none.",
)
flags.DEFINE_bool("resume", False, "Continue an interrupted run in --out (same flags), skipping finished maps.")
flags.DEFINE_bool("overwrite", False, "Replace the run in --out (finished or interrupted) and its own TensorBoard run.")
flags.DEFINE_enum(
    "objective",
    None,
    list(OBJECTIVES),
    "What to maximize: channel (a map's mean), neuron (one position of a map) or unit (one unit of a Dense or other"
    " non-spatial layer; after softmax/sigmoid its logit); default: channel for spatial layers, unit otherwise.",
)
flags.DEFINE_list("neuron", None, "ROW,COL of the neuron objective; default: the centre of the map.")
flags.DEFINE_bool("minimize", False, "Minimize the objective instead of maximizing it.")
flags.DEFINE_integer("jitter", 0, f"Shift what the model sees by up to this many pixels per step (0..{MAX_JITTER}).")
flags.DEFINE_float("scale", 0.0, f"Scale what the model sees by up to this fraction per step (0..{MAX_SCALE}).")
flags.DEFINE_string(
    "input_range",
    None,
    "The model's input domain: 'standardized' (per-image standardized images, the shipped CNN's) or LOW,HIGH"
    " such as 0,255; default: read off a leading Rescaling/Normalization layer, else standardized.",
)
RUN_FLAGS = (
    "model",
    "image_size",
    "layer",
    "maps",
    "strategy",
    "steps",
    "epsilon",
    "conv_criterion",
    "seed",
    "inits_per_map",
    "batch_size",
    "objective",
    "neuron",
    "minimize",
    "jitter",
    "scale",
    "input_range",
    "out",
    "logdir",
    "dataset",
)

# The arrays every saved chunk holds (`OIPRun.arrays`), checked when --resume loads it.
RUN_ARRAYS = (
    *(field.name for field in dataclasses.fields(AscentResult)),
    "init_index",
    "seed_stream",
    "strategy",
    "start_images",
)


def check_flags() -> StrategySettings:
    """Validates every flag value that needs no model: representable, within `oipgraph.limits`, usable folders.

    Writes nothing. Returns the ascent settings.
    """
    if FLAGS.steps is not None:
        if FLAGS.steps <= 0:
            raise OIPGraphError(f"--steps must be > 0, got {FLAGS.steps}")
        limits.check_steps("--steps", FLAGS.steps)
    limits.check_epsilon("--epsilon", FLAGS.epsilon)
    limits.check_float32("--conv_criterion", FLAGS.conv_criterion)
    limits.check_int64("--seed", FLAGS.seed)
    if FLAGS.inits_per_map < 1:
        raise OIPGraphError(f"--inits_per_map must be >= 1, got {FLAGS.inits_per_map}")
    limits.check_int("--inits_per_map", FLAGS.inits_per_map, limits.MAX_INITS_PER_MAP)
    if FLAGS.batch_size < 1:
        raise OIPGraphError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
    limits.check_int("--batch_size", FLAGS.batch_size, limits.MAX_BATCH)
    limits.check_step_pairs(longest_steps(), FLAGS.batch_size, "--batch_size x --steps")
    parse_image_size(FLAGS.image_size)
    if FLAGS.strategy not in STRATEGIES:
        raise OIPGraphError(f"unknown --strategy={FLAGS.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if FLAGS.resume and FLAGS.overwrite:
        raise OIPGraphError("--resume continues the run in --out, --overwrite replaces it: pass one of them")
    for name in ("out", "logdir", "model"):
        if FLAGS[name].value == "":
            raise OIPGraphError(f"--{name} must not be empty")
    catalog.check_writable_dir(FLAGS.out, "--out")
    catalog.check_output_entries(FLAGS.out)
    if FLAGS.logdir:
        catalog.check_writable_dir(FLAGS.logdir, "--logdir")
    return StrategySettings(
        FLAGS.steps,
        FLAGS.epsilon,
        FLAGS.conv_criterion,
        FLAGS.batch_size,
        verbose=FLAGS.strategy in ("precursor", "auto"),
    )


def longest_steps() -> int:
    """The most steps one ascent of this run takes: --steps, or the longest strategy default (precursor's)."""
    return FLAGS.steps if FLAGS.steps is not None else max(DEFAULT_STEPS, DEFAULT_PRECURSOR_STEPS)


def check_run_size(ascent: OIPAscent, maps: list[int]) -> None:
    """Bounds that need the model: the batch for its image size and all loss histories of the run."""
    limits.check_batch("--batch_size", FLAGS.batch_size, ascent.image_shape)
    values = len(maps) * FLAGS.inits_per_map * longest_steps()
    if values > limits.MAX_RUN_LOSS_VALUES:
        raise OIPGraphError(
            f"maps x --inits_per_map x steps = {len(maps)} x {FLAGS.inits_per_map} x {longest_steps()} = {values}"
            f" loss values is above the limit of {limits.MAX_RUN_LOSS_VALUES} for one run; split --maps over runs"
        )


def model_sha256(path: str | None) -> str:
    """SHA-256 (hex) of the model file's bytes (None: the shipped model): part of the run's fingerprint."""
    digest = hashlib.sha256()
    with open(path or shipped_model_path(), "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Terminated(Exception):
    """Raised by the SIGTERM handler, so that a `kill` ends a run like Ctrl-C does."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def neuron_position() -> tuple[int, int] | None:
    """The checked --neuron flag as (row, col), or None."""
    if FLAGS.neuron is None:
        return None
    try:
        row, col = (int(value) for value in FLAGS.neuron)
    except ValueError:
        raise OIPGraphError(f"--neuron must be two integers ROW,COL, got {','.join(FLAGS.neuron)!r}") from None
    if FLAGS.objective not in (None, "neuron"):
        raise OIPGraphError(f"--neuron={row},{col} needs --objective=neuron, not --objective={FLAGS.objective}")
    return row, col


def build_ascent() -> OIPAscent:
    """The compiled ascent that the flags ask for (model, layer, objective, transforms)."""
    transforms = Transforms(FLAGS.jitter, FLAGS.scale)
    neuron = neuron_position()
    objective = "neuron" if neuron is not None and FLAGS.objective is None else FLAGS.objective
    domain = None if FLAGS.input_range is None else parse_domain(FLAGS.input_range)
    model = load_model(FLAGS.model, parse_image_size(FLAGS.image_size))
    ascent = OIPAscent(
        model,
        FLAGS.layer,
        objective=objective,
        neuron=neuron,
        minimize=FLAGS.minimize,
        transforms=transforms,
        domain=domain,
    )
    if FLAGS.model is not None and FLAGS.input_range is None:
        print(ascent.domain_reason)
    return ascent


def dataset_path() -> str | None:
    """`--dataset`, else `$OIPGRAPH_MNIST` for the shipped model, else None ('' turns it off)."""
    if FLAGS.dataset is not None:
        return FLAGS.dataset or None
    if FLAGS.model is None:
        return os.environ.get(mnist.ENV_VAR) or None
    return None


def main(argv: list[str]) -> None:
    """Runs the layer; Ctrl-C (SIGINT) and `kill` (SIGTERM) end it with one line and exit code 130 / 143."""
    del argv
    signal.signal(signal.SIGTERM, _raise_terminated)
    run: dict[str, Any] = {}
    try:
        run_layer(run)
    except (KeyboardInterrupt, Terminated) as interruption:
        terminated = isinstance(interruption, Terminated)
        what = "terminated" if terminated else "interrupted"
        if "progress" in run:
            chunks = run["chunks"]
            done = sum(len(chunks[chunk]) for chunk in progress_chunks(run["progress"], len(chunks)))
            total = sum(len(chunk) for chunk in chunks)
            message = f"{what} with {done} of {total} maps saved; rerun with --resume to continue"
        else:
            message = f"{what} before anything was written"
        sys.stderr.write(f"\noipgraph: {message}\n")
        sys.exit(143 if terminated else 130)


def run_layer(run: dict[str, Any]) -> None:
    """Checks everything, then computes and writes the run; fills `run` with its progress and chunks."""
    settings = check_flags()
    fingerprint = model_sha256(FLAGS.model) if FLAGS.model is None or os.path.isfile(FLAGS.model) else None
    ascent = build_ascent()
    maps = parse_maps(FLAGS.maps, ascent.num_maps, FLAGS.layer, ascent.objective.target_kind)
    check_run_size(ascent, maps)
    dataset_file = dataset_path()
    dataset = datasets.load_dataset(dataset_file, ascent.image_shape) if dataset_file else None
    if dataset is None:
        print("oipgraph: no --dataset: the OIPs are not compared with dataset images")
    inits = FLAGS.inits_per_map
    out = FLAGS.out
    logdir = FLAGS.logdir or os.path.join(out, "tensorboard")
    run_name = f"{FLAGS.layer.replace('/', '__')}-{FLAGS.strategy}-seed{FLAGS.seed}"  # outer/inner: one folder
    OutputLock(out).check_free()
    catalog.check_tensorboard_run(logdir, run_name, out)
    progress = catalog.RunProgress(out)
    progress.check_start(FLAGS.resume, FLAGS.overwrite)
    maps_per_chunk = max(1, settings.batch_size // inits)
    chunks = [maps[begin : begin + maps_per_chunk] for begin in range(0, len(maps), maps_per_chunk)]
    header = {
        "model": os.path.abspath(FLAGS.model) if FLAGS.model else "shipped:mnist_cnn.keras",
        "model_sha256": fingerprint,
        "layer": FLAGS.layer,
        "maps": maps,
        "strategy": FLAGS.strategy,
        "steps": FLAGS.steps,
        "epsilon": FLAGS.epsilon,
        "conv_criterion": FLAGS.conv_criterion,
        "seed": FLAGS.seed,
        "inits_per_map": inits,
        "batch_size": FLAGS.batch_size,
        **ascent.objective.describe(),
        **ascent.transforms.describe(),
        "input_range": ascent.domain.name,
        "dataset": os.path.abspath(dataset_file) if dataset_file else None,
    }
    # Everything is checked: from here on the run writes into --out, holding its lock.
    run.update(progress=progress, chunks=chunks)
    with OutputLock(out):
        if FLAGS.overwrite and os.path.lexists(os.path.join(logdir, run_name)):
            shutil.rmtree(os.path.join(logdir, run_name))  # The run's own (checked above).
        saved = progress.begin(header, FLAGS.resume, FLAGS.overwrite)
        finished = progress.verified_chunks(
            saved, RUN_ARRAYS, lambda chunk: np.repeat(chunks[chunk], inits), print_warning
        )
        compute_and_write(
            progress, chunks, finished, ascent, settings, header, out, logdir, run_name, len(maps), dataset
        )


def print_warning(line: str) -> None:
    sys.stderr.write(f"oipgraph: warning: {line}\n")
    sys.stderr.flush()


def compute_and_write(
    progress: catalog.RunProgress,
    chunks: list[list[int]],
    finished: set[int],
    ascent: OIPAscent,
    settings: StrategySettings,
    header: dict,
    out: str,
    logdir: str,
    run_name: str,
    num_maps: int,
    dataset: datasets.Dataset | None,
) -> None:
    """Computes the chunks not in `finished` (saving each), then writes the run's outputs.

    With a `dataset`, its top images per map are found (one compiled pass) before the outputs are written.
    """
    inits = header["inits_per_map"]
    progbar = keras.utils.Progbar(num_maps, unit_name="map")
    done = sum(len(chunks[chunk]) for chunk in finished)
    progbar.update(done)
    for chunk, chunk_maps in enumerate(chunks):
        if chunk in finished:
            continue
        # Within a chunk the bar moves with the ascent's steps; later stages of `auto` may not move it.
        chunk_start, reached = done, [0.0]

        def report(share: float, chunk_start: int = chunk_start, size: int = len(chunk_maps), reached=reached):
            reached[0] = max(reached[0], min(share, 0.99))
            progbar.update(chunk_start + reached[0] * size)

        run = create_oips(
            ascent, chunk_maps, FLAGS.strategy, FLAGS.seed, inits, dataclasses.replace(settings, progress=report)
        )
        progress.save_chunk(chunk, run.arrays())
        done += len(chunk_maps)
        progbar.update(done)
    pairs = catalog.merge_pairs([progress.load_chunk(chunk) for chunk in range(len(chunks))])
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
    command = " ".join(
        ["oipgraph", *(f"--{name}={FLAGS[name].value}" for name in RUN_FLAGS if FLAGS[name].value is not None)]
    )
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


def progress_chunks(progress: catalog.RunProgress, count: int) -> list[int]:
    return [chunk for chunk in range(count) if os.path.exists(progress.chunk_path(chunk))]


def run() -> None:
    """Console-script entry point."""
    errors.run(main)


if __name__ == "__main__":
    run()
