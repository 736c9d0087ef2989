"""What a step rule is: how one ascent step moves the parameters along their gradient.

A step rule keeps per-pair slots (float32 [B, *param_shape] each; none for the normalized step) that
the loop carries in its state, freezes with their pair and compacts with it. Every rule ascends:
it moves p so that the loss grows.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import tensorflow as tf


class StepRule(abc.ABC):
    """One step rule.

    Attributes:
        name: The registry name (`--optimizer`).
        default_learning_rate: The step size used when none is given.
        slot_names: Names of the per-pair slots.
    """

    name: str = ""
    default_learning_rate: float = 0.01
    slot_names: tuple[str, ...] = ()

    def slot_specs(self, param_shape: Sequence[int]) -> dict[str, tf.TensorSpec]:
        """The slots' signature for parameters [B, *param_shape] (B unknown)."""
        return {name: tf.TensorSpec([None, *param_shape], tf.float32) for name in self.slot_names}

    def initial_slots(self, params: tf.Tensor) -> dict[str, tf.Tensor]:
        """The slots before step 0: zeros like `params` float32 [B, *param_shape]."""
        return {name: tf.zeros_like(params) for name in self.slot_names}

    @abc.abstractmethod
    def apply(
        self,
        params: tf.Tensor,
        gradient: tf.Tensor,
        slots: dict[str, tf.Tensor],
        step: tf.Tensor,
        learning_rate: tf.Tensor,
        step_scale: float,
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """(new parameters, new slots) after one step; before the parameterization's projection.

        Args:
            params: float32 [B, *param_shape].
            gradient: float32 [B, *param_shape], d loss_b / d params_b.
            slots: The pairs' slots, float32 [B, *param_shape] each.
            step: int32 [], the step (0 for the first), the same for every running pair.
            learning_rate: float32 [], the step size.
            step_scale: The parameterization's factor on the step size.
        """

    def describe(self, learning_rate: float) -> dict[str, object]:
        return {"optimizer": self.name, "learning_rate": learning_rate}
