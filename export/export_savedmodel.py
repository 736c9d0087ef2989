"""`oipgraph-export`: a SavedModel of the OIP ascent that TF Serving hosts unchanged.

The export is written in TF Serving's layout, `EXPORT_DIR/<version>/`, with
tag `serve`. It is self-contained: only standard TF ops (no `py_function`),
so it loads with `tf.saved_model.load` or TF Serving where `oipgraph` is not
installed. Every input is validated inside the graph; a bad input fails with
`InvalidArgumentError` whose message names it.

Which layers (`--layers=A,B`, any layer `oipgraph --layer` takes, `outer/inner`
inside nested models): the chosen ones only, each with `optimize_<Layer>` and,
for a layer with spatial output, `precursor_<Layer>`. Without `--layers`:

- a small model (at most `SMALL_MODEL_CONV_LAYERS` = 8 conv layers: Conv2D,
  SeparableConv2D, DepthwiseConv2D; like the shipped CNN): every conv and
  Dense layer, as before, plus the `serving_default` layer;
- a deeper model: only the `serving_default` layer. Every signature holds a
  compiled copy of the model up to its layer, so exporting all 52 convs of
  MobileNetV2 would cost minutes and gigabytes nobody asked for; choose more
  with `--layers`.

`<Layer>` in a signature name is the layer name with `/` written `__` and any
other character outside [A-Za-z0-9_] written `_` (`base/block_2_add` ->
`optimize_base__block_2_add`).

Signatures (B = batch size, H, W, C = the model's image input, F = 8 snapshot
frames, `<Layer>` = each exported layer, e.g. `Conv2D_1`, `Conv2D_2`,
`Conv2D_3`, `Dense_1`, `Dense_2` for the shipped MNIST CNN):

`optimize_<Layer>`: the OIP ascent on the maps of `<Layer>`, one (image, map)
pair per batch entry, with the default convergence stop (criterion 5e-4).
For a layer with [B, units] output (e.g. `optimize_Dense_2` for the shipped
CNN's classes) the objective is the unit objective: `map_index` is then the
unit, and after a softmax or sigmoid the loss is the unit's pre-activation logit.

    Inputs:
        images     float32 [B, H, W, C]  start images in the model's input domain
                                         (standardized per image, or LOW..HIGH
                                         with `--input_range`, kept there)
                                         (any rank is accepted by the signature
                                         and checked in the graph); 1 <= B <=
                                         4096 (fewer for images above 16,384
                                         pixels), |pixel| <= 1e6.
        map_index  int32   [B]           map of each pair, 0 <= map_index < maps.
        steps      int32   []            step budget, 1 <= steps <= 100,000
                                         and B x steps <= 2^24.
        epsilon    float32 []            step size, 0 < epsilon <= 100 (default
                                         of the tool: 0.01).
    Outputs:
        images        float32 [B, H, W, C]     final images (the OIPs).
        loss          float32 [B]              the objective at the final image:
                                               the map's mean activation (a unit
                                               or logit for a Dense layer).
        loss_history  float32 [B, steps]       loss at every step; pairs that
                                               stopped early repeat their final
                                               loss.
        status        int32   [B]              0 completed, 1 converged,
                                               2 no_activation.
        steps_run     int32   [B]              gradient evaluations per pair.
        snapshots     float32 [B, F, H, W, C]  images after steps 0, n, 2n,
                                               4n, ..., steps, with
                                               n = max(1, steps // 2^(F-2)).

`serving_default`: the same as `optimize_<Layer>` for the deepest exported
layer with spatial output that applies a nonlinearity itself (a conv with an
activation, an activation layer such as ReLU; not a linear conv that a
BatchNormalization follows): `Conv2D_3` for the shipped CNN, `out_relu` for
MobileNetV2, `conv5_block3_out` for ResNet50, `top_activation` for
EfficientNetB0. Without such a layer among the exported ones, the deepest
exported spatial layer, else the first exported layer.

`initial_images`: the multi-scale start images of `oipgraph.starts`.

    Inputs:
        seed   int64 []  random seed.
        batch  int32 []  number of images, 1 <= batch <= 4096.
    Outputs:
        images  float32 [batch, H, W, C]  image b equals
                `starts.multiscale(starts.start_seeds(seed, range(batch)),
                (H, W, C))[b]`, mapped into the input domain
                (`Domain.from_standardized`).

`precursor_<Layer>` (layers with spatial output): the precursor scan of
`oipgraph.strategies.precursor` for one map of `<Layer>`: all 3^9 = 19,683 patterns of a 3x3 grid with cell values
(0.2, 0.5, 0.8), `scan_steps` ascent steps (epsilon 0.01) from each, ranked by
loss. Its cost grows with `scan_steps` (1 step: a few seconds on a CPU).

    Inputs:
        map_index   int32 []  the map, 0 <= map_index < maps.
        scan_steps  int32 []  ascent steps per pattern, 1 <= scan_steps <= 1000.
        top_n       int32 []  how many best start images to return,
                              0 < top_n <= 1024 (and <= 19,683).
    Outputs:
        images  float32 [top_n, H, W, C]  the best start images, best first.
        scores  float32 [top_n]           their loss after `scan_steps` steps.

The bounds are `oipgraph.core.limits`'s (why these values: its docstring); a request
beyond one fails with `InvalidArgumentError` naming the input and the bound
before anything is allocated.

With TF Serving's REST API, send the inputs in the columnar form
(`{"signature_name": ..., "inputs": {...}}`, see `predict_request.json`): the
scalar inputs have no batch dimension, so the row form (`"instances"`) does
not fit these signatures.

`--precision=bfloat16` (default float32: a SavedModel may be served where bfloat16 is emulated and
slow) exports ascents whose steps run on a bfloat16 copy of the model
(`oipgraph.models.precision`; its bfloat16 weights are saved beside the float32 ones, which score
the returned `loss`); inputs and outputs keep their float32 dtypes. `auto` decides on the exporting
machine, not the serving one.

A failed or interrupted export (an error, Ctrl-C, SIGTERM) leaves nothing
behind: the SavedModel is written to a hidden temporary folder that is removed
on failure and renamed to the version directory when complete. A process that
is killed outright (SIGKILL, out of memory) cannot clean up; its folder
(`.tmp-oipgraph-export-<pid>-*`) is removed by the next export into the same
directory.

Example:
    oipgraph-export --export_dir=/tmp/oipgraph            # -> /tmp/oipgraph/1
    oipgraph-export --export_dir=/tmp/oipgraph            # -> /tmp/oipgraph/2
    oipgraph-export --model=my_cnn.keras --export_dir=/tmp/my_cnn --version=7
    oipgraph-export --model=mobilenet.keras --image_size=96,96 --layers=block_6_expand_relu,out_relu \
        --export_dir=/tmp/mobilenet
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import tensorflow as tf
from absl import flags, logging
from oipgraph.export import versions
from oipgraph.export.servable import OIPServable

from oipgraph.ascent.domain import PREPROCESSED_RANGE, Domain, infer_domain, parse_domain
from oipgraph.ascent.parameterizations import PARAMETERIZATIONS
from oipgraph.ascent.presets import AUTO, PRESETS, resolve_recipe
from oipgraph.ascent.step_rules import STEP_RULES
from oipgraph.core import errors
from oipgraph.core.errors import OIPGraphError
from oipgraph.models import layer_lookup
from oipgraph.models.loading import check_image_model, load_model
from oipgraph.models.precision import FLOAT32, PRECISIONS
from oipgraph.models.preprocessing import PREPROCESSING, with_preprocessing


def write_savedmodel(servable: OIPServable, export_dir: str, version: int | None = None) -> str:
    """Saves `servable` as `export_dir/<version>/`, atomically (`versions.write_version`).

    Args:
        servable: The module to save, with its `signatures()`.
        export_dir: TF Serving's base path for the model; created if missing.
        version: Version number (>= 1); default one more than the highest
            existing version, or 1.

    Returns:
        The path of the new version directory.

    Raises:
        OIPGraphError: see `versions.check_export_dir`; an existing version
            directory is never overwritten.
    """
    return versions.write_version(
        export_dir, version, lambda path: tf.saved_model.save(servable, path, signatures=servable.signatures())
    )


def export(
    model_path: str | None,
    export_dir: str,
    version: int | None = None,
    domain: Domain | None = None,
    layers: Sequence[str] | None = None,
    image_size: tuple[int, int] | None = None,
) -> str:
    """Exports the OIP SavedModel of a Keras model file.

    Args:
        model_path: A `.keras` file; None for the shipped MNIST CNN.
        export_dir: TF Serving's base path for the model.
        version: Version number; default the next free one.
        domain: The model's input domain; None reads it off the model.
        layers: The layers to export; None for the default set (module docstring).
        image_size: (height, width) for a model with a variable-size input.

    Returns:
        The path of the new version directory.

    Raises:
        OIPGraphError: unusable model or layer, bad export directory or existing version.
    """
    versions.check_export_dir(export_dir, version)
    servable = OIPServable(load_model(model_path, image_size), domain=domain, layers=layers)
    return write_savedmodel(servable, export_dir, version)


FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Keras .keras model to export; default: the shipped MNIST CNN.")
flags.DEFINE_string(
    "export_dir", None, "Required. TF Serving base path of the model; the SavedModel goes to EXPORT_DIR/<version>/."
)
flags.DEFINE_list(
    "layers",
    None,
    "Layers to export (optimize_<Layer> and precursor_<Layer> each), e.g. block_6_expand_relu,out_relu or"
    " base/out_relu; default: every conv and Dense layer of a model with at most 8 conv layers, else only the"
    " serving_default layer (the deepest spatial layer with a nonlinearity).",
)
flags.DEFINE_string("image_size", None, "H,W for a model whose image input has a variable size (include_top=False).")
flags.DEFINE_string(
    "input_range",
    None,
    "The model's input domain: 'standardized' or LOW,HIGH such as 0,255; default: read off a leading"
    " Rescaling/Normalization layer, else standardized.",
)
flags.DEFINE_enum(
    "preset", AUTO, [AUTO, *PRESETS], "articles, natural, or auto (by the input domain); as oipgraph --preset."
)
flags.DEFINE_enum("param", None, list(PARAMETERIZATIONS), "Parameterization; default: the preset's.")
flags.DEFINE_enum("optimizer", None, list(STEP_RULES), "Step rule; default: the preset's.")
flags.DEFINE_string("transforms", None, "none, standard or name=value pairs; default: the preset's.")
flags.DEFINE_enum(
    "preprocess",
    None,
    list(PREPROCESSING),
    "keras.applications' preprocess_input in front of the model (caffe|tf|torch).",
)
flags.DEFINE_enum(
    "precision",
    FLOAT32,
    list(PRECISIONS),
    "Arithmetic of the served ascents' forward pass and gradient: float32, bfloat16 or auto, as oipgraph --precision"
    " (auto decides on the exporting machine; float32 by default, as the serving machine may lack bfloat16).",
)
flags.DEFINE_integer(
    "version",
    None,
    "Version directory to write; default: one more than the highest existing version, or 1.",
    lower_bound=1,
)


def main(argv: list[str]) -> None:
    del argv
    # Checked here, not with flags.mark_flag_as_required: that validator would
    # bind every program importing this module (the library half) too.
    if FLAGS.export_dir is None:
        raise OIPGraphError("--export_dir is required: the base directory for the SavedModel versions")
    if not FLAGS["verbosity"].present:
        # TensorFlow's INFO lines while saving name the temporary directory, not the result.
        logging.set_verbosity(logging.WARNING)
        tf.get_logger().setLevel("WARNING")
    image_size = layer_lookup.parse_image_size(FLAGS.image_size)
    versions.check_export_dir(FLAGS.export_dir, FLAGS.version)
    if FLAGS.preprocess is not None and FLAGS.input_range is not None:
        raise OIPGraphError(f"--preprocess={FLAGS.preprocess} sets the input range to 0,255: leave out --input_range")
    started = time.perf_counter()
    domain = None if FLAGS.input_range is None else parse_domain(FLAGS.input_range)
    model = load_model(FLAGS.model, image_size)
    if FLAGS.preprocess is not None:
        model, domain = with_preprocessing(model, FLAGS.preprocess), PREPROCESSED_RANGE
    domain = infer_domain(model)[0] if domain is None else domain
    recipe = resolve_recipe(
        domain,
        check_image_model(model),
        FLAGS.preset,
        FLAGS.param,
        FLAGS.optimizer,
        None,  # The served `epsilon` input is each request's step size.
        FLAGS.transforms,
    )
    print(recipe.line())
    servable = OIPServable(
        model,
        domain=domain,
        layers=FLAGS.layers,
        **recipe.pieces(),
        precision=FLAGS.precision,
    )
    path = write_savedmodel(servable, FLAGS.export_dir, FLAGS.version)
    print(
        f"exported {path} ({versions.directory_size(path) / 2**20:.1f} MiB) in {time.perf_counter() - started:.1f} s;"
        f" layers: {', '.join(servable.layer_names)}; serving_default: {servable.serving_layer}"
    )


def run() -> None:
    """Console-script entry point."""
    errors.run(main)


if __name__ == "__main__":
    run()
