"""MNIST from a local Keras-format `mnist.npz`, with checks that name what is wrong."""

from __future__ import annotations

import os
import zipfile

import keras
import numpy as np

from oipgraph.core.errors import OIPGraphError

ENV_VAR = "OIPGRAPH_MNIST"
_EXPECTED = {
    "x_train": (3, (28, 28)),
    "y_train": (1, ()),
    "x_test": (3, (28, 28)),
    "y_test": (1, ()),
}


class DataError(OIPGraphError):
    """An MNIST file that is missing, unreadable or not in Keras' format."""


def resolve_path(path: str | None) -> str | None:
    """The MNIST file to use: `path`, else `$OIPGRAPH_MNIST`, else None (download)."""
    return path or os.environ.get(ENV_VAR) or None


def load_mnist(path: str | None = None) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Loads MNIST as uint8 images [N, 28, 28] and uint8 labels [N].

    Args:
        path: A Keras-format `mnist.npz` (keys `x_train, y_train, x_test, y_test`).
            Defaults to `$OIPGRAPH_MNIST`; without either, Keras downloads MNIST.

    Returns:
        `((x_train, y_train), (x_test, y_test))`, like `keras.datasets.mnist.load_data()`.

    Raises:
        DataError: the file is missing, corrupt, lacks a key, or has a wrong dtype or shape.
    """
    path = resolve_path(path)
    if path is None:
        return keras.datasets.mnist.load_data()
    if not os.path.isfile(path):
        raise DataError(f"MNIST file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise DataError(f"MNIST file {path} is not an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = sorted(set(_EXPECTED) - set(archive.files))
            if missing:
                raise DataError(
                    f"MNIST file {path} lacks key(s) {', '.join(missing)}; found {', '.join(archive.files) or 'none'}"
                )
            arrays = {key: archive[key] for key in _EXPECTED}
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"MNIST file {path} is unreadable: {err}") from err
    for key, (ndim, tail) in _EXPECTED.items():
        array = arrays[key]
        if array.dtype != np.uint8:
            raise DataError(f"MNIST file {path}: {key} has dtype {array.dtype}, expected uint8")
        if array.ndim != ndim or array.shape[1:] != tail:
            expected = "[N, 28, 28]" if ndim == 3 else "[N]"
            raise DataError(f"MNIST file {path}: {key} has shape {array.shape}, expected {expected}")
    for split in ("train", "test"):
        n_images, n_labels = len(arrays[f"x_{split}"]), len(arrays[f"y_{split}"])
        if n_images != n_labels:
            raise DataError(f"MNIST file {path}: {n_images} {split} images but {n_labels} labels")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
