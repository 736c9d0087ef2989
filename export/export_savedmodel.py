"""`oipgraph-export`: a SavedModel of the OIP ascent that TF Serving hosts unchanged.

The export is written in TF Serving's layout, `EXPORT_DIR/<version>/`, with
tag `serve`. It is self-contained: only standard TF ops (no `py_function`),
so it loads with `tf.saved_model.load` or TF Serving where `oipgraph` is not
installed. Every input is validated inside the graph; a bad input fails with
`InvalidArgumentError` whose message names it.

Signatures (B = batch size, H, W, C = the model's image input, F = 8 snapshot
frames, `<Layer>` = each Conv2D layer of the model, e.g. `Conv2D_1`,
`Conv2D_2`, `Conv2D_3` for the shipped MNIST CNN):

`optimize_<Layer>`: the OIP ascent on the maps of `<Layer>`, one (image, map)
pair per batch entry, with the default convergence stop (criterion 5e-4).
Also for every Dense layer (e.g. `optimize_Dense_2` for the shipped CNN's
classes), with the unit objective: `map_index` is then the unit, and after a
softmax or sigmoid the loss is the unit's pre-activation logit.

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

`serving_default`: the same as `optimize_<Layer>` for the deepest conv layer.

`initial_images`: the multi-scale start images of `oipgraph.starts`.

    Inputs:
        seed   int64 []  random seed.
        batch  int32 []  number of images, 1 <= batch <= 4096.
    Outputs:
        images  float32 [batch, H, W, C]  image b equals
                `starts.multiscale(starts.start_seeds(seed, range(batch)),
                (H, W, C))[b]`, mapped into the input domain
                (`Domain.from_standardized`).

`precursor_<Layer>`: the precursor scan of `oipgraph.precursor` for one map
of `<Layer>`: all 3^9 = 19,683 patterns of a 3x3 grid with cell values
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

The bounds are `oipgraph.limits`'s (why these values: its docstring); a request
beyond one fails with `InvalidArgumentError` naming the input and the bound
before anything is allocated.

With TF Serving's REST API, send the inputs in the columnar form
(`{"signature_name": ..., "inputs": {...}}`, see `predict_request.json`): the
scalar inputs have no batch dimension, so the row form (`"instances"`) does
not fit these signatures.

Example:
    oipgraph-export --export_dir=/tmp/oipgraph            # -> /tmp/oipgraph/1
    oipgraph-export --export_dir=/tmp/oipgraph            # -> /tmp/oipgraph/2
    oipgraph-export --model=my_cnn.keras --export_dir=/tmp/my_cnn --version=7
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import types
from collections.abc import Iterable

import keras
import tensorflow as tf
from absl import flags, logging

from oipgraph import errors, limits, starts
from oipgraph.ascent import DEFAULT_CONV_CRITERION, DEFAULT_NUM_SNAPSHOTS, OIPAscent
from oipgraph.domain import Domain, infer_domain, parse_domain
from oipgraph.errors import OIPGraphError
from oipgraph.model import ModelError, check_image_model, conv_layer_names, load_model
from oipgraph.precursor import PrecursorScan

SERVING_DEFAULT = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
INITIAL_IMAGES = "initial_images"
OPTIMIZE_PREFIX = "optimize_"
PRECURSOR_PREFIX = "precursor_"
OPTIMIZE_OUTPUTS = ("images", "loss", "loss_history", "status", "steps_run", "snapshots")
PRECURSOR_OUTPUTS = ("images", "scores")
TEMP_PREFIX = ".tmp-oipgraph-export-"
_VERSION_NAME = re.compile(r"[0-9]+")


class OIPServable(tf.Module):
    """Everything the SavedModel serves for one Keras model, as `tf.function`s.

    One `OIPAscent` and one `PrecursorScan` per conv layer do the work; this
    module only fixes the serving interface (names, dtypes, the convergence
    criterion) and adds the start images. `signatures()` gives the concrete
    functions to save.

    Example:
        servable = OIPServable(load_model())
        tf.saved_model.save(servable, path, signatures=servable.signatures())
    """

    def __init__(self, model: keras.Model, num_snapshots: int = DEFAULT_NUM_SNAPSHOTS, domain: Domain | None = None):
        """Builds the ascents and serving functions for every conv layer of `model`.

        Args:
            model: A Keras model with one fixed-size NHWC image input (1 or 3
                channels) and at least one Conv2D layer.
            num_snapshots: Frames in the `snapshots` output (>= 2).
            domain: The model's input domain (`oipgraph.domain`); None reads it
                off the model (`domain.infer_domain`), else standardized images.

        Raises:
            OIPGraphError: the model is unsuitable or has no Conv2D layer.
        """
        super().__init__(name="oipgraph")
        self.image_shape = check_image_model(model)
        self.domain = infer_domain(model)[0] if domain is None else domain
        layer_names = conv_layer_names(model)
        if not layer_names:
            raise ModelError(f"model {model.name!r} has no Conv2D layer to export")
        self.layer_names = tuple(layer_names)
        dense_names = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        # A read-only mapping is not tracked: the Keras objects stay out of the
        # SavedModel, which holds only the serving functions and the variables.
        self.ascents = types.MappingProxyType(
            {
                name: OIPAscent(model, name, num_snapshots=num_snapshots, domain=self.domain)
                for name in [*layer_names, *dense_names]
            }
        )
        self.precursor_scans = types.MappingProxyType({name: PrecursorScan(self.ascents[name]) for name in layer_names})
        self.optimize_functions = {name: _optimize_function(ascent) for name, ascent in self.ascents.items()}
        self.precursor_functions = {name: _precursor_function(scan) for name, scan in self.precursor_scans.items()}
        self.initial_images = tf.function(
            self._initial_images,
            input_signature=[tf.TensorSpec([], tf.int64, name="seed"), tf.TensorSpec([], tf.int32, name="batch")],
        )
        # Traces every signature once; the save reuses these traces.
        self.model_variables = _captured_variables(self.signatures().values())

    @property
    def deepest_layer(self) -> str:
        """The conv layer farthest from the input (Keras lists layers in graph order)."""
        return self.layer_names[-1]

    def _initial_images(self, seed: tf.Tensor, batch: tf.Tensor) -> dict[str, tf.Tensor]:
        # Checked before anything is sized by it: batch=1000000 must fail here, not abort the server.
        with tf.control_dependencies(limits.assert_batch(batch, self.image_shape, name="batch")):
            batch = tf.identity(batch)
        # The same per-image seeds as starts.start_seeds(seed, range(batch)).
        streams = tf.range(tf.cast(batch, tf.int64), dtype=tf.int64)
        seeds = tf.stack([tf.fill([batch], seed), streams], axis=1)
        return {"images": self.domain.from_standardized(starts.multiscale(seeds, self.image_shape))}

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """The serving signatures, keyed by signature name (see the module docstring)."""
        optimize = {name: function.get_concrete_function() for name, function in self.optimize_functions.items()}
        signatures = {SERVING_DEFAULT: optimize[self.deepest_layer]}
        signatures.update({OPTIMIZE_PREFIX + name: concrete for name, concrete in optimize.items()})
        signatures[INITIAL_IMAGES] = self.initial_images.get_concrete_function()
        signatures.update(
            {
                PRECURSOR_PREFIX + name: function.get_concrete_function()
                for name, function in self.precursor_functions.items()
            }
        )
        return signatures


def _captured_variables(functions: Iterable[tf.types.experimental.ConcreteFunction]) -> list[tf.Variable]:
    """The `tf.Variable`s that the traced `functions` read (the Keras weights' own variables).

    The module tracks these rather than the Keras model: a SavedModel of the
    Keras variables restores them into wrapper copies that TF1-style loaders
    (TF Serving, `saved_model_cli run`) never connect to the variables the
    functions read, and the first request fails with "Could not find variable".
    """
    variables: dict[int, tf.Variable] = {}
    for function in functions:
        for variable in function.variables:
            variables.setdefault(id(variable), variable)
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


def existing_versions(export_dir: str) -> list[int]:
    """The numeric version directories under `export_dir` (what TF Serving loads), sorted."""
    if not os.path.isdir(export_dir):
        return []
    return sorted(
        int(entry.name)
        for entry in os.scandir(export_dir)
        if _VERSION_NAME.fullmatch(entry.name) and entry.is_dir(follow_symlinks=True)
    )


def next_version(export_dir: str) -> int:
    """One more than the highest existing version under `export_dir`, or 1."""
    versions = existing_versions(export_dir)
    return versions[-1] + 1 if versions else 1


def check_export_dir(export_dir: str, version: int | None) -> None:
    """Checks that `export_dir` can take a new version before anything expensive runs.

    Raises:
        OIPGraphError: empty path, a path that is not a directory, a version < 1
            or an existing version directory.
    """
    if not export_dir:
        raise OIPGraphError("--export_dir must name a directory, got an empty value")
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise OIPGraphError(f"export directory is not a directory: {export_dir}")
    if version is not None:
        if isinstance(version, bool) or version < 1:
            raise OIPGraphError(f"version must be an integer >= 1, got {version!r}")
        path = os.path.join(export_dir, str(version))
        if os.path.lexists(path):
            raise OIPGraphError(f"version directory already exists: {path}")


def write_savedmodel(servable: OIPServable, export_dir: str, version: int | None = None) -> str:
    """Saves `servable` as `export_dir/<version>/`, atomically.

    The SavedModel is written to a hidden temporary directory inside
    `export_dir` (TF Serving ignores non-numeric names, and the rename stays on
    one file system) and renamed to the version directory when complete, so a
    server polling `export_dir` never sees a partial version and a failed
    export leaves none behind.

    Args:
        servable: The module to save.
        export_dir: TF Serving's base path for the model; created if missing.
        version: Version number (>= 1); default one more than the highest
            existing version, or 1.

    Returns:
        The path of the new version directory.

    Raises:
        OIPGraphError: see `check_export_dir`; an existing version directory is
            never overwritten.
    """
    check_export_dir(export_dir, version)
    os.makedirs(export_dir, exist_ok=True)
    if version is None:
        version = next_version(export_dir)
    final_path = os.path.join(export_dir, str(version))
    temp_path = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=export_dir)
    try:
        # mkdtemp makes the directory private (0700); the version directory gets
        # the usual umask permissions, so a server running as another user can read it.
        os.chmod(temp_path, 0o777 & ~_umask())
        tf.saved_model.save(servable, temp_path, signatures=servable.signatures())
        # os.rename would silently replace an empty directory created meanwhile.
        if os.path.lexists(final_path):
            raise OIPGraphError(f"version directory already exists: {final_path}")
        try:
            os.rename(temp_path, final_path)
        except OSError as err:
            raise OIPGraphError(f"cannot create version directory {final_path}: {err.strerror}") from err
    finally:
        if os.path.isdir(temp_path):
            shutil.rmtree(temp_path, ignore_errors=True)
    return final_path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def export(model_path: str | None, export_dir: str, version: int | None = None, domain: Domain | None = None) -> str:
    """Exports the OIP SavedModel of a Keras model file.

    Args:
        model_path: A `.keras` file; None for the shipped MNIST CNN.
        export_dir: TF Serving's base path for the model.
        version: Version number; default the next free one.
        domain: The model's input domain; None reads it off the model.

    Returns:
        The path of the new version directory.

    Raises:
        OIPGraphError: unusable model, bad export directory or existing version.
    """
    check_export_dir(export_dir, version)
    return write_savedmodel(OIPServable(load_model(model_path), domain=domain), export_dir, version)


def directory_size(path: str) -> int:
    """Total size in bytes of the files under `path`."""
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Keras .keras model to export; default: the shipped MNIST CNN.")
flags.DEFINE_string(
    "export_dir", None, "Required. TF Serving base path of the model; the SavedModel goes to EXPORT_DIR/<version>/."
)
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
    started = time.perf_counter()
    domain = None if FLAGS.input_range is None else parse_domain(FLAGS.input_range)
    path = export(FLAGS.model, FLAGS.export_dir, FLAGS.version, domain)
    print(f"exported {path} ({directory_size(path) / 2**20:.1f} MiB) in {time.perf_counter() - started:.1f} s")


def run() -> None:
    """Console-script entry point."""
    errors.run(main)


if __name__ == "__main__":
    run()
