"""The flags of `oipgraph` (the command line of `oipgraph.cli.main`), their checks, and what they ask for.

Every flag value that needs no model is checked by `check_flags` before the
model loads and before anything is written; `check_run_size` adds the bounds
that need the model. `build_ascent` builds the compiled ascent the flags
describe. Bounds: `oipgraph.core.limits`.
"""

from __future__ import annotations

import dataclasses
import math
import os

import keras
from absl import flags

from oipgraph.ascent import DEFAULT_CONV_CRITERION, DEFAULT_STEPS, OIPAscent
from oipgraph.ascent.domain import PREPROCESSED_RANGE, infer_domain, parse_domain
from oipgraph.ascent.parameterizations import PARAMETERIZATIONS
from oipgraph.ascent.presets import AUTO, PRESETS, resolve_recipe
from oipgraph.ascent.step_rules import STEP_RULES
from oipgraph.ascent.transforms import MAX_JITTER, MAX_SCALE
from oipgraph.core import limits
from oipgraph.core.errors import OIPGraphError
from oipgraph.models import mnist
from oipgraph.models.layer_lookup import parse_image_size
from oipgraph.models.loading import check_image_model, load_model
from oipgraph.models.precision import DEFAULT_PRECISION, PRECISIONS
from oipgraph.models.preprocessing import PREPROCESSING, with_preprocessing
from oipgraph.objectives import OBJECTIVES
from oipgraph.outputs import catalog, labels
from oipgraph.strategies import DEFAULT_BATCH_SIZE, DEFAULT_PRECURSOR_STEPS, STRATEGIES, StrategySettings
from oipgraph.strategies.budget import (
    DEFAULT_MEMORY_BUDGET_GB,
    MAX_ESCALATION_BUDGET,
    MAX_MEMORY_BUDGET_GB,
    MIN_MEMORY_BUDGET_GB,
    batch_within_memory,
    resident_bytes,
    result_bytes_per_pair,
)
from oipgraph.strategies.ranking import activation_bytes_per_image

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Keras model file (.keras); default: the shipped MNIST CNN.")
flags.DEFINE_string(
    "layer",
    "Conv2D_3",
    "Layer whose feature maps get OIPs; `outer/inner` (or a unique inner name) in nested models; several as A,B or"
    " 'all' (every target layer), each into OUT/<layer>/ with a top OUT/index.html.",
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
flags.DEFINE_float("epsilon", None, "Ascent step size; the same as --learning_rate (kept for the articles' name).")
flags.DEFINE_enum(
    "preset",
    AUTO,
    [AUTO, *PRESETS],
    "What the ascent runs: articles (pixels, normalized step, no transforms), natural (fourier, adam, lucid's"
    " transforms), or auto: articles for standardized images, natural for images in a value range.",
)
flags.DEFINE_enum("param", None, list(PARAMETERIZATIONS), "Parameterization of the images; default: the preset's.")
flags.DEFINE_enum("optimizer", None, list(STEP_RULES), "Step rule; default: the preset's.")
flags.DEFINE_float(
    "learning_rate", None, "Step size of the step rule; default: the preset's (0.01 normalized, 0.05 adam)."
)
flags.DEFINE_string(
    "transforms",
    None,
    "Transforms of what the model sees at each step: none, standard (lucid's pad, jitter, scale, rotate, jitter) or"
    " name=value pairs of pad, jitter, scale, rotate, jitter_after; default: the preset's.",
)
flags.DEFINE_enum(
    "preprocess",
    None,
    list(PREPROCESSING),
    "Run keras.applications' preprocess_input (caffe: VGG16/19, ResNet50; tf: MobileNet, Inception; torch: DenseNet)"
    " in the graph in front of the model; the images are then RGB in [0, 255].",
)
flags.DEFINE_enum(
    "precision",
    DEFAULT_PRECISION,
    list(PRECISIONS),
    "Arithmetic of the ascent's forward pass and gradient: float32, bfloat16 (image, update and reported losses stay"
    " float32) or auto: bfloat16 where the CPU has AMX-BF16 or AVX512-BF16 or there is a GPU, else float32.",
)
flags.DEFINE_float(
    "conv_criterion", DEFAULT_CONV_CRITERION, "Relative loss change that counts as converged (<= 0: run all steps)."
)
flags.DEFINE_integer("seed", 0, "Seed of the start images; same seed and inputs, same results.")
flags.DEFINE_integer("inits_per_map", 1, "Start images (OIPs) per map; > 1 also reports how unique a map's OIP is.")
flags.DEFINE_integer("batch_size", DEFAULT_BATCH_SIZE, "Pairs (map, start image) optimized at once.")
flags.DEFINE_integer(
    "chunk_maps",
    None,
    "Maps a strategy takes at once (auto escalates a chunk's dark maps together; the other strategies save a"
    " chunk's maps when it ends); default --batch_size / --inits_per_map, fewer where their results would pass"
    " 512 MiB. Above that, each call has several batches: the workers of --cluster or --devices run them side"
    " by side.",
)
flags.DEFINE_string("out", "oips", "Output folder.")
flags.DEFINE_string("logdir", None, "TensorBoard log folder; default OUT/tensorboard.")
flags.DEFINE_string(
    "dataset",
    None,
    "Images to compare the OIPs with (top 9 per map, ratio oip_loss / best dataset value): a Keras-format .npz "
    f"or a folder of PNG/JPEG images; default for the shipped model: ${mnist.ENV_VAR} when set; '' for none.",
)
flags.DEFINE_string(
    "labels",
    None,
    "Names of the layer's maps or units, one per line, a JSON list, or a JSON object such as Keras' ImageNet class"
    ' index {"0": ["n01440764", "tench"], ...}; shown in catalog.json, TensorBoard and the gallery.',
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
flags.DEFINE_float(
    "escalation_budget",
    1.0,
    "auto: the stages after random together may cost at most this factor of the random stage's work as asked"
    f" (its pairs x steps, counted in image-steps; 0: no escalation; at most {MAX_ESCALATION_BUDGET:g}); the"
    " precursor screen shrinks to fit, and the wake-up covers as many dark maps as fit.",
)
flags.DEFINE_float(
    "memory_budget",
    DEFAULT_MEMORY_BUDGET_GB,
    f"GiB the process may hold ({MIN_MEMORY_BUDGET_GB:g}..{MAX_MEMORY_BUDGET_GB:g}): the ascent's batch and the"
    " screen's chunks are sized from the layer's activation sizes to fit beside a chunk's results.",
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
    "chunk_maps",
    "objective",
    "neuron",
    "minimize",
    "jitter",
    "scale",
    "preset",
    "param",
    "optimizer",
    "learning_rate",
    "transforms",
    "preprocess",
    "precision",
    "input_range",
    "escalation_budget",
    "memory_budget",
    "out",
    "logdir",
    "dataset",
    "labels",
)


def check_flags() -> StrategySettings:
    """Validates every flag value that needs no model: representable, within `oipgraph.core.limits`, usable folders.

    Writes nothing. Returns the ascent settings.
    """
    if FLAGS.steps is not None:
        if FLAGS.steps <= 0:
            raise OIPGraphError(f"--steps must be > 0, got {FLAGS.steps}")
        limits.check_steps("--steps", FLAGS.steps)
    for name in ("epsilon", "learning_rate"):
        if FLAGS[name].value is not None:
            limits.check_epsilon(f"--{name}", FLAGS[name].value)
    if None not in (FLAGS.epsilon, FLAGS.learning_rate) and FLAGS.epsilon != FLAGS.learning_rate:
        raise OIPGraphError(
            f"--epsilon={FLAGS.epsilon:g} and --learning_rate={FLAGS.learning_rate:g} are the same setting: pass one"
        )
    if FLAGS.transforms is not None and (FLAGS["jitter"].present or FLAGS["scale"].present):
        raise OIPGraphError("--jitter and --scale are part of --transforms: pass them inside it (jitter=J,scale=S)")
    if FLAGS.preprocess is not None and FLAGS.input_range is not None:
        raise OIPGraphError(
            f"--preprocess={FLAGS.preprocess} sets the input range to 0,255:"
            f" leave out --input_range={FLAGS.input_range}"
        )
    limits.check_float32("--conv_criterion", FLAGS.conv_criterion)
    limits.check_int64("--seed", FLAGS.seed)
    if FLAGS.inits_per_map < 1:
        raise OIPGraphError(f"--inits_per_map must be >= 1, got {FLAGS.inits_per_map}")
    limits.check_int("--inits_per_map", FLAGS.inits_per_map, limits.MAX_INITS_PER_MAP)
    if FLAGS.batch_size < 1:
        raise OIPGraphError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
    limits.check_int("--batch_size", FLAGS.batch_size, limits.MAX_BATCH)
    limits.check_step_pairs(longest_steps(), FLAGS.batch_size, "--batch_size x --steps")
    if FLAGS.chunk_maps is not None:
        if FLAGS.chunk_maps < 1:
            raise OIPGraphError(f"--chunk_maps must be >= 1, got {FLAGS.chunk_maps}")
        chunk_pairs = FLAGS.chunk_maps * FLAGS.inits_per_map
        limits.check_int("--chunk_maps x --inits_per_map", chunk_pairs, limits.MAX_BATCH)
        limits.check_step_pairs(longest_steps(), chunk_pairs, "--chunk_maps x --inits_per_map x --steps")
    parse_image_size(FLAGS.image_size)
    if FLAGS.strategy not in STRATEGIES:
        raise OIPGraphError(f"unknown --strategy={FLAGS.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    budget = FLAGS.escalation_budget
    if budget is not None and not (math.isfinite(budget) and 0 <= budget <= MAX_ESCALATION_BUDGET):
        raise OIPGraphError(f"--escalation_budget must be a number in [0, {MAX_ESCALATION_BUDGET:g}], got {budget}")
    memory = FLAGS.memory_budget
    if not (math.isfinite(memory) and MIN_MEMORY_BUDGET_GB <= memory <= MAX_MEMORY_BUDGET_GB):
        raise OIPGraphError(
            f"--memory_budget must be a number of GiB in [{MIN_MEMORY_BUDGET_GB:g}, {MAX_MEMORY_BUDGET_GB:g}],"
            f" got {memory}"
        )
    if FLAGS.resume and FLAGS.overwrite:
        raise OIPGraphError("--resume continues the run in --out, --overwrite replaces it: pass one of them")
    for name in ("out", "logdir", "model", "labels"):
        if FLAGS[name].value == "":
            raise OIPGraphError(f"--{name} must not be empty")
    catalog.check_writable_dir(FLAGS.out, "--out")
    catalog.check_output_entries(FLAGS.out)
    if FLAGS.logdir:
        catalog.check_writable_dir(FLAGS.logdir, "--logdir")
    return StrategySettings(
        FLAGS.steps,
        None,  # The ascent's learning rate: --learning_rate or --epsilon, else the preset's.
        FLAGS.conv_criterion,
        FLAGS.batch_size,
        verbose=FLAGS.strategy in ("precursor", "auto"),
        escalation_budget=FLAGS.escalation_budget,
    )


def read_labels() -> list[str] | None:
    """The names in `--labels` (`outputs.labels.load_labels`), or None without the flag. Checks the file only."""
    return None if FLAGS.labels is None else labels.load_labels(FLAGS.labels)


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


def fit_memory(settings: StrategySettings, ascent: OIPAscent, chunk_pairs: int) -> StrategySettings:
    """`settings` with the ascent's batch and the screen's chunk sized to --memory_budget (`batch_within_memory`).

    Each image of a batch holds about `ranking.activation_bytes_per_image` bytes (the layer's measured
    activation sizes); the budget less what the process holds now and less the results a chunk keeps until
    it is saved (2 x `budget.result_bytes_per_pair` x `chunk_pairs`, the pairs of the run's largest chunk) is
    shared by them. The batch only groups the computation (on a model whose ascent amplifies float rounding,
    as VGG16's natural preset does, oneDNN's rounding for another batch size gives other, equally good OIPs).

    Raises:
        OIPGraphError: not even one image fits.
    """
    per_image = activation_bytes_per_image(ascent.feature_model)
    # Twice: at the end of a chunk its batches' results and the joined results are both held.
    results = 2 * chunk_pairs * result_bytes_per_pair(ascent.image_shape, ascent.num_snapshots)
    budget_bytes, held = int(FLAGS.memory_budget * 2**30), resident_bytes()
    batch = batch_within_memory(per_image, budget_bytes, held, settings.batch_size, results)
    if batch < 1:
        raise OIPGraphError(
            f"--memory_budget={FLAGS.memory_budget:g} GiB is too small for layer {FLAGS.layer}: the process holds"
            f" {held / 2**30:.2f} GiB, the results of a chunk of {chunk_pairs} pairs need {results / 2**30:.2f} GiB"
            f" and one image needs about {per_image / 2**30:.2f} GiB more (a smaller --batch_size makes smaller"
            " chunks)"
        )
    screen = batch_within_memory(per_image, budget_bytes, held, settings.screen_chunk, results)
    return dataclasses.replace(settings, batch_size=batch, screen_chunk=screen)


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


def load_flag_model() -> keras.Model:
    """The model of --model (None: the shipped CNN) at --image_size, behind --preprocess if given."""
    model = load_model(FLAGS.model, parse_image_size(FLAGS.image_size))
    return model if FLAGS.preprocess is None else with_preprocessing(model, FLAGS.preprocess)


def build_ascent(model: keras.Model, layer: str, tell_domain: bool = True) -> OIPAscent:
    """The compiled ascent that the flags ask for on `layer` of `model` (objective, domain, preset and its pieces).

    With `tell_domain` (once per command), prints where a user's model's input domain came from and the
    preset's choice, one line each.
    """
    neuron = neuron_position()
    objective = "neuron" if neuron is not None and FLAGS.objective is None else FLAGS.objective
    domain = None if FLAGS.input_range is None else parse_domain(FLAGS.input_range)
    if FLAGS.preprocess is not None:
        domain = PREPROCESSED_RANGE
    if domain is None:
        domain, reason = infer_domain(model)
        if tell_domain and FLAGS.model is not None:
            print(reason)
    learning_rate = FLAGS.learning_rate if FLAGS.learning_rate is not None else FLAGS.epsilon
    recipe = resolve_recipe(
        domain, check_image_model(model), FLAGS.preset, FLAGS.param, FLAGS.optimizer, learning_rate, FLAGS.transforms
    )
    if FLAGS["jitter"].present or FLAGS["scale"].present:
        moved = dataclasses.replace(recipe.transforms, jitter=FLAGS.jitter, scale=FLAGS.scale)
        recipe = dataclasses.replace(recipe, transforms=moved)
    if tell_domain:
        print(recipe.line())
    return OIPAscent(
        model,
        layer,
        objective=objective,
        neuron=neuron,
        minimize=FLAGS.minimize,
        domain=domain,
        **recipe.pieces(),
        precision=FLAGS.precision,
    )


def dataset_path() -> str | None:
    """`--dataset`, else `$OIPGRAPH_MNIST` for the shipped model, else None ('' turns it off)."""
    if FLAGS.dataset is not None:
        return FLAGS.dataset or None
    if FLAGS.model is None:
        return os.environ.get(mnist.ENV_VAR) or None
    return None
