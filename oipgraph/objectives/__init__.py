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

from oipgraph.core.errors import OIPGraphError
from oipgraph.models.layer_lookup import ResolvedLayer, output_layer, resolve_layer
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


def target_layer(model: keras.Model, layer_name: str) -> ResolvedLayer:
    """The layer `layer_name` of `model` (`outer/inner` in nested models) and its flat feature model.

    Raises:
        OIPGraphError: unknown layer (the message lists the usable ones), the
            input layer, or an output that is neither [B, h, w, C] nor [B, units].
    """
    return resolve_layer(model, layer_name)


def default_objective(feature_model: keras.Model) -> str:
    """`channel` for a layer with spatial output (`feature_model` ends in it), `unit` otherwise."""
    return "channel" if len(feature_model.output.shape) == 4 else "unit"


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
    resolved = target_layer(model, layer_name)
    feature_model = resolved.feature_model
    kind = default_objective(feature_model) if kind is None else kind
    if kind not in OBJECTIVES:
        raise OIPGraphError(f"unknown objective {kind!r}; choose one of {', '.join(OBJECTIVES)}")
    spatial = len(feature_model.output.shape) == 4
    if kind in ("channel", "neuron") and not spatial:
        raise OIPGraphError(
            f"objective {kind!r} needs a layer with spatial [B, H, W, C] output; layer {layer_name!r} has output"
            f" shape {tuple(feature_model.output.shape)}: use the unit objective"
        )
    if kind == "unit" and spatial:
        raise OIPGraphError(
            f"objective 'unit' needs a layer with [B, units] output; layer {layer_name!r} has spatial output"
            f" {tuple(feature_model.output.shape)}: use channel or neuron"
        )
    if neuron is not None and kind != "neuron":
        raise OIPGraphError(f"a neuron position {tuple(neuron)} needs the neuron objective, not {kind!r}")
    if kind == "unit":
        objective: Objective = UnitObjective(model, layer_name)
    elif kind == "channel":
        objective = ChannelObjective(feature_model, layer_name, fast=fast)
    else:
        objective = NeuronObjective(feature_model, layer_name, check_position(neuron, feature_model), fast=fast)
    return Minimize(objective) if minimize else objective


def check_position(neuron: Sequence[int] | None, feature_model: keras.Model) -> tuple[int, int] | None:
    """The checked (row, col) of a neuron in the maps `feature_model` outputs; None stays None (the centre)."""
    if neuron is None:
        return None
    _, height, width, _ = feature_model.output.shape
    if len(neuron) != 2 or not all(isinstance(value, int) and not isinstance(value, bool) for value in neuron):
        raise OIPGraphError(f"neuron must be two integers ROW,COL, got {tuple(neuron)!r}")
    row, col = neuron
    if not (0 <= row < height and 0 <= col < width):
        raise OIPGraphError(
            f"neuron ({row}, {col}) is outside the {height}x{width} maps of layer {output_layer(feature_model).name!r}:"
            f" rows 0..{height - 1}, cols 0..{width - 1}"
        )
    return (row, col)
