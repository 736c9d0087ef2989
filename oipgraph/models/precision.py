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
AMX-BF16 or AVX512-BF16, or a GPU), else `float32`. A rule, not a timing at build time: a timed trial
would cost every run seconds and could pick differently from one run to the next on a loaded machine,
so that the same seed would no longer give the same results. The rule is what was measured (BENCHMARKS.md
"bfloat16"): on a CPU with AMX-BF16 and AVX512-BF16, bfloat16 was faster on both the shipped CNN (1.5x)
and VGG16 (5x), and the OIPs' final float32 activations stayed within 2 % of float32's. A CPU without
them has no bfloat16 arithmetic (oneDNN would convert to float32 for every product): no gain is expected
there, and none was measured.
"""

from __future__ import annotations

import functools
import os
import weakref

import keras
import tensorflow as tf

from oipgraph.core.errors import OIPGraphError

FLOAT32, BFLOAT16, AUTO = "float32", "bfloat16", "auto"
PRECISIONS = (FLOAT32, BFLOAT16, AUTO)
# What `oipgraph --precision` defaults to (BENCHMARKS.md "bfloat16" says why). `OIPAscent` and
# `oipgraph-export` default to float32: the library's results stay bit for bit what they were, and a
# SavedModel may be served on a machine without bfloat16 arithmetic.
DEFAULT_PRECISION = AUTO
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


def resolve_precision(precision: str) -> str:
    """`float32` or `bfloat16` for `precision`; `auto` is bfloat16 where `has_bfloat16_hardware`."""
    check_precision(precision)
    if precision != AUTO:
        return precision
    return BFLOAT16 if has_bfloat16_hardware() else FLOAT32


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
