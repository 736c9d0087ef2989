"""Model files as users have them: Keras 3 `.keras`, Keras 2 HDF5 (`.h5`/`.hdf5`), and the files that are no model."""

import os
import shutil

import keras
import numpy as np
import tensorflow as tf
from helpers import seeded_conv

from oipgraph.models.loading import ModelError, load_model


def small_model() -> keras.Model:
    inputs = keras.Input((12, 12, 1), name="image")
    x = seeded_conv(4, 3, "conv_a", seed=1, activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flat")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="small")


class ModelFormatsTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = small_model()
        cls.images = np.random.default_rng(0).normal(size=(2, 12, 12, 1)).astype(np.float32)

    def saved(self, name: str) -> str:
        path = os.path.join(self.get_temp_dir(), name)
        self.model.save(path)
        return path

    def test_keras_and_hdf5_files_load_the_same_model(self):
        expected = self.model.predict(self.images, verbose=0)
        for name in ("m.keras", "m.h5", "m.hdf5"):
            with self.subTest(name=name):
                loaded = load_model(self.saved(name))
                self.assertEqual([layer.name for layer in loaded.layers], [layer.name for layer in self.model.layers])
                self.assertAllClose(loaded.predict(self.images, verbose=0), expected)
                self.assertFalse(loaded.compiled)

    def test_weights_only_file_says_how_to_convert(self):
        path = os.path.join(self.get_temp_dir(), "m.weights.h5")
        self.model.save_weights(path)
        with self.assertRaisesRegex(
            ModelError, r"holds only weights, no model: .*model\.load_weights\('m.weights.h5'\)"
        ):
            load_model(path)

    def test_savedmodel_folder_says_how_to_convert(self):
        path = os.path.join(self.get_temp_dir(), "exported")
        tf.saved_model.save(tf.Module(), path)
        with self.assertRaisesRegex(ModelError, r"is a TensorFlow SavedModel folder.*save\('model.h5'\)"):
            load_model(path)
        with self.assertRaisesRegex(ModelError, "is a folder, not a model file"):
            load_model(self.get_temp_dir())

    def test_hdf5_model_under_another_name_and_lambda_layers(self):
        renamed = os.path.join(self.get_temp_dir(), "model.bin")
        shutil.copy(self.saved("m2.h5"), renamed)
        with self.assertRaisesRegex(ModelError, "is a Keras HDF5 model: name it .h5 or .hdf5"):
            load_model(renamed)
        inputs = keras.Input((12, 12, 1))
        lambda_model = keras.Model(inputs, keras.layers.Lambda(lambda x: 2.0 * x)(inputs))
        path = os.path.join(self.get_temp_dir(), "lambda.h5")
        lambda_model.save(path)
        # safe_mode stays on: a Lambda layer's pickled code is refused with Keras' own reason.
        with self.assertRaisesRegex(ModelError, r"cannot load Keras model .*lambda.h5: .*safe_mode"):
            load_model(path)


if __name__ == "__main__":
    tf.test.main()
