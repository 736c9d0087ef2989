"""The one ascent step that every loop uses: loss, gradient, update, back into the domain.

For pairs b (parameter p_b, target t_b) at step j:

1. x_b = to_image(p_b) (`parameterizations`; the identity for `pixels`, the articles' default),
   loss_b = objective(transform(x_b; seed_b, j), t_b), g_b = d loss_b / d p_b
   (`transforms.Transforms`; the identity unless transforms are on).
2. p_b <- project(rule(p_b, g_b)), where `rule` is the step rule (`step_rules`; the articles'
   normalized step p + epsilon * step_scale * g / (sqrt(mean(g^2)) + 1e-7) by default) and
   `project` the parameterization's (for `pixels`: per-image standardization for standardized
   images, clipping for a value range, `domain`).

`OIPAscent` (one target per pair), the precursor scan (one target for the
whole batch) and the pre-activation wake-up (the `PreActivationPeak`
objective) differ only in their loops and stop rules. For a batch of
`MIN_SPLIT_BATCH` images or more, the loss and gradient (1.) are computed
as two halves side by side (`in_halves`), with the same results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from oipgraph.ascent.domain import STANDARDIZED, Domain
from oipgraph.ascent.parameterizations import Parameterization, Pixels
from oipgraph.ascent.step_rules import NormalizedStep, StepRule
from oipgraph.ascent.step_rules.normalized import GRADIENT_EPS, normalized_step
from oipgraph.ascent.transforms import Transforms
from oipgraph.objectives import Objective

__all__ = ["GRADIENT_EPS", "AscentStep", "ascent_update", "compiled_step", "loss_and_gradient", "never_single"]
# From this many images on, a step computes its batch as two halves that run side by side (`in_halves`).
MIN_SPLIT_BATCH = 32


def compiled_step(function: Callable, input_signature: Sequence[tf.TensorSpec]) -> Callable:
    """`tf.function(function)` that TensorFlow keeps as a function call instead of inlining it.

    Every ascent loop calls its loss-and-gradient step through this. Inlined
    into a `tf.while_loop` body, the step's max-pool gradients only sometimes
    get TensorFlow's oneDNN kernel (the graph pass that swaps it in needs to
    visit the forward max-pool first, and in a loop body that depends on the
    node order): in about one process in three they ran on the Eigen kernel,
    8x slower, which made the whole loop 1.4-1.6x slower. A function that is not
    inlined is optimized as its own acyclic graph, where the swap always happens.
    """
    return tf.function(
        function, autograph=False, input_signature=input_signature, experimental_attributes={"_noinline": True}
    )


def loss_and_gradient(loss_fn: Callable[[tf.Tensor], tf.Tensor], images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-image loss [B] = loss_fn(images) and its gradient with respect to each image [B, H, W, C]."""
    with tf.GradientTape() as tape:
        tape.watch(images)
        loss = loss_fn(images)
        # Images are independent, so the gradient of the sum is every image's own gradient.
        total = tf.reduce_sum(loss)
    return loss, tape.gradient(total, images)


def never_single(fn: Callable[..., Any], *batched: tf.Tensor) -> Any:
    """`fn(*batched)`, but a batch of one is computed as a pair (every tensor's entry twice).

    oneDNN computes a batch of one with other kernels than larger batches; their
    rounding differs by ~1e-7, which a max-pool or ReLU tie can turn into a
    visible difference after some steps. Computing a lone pair as two keeps a
    pair's result independent of how many others share its batch.
    """
    count = tf.shape(batched[0])[0]
    padded = [
        tf.cond(
            tf.equal(count, 1), lambda tensor=tensor: tf.concat([tensor, tensor], axis=0), lambda tensor=tensor: tensor
        )
        for tensor in batched
    ]
    return tf.nest.map_structure(lambda output: output[:count], fn(*padded))


def in_halves(fn: Callable[..., tuple[tf.Tensor, ...]], *batched: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """`fn(*batched)` as two independent calls on the two halves of the batch, once it has >= MIN_SPLIT_BATCH images.

    `fn` must be a compiled step (`compiled_step`: a function call TensorFlow
    does not inline) whose outputs are per image, with the batch on axis 0.
    The two calls share no data, so TensorFlow's inter-op threads run their
    ops side by side: while one half waits on a memory-bound op (pool, ReLU
    gradient, col2im), the other computes. On 2 CPU cores that made the
    ascent 1.09x faster at batch 32 and 64, 1.28x at 256 and 1.17x on the
    peer benchmark (128 pairs, 93 after step 11); below 32 it gave
    0.90-1.03x (BENCHMARKS.md). Both halves run the graph the whole batch
    would run, and no image's result depends on the others in its batch, so
    the results are bit-identical to one call on the whole batch. No GPU was
    measured; there a step's ops run in order anyway and the split would
    only add kernel launches, so it is left out where TensorFlow sees a GPU.

    Args:
        fn: (*batched) -> tuple of per-image tensors.
        *batched: Tensors with the same batch size on axis 0.

    Returns:
        fn's outputs for the whole batch, concatenated on axis 0.
    """
    if tf.config.list_logical_devices("GPU"):
        return fn(*batched)
    count = tf.shape(batched[0])[0]

    def halves():
        half = count // 2
        first = fn(*(tensor[:half] for tensor in batched))
        second = fn(*(tensor[half:] for tensor in batched))
        return tuple(tf.concat([a, b], axis=0) for a, b in zip(first, second))

    return tf.cond(count >= MIN_SPLIT_BATCH, halves, lambda: tuple(fn(*batched)))


def ascent_update(
    images: tf.Tensor, gradient: tf.Tensor, epsilon: tf.Tensor | float, domain: Domain = STANDARDIZED
) -> tf.Tensor:
    """One normalized ascent step: project(x + epsilon * step_scale * g / (rms(g) + 1e-7)), per image.

    Args:
        images: float32 [B, H, W, C], the current images.
        gradient: float32 [B, H, W, C], the gradient of each image's loss.
        epsilon: Step size.
        domain: Where the images live (default: standardized per image).

    Returns:
        float32 [B, H, W, C], the stepped images, back in the domain.
    """
    return domain.project(normalized_step(images, gradient, epsilon, domain.step_scale))


class AscentStep:
    """The loss, gradient and update of one step for an objective, with transforms, domain and parameterization.

    Attributes:
        objective: What the step ascends.
        transforms: Applied to what the model sees at every step.
        domain: Where the images live.
        parameterization: What the step updates (default `pixels`: the images themselves).
        step_rule: How it updates them (default the articles' `normalized` step).
        shared_target: Whether one int32 scalar target serves the whole batch
            (the precursor scan) instead of one target per image.
        loss_and_gradient: Compiled `(params [B, *param_shape], target [B] or [],
            seeds int64 [B, 2], step int32 []) -> (loss [B], gradient [B, *param_shape])`;
            a batch of `MIN_SPLIT_BATCH` or more runs as two halves side by side (`in_halves`).
    """

    def __init__(
        self,
        objective: Objective,
        image_shape: Sequence[int],
        transforms: Transforms | None = None,
        domain: Domain = STANDARDIZED,
        shared_target: bool = False,
        parameterization: Parameterization | None = None,
        step_rule: StepRule | None = None,
    ):
        self.objective = objective
        self.transforms = transforms or Transforms()
        self.domain = domain
        self.shared_target = shared_target
        self.parameterization = parameterization or Pixels(image_shape, domain)
        self.step_rule = step_rule or NormalizedStep()
        signature = [
            tf.TensorSpec([None, *self.parameterization.param_shape], tf.float32),
            tf.TensorSpec([] if shared_target else [None], tf.int32, name="map_index"),
            tf.TensorSpec([None, 2], tf.int64),
            tf.TensorSpec([], tf.int32),
        ]
        self._batch_step = compiled_step(self._loss_and_gradient, signature)
        self.loss_and_gradient = compiled_step(self._in_halves, signature)

    def loss(self, params: tf.Tensor, target: tf.Tensor, seeds: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        """float32 [B]: the objective of the transformed images of `params` (no gradient)."""
        seen = self.transforms(self.parameterization.to_image(params), seeds, step, self.domain.middle)
        return self.objective.shared_target(seen, target) if self.shared_target else self.objective(seen, target)

    def _in_halves(self, images, target, seeds, step):
        if self.shared_target:
            return in_halves(lambda x, s: self._batch_step(x, target, s, step), images, seeds)
        return in_halves(lambda x, t, s: self._batch_step(x, t, s, step), images, target, seeds)

    def _loss_and_gradient(self, images, target, seeds, step):
        if self.shared_target:
            return never_single(
                lambda x, s: loss_and_gradient(lambda batch: self.loss(batch, target, s, step), x), images, seeds
            )
        return never_single(
            lambda x, t, s: loss_and_gradient(lambda batch: self.loss(batch, t, s, step), x), images, target, seeds
        )

    def update(self, images: tf.Tensor, gradient: tf.Tensor, epsilon: tf.Tensor) -> tf.Tensor:
        """The stepped images of a pixel-space loop (the precursor scan, the wake-up; see `ascent_update`)."""
        return ascent_update(images, gradient, epsilon, self.domain)

    def apply(
        self, params: tf.Tensor, gradient: tf.Tensor, slots: dict[str, tf.Tensor], step: tf.Tensor, epsilon: tf.Tensor
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """(params, slots) after the step rule and the parameterization's projection; epsilon is the step size."""
        parameterization = self.parameterization
        params, slots = self.step_rule.apply(params, gradient, slots, step, epsilon, parameterization.step_scale)
        return parameterization.project(params), slots
