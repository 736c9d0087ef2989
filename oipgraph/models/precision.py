"""The ascent's arithmetic precision: float32, bfloat16, or `auto` (`--precision`).

With `bfloat16`, the objective that the ascent differentiates runs on a bfloat16 copy of the model
(`bfloat16_model`): its layers compute in bfloat16 and hold bfloat16 copies of the weights, so the
forward pass to the target layer and the input gradient back through it run in bfloat16 (oneDNN's
AMX / AVX512-BF16 kernels on a CPU that has them). What is not the model stays float32: the image,
the parameterization, the step rule's update, the loss that the stop rules read (each objective
casts the layer's maps to float32 before it reduces them), and the final loss of every OIP, which
the float32 model scores. Keras casts a float32 tensor to bfloat16 where it enters a bfloat16 layer,
and the gradient flows back through that cast into the float32 image.

Layers that keep float32 in the copy: preprocessing layers (`Rescaling`, `Normalization`, `Lambda`,
everything under `keras.layers` preprocessing) and every layer that is not Keras' own (a user's
layer may mix its input with float32 constants). They compute on their float32 input as before;
their neighbours cast on the way in and out.

`auto` is `bfloat16` where the hardware has bfloat16 arithmetic (`has_bfloat16_hardware`: a CPU with
AMX-BF16 or AVX512-BF16, or a GPU) and the target layer is big enough for it to pay off
(`AUTO_MIN_GFLOPS`, measured in BENCHMARKS.md "bfloat16"), else `float32`. A rule, not a timing at
build time: the same flags pick the same precision on the same machine, so the same seed gives the
same results.
"""

from __future__ import annotations

import functools
import os
import weakref

import keras
import numpy as np
import tensorflow as tf

from oipgraph.core.errors import OIPGraphError

FLOAT32, BFLOAT16, AUTO = "float32", "bfloat16", "auto"
PRECISIONS = (FLOAT32, BFLOAT16, AUTO)
# What `--precision` and `oipgraph-export --precision` default to (BENCHMARKS.md "bfloat16" says why).
DEFAULT_PRECISION = FLOAT32
# `auto` picks bfloat16 from this many forward GFLOPs per image up to the target layer (`forward_flops`) on.
AUTO_MIN_GFLOPS = 1.0
# /proc/cpuinfo flags of CPUs with bfloat16 matrix or vector arithmetic (Intel AMX, AVX512-BF16).
BFLOAT16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
# Keras layers that stay float32 in the bfloat16 copy (input preprocessing; see the module docstring).
FLOAT32_LAYERS = (keras.layers.Rescaling, keras.layers.Normalization, keras.layers.Lambda, keras.layers.InputLayer)

_BFLOAT16_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_precision(precision: str) -> str:
    """`precision` if it is one of `PRECISIONS`, else an `OIPGraphError` naming it."""
    if precision not in PRECISIONS:
        raise OIPGraphError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


@functools.cache
def cpu_bfloat16_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The `BFLOAT16_CPU_FLAGS` that the CPU reports in `cpuinfo` (empty where the file is missing)."""
    if not os.path.exists(cpuinfo):
        return frozenset()
    with open(cpuinfo) as file:
        for line in file:
            if line.startswith("flags"):
                return BFLOAT16_CPU_FLAGS & frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_bfloat16_hardware() -> bool:
    """Whether TensorFlow sees a GPU or the CPU has AMX-BF16 or AVX512-BF16."""
    return bool(tf.config.list_logical_devices("GPU")) or bool(cpu_bfloat16_flags())


def forward_flops(feature_model: keras.Model) -> int:
    """Multiply-add FLOPs (2 per multiply-add) of one image through the convolutions and Dense layers of
    `feature_model` (nested models inlined): sum of 2 * H_out * W_out * K_h * K_w * C_in * C_out / groups per
    convolution and 2 * inputs * units per Dense layer. Other layers are left out (they are memory-bound)."""
    total = 0
    for layer in _leaf_layers(feature_model):
        if isinstance(layer, keras.layers.Conv2D) and layer.built:
            kernel_height, kernel_width, in_channels, out_channels = layer.kernel.shape
            for node in layer._inbound_nodes:
                _, height, width, _ = node.outputs[0].shape
                if height is not None and width is not None:
                    total += 2 * height * width * kernel_height * kernel_width * in_channels * out_channels
                    break
        elif isinstance(layer, keras.layers.Dense) and layer.built:
            total += 2 * int(np.prod(layer.kernel.shape))
    return int(total)


def _leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    leaves = []
    for layer in model.layers:
        leaves.extend(_leaf_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return leaves


def resolve_precision(precision: str, feature_model: keras.Model) -> str:
    """`float32` or `bfloat16` for `precision`; `auto` by the rule of the module docstring."""
    check_precision(precision)
    if precision != AUTO:
        return precision
    big_enough = forward_flops(feature_model) >= AUTO_MIN_GFLOPS * 1e9
    return BFLOAT16 if big_enough and has_bfloat16_hardware() else FLOAT32


def keeps_float32(layer: keras.layers.Layer) -> bool:
    """Whether `layer` stays float32 in the bfloat16 copy: preprocessing and layers that are not Keras' own."""
    module = type(layer).__module__
    return (
        isinstance(layer, FLOAT32_LAYERS)
        or not module.startswith("keras.")
        or module.startswith("keras.src.layers.preprocessing")
    )


def _bfloat16_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    config = layer.get_config()
    if not keeps_float32(layer):
        config["dtype"] = BFLOAT16
    return type(layer).from_config(config)


def bfloat16_model(model: keras.Model) -> keras.Model:
    """A copy of `model` whose layers compute in bfloat16 with bfloat16 weights (module docstring).

    The copy has the same layer names and structure (nested models are copied too), so the same
    `--layer` names find its layers; its weights are `model`'s, rounded to bfloat16 once. One copy is
    made per model object and shared by every ascent on it.

    Raises:
        OIPGraphError: a model that Keras cannot clone (a subclassed model).
    """
    cached = _BFLOAT16_COPIES.get(model)
    if cached is not None:
        return cached
    try:
        copy = keras.models.clone_model(model, clone_function=_bfloat16_layer, recursive=True)
    except (ValueError, TypeError, NotImplementedError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise OIPGraphError(f"--precision=bfloat16 cannot copy model {model.name!r}: {message}") from err
    for target, source in zip(copy.weights, model.weights, strict=True):
        if tuple(target.shape) != tuple(source.shape):  # Keras clones layer by layer, in order; checked anyway.
            raise OIPGraphError(f"--precision=bfloat16: the copy of {source.path} has shape {tuple(target.shape)}")
        target.assign(tf.cast(source, target.dtype))
    _BFLOAT16_COPIES[model] = copy
    return copy
