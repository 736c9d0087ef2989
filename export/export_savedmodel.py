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

import re
import time
import types
from collections.abc import Iterable, Sequence

import keras
import tensorflow as tf
from absl import flags, logging
from oipgraph.export import versions

from oipgraph import starts
from oipgraph.ascent import DEFAULT_CONV_CRITERION, DEFAULT_NUM_SNAPSHOTS, OIPAscent
from oipgraph.ascent.domain import Domain, infer_domain, parse_domain
from oipgraph.core import errors, limits
from oipgraph.core.errors import OIPGraphError
from oipgraph.models import layer_lookup
from oipgraph.models.loading import ModelError, check_image_model, load_model
from oipgraph.objectives.spatial import activation_name
from oipgraph.strategies.precursor import PrecursorScan

SERVING_DEFAULT = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
INITIAL_IMAGES = "initial_images"
OPTIMIZE_PREFIX = "optimize_"
PRECURSOR_PREFIX = "precursor_"
OPTIMIZE_OUTPUTS = ("images", "loss", "loss_history", "status", "steps_run", "snapshots")
PRECURSOR_OUTPUTS = ("images", "scores")
# Models with at most this many conv layers export all of them (and their Dense layers) by default.
SMALL_MODEL_CONV_LAYERS = 8
CONV_LAYERS = (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D)
# Layers that are a nonlinearity themselves (besides layers with a non-linear `activation`).
_NONLINEAR_LAYERS = (
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
    keras.layers.Softmax,
)


def applies_nonlinearity(layer: keras.layers.Layer) -> bool:
    """Whether `layer` ends in a nonlinearity: an activation layer, or an `activation` other than linear."""
    if isinstance(layer, _NONLINEAR_LAYERS):
        return True
    return activation_name(layer) not in (None, "linear")


def signature_suffix(layer_name: str) -> str:
    """`<Layer>` of `optimize_<Layer>`: `/` -> `__`, other characters outside [A-Za-z0-9_] -> `_`."""
    return re.sub(r"[^A-Za-z0-9_]", "_", layer_name.replace(layer_lookup.SEPARATOR, "__"))


def serving_layer(model: keras.Model, layer_names: Sequence[str]) -> str:
    """The `serving_default` layer among `layer_names` (qualified, graph order): see the module docstring."""
    layers = dict(layer_lookup.graph_layers(model))
    spatial = [name for name in layer_names if len(layer_lookup.output_shape(model, name)) == 4]
    nonlinear = [name for name in spatial if applies_nonlinearity(layers[name])]
    return (nonlinear or spatial or list(layer_names))[-1]


def default_layers(model: keras.Model) -> list[str]:
    """The layers exported without `--layers` (module docstring), qualified, in graph order.

    Raises:
        ModelError: the model has no layer with spatial output.
    """
    usable = layer_lookup.usable_layer_names(model)
    spatial = [name for name in usable if len(layer_lookup.output_shape(model, name)) == 4]
    if not spatial:
        raise ModelError(
            f"model {model.name!r} has no Conv2D layer or other layer with spatial [B, H, W, C] output to export"
        )
    default = serving_layer(model, spatial)
    layers = dict(layer_lookup.graph_layers(model))
    convs = [name for name in spatial if isinstance(layers[name], CONV_LAYERS)]
    if len(convs) > SMALL_MODEL_CONV_LAYERS:
        return [default]
    dense = [name for name in usable if isinstance(layers[name], keras.layers.Dense)]
    chosen = {*convs, *dense, default}
    return [name for name in usable if name in chosen]


def chosen_layers(model: keras.Model, layer_names: Sequence[str] | None) -> list[str]:
    """The qualified names of the layers to export: `layer_names` resolved, or `default_layers`.

    Raises:
        OIPGraphError: an unknown, ambiguous or unusable layer, a layer named
            twice, or two layers whose signature names collide.
    """
    if layer_names is None:
        return default_layers(model)
    names = [name.strip() for name in layer_names if name.strip()]
    if not names:
        raise OIPGraphError("--layers must name at least one layer")
    resolved = [layer_lookup.resolve_layer(model, name).name for name in names]
    suffixes: dict[str, str] = {}
    for name in resolved:
        other = suffixes.setdefault(signature_suffix(name), name)
        if other != name:
            raise OIPGraphError(f"layers {other!r} and {name!r} would both export as optimize_{signature_suffix(name)}")
    if len(set(resolved)) != len(resolved):
        raise OIPGraphError(f"--layers names a layer twice: {','.join(names)}")
    order = {name: position for position, name in enumerate(layer_lookup.usable_layer_names(model))}
    return sorted(resolved, key=order.__getitem__)


class OIPServable(tf.Module):
    """Everything the SavedModel serves for one Keras model, as `tf.function`s.

    One `OIPAscent` per exported layer and one `PrecursorScan` per exported
    spatial layer do the work; this module only fixes the serving interface
    (names, dtypes, the convergence criterion) and adds the start images.
    `signatures()` gives the functions to save (traced by the save).

    Example:
        servable = OIPServable(load_model())
        tf.saved_model.save(servable, path, signatures=servable.signatures())
    """

    def __init__(
        self,
        model: keras.Model,
        num_snapshots: int = DEFAULT_NUM_SNAPSHOTS,
        domain: Domain | None = None,
        layers: Sequence[str] | None = None,
    ):
        """Builds the ascents and serving functions for the chosen layers of `model`.

        Args:
            model: A Keras model with one fixed-size NHWC image input (1 or 3
                channels).
            num_snapshots: Frames in the `snapshots` output (>= 2).
            domain: The model's input domain (`oipgraph.ascent.domain`); None reads it
                off the model (`domain.infer_domain`), else standardized images.
            layers: The layers to export (names as `oipgraph --layer` takes
                them); None for the default set (module docstring).

        Raises:
            OIPGraphError: the model is unsuitable, a layer is unknown or
                unusable, or (default set) the model has no spatial layer.
        """
        super().__init__(name="oipgraph")
        self.image_shape = check_image_model(model)
        self.domain = infer_domain(model)[0] if domain is None else domain
        self.layer_names = tuple(chosen_layers(model, layers))
        self.serving_layer = serving_layer(model, self.layer_names)
        spatial = [name for name in self.layer_names if len(layer_lookup.output_shape(model, name)) == 4]
        # A read-only mapping is not tracked: the Keras objects stay out of the
        # SavedModel, which holds only the serving functions and the variables.
        self.ascents = types.MappingProxyType(
            {name: OIPAscent(model, name, num_snapshots=num_snapshots, domain=self.domain) for name in self.layer_names}
        )
        self.precursor_scans = types.MappingProxyType({name: PrecursorScan(self.ascents[name]) for name in spatial})
        self.optimize_functions = {name: _optimize_function(ascent) for name, ascent in self.ascents.items()}
        self.precursor_functions = {name: _precursor_function(scan) for name, scan in self.precursor_scans.items()}
        self.initial_images = tf.function(
            self._initial_images,
            input_signature=[tf.TensorSpec([], tf.int64, name="seed"), tf.TensorSpec([], tf.int32, name="batch")],
        )
        self.model_variables = _model_variables(self.ascents.values())

    @property
    def deepest_layer(self) -> str:
        """The layer of `serving_default` (kept under its old name)."""
        return self.serving_layer

    def _initial_images(self, seed: tf.Tensor, batch: tf.Tensor) -> dict[str, tf.Tensor]:
        # Checked before anything is sized by it: batch=1000000 must fail here, not abort the server.
        with tf.control_dependencies(limits.assert_batch(batch, self.image_shape, name="batch")):
            batch = tf.identity(batch)
        # The same per-image seeds as starts.start_seeds(seed, range(batch)).
        streams = tf.range(tf.cast(batch, tf.int64), dtype=tf.int64)
        seeds = tf.stack([tf.fill([batch], seed), streams], axis=1)
        return {"images": self.domain.from_standardized(starts.multiscale(seeds, self.image_shape))}

    def signatures(self) -> dict[str, tf.types.experimental.PolymorphicFunction]:
        """The serving signatures, keyed by signature name (see the module docstring).

        They are the `tf.function`s themselves, not traces: `tf.saved_model.save`
        traces every function again inside its save context anyway, so tracing
        them beforehand would double the export's largest cost.
        """
        signatures = {SERVING_DEFAULT: self.optimize_functions[self.serving_layer]}
        signatures.update(
            {OPTIMIZE_PREFIX + signature_suffix(name): function for name, function in self.optimize_functions.items()}
        )
        signatures[INITIAL_IMAGES] = self.initial_images
        signatures.update(
            {PRECURSOR_PREFIX + signature_suffix(name): function for name, function in self.precursor_functions.items()}
        )
        return signatures


def _model_variables(ascents: Iterable[OIPAscent]) -> list[tf.Variable]:
    """The `tf.Variable`s behind the Keras weights that the ascents read: their feature models' and layers'.

    The module tracks these rather than the Keras model: a SavedModel of the
    Keras variables restores them into wrapper copies that TF1-style loaders
    (TF Serving, `saved_model_cli run`) never connect to the variables the
    functions read, and the first request fails with "Could not find variable".
    Only the models up to the exported layers contribute, so the variables of
    deeper layers stay out of the SavedModel.
    """
    variables: dict[int, tf.Variable] = {}
    for ascent in ascents:
        for variable in [*ascent.feature_model.variables, *ascent.objective.layer.variables]:
            value = getattr(variable, "value", variable)  # A Keras variable wraps the tf.Variable that graphs read.
            variables.setdefault(id(value), value)
    return list(variables.values())


def _optimize_function(ascent: OIPAscent) -> tf.types.experimental.PolymorphicFunction:
    """The serving form of `ascent.optimize`: fixed convergence criterion, batch-major outputs only."""

    def optimize(images: tf.Tensor, map_index: tf.Tensor, steps: tf.Tensor, epsilon: tf.Tensor) -> dict[str, tf.Tensor]:
        seeds = tf.zeros([tf.size(map_index), 2], tf.int64)  # Unused: the served ascent has no transforms.
        outputs = ascent.optimize(
            images, map_index, steps, epsilon, tf.constant(DEFAULT_CONV_CRITERION, tf.float32), seeds
        )
        # `snapshot_steps` [F] is not served (SPEC §5 lists the outputs); it
        # follows from `steps`, see the module docstring.
        return {key: outputs[key] for key in OPTIMIZE_OUTPUTS}

    return tf.function(
        optimize,
        input_signature=[
            tf.TensorSpec(None, tf.float32, name="images"),
            tf.TensorSpec([None], tf.int32, name="map_index"),
            tf.TensorSpec([], tf.int32, name="steps"),
            tf.TensorSpec([], tf.float32, name="epsilon"),
        ],
    )


def _precursor_function(scan: PrecursorScan) -> tf.types.experimental.PolymorphicFunction:
    """The serving form of `scan.scan`: the best start images and their scores."""

    def precursor(map_index: tf.Tensor, scan_steps: tf.Tensor, top_n: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = scan.scan(map_index, scan_steps, top_n)
        return {key: outputs[key] for key in PRECURSOR_OUTPUTS}

    return tf.function(
        precursor,
        input_signature=[
            tf.TensorSpec([], tf.int32, name="map_index"),
            tf.TensorSpec([], tf.int32, name="scan_steps"),
            tf.TensorSpec([], tf.int32, name="top_n"),
        ],
    )


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
    started = time.perf_counter()
    domain = None if FLAGS.input_range is None else parse_domain(FLAGS.input_range)
    servable = OIPServable(load_model(FLAGS.model, image_size), domain=domain, layers=FLAGS.layers)
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
