"""Cosine forecasting: predict the next value of a sampled cosine from a window of values."""

from __future__ import annotations

from dataclasses import dataclass

import keras

from training.models.layers import build_variant

NAME = "cosine"
TASK = "regression"
INPUT = "window"


# Steps of the in-graph recursive forecast (the export's ``forecast_steps`` signature);
# the service's default SERVICE_MAX_HORIZON is the same 100.
MAX_HORIZON = 100


@dataclass(frozen=True)
class Config:
    window: int = 10  # past values the model sees; the input shape is (batch, window)


def _window_steps(config: Config) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    window = keras.Input((config.window,), dtype="float32", name="window")
    return window, keras.layers.Reshape((config.window, 1), name="as_steps")(window)


def _forecast_head(x: keras.KerasTensor) -> keras.KerasTensor:
    return keras.layers.Dense(1, name="forecast")(x)


def build_simple_rnn(config: Config) -> keras.Model:
    window, x = _window_steps(config)
    x = keras.layers.SimpleRNN(32, activation="tanh")(x)
    return keras.Model(window, _forecast_head(x), name="cosine_simple_rnn")


def build_lstm(config: Config) -> keras.Model:
    window, x = _window_steps(config)
    x = keras.layers.LSTM(64, return_sequences=True)(x)
    x = keras.layers.LSTM(32)(x)
    return keras.Model(window, _forecast_head(x), name="cosine_lstm")


def build_gru(config: Config) -> keras.Model:
    window, x = _window_steps(config)
    x = keras.layers.GRU(30, return_sequences=True)(x)
    x = keras.layers.GRU(30)(x)
    return keras.Model(window, _forecast_head(x), name="cosine_gru")


DEFAULT_VARIANT = "lstm"
VARIANTS = {
    "simple_rnn": build_simple_rnn,
    "lstm": build_lstm,
    "gru": build_gru,
}
PUBLISHED_PARAMS: dict[str, int | None] = {
    "simple_rnn": 1_121,
    "lstm": 29_345,
    "gru": None,
}

# The seeds' published test metric on real data: none is on record for these variants.
PUBLISHED_RESULTS: dict[str, float | None] = {
    "simple_rnn": None,
    "lstm": None,
    "gru": None,
}


def build_model(variant: str = DEFAULT_VARIANT, config: Config | None = None) -> keras.Model:
    """Builds the uncompiled cosine forecaster.

    Args:
        variant: one of ``VARIANTS``.
        config: hyper-parameters; ``Config()`` when omitted.

    Returns:
        A model mapping float32 windows ``(batch, window)`` to the next value ``(batch, 1)``.

    Raises:
        ValueError: ``variant`` is unknown.
    """
    return build_variant(NAME, VARIANTS, variant, config or Config())
