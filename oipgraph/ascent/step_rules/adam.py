"""`adam`: Adam (Kingma & Ba) per pair, ascending.

With t = step + 1, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, per parameter entry:

    m <- beta1 m + (1 - beta1) g
    v <- beta2 v + (1 - beta2) g^2
    p <- p + lr * step_scale * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

m and v are the pair's slots: they start at zero, stay frozen with a stopped pair and move with it
when the loop compacts its running pairs. Every running pair has taken the same number of steps, so
the loop's step counter is every pair's t.
"""

from __future__ import annotations

import tensorflow as tf

from oipgraph.ascent.step_rules.base import StepRule

BETA_1 = 0.9
BETA_2 = 0.999
EPSILON = 1e-8


class Adam(StepRule):
    """Adam with per-pair first and second moments."""

    name = "adam"
    default_learning_rate = 0.05
    slot_names = ("m", "v")

    def apply(self, params, gradient, slots, step, learning_rate, step_scale):
        t = tf.cast(step, tf.float32) + 1.0
        m = BETA_1 * slots["m"] + (1.0 - BETA_1) * gradient
        v = BETA_2 * slots["v"] + (1.0 - BETA_2) * tf.square(gradient)
        m_hat = m / (1.0 - tf.pow(BETA_1, t))
        v_hat = v / (1.0 - tf.pow(BETA_2, t))
        update = learning_rate * step_scale * m_hat / (tf.sqrt(v_hat) + EPSILON)
        return params + update, {"m": m, "v": v}
