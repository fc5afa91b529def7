"""A small Keras MobileNetV1 built the way Keras users write it: a subclassed ``keras.Model`` of
DepthwiseConv2D + BatchNormalization + ReLU blocks (each followed by a pointwise Conv2D +
BatchNormalization + ReLU), alpha 0.25, trained a few steps on edgenet's built-in shapes so that its
outputs carry a signal (tests/test_keras_source.py)."""
from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="edgenet_tests")
class DepthwiseSeparable(keras.layers.Layer):
    """Depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU."""

    def __init__(self, filters: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.strides = filters, strides
        self.depthwise = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False)
        self.bn1 = keras.layers.BatchNormalization()
        self.pointwise = keras.layers.Conv2D(filters, 1, use_bias=False)
        self.bn2 = keras.layers.BatchNormalization()
        self.relu = keras.layers.ReLU()

    def call(self, x, training=False):
        x = self.relu(self.bn1(self.depthwise(x), training=training))
        return self.relu(self.bn2(self.pointwise(x), training=training))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


@keras.saving.register_keras_serializable(package="edgenet_tests")
class MobileNetV1(keras.Model):
    """MobileNetV1 at width ``alpha`` with the first ``blocks`` depthwise-separable blocks."""

    PLAN = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2))

    def __init__(self, alpha: float = 0.25, num_classes: int = 4, blocks: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.num_classes, self.n_blocks = alpha, num_classes, blocks

        def width(n):
            return max(8, int(n * alpha))

        self.stem = keras.layers.Conv2D(width(32), 3, strides=2, padding="same", use_bias=False)
        self.bn = keras.layers.BatchNormalization()
        self.relu = keras.layers.ReLU()
        self.blocks = [DepthwiseSeparable(width(f), s) for f, s in self.PLAN[:blocks]]
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.classifier = keras.layers.Dense(num_classes)

    def call(self, x, training=False):
        x = self.relu(self.bn(self.stem(x), training=training))
        for block in self.blocks:
            x = block(x, training=training)
        return self.classifier(self.pool(x))

    def get_config(self):
        return {"alpha": self.alpha, "num_classes": self.num_classes, "blocks": self.n_blocks}


def calibrated_mobilenet(size: int = 32, seed: int = 0):
    """(model, images): the MobileNetV1 above with seeded weights and its BatchNormalization
    statistics set from 64 built-in shapes images (NHWC, normalized as edgenet's default
    (x - 0.5) / 0.5), so that its activations and logits vary with the input as a trained network's
    do (a few seconds of fitting would not move BN's running statistics far from their start)."""
    import numpy as np

    from edgenet.data.datasets import load_dataset
    from edgenet.data.preprocess import Preprocess

    keras.utils.set_random_seed(seed)
    data = load_dataset("shapes", Preprocess.default(size, 3), split="calib", limit=64, seed=seed)
    model = MobileNetV1(num_classes=len(data.class_names))
    x = data.x.astype(np.float32)
    model(x[:1])
    norms = [layer for layer in _layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0           # one training-mode pass sets the running statistics to the batch's
    model(x, training=True)
    for layer in norms:
        layer.momentum = 0.99
    return model, x


def _layers(layer):
    for sub in getattr(layer, "_layers", []) or []:
        yield sub
        yield from _layers(sub)
