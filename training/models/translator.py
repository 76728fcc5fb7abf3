"""English→German translator: an LSTM encoder–decoder, optionally with attention.

Variants:

* ``seq2seq`` (Sutskever et al. 2014, Cho et al. 2014): the encoder LSTM's final state
  initialises the decoder LSTM, which is trained with teacher forcing and ends in a softmax
  over the German vocabulary.
* ``attention`` (Luong et al. 2015, dot-product scores): the same, and at every step the
  decoder output attends over all encoder outputs; ``tanh(W [output; context])`` feeds the
  softmax.

All LSTMs keep cuDNN's constraints (tanh/sigmoid, no recurrent dropout, no unroll, bias)
and read right-padded ids through ``mask_zero`` embeddings. Greedy decoding
(:mod:`training.models.translator_decoding`) runs inside the exported graph
(``make_export_module``); ``translate_python`` is the same loop in eager Python and the
reference the export is tested against.

Typical usage::

    data = load_pairs(synthetic=True, quick=True)
    model = build_model("attention", Config(), data)
    fit(model, data, epochs=30, batch_size=64, seed=0)
    print(evaluate(model, data))  # {"bleu": ..., "loss": ..., "token_accuracy": ...}
    module = make_export_module(model, data)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import sacrebleu
from keras import layers

from training import translation
from training.data import DataError
from training.models.translator_decoding import (
    StepDecoder,
    TranslatorExportModule,
    greedy_decode,
    make_export_module,
    translate_python,
)
from training.translation import TranslationData

# The model module's interface includes the decoding it is exported and scored with.
__all__ = [
    "NAME", "TASK", "INPUT", "DEFAULT_VARIANT", "PUBLISHED_PARAMS", "LEARNING_RATE", "Config",
    "VARIANTS", "build_model", "build_seq2seq", "build_attention", "load_pairs", "fit",
    "evaluate", "StepDecoder", "TranslatorExportModule", "greedy_decode", "make_export_module",
    "translate_python",
]  # fmt: skip

NAME = "translator"
TASK = "seq2seq"
INPUT = "sentences"
DEFAULT_VARIANT = "seq2seq"
# No published figure for these architectures: Keras' own count is the reference.
PUBLISHED_PARAMS: dict[str, int | None] = {"seq2seq": None, "attention": None}

LEARNING_RATE = 1e-3


@dataclass(frozen=True)
class Config:
    embedding_dim: int = 128
    units: int = 256  # encoder and decoder LSTM size (the decoder starts from the encoder state)
    dropout: float = 0.0  # LSTM input dropout; recurrent dropout stays 0 for cuDNN
    max_source_tokens: int = 10  # longer pairs are dropped; longer inputs truncated when serving
    max_target_tokens: int = 10  # also the number of decoding steps (+1 for <eos>)
    source_vocab_size: int = 8000  # caps, specials included; the sizes used when built without data
    target_vocab_size: int = 10000
    max_pairs: int | None = 100_000  # Tatoeba pairs kept (shortest first); None keeps all
    quick_pairs: int = 10_000  # the quick profile's share of Tatoeba
    synthetic_pairs: int = 4000  # distinct synthetic sentences (the grammar has 25,920)
    test_fraction: float = 0.1


# ---------------------------------------------------------------- data


def load_pairs(
    *,
    synthetic: bool = False,
    data_path: str | Path | None = None,
    quick: bool = False,
    seed: int = 0,
    config: Config = Config(),
) -> TranslationData:
    """Loads English→German pairs, splits them and builds the vocabularies.

    Args:
        synthetic: generate learnable pairs (word mapping + verb-final reordering) instead.
        data_path: a local ``deu.txt`` or ``deu-eng.zip``; ``None`` downloads the zip.
        quick: keep only ``config.quick_pairs`` of the real pairs.
        seed: fixes the synthetic sentences and the train/test split.
        config: lengths, vocabulary caps and sizes.

    Returns:
        Train/test pairs, vocabularies, where the pairs came from, and the synthetic flag.

    Raises:
        training.data.DataError: ``data_path`` is missing or malformed.
        training.data.DatasetUnavailable: the download failed.
    """
    if synthetic:
        pairs = translation.synthetic_pairs(config.synthetic_pairs, seed)
        source = "synthetic"
    else:
        path = Path(data_path) if data_path is not None else translation.download_pairs_file()
        limit = config.quick_pairs if quick else config.max_pairs
        pairs = translation.select_pairs(
            translation.read_pairs_file(path),
            max_source_tokens=config.max_source_tokens,
            max_target_tokens=config.max_target_tokens,
            limit=limit,
        )
        if not pairs:
            raise DataError(
                f"{path}: no pair has 1..{config.max_source_tokens} English and "
                f"1..{config.max_target_tokens} German words"
            )
        source = str(data_path) if data_path is not None else translation.DATA_URL
    return translation.make_translation_data(
        pairs,
        source=source,
        synthetic=synthetic,
        seed=seed,
        test_fraction=config.test_fraction,
        max_source_tokens=config.max_source_tokens,
        max_target_tokens=config.max_target_tokens,
        source_vocab_size=config.source_vocab_size,
        target_vocab_size=config.target_vocab_size,
    )


# ---------------------------------------------------------------- models


def _build(config: Config, data: TranslationData | None, *, attention: bool) -> keras.Model:
    source_vocab = len(data.source_vocab) if data else config.source_vocab_size
    target_vocab = len(data.target_vocab) if data else config.target_vocab_size
    # Time dimensions stay dynamic: the same weights serve training and 1-step decoding.
    source_ids = keras.Input((None,), dtype="int32", name="source_ids")
    decoder_ids = keras.Input((None,), dtype="int32", name="decoder_input_ids")

    source = layers.Embedding(
        source_vocab, config.embedding_dim, mask_zero=True, name="source_embedding"
    )(source_ids)
    encoder_outputs, state_h, state_c = layers.LSTM(
        config.units,
        return_sequences=attention,
        return_state=True,
        dropout=config.dropout,
        name="encoder_lstm",
    )(source)

    target = layers.Embedding(
        target_vocab, config.embedding_dim, mask_zero=True, name="target_embedding"
    )(decoder_ids)
    outputs, _, _ = layers.LSTM(
        config.units,
        return_sequences=True,
        return_state=True,
        dropout=config.dropout,
        name="decoder_lstm",
    )(target, initial_state=[state_h, state_c])

    if attention:
        context = layers.Attention(name="attention")([outputs, encoder_outputs])
        outputs = layers.Dense(config.units, activation="tanh", name="attention_combine")(
            layers.Concatenate(name="output_and_context")([outputs, context])
        )
    probabilities = layers.Dense(target_vocab, activation="softmax", name="next_word")(outputs)
    variant = "attention" if attention else "seq2seq"
    return keras.Model([source_ids, decoder_ids], probabilities, name=f"translator_{variant}")


def build_seq2seq(config: Config = Config(), data: TranslationData | None = None) -> keras.Model:
    """Encoder–decoder LSTM; see the module docstring."""
    return _build(config, data, attention=False)


def build_attention(config: Config = Config(), data: TranslationData | None = None) -> keras.Model:
    """Encoder–decoder LSTM with Luong (dot-product) attention; see the module docstring."""
    return _build(config, data, attention=True)


VARIANTS = {"seq2seq": build_seq2seq, "attention": build_attention}


def build_model(
    variant: str = DEFAULT_VARIANT,
    config: Config = Config(),
    data: TranslationData | None = None,
) -> keras.Model:
    """The (uncompiled) teacher-forcing model: ``[source_ids, decoder_input_ids] -> probs``.

    Args:
        variant: ``"seq2seq"`` or ``"attention"``.
        config: sizes.
        data: gives the vocabulary sizes; without it the caps in ``config`` are used
            (for parameter counts).

    Raises:
        KeyError: unknown variant.
    """
    return VARIANTS[variant](config, data)


# ---------------------------------------------------------------- training


def _compile(model: keras.Model, learning_rate: float = LEARNING_RATE) -> None:
    # The padding mask travels from the decoder embedding to the softmax, so Keras
    # leaves padded positions out of both the loss and the accuracy.
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="token_accuracy")],
    )


def fit(
    model: keras.Model,
    data: TranslationData,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    learning_rate: float = LEARNING_RATE,
    verbose: int | str = "auto",
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> keras.callbacks.History:
    """Compiles and trains with teacher forcing, holding out 10% of the training pairs.

    Args:
        model: from :func:`build_model` with the same ``data``.
        data: from :func:`load_pairs`.
        epochs: passes over the training pairs.
        batch_size: pairs per step.
        seed: seeds the shuffling (seed Keras before :func:`build_model` for the weights).
        learning_rate: Adam's.
        verbose: Keras' ``fit`` verbosity (progress bars by default).
        callbacks: Keras callbacks, e.g. early stopping on ``val_loss``.

    Returns:
        The Keras history (``loss``, ``token_accuracy`` and their ``val_`` twins).
    """
    keras.utils.set_random_seed(seed)
    _compile(model, learning_rate)
    inputs, labels = translation.teacher_forcing_arrays(data.train_pairs, data)
    # Too few pairs for a validation split (e.g. a toy --data-path file): train on all.
    validation_split = 0.1 if len(labels) >= 20 else 0.0
    return model.fit(
        inputs,
        labels,
        epochs=epochs,
        batch_size=batch_size,
        validation_split=validation_split,
        shuffle=True,
        verbose=verbose,
        callbacks=callbacks,
    )


def evaluate(model: keras.Model, data: TranslationData) -> dict[str, float]:
    """Scores the model on the test pairs.

    Returns:
        ``bleu``: sacreBLEU corpus BLEU (0-100) of greedy translations against the
        tokenized references (lowercase words; the model emits no punctuation);
        ``loss`` and ``token_accuracy``: teacher-forced, padding excluded.
    """
    sources = [english for english, _ in data.test_pairs]
    hypotheses = translate_python(model, data, sources)
    references = [translation.reference_text(german) for _, german in data.test_pairs]
    # Already tokenized on both sides, so no second tokenizer.
    bleu = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none").score
    if not model.compiled:
        _compile(model)
    inputs, labels = translation.teacher_forcing_arrays(data.test_pairs, data)
    scores = model.evaluate(inputs, labels, batch_size=256, verbose=0, return_dict=True)
    return {
        "bleu": float(bleu),
        "loss": float(scores["loss"]),
        "token_accuracy": float(scores["token_accuracy"]),
    }
