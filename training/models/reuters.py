"""Reuters newswire topics: 46-way classification of token-id sequences."""

from __future__ import annotations

from dataclasses import dataclass

import keras

from training.models.layers import build_variant, scaled_raw_ids

NAME = "reuters"
TASK = "multiclass"
INPUT = "text"


@dataclass(frozen=True)
class Config:
    vocab_size: int = 10_000  # ids >= vocab_size are OOV (docs/contracts.md)
    maxlen: int = 200  # input length of the embedding variants
    raw_maxlen: int = 49  # input length of `stacked_lstm_raw` (the seed's layout)
    num_classes: int = 46
    embedding_dim: int = 64


def build_lstm(config: Config) -> keras.Model:
    token_ids = keras.Input((config.maxlen,), dtype="int32", name="token_ids")
    # mask_zero: sequences are right-padded with 0, which keeps the LSTMs on cuDNN.
    x = keras.layers.Embedding(config.vocab_size, config.embedding_dim, mask_zero=True)(token_ids)
    x = keras.layers.LSTM(64, return_sequences=True)(x)
    x = keras.layers.LSTM(32)(x)
    probabilities = keras.layers.Dense(
        config.num_classes, activation="softmax", name="probabilities"
    )(x)
    return keras.Model(token_ids, probabilities, name="reuters_lstm")


def build_stacked_lstm_raw(config: Config) -> keras.Model:
    token_ids = keras.Input((config.raw_maxlen,), dtype="int32", name="token_ids")
    x = scaled_raw_ids(token_ids, config.raw_maxlen, config.vocab_size)
    x = keras.layers.LSTM(50, return_sequences=True)(x)
    x = keras.layers.LSTM(50)(x)
    x = keras.layers.Dense(config.num_classes)(x)
    probabilities = keras.layers.Activation("softmax", name="probabilities")(x)
    return keras.Model(token_ids, probabilities, name="reuters_stacked_lstm_raw")


DEFAULT_VARIANT = "lstm"
VARIANTS = {
    "lstm": build_lstm,
    "stacked_lstm_raw": build_stacked_lstm_raw,
}
PUBLISHED_PARAMS: dict[str, int | None] = {
    "lstm": 686_958,
    "stacked_lstm_raw": 32_946,
}


def build_model(variant: str = DEFAULT_VARIANT, config: Config | None = None) -> keras.Model:
    """Builds the uncompiled Reuters classifier.

    Args:
        variant: one of ``VARIANTS``.
        config: hyper-parameters; ``Config()`` when omitted.

    Returns:
        A model mapping int32 ids ``(batch, L)`` to probabilities ``(batch, num_classes)``;
        ``L`` is ``config.maxlen``, or ``config.raw_maxlen`` for ``stacked_lstm_raw``.

    Raises:
        ValueError: ``variant`` is unknown.
    """
    return build_variant(NAME, VARIANTS, variant, config or Config())
