"""`keras.applications`' three `preprocess_input` modes as a layer in front of a model (`--preprocess`).

For images x, float32 [B, H, W, 3], RGB in [0, 255] (`keras.applications.imagenet_utils.preprocess_input`):

- `caffe` (VGG16/19, ResNet50): BGR channel order, minus the ImageNet mean [103.939, 116.779, 123.68] (BGR);
- `tf` (MobileNet, Inception, Xception): x / 127.5 - 1;
- `torch` (DenseNet): (x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225] (RGB).

`with_preprocessing(model, mode)` returns a model whose input is such an image and whose first layer
is this preprocessing; the original model is a nested model inside it, so its layers keep their names
(`--layer=block4_conv3` finds the unique name, `vgg16/block4_conv3` names it in full).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from oipgraph.core.errors import OIPGraphError

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
PREPROCESSING = ("caffe", "tf", "torch")
LAYER_NAME = "preprocess_input"


@keras.saving.register_keras_serializable(package="oipgraph")
class ImageNetPreprocessing(keras.layers.Layer):
    """One of `PREPROCESSING` applied to RGB images in [0, 255] (see the module docstring)."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING:
            raise OIPGraphError(f"unknown preprocessing {mode!r}; choose one of {', '.join(PREPROCESSING)}")
        self.mode = mode

    def call(self, images):
        images = tf.cast(images, tf.float32)
        if self.mode == "caffe":
            return tf.reverse(images, axis=[-1]) - tf.constant(CAFFE_MEAN_BGR, tf.float32)
        if self.mode == "tf":
            return images / 127.5 - 1.0
        return (images / 255.0 - tf.constant(TORCH_MEAN, tf.float32)) / tf.constant(TORCH_STD, tf.float32)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def with_preprocessing(model: keras.Model, mode: str) -> keras.Model:
    """`model` behind `ImageNetPreprocessing(mode)`: a model that takes RGB images in [0, 255].

    Raises:
        OIPGraphError: an unknown mode, or a model whose image input does not have 3 channels.
    """
    if mode not in PREPROCESSING:
        raise OIPGraphError(f"unknown preprocessing {mode!r}; choose one of {', '.join(PREPROCESSING)}")
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or shape[-1] != 3:
        raise OIPGraphError(
            f"--preprocess={mode} needs a model with an RGB image input [H, W, 3], got input shape {list(shape)}"
        )
    inputs = keras.Input(shape, name="rgb_0_255")
    preprocessed = ImageNetPreprocessing(mode, name=LAYER_NAME)(inputs)
    return keras.Model(inputs, model(preprocessed), name=f"{model.name}_{mode}")


def reference(images: np.ndarray, mode: str) -> np.ndarray:
    """Keras' own `preprocess_input` of RGB `images` in [0, 255] (for tests and comparisons)."""
    return keras.applications.imagenet_utils.preprocess_input(np.array(images, np.float32), mode=mode)
