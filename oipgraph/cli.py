"""`oipgraph`: OIPs for the feature maps of one layer, as files and TensorBoard summaries.

Example:
    oipgraph --layer=Conv2D_3 --maps=all --out=oips

writes `oips/grid.png` (all maps, labelled), `oips/maps/map_NNN.png`,
`oips/oips.npz`, `oips/catalog.json` and TensorBoard summaries under
`oips/tensorboard` (`tensorboard --logdir oips/tensorboard`). An interrupted run
continues with the same command plus `--resume`.
"""

from __future__ import annotations

import math
import os
import sys

import keras
import numpy as np
from absl import flags

from oipgraph import catalog, datasets, errors, examples, mnist, outputs
from oipgraph.ascent import DEFAULT_CONV_CRITERION, DEFAULT_EPSILON, OIPAscent
from oipgraph.errors import OIPGraphError
from oipgraph.model import load_model
from oipgraph.strategies import DEFAULT_BATCH_SIZE, STRATEGIES, OIPRun, StrategySettings, create_oips, parse_maps

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Keras model file (.keras); default: the shipped MNIST CNN.")
flags.DEFINE_string("layer", "Conv2D_3", "Layer whose feature maps get OIPs.")
flags.DEFINE_string("maps", "all", "Maps to optimize: 'all' or a list like '0-7,12'.")
flags.DEFINE_string("strategy", "random", f"Start strategy: {', '.join(STRATEGIES)}.")
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
RUN_FLAGS = (
    "model",
    "layer",
    "maps",
    "strategy",
    "steps",
    "epsilon",
    "conv_criterion",
    "seed",
    "inits_per_map",
    "batch_size",
    "out",
    "logdir",
    "dataset",
)


def check_flags() -> StrategySettings:
    """Validates the numeric and choice flags; returns the ascent settings."""
    if FLAGS.steps is not None and FLAGS.steps <= 0:
        raise OIPGraphError(f"--steps must be > 0, got {FLAGS.steps}")
    if not (math.isfinite(FLAGS.epsilon) and FLAGS.epsilon > 0):
        raise OIPGraphError(f"--epsilon must be a finite number > 0, got {FLAGS.epsilon}")
    if not math.isfinite(FLAGS.conv_criterion):
        raise OIPGraphError(f"--conv_criterion must be finite, got {FLAGS.conv_criterion}")
    if FLAGS.inits_per_map < 1:
        raise OIPGraphError(f"--inits_per_map must be >= 1, got {FLAGS.inits_per_map}")
    if FLAGS.batch_size < 1:
        raise OIPGraphError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
    if FLAGS.strategy not in STRATEGIES:
        raise OIPGraphError(f"unknown --strategy={FLAGS.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    catalog.check_writable_dir(FLAGS.out, "--out")
    if FLAGS.logdir:
        catalog.check_writable_dir(FLAGS.logdir, "--logdir")
    return StrategySettings(
        FLAGS.steps,
        FLAGS.epsilon,
        FLAGS.conv_criterion,
        FLAGS.batch_size,
        verbose=FLAGS.strategy in ("precursor", "auto"),
    )


def run_arrays(run: OIPRun) -> dict[str, np.ndarray]:
    """Per-pair arrays of one chunk, as saved for `--resume` and merged into `oips.npz`."""
    result = run.result
    return {
        "map_index": result.map_index,
        "init_index": run.init_index,
        "seed_stream": run.streams,
        "strategy": np.asarray(run.strategy),
        "start_images": run.start_images,
        "images": result.images,
        "loss": result.loss,
        "loss_history": result.loss_history,
        "steps_run": result.steps_run,
        "status": result.status,
        "snapshots": result.snapshots,
        "snapshot_steps": np.stack([result.pair_snapshot_steps(pair) for pair in range(len(result))]),
    }


def dataset_path() -> str | None:
    """`--dataset`, else `$OIPGRAPH_MNIST` for the shipped model, else None ('' turns it off)."""
    if FLAGS.dataset is not None:
        return FLAGS.dataset or None
    if FLAGS.model is None:
        return os.environ.get(mnist.ENV_VAR) or None
    return None


def main(argv: list[str]) -> None:
    del argv
    settings = check_flags()
    ascent = OIPAscent(load_model(FLAGS.model), FLAGS.layer)
    maps = parse_maps(FLAGS.maps, ascent.num_maps, FLAGS.layer)
    dataset_file = dataset_path()
    dataset = datasets.load_dataset(dataset_file, ascent.image_shape) if dataset_file else None
    if dataset is None:
        print("oipgraph: no --dataset: the OIPs are not compared with dataset images")
    inits = FLAGS.inits_per_map
    out = FLAGS.out
    logdir = FLAGS.logdir or os.path.join(out, "tensorboard")
    run_name = f"{FLAGS.layer}-{FLAGS.strategy}-seed{FLAGS.seed}"
    if not FLAGS.resume and os.path.exists(os.path.join(logdir, run_name)):
        raise OIPGraphError(f"--logdir={logdir} already holds run {run_name}; pass --resume or choose another --logdir")
    maps_per_chunk = max(1, settings.batch_size // inits)
    chunks = [maps[begin : begin + maps_per_chunk] for begin in range(0, len(maps), maps_per_chunk)]
    header = {
        "model": os.path.abspath(FLAGS.model) if FLAGS.model else "shipped:mnist_cnn.keras",
        "layer": FLAGS.layer,
        "maps": maps,
        "strategy": FLAGS.strategy,
        "steps": FLAGS.steps,
        "epsilon": FLAGS.epsilon,
        "conv_criterion": FLAGS.conv_criterion,
        "seed": FLAGS.seed,
        "inits_per_map": inits,
        "batch_size": FLAGS.batch_size,
        "dataset": os.path.abspath(dataset_file) if dataset_file else None,
    }
    progress = catalog.RunProgress(out)
    finished = progress.begin(header, FLAGS.resume)
    progbar = keras.utils.Progbar(len(maps), unit_name="map")
    progbar.update(sum(len(chunks[chunk]) for chunk in finished if chunk < len(chunks)))
    try:
        for chunk, chunk_maps in enumerate(chunks):
            if chunk in finished:
                continue
            run = create_oips(ascent, chunk_maps, FLAGS.strategy, FLAGS.seed, inits, settings)
            progress.save_chunk(chunk, run_arrays(run))
            progbar.add(len(chunk_maps))
    except KeyboardInterrupt:
        done = sum(len(chunks[chunk]) for chunk in progress_chunks(progress, len(chunks)))
        sys.stderr.write(
            f"\noipgraph: interrupted with {done} of {len(maps)} maps saved; rerun with --resume to continue\n"
        )
        sys.exit(130)
    pairs = catalog.merge_pairs([progress.load_chunk(chunk) for chunk in range(len(chunks))])
    found = None
    if dataset is not None:
        scores, num_maps = examples.feature_scores(ascent.feature_model)
        batch_size = examples.batch_size_for(ascent.feature_model)
        found = examples.find_examples(dataset, scores, num_maps, batch_size=batch_size)
        del dataset
    command = " ".join(
        ["oipgraph", *(f"--{name}={FLAGS[name].value}" for name in RUN_FLAGS if FLAGS[name].value is not None)]
    )
    document = outputs.write_outputs(out, logdir, run_name, pairs, inits, {**header, "command": command}, found)
    progress.finish()
    fired = sum(entry["status"] != "no_activation" and entry["loss"] > 0 for entry in document["maps"])
    print(
        f"{fired} of {len(maps)} maps of {FLAGS.layer} have an OIP; wrote {out}/grid.png, {out}/catalog.json, "
        f"{out}/oips.npz; TensorBoard: {logdir}" + examples.run_summary_text(document)
    )


def progress_chunks(progress: catalog.RunProgress, count: int) -> list[int]:
    return [chunk for chunk in range(count) if os.path.exists(progress.chunk_path(chunk))]


def run() -> None:
    """Console-script entry point."""
    errors.run(main)


if __name__ == "__main__":
    run()
