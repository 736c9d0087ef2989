"""Dataset examples (Olah et al., "Feature Visualization"): each map's top dataset images and how its OIP compares.

`find_examples` runs one compiled pass over a whole dataset: batch by batch it
preprocesses the images into the model's input domain, scores every image for
every target at once (`scores(images) -> [B, T]`, e.g. `channel_scores`: the
mean over positions of each map, from one feature-model evaluation) and merges
the batch into a running top-k per target with `tf.math.top_k`. Nothing of size
[N, T] is kept beyond one batch.

`compare` says per map how an OIP's loss relates to the best dataset image's
value for the same objective (both images in the same input domain, e.g. both
standardized for the shipped CNN, so the comparison is fair). `run_fields`,
`run_summary_text` and `example_strip` put both into a run's `catalog.json`,
`oips.npz`, end-of-run line and pictures (`outputs.write_outputs`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from oipgraph.ascent.domain import Domain
from oipgraph.core.errors import OIPGraphError, check_positive_int
from oipgraph.models import layer_lookup
from oipgraph.models.loading import standardize
from oipgraph.outputs import summaries
from oipgraph.outputs.datasets import Dataset

DEFAULT_TOP_K = 9
MAX_TOP_K = 100
DEFAULT_BATCH_SIZE = 1024
MAX_BATCH_SIZE = 65536
# `batch_size_for` keeps every layer output of a batch below this many values (128 MiB of float32).
MAX_BATCH_VALUES = 2**25

Scores = Callable[[tf.Tensor], tf.Tensor]
Preprocess = Callable[[tf.Tensor], tf.Tensor]


def channel_scores(feature_model: keras.Model) -> Scores:
    """scores[b, k] = mean over positions (y, x) of feature_model(images)[b, y, x, k]: the channel objective.

    Args:
        feature_model: image [B, H, W, C] -> layer output float [B, h, w, K].

    Returns:
        A function float32 images [B, H, W, C] -> float32 [B, K].
    """
    return lambda images: tf.reduce_mean(tf.cast(feature_model(images, training=False), tf.float32), axis=[1, 2])


def unit_scores(feature_model: keras.Model) -> Scores:
    """scores[b, u] = feature_model(images)[b, u]: the value of each unit of a non-spatial layer (as it outputs it).

    Args:
        feature_model: image [B, H, W, C] -> layer output float [B, U].
    """
    return lambda images: tf.cast(feature_model(images, training=False), tf.float32)


def feature_scores(feature_model: keras.Model) -> tuple[Scores, int]:
    """`channel_scores` for a spatial [B, h, w, K] output, `unit_scores` for [B, U]; with K or U.

    Raises:
        OIPGraphError: an output of another rank.
    """
    shape = tuple(feature_model.output.shape)
    if len(shape) == 4:
        return channel_scores(feature_model), int(shape[3])
    if len(shape) == 2:
        return unit_scores(feature_model), int(shape[1])
    raise OIPGraphError(f"layer output shape {shape} is neither [B, h, w, C] nor [B, units]; no dataset scores")


def batch_size_for(feature_model: keras.Model) -> int:
    """Images per batch: `DEFAULT_BATCH_SIZE`, fewer where one tensor of a batch would exceed `MAX_BATCH_VALUES`.

    batch = max(1, min(DEFAULT_BATCH_SIZE, MAX_BATCH_VALUES // largest)), where largest is the most values
    per image of the input or any layer output at the sizes the model runs at (`layer_lookup.output_sizes`,
    also inside nested bases); 1024 for the shipped CNN (largest output 26x26x32), 10 for a 224x224x64
    convolution.
    """
    image_values = layer_lookup.values_per_image(feature_model.inputs[0].shape)
    largest = max(image_values, *layer_lookup.output_sizes(feature_model))
    return max(1, min(DEFAULT_BATCH_SIZE, MAX_BATCH_VALUES // largest))


@dataclasses.dataclass
class DatasetExamples:
    """The top dataset images of every target.

    Attributes:
        indices: int64 [T, k], per target the dataset indices of its k best images, best first
            (equal values: the lower index first). k = min(top_k, N).
        values: float32 [T, k], their scores.
        images: float32 [T, k, H, W, C], those images as the model saw them (preprocessed).
        names: [T][k] the images' names (file names or `KEY[i]`, see `datasets.Dataset`).
        num_images: N, the images scored.
        source: The dataset's path.
    """

    indices: np.ndarray
    values: np.ndarray
    images: np.ndarray
    names: list[list[str]]
    num_images: int
    source: str

    @property
    def best_values(self) -> np.ndarray:
        """float32 [T]: per target the best value any dataset image reaches."""
        return self.values[:, 0]


def top_k_pass(
    scores: Scores, num_targets: int, image_spec: tf.TensorSpec, top_k: int, batch_size: int, preprocess: Preprocess
) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """The compiled pass: dataset images `image_spec` [N, H, W, C] -> (values float32 [T, K], indices int32 [T, K]).

    Rows whose top-k is not full (N < K) end in values -inf, indices -1.
    """

    def run(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        count = tf.shape(images)[0]

        def body(begin, best_values, best_indices):
            batch = preprocess(tf.cast(images[begin : begin + batch_size], tf.float32))
            batch_scores = tf.ensure_shape(scores(batch), [None, num_targets])
            batch_scores = tf.debugging.assert_all_finite(batch_scores, "dataset scores contain NaN or Inf")
            batch_indices = begin + tf.range(tf.shape(batch_scores)[0])
            # Earlier images first, so that top_k keeps the lower index among equal values.
            values = tf.concat([best_values, tf.transpose(batch_scores)], axis=1)
            indices = tf.concat([best_indices, tf.tile(batch_indices[None], [num_targets, 1])], axis=1)
            best_values, positions = tf.math.top_k(values, k=top_k, sorted=True)
            return begin + batch_size, best_values, tf.gather(indices, positions, batch_dims=1)

        start = (
            tf.constant(0),
            tf.fill([num_targets, top_k], tf.constant(-np.inf, tf.float32)),
            tf.fill([num_targets, top_k], -1),
        )
        _, best_values, best_indices = tf.while_loop(lambda begin, *_: begin < count, body, start)
        return best_values, best_indices

    return tf.function(run, autograph=False, input_signature=[image_spec])


def find_examples(
    dataset: Dataset,
    scores: Scores,
    num_targets: int,
    top_k: int = DEFAULT_TOP_K,
    batch_size: int = DEFAULT_BATCH_SIZE,
    preprocess: Preprocess = standardize,
) -> DatasetExamples:
    """Per target, the `top_k` dataset images with the highest score, in one compiled pass over the dataset.

    Args:
        dataset: The images (`datasets.load_dataset`), in the model's input shape.
        scores: float32 model inputs [B, H, W, C] -> float32 [B, num_targets], one score per image and
            target (`channel_scores`, `unit_scores` or an objective's all-targets method).
        num_targets: T, the columns of `scores`.
        top_k: Images kept per target, 1..`MAX_TOP_K`.
        batch_size: Images scored at once, 1..`MAX_BATCH_SIZE`.
        preprocess: float32 stored pixel values [B, H, W, C] (0..255 for uint8 data) -> model inputs;
            default per-image standardization (the shipped CNN's input domain).

    Raises:
        OIPGraphError: a bad `num_targets`, `top_k` or `batch_size`.
    """
    num_targets = check_positive_int("num_targets", num_targets)
    top_k = check_positive_int("top_k", top_k)
    batch_size = check_positive_int("batch_size", batch_size)
    if top_k > MAX_TOP_K:
        raise OIPGraphError(f"top_k must be <= {MAX_TOP_K}, got {top_k}")
    if batch_size > MAX_BATCH_SIZE:
        raise OIPGraphError(f"batch_size must be <= {MAX_BATCH_SIZE}, got {batch_size}")
    images = dataset.images
    spec = tf.TensorSpec([None, *images.shape[1:]], tf.as_dtype(images.dtype), name="images")
    run = top_k_pass(scores, num_targets, spec, top_k, batch_size, preprocess)
    values, indices = (array.numpy() for array in run(tf.constant(images)))
    kept = min(top_k, len(images))
    values, indices = values[:, :kept], indices[:, :kept].astype(np.int64)
    top_images = preprocess(tf.cast(images[indices.reshape(-1)], tf.float32)).numpy()
    return DatasetExamples(
        indices=indices,
        values=values,
        images=top_images.reshape(*indices.shape, *images.shape[1:]),
        names=[[dataset.names[index] for index in row] for row in indices],
        num_images=len(images),
        source=dataset.source,
    )


@dataclasses.dataclass
class Comparison:
    """OIPs against the best dataset image, per map.

    Attributes:
        best_dataset_loss: float32 [M], the best dataset value of each map's objective.
        ratio: float64 [M], oip_loss / best_dataset_loss where best_dataset_loss > 0; NaN where
            best_dataset_loss <= 0 (no dataset image drives the map above 0: a ratio would not say
            how good the OIP is, and its sign would flip for negative values).
        beats: bool [M], whether the map has an OIP (`has_oip`) with oip_loss > best_dataset_loss.
        has_oip: bool [M], whether the map has an OIP at all.
    """

    best_dataset_loss: np.ndarray
    ratio: np.ndarray
    beats: np.ndarray
    has_oip: np.ndarray

    @property
    def num_beating(self) -> int:
        """How many OIPs beat the best dataset image."""
        return int(np.sum(self.beats))

    def median_ratio(self) -> float | None:
        """The median ratio over the maps with an OIP and a defined ratio; None if there are none."""
        defined = self.ratio[self.has_oip & np.isfinite(self.ratio)]
        return float(np.median(defined)) if len(defined) else None


def compare(oip_loss: np.ndarray, best_dataset_loss: np.ndarray, has_oip: np.ndarray | None = None) -> Comparison:
    """Per map: the best dataset value, ratio = oip_loss / best_dataset_loss, and whether the OIP beats it.

    Args:
        oip_loss: float [M], each map's OIP loss.
        best_dataset_loss: float [M], `DatasetExamples.best_values` of the same maps.
        has_oip: bool [M], False for maps without an OIP (the ascent never fired): they beat nothing and
            take no part in the median ratio; default all True.
    """
    oip_loss = np.asarray(oip_loss, np.float64)
    best = np.asarray(best_dataset_loss, np.float32)
    has_oip = np.ones(oip_loss.shape, bool) if has_oip is None else np.asarray(has_oip, bool)
    if not oip_loss.shape == best.shape == has_oip.shape:
        raise ValueError(f"shapes differ: oip_loss {oip_loss.shape}, best {best.shape}, has_oip {has_oip.shape}")
    positive = best > 0
    ratio = np.where(positive, oip_loss / np.where(positive, best, 1.0), np.nan)
    return Comparison(best_dataset_loss=best, ratio=ratio, beats=has_oip & (oip_loss > best), has_oip=has_oip)


def run_fields(
    found: DatasetExamples, map_indices: list[int], oip_loss: np.ndarray, has_oip: np.ndarray
) -> tuple[list[dict], dict, dict[str, np.ndarray]]:
    """A run's dataset fields: per map for `catalog.json`, the run's summary, and the arrays for `oips.npz`.

    Args:
        found: The dataset examples of all maps of the layer.
        map_indices: The run's M maps.
        oip_loss: float [M], each map's (best) OIP loss.
        has_oip: bool [M], False for maps whose ascent never fired.

    Returns:
        (entries, summary, arrays): entries[m] = {best_dataset_loss, ratio (`compare`; None where
        best_dataset_loss <= 0), beats_best_dataset_image, dataset_top_indices, dataset_top_losses,
        dataset_top_names}; summary = {path, num_images, oips_beating_best, maps_with_oip,
        median_ratio (over the maps with an OIP)}; arrays =
        best_dataset_loss [M], dataset_ratio [M] (NaN for None), dataset_top_indices [M, k],
        dataset_top_losses [M, k], dataset_top_images [M, k, H, W, C].
    """
    comparison = compare(oip_loss, found.best_values[map_indices], has_oip)
    entries = [
        {
            "best_dataset_loss": float(comparison.best_dataset_loss[row]),
            "ratio": float(comparison.ratio[row]) if np.isfinite(comparison.ratio[row]) else None,
            "beats_best_dataset_image": bool(comparison.beats[row]),
            "dataset_top_indices": [int(index) for index in found.indices[map_index]],
            "dataset_top_losses": [float(value) for value in found.values[map_index]],
            "dataset_top_names": found.names[map_index],
        }
        for row, map_index in enumerate(map_indices)
    ]
    summary = {
        "path": found.source,
        "num_images": found.num_images,
        "oips_beating_best": comparison.num_beating,
        "maps_with_oip": int(np.sum(has_oip)),
        "median_ratio": comparison.median_ratio(),
    }
    arrays = {
        "best_dataset_loss": comparison.best_dataset_loss,
        "dataset_ratio": comparison.ratio,
        "dataset_top_indices": found.indices[map_indices],
        "dataset_top_losses": found.values[map_indices],
        "dataset_top_images": found.images[map_indices],
    }
    return entries, summary, arrays


def run_summary_text(document: dict) -> str:
    """The end-of-run line's dataset part: '; N of M OIPs beat the best of D dataset images (median ratio ...)'."""
    summary = document.get("dataset_examples")
    if summary is None:
        return ""
    median = "none" if summary["median_ratio"] is None else f"{summary['median_ratio']:.2f}"
    return (
        f"; {summary['oips_beating_best']} of {len(document['maps'])} OIPs beat the best of "
        f"{summary['num_images']} dataset images (median oip_loss / best_dataset_loss {median} over the "
        f"{summary['maps_with_oip']} maps with an OIP)"
    )


def example_strip(oips: np.ndarray, top_images: np.ndarray, domain: Domain, scale: int = 4) -> np.ndarray:
    """uint8 [h, w, 3]: a map's OIPs [K, H, W, C], a dark gap, then its top dataset images [k, H, W, C], in one row.

    Both are images of the model's input `domain` and are shown as it says (`summaries.to_display`).
    """
    left = summaries.labelled_grid(oips, domain, columns=len(oips), scale=scale)
    right = summaries.labelled_grid(top_images, domain, columns=len(top_images), scale=scale)
    gap = np.zeros([left.shape[0], 3 * scale, 3], np.uint8)
    return np.concatenate([left, gap, right], axis=1)
