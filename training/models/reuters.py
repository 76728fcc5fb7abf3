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
    # The `*_raw` variants use the seed's data setup: num_words=30000, newswires of fewer
    # than 50 ids only, post-padded to the longest (49), test_split=0.3.
    raw_maxlen: int = 49
    raw_vocab_size: int = 30_000
    raw_test_split: float = 0.3
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


def _raw_steps(config: Config) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    token_ids = keras.Input((config.raw_maxlen,), dtype="int32", name="token_ids")
    return token_ids, scaled_raw_ids(token_ids, config.raw_maxlen, config.raw_vocab_size)


def _raw_head(token_ids: keras.KerasTensor, x: keras.KerasTensor, config: Config, name: str):
    x = keras.layers.Dense(config.num_classes)(x)
    probabilities = keras.layers.Activation("softmax", name="probabilities")(x)
    return keras.Model(token_ids, probabilities, name=name)


def build_stacked_lstm_raw(config: Config) -> keras.Model:
    token_ids, x = _raw_steps(config)
    x = keras.layers.LSTM(50, return_sequences=True)(x)
    x = keras.layers.LSTM(50)(x)
    return _raw_head(token_ids, x, config, "reuters_stacked_lstm_raw")


def build_lstm_raw(config: Config) -> keras.Model:
    token_ids, x = _raw_steps(config)
    return _raw_head(token_ids, keras.layers.LSTM(50)(x), config, "reuters_lstm_raw")


def build_stacked_simple_rnn_raw(config: Config) -> keras.Model:
    token_ids, x = _raw_steps(config)
    x = keras.layers.SimpleRNN(50, return_sequences=True)(x)
    x = keras.layers.SimpleRNN(50)(x)
    return _raw_head(token_ids, x, config, "reuters_stacked_simple_rnn_raw")


def is_raw(variant: str) -> bool:
    """Whether ``variant`` reads raw ids with the seed's data setup (``raw_*`` fields)."""
    return variant.endswith("_raw")


def data_setup(variant: str, config: Config) -> dict[str, int | float]:
    """``training.data.load_dataset`` arguments of ``variant`` beyond the defaults.

    The raw variants reproduce the seed's ``reuters.load_data(num_words=30000, maxlen=50,
    test_split=0.3)``: only newswires shorter than 50 ids (``START`` included) are kept, so
    post-padding to the longest gives the seed's ``(49, 1)`` inputs.
    """
    if not is_raw(variant):
        return {}
    return {
        "vocab_size": config.raw_vocab_size,
        "max_length": config.raw_maxlen + 1,
        "test_split": config.raw_test_split,
    }


DEFAULT_VARIANT = "lstm"
VARIANTS = {
    "lstm": build_lstm,
    "lstm_raw": build_lstm_raw,
    "stacked_lstm_raw": build_stacked_lstm_raw,
    "stacked_simple_rnn_raw": build_stacked_simple_rnn_raw,
}
PUBLISHED_PARAMS: dict[str, int | None] = {
    "lstm": 686_958,
    "lstm_raw": 12_746,
    "stacked_lstm_raw": 32_946,
    "stacked_simple_rnn_raw": 9_996,
}
# The seeds' published test accuracy on the real dataset (None: none published).
PUBLISHED_RESULTS: dict[str, float | None] = {
    "lstm": None,
    "lstm_raw": 0.845,
    "stacked_lstm_raw": None,
    "stacked_simple_rnn_raw": 0.746,
}


def build_model(variant: str = DEFAULT_VARIANT, config: Config | None = None) -> keras.Model:
    """Builds the uncompiled Reuters classifier.

    Args:
        variant: one of ``VARIANTS``.
        config: hyper-parameters; ``Config()`` when omitted.

    Returns:
        A model mapping int32 ids ``(batch, L)`` to probabilities ``(batch, num_classes)``;
        ``L`` is ``config.maxlen``, or ``config.raw_maxlen`` for the ``*_raw`` variants.

    Raises:
        ValueError: ``variant`` is unknown.
    """
    return build_variant(NAME, VARIANTS, variant, config or Config())
