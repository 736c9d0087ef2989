"""The ascent's compiled functions with the model's weights frozen in: what other devices and machines run.

`convert_variables_to_constants_v2` turns every variable that a concrete function of `OIPAscent` reads
(the model's weights; the ascent has no other state) into a constant of its graph. A copy of that graph
placed on another device, or registered with a remote worker, carries its weights: the loop reads nothing
from anywhere else, and a worker receives the weights once, with the function, not per step or per call.
The frozen graph computes the same operations on the same values, so its results equal the ascent's
(`tests/distribute_test.py` checks bit for bit).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from oipgraph.ascent import OIPAscent

__all__ = ["FrozenAscent", "FrozenFunction"]


class FrozenFunction:
    """A concrete function with its variables as constants, called with the original's structured arguments.

    The frozen function takes and returns flat lists of tensors; this wrapper flattens the arguments (a
    state dict flattens in sorted key order, as the original's signature does) and packs the outputs into
    the original's structure (dict, or tuple of dict and tensor).
    """

    def __init__(self, function: Any):
        """Freezes `function` (a `ConcreteFunction` with a fixed input signature).

        Raises:
            ValueError: the function captures a tensor that is not a variable (an eager constant held by a
                Python object): `convert_variables_to_constants_v2` does not carry such captures over intact
                (TensorFlow 2.21 gave a Fourier parameterization's complex scale wrong values, and the ascent
                other results); make it a constant inside the graph instead.
        """
        eager = [tensor for tensor in function.captured_inputs if tensor.dtype != tf.resource]
        if eager:
            raise ValueError(f"{function.name} captures {len(eager)} eager tensors besides variables: {eager[0]!r:.80}")
        self.structured_outputs = function.structured_outputs
        self.frozen = convert_variables_to_constants_v2(function)
        if self.frozen.captured_inputs:  # Nothing but constants may be left: nothing read from elsewhere.
            captured = len(self.frozen.captured_inputs)
            raise ValueError(f"{function.name} still captures {captured} tensors after freezing")

    def __call__(self, *args: Any) -> Any:
        return tf.nest.pack_sequence_as(self.structured_outputs, self.frozen(*tf.nest.flatten(args)))


class FrozenAscent:
    """The frozen functions of one `OIPAscent`, each built on first use.

    Attributes:
        optimize: The whole ascent of a batch (`OIPAscent.optimize`): (images float32 [B, H, W, C], map_index
            int32 [B], steps int32 [], epsilon float32 [], conv_criterion float32 [], seeds int64 [B, 2]) ->
            the dict of `optimize`.
        start, advance, finish: The segmented loop's pieces (`OIPAscent._start`, `_advance`, `_finish`).
    """

    def __init__(self, ascent: OIPAscent):
        self.ascent = ascent
        self._functions: dict[str, FrozenFunction] = {}

    def _get(self, name: str, function: Any) -> FrozenFunction:
        if name not in self._functions:
            concrete = function.get_concrete_function()  # Not under init_scope: it pauses the gradient tapes.
            with tf.init_scope():  # Freezing reads the variables' values: eagerly, also when first used in a trace.
                self._functions[name] = FrozenFunction(concrete)
        return self._functions[name]

    @property
    def optimize(self) -> FrozenFunction:
        return self._get("optimize", self.ascent.optimize)

    @property
    def start(self) -> FrozenFunction:
        return self._get("start", self.ascent._start)

    @property
    def advance(self) -> FrozenFunction:
        return self._get("advance", self.ascent._advance)

    @property
    def finish(self) -> FrozenFunction:
        return self._get("finish", self.ascent._finish)
