"""`normalized`: the articles' step, p <- p + lr * step_scale * g / (rms(g) + 1e-7), per pair.

rms(g) = sqrt(mean over the pair's parameter of g^2). Every step moves a pair's parameter by the same
root-mean-square distance, however large or small its gradient.
"""

from __future__ import annotations

import tensorflow as tf

from oipgraph.ascent.step_rules.base import StepRule

GRADIENT_EPS = 1e-7


def normalized_step(params: tf.Tensor, gradient: tf.Tensor, learning_rate, step_scale: float) -> tf.Tensor:
    """float32 [B, ...]: params + learning_rate * step_scale * gradient / (rms(gradient) + 1e-7), per pair."""
    axes = list(range(1, len(params.shape)))
    rms = tf.sqrt(tf.reduce_mean(tf.square(gradient), axis=axes, keepdims=True))
    step = learning_rate * step_scale if step_scale != 1.0 else learning_rate
    return params + step * gradient / (rms + GRADIENT_EPS)


class NormalizedStep(StepRule):
    """The articles' normalized gradient step; no slots."""

    name = "normalized"
    default_learning_rate = 0.01

    def apply(self, params, gradient, slots, step, learning_rate, step_scale):
        return normalized_step(params, gradient, learning_rate, step_scale), slots
