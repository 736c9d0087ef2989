"""Which layers an export holds, and the names of their signatures.

Without `--layers`, a small model (at most `SMALL_MODEL_CONV_LAYERS` conv layers) exports every conv
and Dense layer, a deeper one only its `serving_default` layer: the deepest spatial layer that applies
a nonlinearity itself (`serving_layer`). See `export_savedmodel`'s docstring for the signatures.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras

from oipgraph.core.errors import OIPGraphError
from oipgraph.models import layer_lookup
from oipgraph.models.loading import ModelError
from oipgraph.objectives.spatial import activation_name

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
