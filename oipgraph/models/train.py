"""`oipgraph-train`: trains the articles' MNIST CNN (SGD + momentum, LR schedule, L2).

TensorBoard gets, under `--logdir`: `train/batch_loss`, `train/l2_share` (the
share of the L2 term in the batch loss, as the articles track it) and
`train/learning_rate` at the first step, every 50 steps and the last step, and
`accuracy` / `loss` for the `train` and `test` runs once per epoch.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from oipgraph.core import errors
from oipgraph.core.progress import Progress
from oipgraph.models import mnist
from oipgraph.models.loading import DEFAULT_L2, build_cnn, standardize

SUMMARY_EVERY_STEPS = 50


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (the defaults reproduce the shipped model)."""

    epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 0.05
    momentum: float = 0.9
    l2: float = DEFAULT_L2
    seed: int = 0

    def validate(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise errors.OIPGraphError(f"--{name} must be > 0, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise errors.OIPGraphError(f"--learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.momentum < 1:
            raise errors.OIPGraphError(f"--momentum must be in [0, 1), got {self.momentum}")
        if not self.l2 >= 0:
            raise errors.OIPGraphError(f"--l2 must be >= 0, got {self.l2}")


def make_dataset(
    images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    """A `tf.data` pipeline of standardized [B, 28, 28, 1] images and int labels.

    Args:
        images: uint8 images [N, 28, 28].
        labels: integer labels [N].
        batch_size: Images per batch.
        shuffle_seed: Reshuffle every epoch with this seed; None keeps the order.
    """
    dataset = tf.data.Dataset.from_tensor_slices((images[..., np.newaxis], labels.astype(np.int32)))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    return (
        dataset.batch(batch_size)
        .map(lambda x, y: (standardize(x), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def evaluate(model: keras.Model, dataset: tf.data.Dataset) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` over `dataset`."""
    total_loss, correct, count = 0.0, 0, 0
    for images, labels in dataset:
        probs = model(images, training=False)
        total_loss += float(tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(labels, probs)))
        correct += int(tf.reduce_sum(tf.cast(tf.argmax(probs, axis=1, output_type=tf.int32) == labels, tf.int32)))
        count += int(tf.shape(labels)[0])
    return total_loss / count, correct / count


def train(
    config: TrainConfig,
    train_data: tuple[np.ndarray, np.ndarray],
    test_data: tuple[np.ndarray, np.ndarray],
    logdir: str | None = None,
    verbose: bool = True,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Trains a fresh CNN.

    Args:
        config: Hyper-parameters.
        train_data: `(images, labels)` for training, uint8 images [N, 28, 28].
        test_data: `(images, labels)` for the per-epoch test accuracy.
        logdir: TensorBoard directory, or None for no summaries.
        verbose: Show a progress bar per epoch.

    Returns:
        The trained model and a history with per-epoch `loss`, `l2_share`,
        `accuracy`, `test_loss`, `test_accuracy` and `learning_rate`.
    """
    config.validate()
    keras.utils.set_random_seed(config.seed)
    model = build_cnn(config.l2)
    train_set = make_dataset(*train_data, config.batch_size, shuffle_seed=config.seed)
    test_set = make_dataset(*test_data, 1000)
    steps_per_epoch = int(np.ceil(len(train_data[0]) / config.batch_size))
    total_steps = config.epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=config.epochs * steps_per_epoch, alpha=0.01
    )
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum, nesterov=True)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def train_step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            probs = model(images, training=True)
            data_loss = cross_entropy(labels, probs)
            l2_loss = tf.add_n(model.losses) if model.losses else tf.constant(0.0)
            loss = data_loss + l2_loss
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        correct = tf.reduce_sum(tf.cast(tf.argmax(probs, axis=1, output_type=tf.int32) == labels, tf.float32))
        return loss, l2_loss / loss, correct

    writers = {}
    if logdir:
        writers = {run: tf.summary.create_file_writer(os.path.join(logdir, run)) for run in ("train", "test")}
    history: dict[str, list[float]] = {
        key: [] for key in ("loss", "l2_share", "accuracy", "test_loss", "test_accuracy", "learning_rate")
    }
    for epoch in range(config.epochs):
        if verbose:
            print(f"Epoch {epoch + 1}/{config.epochs}")
        progress = Progress(steps_per_epoch, unit="step", label=f"oipgraph-train: epoch {epoch + 1}", enabled=verbose)
        losses, shares, correct, seen = [], [], 0.0, 0
        for images, labels in train_set:
            loss, l2_share, batch_correct = train_step(images, labels)
            step = int(optimizer.iterations)
            losses.append(float(loss))
            shares.append(float(l2_share))
            correct += float(batch_correct)
            seen += int(labels.shape[0])
            if writers and (step == 1 or step % SUMMARY_EVERY_STEPS == 0 or step == total_steps):
                with writers["train"].as_default(step=step):
                    tf.summary.scalar("batch_loss", loss)
                    tf.summary.scalar("l2_share", l2_share)
                    tf.summary.scalar("learning_rate", schedule(step))
            progress.update(
                len(losses), stage=f"loss {np.mean(losses):.4f}, l2_share {float(l2_share):.3f}", force=len(losses) == 1
            )
        progress.finish()
        test_loss, test_accuracy = evaluate(model, test_set)
        epoch_stats = {
            "loss": float(np.mean(losses)),
            "l2_share": float(np.mean(shares)),
            "accuracy": correct / seen,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "learning_rate": float(schedule(int(optimizer.iterations))),
        }
        for key, value in epoch_stats.items():
            history[key].append(value)
        if writers:
            step = int(optimizer.iterations)
            with writers["train"].as_default(step=step):
                tf.summary.scalar("loss", epoch_stats["loss"])
                tf.summary.scalar("accuracy", epoch_stats["accuracy"])
            with writers["test"].as_default(step=step):
                tf.summary.scalar("loss", test_loss)
                tf.summary.scalar("accuracy", test_accuracy)
        if verbose:
            print(
                f"  train accuracy {epoch_stats['accuracy']:.4f}  test accuracy {test_accuracy:.4f}  L2 share "
                f"{epoch_stats['l2_share']:.3f}"
            )
    for writer in writers.values():
        writer.flush()
    return model, history


def check_output_path(path: str) -> str:
    """Checks that `path` can take a `.keras` file (its folder exists or can be created); returns its folder.

    Creates nothing: `save_model_atomically` creates missing folders, as `oipgraph --out` does.
    """
    if not path.endswith(".keras"):
        raise errors.OIPGraphError(f"--out must end in .keras, got {path}")
    directory = os.path.dirname(os.path.abspath(path))
    existing = directory
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise errors.OIPGraphError(f"--out={path} cannot be written: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise errors.OIPGraphError(f"--out={path} cannot be written: {existing} is not writable")
    return directory


def save_model_atomically(model: keras.Model, path: str) -> None:
    """Saves `model` to `path` (a `.keras` file, its folder created if missing) via a temp file and a rename."""
    directory = check_output_path(path)
    os.makedirs(directory, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(suffix=".keras", dir=directory, prefix=".tmp-")
    os.close(handle)
    try:
        model.save(temp_path)
        os.replace(temp_path, path)
    finally:
        if os.path.exists(temp_path):
            os.remove(temp_path)


FLAGS = flags.FLAGS
flags.DEFINE_string("mnist", None, f"Keras-format mnist.npz; default ${mnist.ENV_VAR}, else download.")
flags.DEFINE_integer("epochs", TrainConfig.epochs, "Training epochs.")
flags.DEFINE_integer("batch_size", TrainConfig.batch_size, "Images per batch.")
flags.DEFINE_float("learning_rate", TrainConfig.learning_rate, "Initial learning rate (cosine decay to 1% of it).")
flags.DEFINE_float("momentum", TrainConfig.momentum, "SGD (Nesterov) momentum.")
flags.DEFINE_float("l2", TrainConfig.l2, "L2 kernel regularization weight.")
flags.DEFINE_integer("seed", TrainConfig.seed, "Random seed for weights and shuffling.")
flags.DEFINE_string("out", "mnist_cnn.keras", "Where to save the trained model (.keras).")
flags.DEFINE_string("logdir", None, "TensorBoard log directory.")


def main(argv: list[str]) -> None:
    del argv
    config = TrainConfig(FLAGS.epochs, FLAGS.batch_size, FLAGS.learning_rate, FLAGS.momentum, FLAGS.l2, FLAGS.seed)
    config.validate()
    check_output_path(FLAGS.out)
    train_data, test_data = mnist.load_mnist(FLAGS.mnist)
    model, history = train(config, train_data, test_data, FLAGS.logdir)
    save_model_atomically(model, FLAGS.out)
    print(f"saved {FLAGS.out}: test accuracy {history['test_accuracy'][-1]:.4f}")


def run() -> None:
    """Console-script entry point."""
    errors.run(main)


if __name__ == "__main__":
    run()
