"""Objectives: what the OIP ascent drives up, one small piece each.

- `channel` (`ChannelObjective`): the mean of one feature map, the articles'
  loss; the default for layers with spatial output [B, h, w, C].
- `neuron` (`NeuronObjective`): one position (row, col) of a map; default the centre.
- `unit` (`UnitObjective`): one unit of a non-spatial layer [B, units] (Dense,
  ...); after a softmax or sigmoid, the unit's pre-activation logit. The default
  for non-spatial layers.
- `Minimize(objective)`: minimizes instead (`--minimize`).
- `PreActivationPeak`: the wake-up's objective, the peak of a map's pre-activation.

`build_objective` is the one-line entry point; every loop (`OIPAscent`, the
precursor scan, the wake-up) takes any `Objective`.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from oipgraph.errors import OIPGraphError
from oipgraph.model import ModelError, conv_layer_names
from oipgraph.objectives.base import (
    STATUS_COMPLETED,
    STATUS_CONVERGED,
    STATUS_NAMES,
    STATUS_NO_ACTIVATION,
    Minimize,
    Objective,
)
from oipgraph.objectives.spatial import (
    ChannelObjective,
    NeuronObjective,
    PreActivationPeak,
    SpatialObjective,
    can_slice_per_pair,
    conv_pre_activation,
    layer_input_model,
)
from oipgraph.objectives.unit import UnitObjective

OBJECTIVES = ("channel", "neuron", "unit")

__all__ = [
    "OBJECTIVES",
    "STATUS_COMPLETED",
    "STATUS_CONVERGED",
    "STATUS_NAMES",
    "STATUS_NO_ACTIVATION",
    "ChannelObjective",
    "Minimize",
    "NeuronObjective",
    "Objective",
    "PreActivationPeak",
    "SpatialObjective",
    "UnitObjective",
    "build_objective",
    "can_slice_per_pair",
    "conv_pre_activation",
    "layer_input_model",
]


def target_layer(model: keras.Model, layer_name: str) -> keras.layers.Layer:
    """The layer `layer_name` of `model`, with a spatial [B, h, w, C] or flat [B, units] output.

    Raises:
        ModelError: unknown layer (the message lists the usable ones), the input
            layer, or an output of another rank.
    """
    usable = [layer.name for layer in model.layers if len(getattr(layer.output, "shape", ())) in (2, 4)]
    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        known = ", ".join(conv_layer_names(model)) or "none"
        raise ModelError(
            f"unknown layer {layer_name!r}; conv layers: {known}; all usable layers: {', '.join(usable)}"
        ) from None
    if isinstance(layer, keras.layers.InputLayer):
        raise ModelError(f"layer {layer_name!r} is the model's input, not a layer with feature maps or units")
    shape = tuple(layer.output.shape)
    if len(shape) not in (2, 4):
        raise ModelError(
            f"layer {layer_name!r} has output shape {shape}: neither spatial [B, H, W, C] maps nor [B, units]"
        )
    return layer


def default_objective(layer: keras.layers.Layer) -> str:
    """`channel` for a layer with spatial output, `unit` otherwise."""
    return "channel" if len(layer.output.shape) == 4 else "unit"


def build_objective(
    model: keras.Model,
    layer_name: str,
    kind: str | None = None,
    neuron: Sequence[int] | None = None,
    minimize: bool = False,
    fast: bool = True,
) -> Objective:
    """The objective `kind` on layer `layer_name` of `model`: the easy entry point.

    Args:
        model: A Keras model with one image input.
        layer_name: The layer the objective reads.
        kind: `channel`, `neuron` or `unit`; None picks `channel` for spatial
            layers and `unit` for the others.
        neuron: (row, col) of the `neuron` objective; None for the map's centre.
        minimize: Minimize the objective instead of maximizing it.
        fast: Allow the exact fast formulations (False: the plain layer, for comparison).

    Raises:
        OIPGraphError: unknown kind or layer, a kind that does not fit the layer,
            or a neuron position outside the map.
    """
    layer = target_layer(model, layer_name)
    kind = default_objective(layer) if kind is None else kind
    if kind not in OBJECTIVES:
        raise OIPGraphError(f"unknown objective {kind!r}; choose one of {', '.join(OBJECTIVES)}")
    spatial = len(layer.output.shape) == 4
    if kind in ("channel", "neuron") and not spatial:
        raise OIPGraphError(
            f"objective {kind!r} needs a layer with spatial [B, H, W, C] output; layer {layer_name!r} has output"
            f" shape {tuple(layer.output.shape)}: use the unit objective"
        )
    if kind == "unit" and spatial:
        raise OIPGraphError(
            f"objective 'unit' needs a layer with [B, units] output; layer {layer_name!r} has spatial output"
            f" {tuple(layer.output.shape)}: use channel or neuron"
        )
    if neuron is not None and kind != "neuron":
        raise OIPGraphError(f"a neuron position {tuple(neuron)} needs the neuron objective, not {kind!r}")
    if kind == "unit":
        objective: Objective = UnitObjective(model, layer_name)
    else:
        feature_model = keras.Model(model.inputs[0], layer.output, name=f"features_{layer_name}")
        if kind == "channel":
            objective = ChannelObjective(feature_model, layer_name, fast=fast)
        else:
            objective = NeuronObjective(feature_model, layer_name, check_position(neuron, layer), fast=fast)
    return Minimize(objective) if minimize else objective


def check_position(neuron: Sequence[int] | None, layer: keras.layers.Layer) -> tuple[int, int] | None:
    """The checked (row, col) of a neuron in `layer`'s maps; None stays None (the centre)."""
    if neuron is None:
        return None
    _, height, width, _ = layer.output.shape
    if len(neuron) != 2 or not all(isinstance(value, int) and not isinstance(value, bool) for value in neuron):
        raise OIPGraphError(f"neuron must be two integers ROW,COL, got {tuple(neuron)!r}")
    row, col = neuron
    if not (0 <= row < height and 0 <= col < width):
        raise OIPGraphError(
            f"neuron ({row}, {col}) is outside the {height}x{width} maps of layer {layer.name!r}:"
            f" rows 0..{height - 1}, cols 0..{width - 1}"
        )
    return (row, col)
