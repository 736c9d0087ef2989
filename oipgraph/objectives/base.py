"""The objective interface: what the ascent drives up, per (image, target) pair.

An objective maps images [B, H, W, C] and one target per image [B] (a map or
unit index of its layer) to a loss [B], the value the ascent *maximizes*. It
knows how many targets its layer has, validates targets in Python (one-line
`OIPGraphError`) and in the graph (`InvalidArgumentError` naming `map_index`),
says when a pair "fired" (has an OIP worth showing), and can score every target
of a batch at once (`all_targets`, for dataset examples).

Objectives compose like lucid's: `Minimize(objective)` ascends the negated
loss, i.e. minimizes the objective.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import tensorflow as tf

from oipgraph.core.errors import OIPGraphError

# The ascent's status codes (kept here so that objectives can judge results without importing the ascent).
STATUS_COMPLETED, STATUS_CONVERGED, STATUS_NO_ACTIVATION = 0, 1, 2
STATUS_NAMES = ("completed", "converged", "no_activation")


class Objective(abc.ABC):
    """loss[b] = objective value of image b for target `target[b]`; the ascent maximizes it.

    Attributes:
        name: Short name, e.g. `channel`, `neuron(1,1)`, `unit`, `minimize(channel)`.
        layer_name: The layer the objective reads.
        num_targets: Valid targets are 0 .. num_targets - 1.
        target_kind: What a target is: `map` or `unit`.
        nonnegative: Whether the loss is >= 0 for every image (e.g. the mean of a
            ReLU map); then a pair "fired" only where its loss is > 0.
    """

    name: str
    layer_name: str
    num_targets: int
    target_kind: str = "map"
    nonnegative: bool = False

    @abc.abstractmethod
    def __call__(self, images: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        """float32 [B] losses of `images` float32 [B, H, W, C] for the int32 targets `target` [B]."""

    def shared_target(self, images: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        """float32 [B]: the losses for one int32 scalar `target` shared by the whole batch.

        Equals `self(images, fill(target))`; objectives override it where one
        target for many images is cheaper (the precursor scan's case).
        """
        return self(images, tf.fill(tf.shape(images)[:1], target))

    @abc.abstractmethod
    def all_targets(self, images: tf.Tensor) -> tf.Tensor:
        """float32 [B, num_targets]: the loss of every target for every image."""

    def graph_checks(self, target: tf.Tensor) -> list[tf.Operation]:
        """In-graph checks that every target is in range (InvalidArgumentError naming `map_index`)."""
        what = f"{self.target_kind}s of {self.layer_name}"
        return [
            tf.debugging.assert_non_negative(target, message="map_index must be >= 0; got map_index"),
            tf.debugging.assert_less(
                target, self.num_targets, message=f"map_index must be < {self.num_targets} ({what}); got map_index"
            ),
        ]

    def check_targets(self, target: np.ndarray) -> None:
        """Python check of int targets [B]; raises OIPGraphError naming the first bad one."""
        bad = [int(index) for index in np.ravel(target) if not 0 <= index < self.num_targets]
        if bad:
            raise OIPGraphError(
                f"{self.target_kind} index {bad[0]} out of range: layer {self.layer_name} has"
                f" {self.target_kind}s 0..{self.num_targets - 1}"
            )

    def fired(self, loss: np.ndarray, status: np.ndarray) -> np.ndarray:
        """bool [...]: which results are OIPs: the target reacted (not `no_activation`) and, for a
        nonnegative objective, its loss is above zero (a short run can end at 0 before the
        no-activation stop)."""
        reacted = np.asarray(status) != STATUS_NO_ACTIVATION
        return reacted & (np.asarray(loss) > 0) if self.nonnegative else reacted

    def describe(self) -> dict[str, Any]:
        """What catalog.json and TensorBoard record about the objective."""
        return {"objective": self.name, "layer": self.layer_name, "target_kind": self.target_kind}


class DerivedObjective(Objective):
    """An objective made from another one: the same layer and targets, a loss of its own.

    Its loss can be negative (`nonnegative` is False), so a pair fired
    wherever it did not stop with `no_activation`.
    """

    def __init__(self, inner: Objective, name: str):
        self.inner = inner
        self.name = name
        self.layer_name = inner.layer_name
        self.num_targets = inner.num_targets
        self.target_kind = inner.target_kind
        self.nonnegative = False


class Minimize(DerivedObjective):
    """loss[b] = -inner(images, target)[b]: ascending it minimizes `inner`.

    `fired` is True for every pair that did not stop with `no_activation`
    (minimizing a ReLU map down to zero ends there by design).
    """

    def __init__(self, inner: Objective):
        super().__init__(inner, f"minimize({inner.name})")

    def __call__(self, images: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        return -self.inner(images, target)

    def shared_target(self, images: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        return -self.inner.shared_target(images, target)

    def all_targets(self, images: tf.Tensor) -> tf.Tensor:
        return -self.inner.all_targets(images)

    def __getattr__(self, name: str) -> Any:
        # Model pieces (feature_model, layer, ...) are the inner objective's.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
