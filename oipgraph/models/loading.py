"""The articles' MNIST CNN, the shipped trained copy, and model/layer lookup.

The CNN expects *per-image standardized* 28x28x1 images (zero mean, unit
variance per image, as `tf.image.per_image_standardization` makes them). The
standardization happens in the input pipeline, not inside the model, so that
the `.keras` file loads with plain Keras and the OIP ascent (which keeps its
images standardized after every step) feeds the model exactly what it was
trained on.
"""

from __future__ import annotations

import os
import zipfile
from importlib import resources

import h5py
import keras
import tensorflow as tf

from oipgraph.core.errors import OIPGraphError
from oipgraph.models import layer_lookup

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
DEFAULT_L2 = 2e-4
SHIPPED_MODEL_NAME = "mnist_cnn.keras"


class ModelError(OIPGraphError):
    """A model file or layer name that cannot be used."""


def build_cnn(l2: float = DEFAULT_L2) -> keras.Model:
    """Builds the articles' CNN (untrained).

    Args:
        l2: Weight of the L2 kernel regularizer on every conv and dense layer.

    Returns:
        A functional Keras model with layers `Conv2D_1`, `Max_Pool_1`,
        `Conv2D_2`, `Max_Pool_2`, `Conv2D_3` (3x3x128 output), `Flatten`,
        `Dense_1` and `Dense_2` (softmax).
    """
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None

    def conv(filters: int, name: str) -> keras.layers.Conv2D:
        return keras.layers.Conv2D(filters, 3, activation="relu", kernel_regularizer=regularizer, name=name)

    inputs = keras.Input(shape=INPUT_SHAPE, name="image")
    x = conv(32, "Conv2D_1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="Max_Pool_1")(x)
    x = conv(64, "Conv2D_2")(x)
    x = keras.layers.MaxPooling2D(2, name="Max_Pool_2")(x)
    x = conv(128, "Conv2D_3")(x)
    x = keras.layers.Flatten(name="Flatten")(x)
    x = keras.layers.Dense(70, activation="relu", kernel_regularizer=regularizer, name="Dense_1")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", kernel_regularizer=regularizer, name="Dense_2")(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")


def shipped_model_path() -> str:
    """Path of the trained CNN that ships inside the package."""
    return str(resources.files("oipgraph") / "assets" / SHIPPED_MODEL_NAME)


MODEL_FORMATS = "a Keras .keras file, or a full Keras 2 model in HDF5 (.h5/.hdf5)"
HDF5_SUFFIXES = (".h5", ".hdf5")


def load_model(path: str | None = None, image_size: tuple[int, int] | None = None) -> keras.Model:
    """Loads a Keras model file; the shipped MNIST CNN when `path` is None.

    Formats (told apart by content, not by name): a Keras 3 `.keras` zip archive, or a full Keras 2 model in
    HDF5 (`model.save("m.h5")`; Keras 3's legacy loader). Both load with `compile=False` (no optimizer is
    needed) and Keras' `safe_mode`, which refuses a `Lambda` layer's pickled Python code.

    Args:
        path: A model file, or None.
        image_size: (height, width) to rebuild a model with a variable-size
            image input on (`layer_lookup.with_image_size`); None keeps the input.

    Raises:
        ModelError: the path is missing, a TensorFlow SavedModel folder, a weights-only file, or no loadable
            Keras model; the message says how to convert where a conversion exists.
        OIPGraphError: `image_size` does not fit the model.
    """
    path = path or shipped_model_path()
    check_model_file(path)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types for corrupt archives.
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"cannot load Keras model {path}: {first_line}") from err
    return layer_lookup.with_image_size(model, image_size)


def check_model_file(path: str) -> None:
    """Fails with one line unless `path` is a file in one of the `MODEL_FORMATS` that Keras 3 can load.

    Raises:
        ModelError: missing path; a SavedModel folder or other folder; an HDF5 file of weights only (no
            `model_config` attribute) or not named `.h5`/`.hdf5`; any other file that is no zip archive.
    """
    if os.path.isdir(path):
        if any(os.path.isfile(os.path.join(path, name)) for name in ("saved_model.pb", "saved_model.pbtxt")):
            raise ModelError(
                f"{path} is a TensorFlow SavedModel folder, which Keras 3 cannot load as a model; if it was saved"
                " from a Keras model, convert it where it loads (TensorFlow <= 2.15 or tf_keras):"
                " tf.keras.models.load_model(FOLDER).save('model.h5'), then --model=model.h5"
            )
        raise ModelError(f"{path} is a folder, not a model file ({MODEL_FORMATS})")
    if not os.path.isfile(path):
        raise ModelError(f"model file not found: {path}")
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as file:
            has_model = "model_config" in file.attrs
        if not has_model:
            raise ModelError(
                f"{path} holds only weights, no model: build the model in Python, then"
                f" model.load_weights({os.path.basename(path)!r}) and model.save('model.keras')"
            )
        if not path.lower().endswith(HDF5_SUFFIXES):
            raise ModelError(f"{path} is a Keras HDF5 model: name it .h5 or .hdf5 (Keras reads it by its name)")
        return
    if not zipfile.is_zipfile(path):
        raise ModelError(f"not a Keras model file ({MODEL_FORMATS}): {path}")


def conv_layer_names(model: keras.Model) -> list[str]:
    """Qualified names of the Conv2D layers (nested models' too, as `outer/inner`), in graph order.

    Pooling layers are left out: their maps are the conv maps below them.
    """
    return [name for name, layer in layer_lookup.graph_layers(model) if isinstance(layer, keras.layers.Conv2D)]


def spatial_layer(model: keras.Model, layer_name: str) -> keras.layers.Layer:
    """Returns the layer named `layer_name` (`outer/inner` in nested models), checking it yields NHWC maps.

    Raises:
        ModelError: unknown layer (the message lists the usable ones), or a layer without a spatial 4-D output.
    """
    resolved = layer_lookup.resolve_layer(model, layer_name)
    shape = tuple(resolved.feature_model.output.shape)
    if len(shape) != 4:
        raise ModelError(f"layer {layer_name!r} has output shape {shape}, not spatial [B, H, W, C] feature maps")
    return resolved.layer


def check_image_model(model: keras.Model) -> tuple[int, int, int]:
    """Returns (height, width, channels) of a model's NHWC image input.

    Raises:
        ModelError: the model has several inputs or no fixed-size 1- or 3-channel image input.
    """
    if len(model.inputs) != 1:
        raise ModelError(f"model {model.name!r} has {len(model.inputs)} inputs; one image input is needed")
    shape = tuple(model.inputs[0].shape)
    if len(shape) == 4 and shape[3] in (1, 3) and None in shape[1:3]:
        raise ModelError(
            f"model {model.name!r} input shape {shape} has a variable image size; give one with --image_size=H,W"
            " (API: oipgraph.models.loading.load_model(path, image_size=(H, W)) or layer_lookup.with_image_size)"
        )
    if len(shape) != 4 or any(dim is None for dim in shape[1:]) or shape[3] not in (1, 3):
        raise ModelError(
            f"model {model.name!r} input shape {shape} is not a fixed-size NHWC image with 1 or 3 channels"
        )
    return int(shape[1]), int(shape[2]), int(shape[3])


def standardize(images: tf.Tensor) -> tf.Tensor:
    """Per-image standardization, the preprocessing the shipped CNN expects."""
    return tf.image.per_image_standardization(tf.cast(images, tf.float32))
