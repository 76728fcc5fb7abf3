"""CIFAR-10: 10-way classification of 32x32 RGB images with convolution + LSTM hybrids."""

from __future__ import annotations

from dataclasses import dataclass

import keras

from training.models.layers import build_variant

NAME = "cifar"
TASK = "multiclass"
INPUT = "image"


@dataclass(frozen=True)
class Config:
    image_shape: tuple[int, int, int] = (32, 32, 3)  # (height, width, channels)
    num_classes: int = 10
    filters: int = 50
    lstm_units: int = 50
    branch_units: int = 100  # width of each branch's Dense in `cnn_rnn_parallel`


def _pixels(config: Config) -> keras.KerasTensor:
    return keras.Input(config.image_shape, dtype="float32", name="pixels")


def _conv_pool(pixels: keras.KerasTensor, config: Config) -> keras.KerasTensor:
    x = keras.layers.Conv2D(config.filters, 3, padding="same")(pixels)
    x = keras.layers.ReLU()(x)
    return keras.layers.MaxPooling2D(2)(x)


def build_cnn_rnn(config: Config) -> keras.Model:
    pixels = _pixels(config)
    x = _conv_pool(pixels, config)
    # Reads the pooled feature map as a sequence of positions, one step per pixel.
    height, width, _ = config.image_shape
    x = keras.layers.Reshape(((height // 2) * (width // 2), config.filters))(x)
    x = keras.layers.LSTM(config.lstm_units)(x)
    x = keras.layers.Dense(config.num_classes)(x)
    probabilities = keras.layers.Activation("softmax", name="probabilities")(x)
    return keras.Model(pixels, probabilities, name="cifar_cnn_rnn")


def build_cnn_rnn_parallel(config: Config) -> keras.Model:
    pixels = _pixels(config)

    conv = _conv_pool(pixels, config)
    conv = keras.layers.Flatten()(conv)
    conv = keras.layers.Dense(config.branch_units, activation="relu")(conv)

    # The recurrent branch reads the raw image as a sequence of RGB pixels.
    height, width, channels = config.image_shape
    rnn = keras.layers.Reshape((height * width, channels))(pixels)
    rnn = keras.layers.LSTM(config.lstm_units)(rnn)
    rnn = keras.layers.Dense(config.branch_units, activation="relu")(rnn)

    x = keras.layers.Concatenate()([conv, rnn])
    probabilities = keras.layers.Dense(
        config.num_classes, activation="softmax", name="probabilities"
    )(x)
    return keras.Model(pixels, probabilities, name="cifar_cnn_rnn_parallel")


DEFAULT_VARIANT = "cnn_rnn"
VARIANTS = {
    "cnn_rnn": build_cnn_rnn,
    "cnn_rnn_parallel": build_cnn_rnn_parallel,
}
PUBLISHED_PARAMS: dict[str, int | None] = {
    "cnn_rnn": 22_110,
    "cnn_rnn_parallel": 1_299_410,
}

# The seeds' published test metric on real data: none is on record for these variants.
PUBLISHED_RESULTS: dict[str, float | None] = {
    "cnn_rnn": None,
    "cnn_rnn_parallel": None,
}


def build_model(variant: str = DEFAULT_VARIANT, config: Config | None = None) -> keras.Model:
    """Builds the uncompiled CIFAR-10 classifier.

    Args:
        variant: one of ``VARIANTS``.
        config: hyper-parameters; ``Config()`` when omitted.

    Returns:
        A model mapping float32 pixels in [0, 1] ``(batch, 32, 32, 3)`` to probabilities
        ``(batch, num_classes)``.

    Raises:
        ValueError: ``variant`` is unknown.
    """
    return build_variant(NAME, VARIANTS, variant, config or Config())
