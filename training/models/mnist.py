"""MNIST digits: 10-way classification of 28x28 grey images with a deep CNN."""

from __future__ import annotations

from dataclasses import dataclass

import keras

from training.models.layers import build_variant

NAME = "mnist"
TASK = "multiclass"
INPUT = "image"

_CONV_BLOCKS = 6
_CONVS_PER_POOL = 2


@dataclass(frozen=True)
class Config:
    image_shape: tuple[int, int, int] = (28, 28, 1)  # (height, width, channels)
    num_classes: int = 10
    filters: int = 50  # every 3x3 convolution
    bottleneck_filters: int = 25  # the 1x1 convolutions of `nin`
    dense_units: int = 50
    dropout: float = 0.5


def _conv_bn_relu(x: keras.KerasTensor, filters: int, kernel_size: int) -> keras.KerasTensor:
    x = keras.layers.Conv2D(filters, kernel_size, padding="same", kernel_initializer="he_normal")(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x)


def _build(config: Config, network_in_network: bool, name: str) -> keras.Model:
    pixels = keras.Input(config.image_shape, dtype="float32", name="pixels")
    x = pixels
    for block in range(1, _CONV_BLOCKS + 1):
        if network_in_network and block > 1:
            # Network in network: a 1x1 convolution (a per-pixel MLP) after each 3x3 one
            # halves the channels the next conv reads. Batch norm sits after the 1x1 conv
            # only: that is the layout whose count matches the seed's 87,135.
            x = keras.layers.Conv2D(
                config.filters, 3, padding="same", kernel_initializer="he_normal"
            )(x)
            x = keras.layers.ReLU()(x)
            x = _conv_bn_relu(x, config.bottleneck_filters, 1)
        else:
            x = _conv_bn_relu(x, config.filters, 3)
        if block % _CONVS_PER_POOL == 0:
            x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(config.dense_units, activation="relu")(x)
    x = keras.layers.Dropout(config.dropout)(x)
    probabilities = keras.layers.Dense(
        config.num_classes, activation="softmax", name="probabilities"
    )(x)
    return keras.Model(pixels, probabilities, name=name)


def build_deep_cnn(config: Config) -> keras.Model:
    return _build(config, network_in_network=False, name="mnist_deep_cnn")


def build_nin(config: Config) -> keras.Model:
    return _build(config, network_in_network=True, name="mnist_nin")


DEFAULT_VARIANT = "deep_cnn"
VARIANTS = {
    "deep_cnn": build_deep_cnn,
    "nin": build_nin,
}
PUBLISHED_PARAMS: dict[str, int | None] = {
    "deep_cnn": 137_510,
    "nin": 87_135,
}

# The seeds' published test metric on real data: none is on record for these variants.
PUBLISHED_RESULTS: dict[str, float | None] = {
    "deep_cnn": None,
    "nin": None,
}


def build_model(variant: str = DEFAULT_VARIANT, config: Config | None = None) -> keras.Model:
    """Builds the uncompiled MNIST classifier.

    Args:
        variant: one of ``VARIANTS``.
        config: hyper-parameters; ``Config()`` when omitted.

    Returns:
        A model mapping float32 pixels in [0, 1] ``(batch, 28, 28, 1)`` to probabilities
        ``(batch, num_classes)``.

    Raises:
        ValueError: ``variant`` is unknown.
    """
    return build_variant(NAME, VARIANTS, variant, config or Config())
