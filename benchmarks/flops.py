"""Forward FLOPs of a Keras model, counted from its layers' shapes (for the timing model of the benchmarks)."""

from __future__ import annotations

import keras
import numpy as np


def forward_flops(feature_model: keras.Model) -> int:
    """FLOPs (2 per multiply-add) of one image through the convolutions and Dense layers of `feature_model`.

    Nested models are inlined. The sum of 2 * H_out * W_out * K_h * K_w * C_in / groups * C_out per
    convolution (the kernel's shape) and 2 * inputs * units per Dense layer; other layers are left out
    (they are memory-bound).
    """
    total = 0
    for layer in _leaf_layers(feature_model):
        if isinstance(layer, keras.layers.Conv2D) and layer.built:
            kernel_height, kernel_width, in_channels, out_channels = layer.kernel.shape
            for node in layer._inbound_nodes:
                _, height, width, _ = node.outputs[0].shape
                if height is not None and width is not None:
                    total += 2 * height * width * kernel_height * kernel_width * in_channels * out_channels
                    break
        elif isinstance(layer, keras.layers.Dense) and layer.built:
            total += 2 * int(np.prod(layer.kernel.shape))
    return int(total)


def _leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    leaves = []
    for layer in model.layers:
        leaves.extend(_leaf_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return leaves
