"""Which layers of a user's Keras model can be targets, and the feature model of each.

A target is any layer of a functional or Sequential Keras 3 model with one
image input whose output is one spatial [B, h, w, C] or flat [B, units] tensor:
convolutions of every kind, BatchNormalization, activation layers, pooling,
Dropout, merges (Add, Concatenate, Multiply, ...) and the layers of nested
models. A layer inside a nested model (a `keras.applications` base inside a
transfer-learning model) is addressed as `outer/inner` (`a/b/c` for deeper
nesting), or by its own name `inner` where no other layer has that name. The
input layer is not a target.

`resolve_layer` returns the layer and its *feature model*: a flat functional
model from the image input to the layer's output. For a layer inside a nested
model the path is rebuilt through the nested model's layers (the nested model
is inlined: its layers are called on the outer tensors and share their
weights), so that the feature model has concrete shapes and every layer of it
is a plain layer the fast paths can inspect.

`with_image_size` rebuilds a model whose image input has a variable size
(`include_top=False` bases) on a fixed-size input (`--image_size=H,W`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import weakref

import keras

from oipgraph.core.errors import OIPGraphError

SEPARATOR = "/"
_IDENTIFIER_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
# Image sizes accepted by --image_size; larger ones would not fit a CPU's memory in the ascent.
MAX_IMAGE_SIDE = 4096


class LayerLookupError(OIPGraphError):
    """A layer name that does not name a usable target, or a bad image size."""


@dataclasses.dataclass(frozen=True)
class ResolvedLayer:
    """A target layer of a model.

    Attributes:
        name: Its qualified name (`outer/inner` inside nested models).
        layer: The Keras layer.
        feature_model: Flat functional model, float32 images [B, H, W, C] ->
            the layer's output [B, h, w, C] or [B, units] (shapes concrete for
            a fixed-size input).
    """

    name: str
    layer: keras.layers.Layer
    feature_model: keras.Model


@dataclasses.dataclass(frozen=True)
class _Graph:
    """A model's layers in graph order with their output tensors, all in one graph from `inputs`."""

    inputs: keras.KerasTensor
    outputs: dict[str, tuple[keras.layers.Layer, object]]  # qualified name -> (layer, output structure)


# One walk per model: every rebuild adds nodes to the layers, so it is done once and shared.
_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def is_graph_model(layer: keras.layers.Layer) -> bool:
    """Whether `layer` is a functional or built Sequential model whose layers can be walked."""
    if isinstance(layer, keras.Sequential):
        return layer._functional is not None
    return isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth") and hasattr(layer, "_run_through_graph")


def _graph_model(model: keras.Model) -> keras.Model:
    """The functional graph that runs `model` (a Sequential's internal functional model)."""
    return model._functional if isinstance(model, keras.Sequential) else model


def _nested(model: keras.Model) -> bool:
    return any(is_graph_model(layer) for layer in _graph_model(model).layers)


def _walk(model: keras.Model, inputs, prefix: str, outputs: dict, inline: bool):
    """Calls `model`'s layers on `inputs` in graph order, recording each output under its qualified name.

    With `inline`, nested graph models are walked too (their layers called on
    the outer tensors); otherwise they are called whole.
    """

    def call(operation, *args, **kwargs):
        name = prefix + operation.name
        if inline and is_graph_model(operation) and len(args) == 1 and set(kwargs) <= {"training", "mask"}:
            result = _walk(operation, args[0], name + SEPARATOR, outputs, inline)
        else:
            result = operation(*args, **kwargs)
        outputs.setdefault(name, (operation, result))
        return result

    return _graph_model(model)._run_through_graph(inputs, call_fn=call)


def _graph(model: keras.Model) -> _Graph:
    """The layers of `model`, nested ones inlined, with their outputs in one graph from one input."""
    cached = _GRAPHS.get(model)
    if cached is not None:
        return cached
    graph_model = _graph_model(model)
    outputs: dict[str, tuple[keras.layers.Layer, object]] = {}
    if _nested(model):
        inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype, name="image")
        _walk(model, inputs, "", outputs, inline=True)
    else:
        inputs = graph_model.inputs[0]
        for depth in sorted(graph_model._nodes_by_depth, reverse=True):
            for node in graph_model._nodes_by_depth[depth]:
                if node.operation is not None and not node.is_input:
                    result = node.outputs[0] if len(node.outputs) == 1 else list(node.outputs)
                    outputs.setdefault(node.operation.name, (node.operation, result))
    graph = _Graph(inputs, outputs)
    _GRAPHS[model] = graph
    return graph


def _usable(result) -> bool:
    return isinstance(result, keras.KerasTensor) and len(result.shape) in (2, 4)


def graph_layers(model: keras.Model) -> list[tuple[str, keras.layers.Layer]]:
    """(qualified name, layer) of every layer of `model`, nested models' layers too, in graph order."""
    return [(name, layer) for name, (layer, _) in _graph(model).outputs.items()]


def output_shape(model: keras.Model, name: str) -> tuple:
    """The output shape of layer `name` (qualified) in `model`'s flat graph: concrete for a fixed-size input."""
    return tuple(_graph(model).outputs[name][1].shape)


def values_per_image(shape: tuple) -> int:
    """prod(shape[1:]) of a batch shape; unknown dimensions count as 1."""
    return math.prod(int(dim or 1) for dim in shape[1:])


def output_sizes(model: keras.Model) -> list[int]:
    """Values per image, prod(shape[1:]), of every layer output of `model` as traced in its flat graph.

    The shapes are those of this graph's own calls (nested models inlined), not a layer's `output` (its
    first call): a layer of a nested base first ran in the base's own graph, at the base's input size
    (None for a variable-size base). The input is not a layer output.
    """
    return [
        values_per_image(tensor.shape)
        for _, result in _graph(model).outputs.values()
        for tensor in keras.tree.flatten(result)
    ]


def usable_layer_names(model: keras.Model) -> list[str]:
    """Qualified names of the layers that can be targets, in graph order (input first)."""
    return [name for name, (_, result) in _graph(model).outputs.items() if _usable(result)]


def _candidates(names: list[str], layer_name: str) -> list[str]:
    """The qualified names that `layer_name` addresses: itself, or the layers whose own name it is."""
    if layer_name in names:
        return [layer_name]
    return [name for name in names if name.rsplit(SEPARATOR, 1)[-1] == layer_name]


def _listing(names: list[str], limit: int = 40) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def resolve_layer(model: keras.Model, layer_name: str) -> ResolvedLayer:
    """The target layer `layer_name` of `model` and the flat feature model up to its output.

    Args:
        model: A functional or Sequential Keras model with one image input.
        layer_name: A layer's name, `outer/inner` for a layer of a nested
            model, or the inner layer's own name when it is unique.

    Returns:
        The `ResolvedLayer`.

    Raises:
        LayerLookupError: unknown or ambiguous name (the message lists the
            usable layers or the matches), the input layer, or a layer whose
            output is not one spatial or flat tensor.
    """
    graph = _graph(model)
    names = list(graph.outputs)
    matches = _candidates(names, layer_name)
    if not matches:
        if layer_name in {
            layer.name for layer in _graph_model(model).layers if isinstance(layer, keras.layers.InputLayer)
        }:
            raise LayerLookupError(f"layer {layer_name!r} is the model's input, not a layer with feature maps or units")
        raise LayerLookupError(f"unknown layer {layer_name!r}; usable layers: {_listing(usable_layer_names(model))}")
    if len(matches) > 1:
        raise LayerLookupError(f"layer name {layer_name!r} is ambiguous; use one of: {', '.join(matches)}")
    name = matches[0]
    layer, result = graph.outputs[name]
    if not _usable(result):
        shapes = [tuple(tensor.shape) for tensor in keras.tree.flatten(result)]
        raise LayerLookupError(
            f"layer {name!r} has output shape {shapes[0] if len(shapes) == 1 else shapes}: neither spatial"
            " [B, H, W, C] maps nor [B, units]"
        )
    try:
        feature_model = keras.Model(graph.inputs, result, name=f"features_{module_name(name)}")
    except ValueError as err:  # e.g. an outer and an inlined inner layer with the same name
        raise LayerLookupError(f"cannot build the feature model of layer {name!r}: {str(err).splitlines()[0]}") from err
    return ResolvedLayer(name, layer, feature_model)


def output_layer(feature_model: keras.Model) -> keras.layers.Layer:
    """The layer whose output is `feature_model`'s (single) output."""
    return feature_model.outputs[0]._keras_history.operation


def layer_input_model(feature_model: keras.Model, name: str | None = None) -> keras.Model:
    """The model from `feature_model`'s image input to the input of its output layer, in its own graph.

    Exact for any feature model: the input is read from the node that made the
    output, so a layer called more than once, or inlined from a nested model,
    gets the input of *this* call.
    """
    history = feature_model.outputs[0]._keras_history
    node = history.operation._inbound_nodes[history.node_index]
    layer_inputs = node.arguments.args[0] if node.arguments.args else node.input_tensors[0]
    label = module_name(name or history.operation.name)
    return keras.Model(feature_model.inputs[0], layer_inputs, name=f"inputs_of_{label}")


def module_name(layer_name: str) -> str:
    """`layer_name` as a valid tf.Module / Keras model name: `a/b.c` -> `a__b_c`."""
    text = _IDENTIFIER_UNSAFE.sub("_", layer_name.replace(SEPARATOR, "__"))
    return text if text and not text[0].isdigit() else f"_{text}"


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """`H,W` (or `HxW`) as (height, width); None or empty stays None.

    Raises:
        LayerLookupError: not two integers in 1..MAX_IMAGE_SIDE.
    """
    if text is None or not str(text).strip():
        return None
    parts = re.split(r"[,x]", str(text).strip())
    try:
        height, width = (int(part) for part in parts)
    except ValueError:
        raise LayerLookupError(f"--image_size must be two integers H,W, got {text!r}") from None
    if not (1 <= height <= MAX_IMAGE_SIDE and 1 <= width <= MAX_IMAGE_SIDE):
        raise LayerLookupError(f"--image_size sides must be in 1..{MAX_IMAGE_SIDE}, got {text!r}")
    return height, width


def with_image_size(model: keras.Model, image_size: tuple[int, int] | None) -> keras.Model:
    """`model` rebuilt on a fixed-size image input [H, W, C] (shares its layers and weights).

    Nested models stay nested (their layers keep their `outer/inner` names).
    A model whose input already has size (H, W) is returned as it is; None
    returns `model`.

    Raises:
        LayerLookupError: `model` has several inputs, its input is not NHWC, or
            it has a fixed size other than `image_size`, or the layers cannot
            run at that size (e.g. too small for the model's downsampling).
    """
    if image_size is None:
        return model
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise LayerLookupError(
            f"--image_size needs a model with one NHWC image input; {model.name!r} has {model.inputs}"
        )
    _, height, width, channels = model.inputs[0].shape
    if (height, width) == tuple(image_size):
        return model
    fixed = [(name, size, dim) for name, size, dim in zip(("height", "width"), image_size, (height, width)) if dim]
    for name, size, dim in fixed:
        if size != dim:
            raise LayerLookupError(f"--image_size {name} {size} differs from the model's fixed input {name} {dim}")
    if channels is None:
        raise LayerLookupError(f"model {model.name!r} input has no fixed channel count: {tuple(model.inputs[0].shape)}")
    inputs = keras.Input(shape=(*image_size, channels), dtype=model.inputs[0].dtype, name="image")
    try:
        outputs = _walk(model, inputs, "", {}, inline=False)
        return keras.Model(inputs, outputs, name=module_name(f"{model.name}_{image_size[0]}x{image_size[1]}"))
    except ValueError as err:
        raise LayerLookupError(
            f"model {model.name!r} cannot run on {image_size[0]}x{image_size[1]} images: {str(err).splitlines()[0]}"
        ) from err
