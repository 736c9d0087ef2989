"""The model side: loading a Keras model, finding its layers, and the fast formulations the ascent runs.

Modules:
    loading: `load_model` (a `.keras` file or the shipped MNIST CNN), `check_image_model`, `build_cnn`.
    layer_lookup: layers by name (nested bases too), feature models, image sizes of variable-size inputs.
    receptive: the image window a target's outputs read (VALID convolutions, poolings, element-wise layers).
    fastconv, fastmodel: exact faster formulations of convolutions (per-pair maps, col2im input gradients).
    precision: `--precision` (float32, bfloat16, auto) and the bfloat16 copy of a model that bfloat16 runs.
    mnist: the MNIST data in Keras' `.npz` format (`OIPGRAPH_MNIST`).
    train: `oipgraph-train`, the shipped CNN's trainer.

Imports only `oipgraph.core`.
"""

from oipgraph.models.loading import ModelError, check_image_model, load_model

__all__ = ["ModelError", "check_image_model", "load_model"]
