"""The loop inside `OIPAscent`: its state, stop rules, compaction and snapshots, as graph code.

For every pair b (parameter p_b of its start image, target t_b), step j:

1. loss_j, g = `step.AscentStep.loss_and_gradient` of the pair's parameter and target
   (for the default `pixels` parameterization the parameter is the image).
2. Convergence (if `conv_criterion` > 0): for j > 10, a relative change
   (loss_j - loss_{j-1}) / (|loss_j| + 1e-7) below `conv_criterion` in 4
   successive steps stops the pair as `converged`. Dividing by |loss|, not
   loss, keeps a rising negative loss (a linear layer, a logit) from counting
   as converged; for the articles' ReLU maps loss >= 0 and both agree.
3. Zero activation: a step with loss_j == 0 and mean(g) == 0 counts; more than
   10 such steps stop the pair as `no_activation`.
4. Otherwise p, slots <- `AscentStep.apply(p, g, slots, j, epsilon)` (the step rule and the
   parameterization's projection; slots are the step rule's per-pair state, e.g. Adam's moments).

A stopped pair is frozen (its parameter and slots no longer change) and leaves the
computation: each step gathers the pairs still running, computes only them and
scatters their new state back, so pairs that stop early (a map that never
fires stops at step 11) cost nothing afterwards. The loop ends when every pair
stopped or `steps` steps ran. A frozen pair's loss history repeats its last
loss; `steps_run` counts its gradient evaluations (11 for a map that never
fires); snapshots are its images (`to_image` of its parameter) after 0, n, 2n, 4n, ... and all steps.

The state is a dict of tensors (`AscentLoop.state_spec`), so that the loop can
run in segments (`OIPAscent.__call__`) and give the same results as one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from oipgraph.ascent.step import AscentStep
from oipgraph.core import limits
from oipgraph.objectives.base import STATUS_COMPLETED, STATUS_CONVERGED, STATUS_NO_ACTIVATION

ZERO_STEP_LIMIT = 10
CONVERGENCE_AFTER_STEP = 10
CONVERGENCE_STREAK = 4
LOSS_EPS = 1e-7


def snapshot_steps(steps: tf.Tensor | int, num_snapshots: int) -> tf.Tensor:
    """Log-spaced snapshot steps [0, n, 2n, 4n, ..., steps], n = max(1, steps // 2^(F-2))."""
    steps = tf.cast(steps, tf.int32)
    spacing = tf.maximum(1, steps // 2 ** (num_snapshots - 2))
    doublings = tf.constant([2**j for j in range(num_snapshots - 2)], tf.int32)
    middle = tf.minimum(spacing * doublings, steps)
    return tf.concat([[0], middle, [steps]], axis=0)


def checked_steps(
    steps: tf.Tensor, epsilon: tf.Tensor, conv_criterion: tf.Tensor | None = None, batch: tf.Tensor | None = None
) -> tf.Tensor:
    """In-graph validation of an ascent loop's step arguments; returns `steps` behind the checks.

    steps in [1, limits.MAX_STEPS], epsilon in (0, limits.MAX_EPSILON], conv_criterion finite and, given
    the batch, batch x steps <= limits.MAX_STEP_PAIRS. Size every allocation from the returned `steps`.
    """
    checks = limits.assert_steps(steps) + limits.assert_epsilon(epsilon)
    if conv_criterion is not None:
        checks.append(tf.debugging.assert_all_finite(conv_criterion, message="conv_criterion must be finite"))
    if batch is not None:
        checks += limits.assert_step_pairs(steps, batch)
    with tf.control_dependencies(checks):
        return tf.identity(steps)


class AscentLoop:
    """The per-pair ascent loop of one `AscentStep`, in three graph pieces: start, segment, finish.

    Attributes:
        ascent_step: The step (loss, gradient, update) the loop runs.
        num_snapshots: Frames recorded per pair (>= 2).
    """

    def __init__(self, ascent_step: AscentStep, num_snapshots: int):
        self.ascent_step = ascent_step
        self.num_snapshots = num_snapshots

    def state_spec(self, image_shape: Sequence[int]) -> dict[str, tf.TensorSpec]:
        """The loop state's signature for images [B, *image_shape] (B unknown)."""
        param_shape = self.ascent_step.parameterization.param_shape
        return {
            "step": tf.TensorSpec([], tf.int32),
            "params": tf.TensorSpec([None, *param_shape], tf.float32),
            "slots": self.ascent_step.step_rule.slot_specs(param_shape),
            "loss_prev": tf.TensorSpec([None], tf.float32),
            "zero_steps": tf.TensorSpec([None], tf.int32),
            "streak": tf.TensorSpec([None], tf.int32),
            "status": tf.TensorSpec([None], tf.int32),
            "active": tf.TensorSpec([None], tf.bool),
            "steps_run": tf.TensorSpec([None], tf.int32),
            "snapshots": tf.TensorSpec([self.num_snapshots, None, *image_shape], tf.float32),
        }

    def initial_state(self, images, map_index, steps, epsilon, conv_criterion, seeds) -> dict[str, tf.Tensor]:
        """The state before step 0 of checked `images` [B, H, W, C] and `map_index` [B], behind the step checks.

        The images enter parameter space here (`Parameterization.from_image`); snapshot 0 is their image.
        """
        steps = checked_steps(steps, epsilon, conv_criterion, tf.shape(images)[0])
        seed_check = tf.debugging.assert_equal(
            tf.shape(seeds)[0], tf.shape(map_index)[0], message="seeds needs one [2] seed per image; seeds vs batch"
        )
        with tf.control_dependencies([seed_check, steps]):
            images = tf.identity(images)
            # The loop's history (TensorArray) is sized from this step: it must wait for the step checks.
            first_step = tf.identity(tf.constant(0))
        batch = tf.shape(images)[0]
        zeros = tf.zeros([batch], tf.int32)
        params = self.ascent_step.parameterization.from_image(images)
        return {
            "step": first_step,
            "params": params,
            "slots": self.ascent_step.step_rule.initial_slots(params),
            "loss_prev": tf.zeros([batch]),
            "zero_steps": zeros,
            "streak": zeros,
            "status": zeros + STATUS_COMPLETED,
            "active": tf.ones([batch], tf.bool),
            "steps_run": zeros,
            "snapshots": tf.zeros(tf.concat([[self.num_snapshots], tf.shape(images)], axis=0)),
        }

    def run_segment(self, state, map_index, steps, epsilon, conv_criterion, seeds, end_step):
        """Runs steps state["step"] .. min(end_step, steps) - 1 of the loop (fewer once every pair stopped).

        Returns:
            (the state after them, float32 [steps run now, B] loss history).
        """
        frames = snapshot_steps(steps, self.num_snapshots)
        use_convergence = conv_criterion > 0
        start_step = state["step"]
        end_step = tf.minimum(end_step, steps)

        to_image = self.ascent_step.parameterization.to_image

        def record(step, params, snapshots):
            hit = tf.equal(frames, step)
            return tf.cond(
                tf.reduce_any(hit),
                lambda: tf.where(hit[:, None, None, None, None], to_image(params)[None], snapshots),
                lambda: snapshots,
            )

        def body(state, history):
            step, all_params = state["step"], state["params"]
            snapshots = record(step, all_params, state["snapshots"])
            # Only the pairs still running are computed; stopped ones keep their frozen state.
            rows = tf.where(state["active"])[:, 0]
            at_rows = rows[:, None]

            def running(key):
                return tf.gather(state[key], rows)

            x = tf.gather(all_params, rows)
            loss, grad = self.ascent_step.loss_and_gradient(x, tf.gather(map_index, rows), tf.gather(seeds, rows), step)
            relative_change = (loss - running("loss_prev")) / (tf.abs(loss) + LOSS_EPS)
            streak = tf.where(
                (step > CONVERGENCE_AFTER_STEP) & (relative_change < conv_criterion), running("streak") + 1, 0
            )
            converged = use_convergence & (streak >= CONVERGENCE_STREAK)
            zero = tf.equal(loss, 0.0) & tf.equal(tf.reduce_mean(grad, axis=[1, 2, 3]), 0.0)
            zero_steps = running("zero_steps") + tf.cast(zero, tf.int32)
            stopping = converged | (zero_steps > ZERO_STEP_LIMIT)
            status = tf.where(stopping, tf.where(converged, STATUS_CONVERGED, STATUS_NO_ACTIVATION), running("status"))
            slots = {key: tf.gather(value, rows) for key, value in state["slots"].items()}
            stepped, stepped_slots = self.ascent_step.apply(x, grad, slots, step, epsilon)
            x = tf.where(stopping[:, None, None, None], x, stepped)
            slots = {key: tf.where(stopping[:, None, None, None], slots[key], stepped_slots[key]) for key in slots}

            def scatter(key, values):
                return tf.tensor_scatter_nd_update(state[key], at_rows, values)

            # A stopped pair's history repeats its last loss, which stays in loss_prev.
            loss_prev = scatter("loss_prev", loss)
            history = history.write(step - start_step, loss_prev)
            new_state = {
                "step": step + 1,
                "params": scatter("params", x),
                "slots": {key: tf.tensor_scatter_nd_update(state["slots"][key], at_rows, slots[key]) for key in slots},
                "loss_prev": loss_prev,
                "zero_steps": scatter("zero_steps", zero_steps),
                "streak": scatter("streak", streak),
                "status": scatter("status", status),
                "active": scatter("active", ~stopping),
                "steps_run": scatter("steps_run", tf.fill(tf.shape(rows), step + 1)),
                "snapshots": snapshots,
            }
            return new_state, history

        history = tf.TensorArray(tf.float32, size=tf.maximum(end_step - start_step, 0), element_shape=[None])
        state, history = tf.while_loop(
            lambda state, history: (state["step"] < end_step) & tf.reduce_any(state["active"]),
            body,
            (state, history),
            parallel_iterations=1,
        )
        ran = state["step"] - start_step
        # A segment of a loop that had stopped runs no step (a device's share that finished before the others'):
        # gathering no element of a list whose element shape is unknown fails, so that case gives [0, B].
        losses = tf.cond(
            ran > 0, lambda: history.gather(tf.range(ran)), lambda: tf.zeros([0, tf.size(map_index)], tf.float32)
        )
        return state, losses

    def final_outputs(self, state, steps, images: tf.Tensor, final_loss: tf.Tensor) -> dict[str, tf.Tensor]:
        """Everything but the loss history, from the state after the loop, its images [B, H, W, C] and loss [B]."""
        frames = snapshot_steps(steps, self.num_snapshots)
        x = images
        snapshots = tf.where((frames >= state["step"])[:, None, None, None, None], x[None], state["snapshots"])
        return {
            "images": x,
            "loss": final_loss,
            "status": state["status"],
            "steps_run": state["steps_run"],
            "snapshots": tf.transpose(snapshots, [1, 0, 2, 3, 4]),
            "snapshot_steps": frames,
        }
