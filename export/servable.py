"""`OIPServable`: the `tf.Module` whose functions are the SavedModel's serving signatures.

The signatures, their inputs, outputs and bounds are documented in `export_savedmodel`'s docstring.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Sequence

import keras
import tensorflow as tf
from oipgraph.export.layers import chosen_layers, serving_layer, signature_suffix

from oipgraph import starts
from oipgraph.ascent import DEFAULT_CONV_CRITERION, DEFAULT_NUM_SNAPSHOTS, OIPAscent
from oipgraph.ascent.domain import Domain, infer_domain
from oipgraph.core import limits
from oipgraph.models import layer_lookup
from oipgraph.models.loading import check_image_model
from oipgraph.strategies.precursor import PrecursorScan

SERVING_DEFAULT = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
INITIAL_IMAGES = "initial_images"
OPTIMIZE_PREFIX = "optimize_"
PRECURSOR_PREFIX = "precursor_"
OPTIMIZE_OUTPUTS = ("images", "loss", "loss_history", "status", "steps_run", "snapshots")
PRECURSOR_OUTPUTS = ("images", "scores")


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
        **recipe,
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
            **recipe: `preset`, `param`, `optimizer`, `learning_rate`, `transforms`, `precision` of every
                exported ascent (`OIPAscent`; default the articles' pixels and normalized step, float32).

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
            {
                name: OIPAscent(model, name, num_snapshots=num_snapshots, domain=self.domain, **recipe)
                for name in self.layer_names
            }
        )
        self.precursor_scans = types.MappingProxyType({name: PrecursorScan(self.ascents[name]) for name in spatial})
        self.optimize_functions = {name: _optimize_function(ascent) for name, ascent in self.ascents.items()}
        self.precursor_functions = {name: _precursor_function(scan) for name, scan in self.precursor_scans.items()}
        self.initial_images = tf.function(
            self._initial_images,
            autograph=False,
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
        step_objective = ascent.step_objective  # The bfloat16 copy's variables, where precision is bfloat16.
        for variable in [
            *ascent.feature_model.variables,
            *ascent.objective.layer.variables,
            *step_objective.feature_model.variables,
            *step_objective.layer.variables,
        ]:
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
        autograph=False,
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
        autograph=False,
        input_signature=[
            tf.TensorSpec([], tf.int32, name="map_index"),
            tf.TensorSpec([], tf.int32, name="scan_steps"),
            tf.TensorSpec([], tf.int32, name="top_n"),
        ],
    )
