"""English→German translator: an LSTM encoder–decoder, optionally with attention.

Variants:

* ``seq2seq`` (Sutskever et al. 2014, Cho et al. 2014): the encoder LSTM's final state
  initialises the decoder LSTM, which is trained with teacher forcing and ends in a softmax
  over the German vocabulary.
* ``attention`` (Luong et al. 2015, dot-product scores): the same, and at every step the
  decoder output attends over all encoder outputs; ``tanh(W [output; context])`` feeds the
  softmax.

All LSTMs keep cuDNN's constraints (tanh/sigmoid, no recurrent dropout, no unroll, bias)
and read right-padded ids through ``mask_zero`` embeddings. Greedy decoding runs inside
the exported graph (``make_export_module``); ``translate_python`` is the same loop in eager
Python and the reference the export is tested against.

Typical usage::

    data = load_pairs(synthetic=True, quick=True)
    model = build_model("attention", Config(), data)
    fit(model, data, epochs=30, batch_size=64, seed=0)
    print(evaluate(model, data))  # {"bleu": ..., "loss": ..., "token_accuracy": ...}
    module = make_export_module(model, data)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import sacrebleu
import tensorflow as tf
from keras import layers

from training import translation
from training.data import DataError
from training.translation import EOS, PAD, SOS, UNK, TranslationData

NAME = "translator"
TASK = "seq2seq"
INPUT = "sentences"
DEFAULT_VARIANT = "seq2seq"
# No published figure for these architectures: Keras' own count is the reference.
PUBLISHED_PARAMS: dict[str, int | None] = {"seq2seq": None, "attention": None}

LEARNING_RATE = 1e-3
# Python's Unicode ``\w`` is letters, digits and "_"; RE2's ``\w`` is ASCII-only, hence
# the explicit classes (keeps "straße" and "äpfel" whole, exactly like the Python side).
_NON_WORD = r"[^\p{L}\p{N}_]+"


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


# ---------------------------------------------------------------- greedy decoding


class StepDecoder:
    """Encoder pass and one decoder step, built from the training model's own layers."""

    def __init__(self, model: keras.Model):
        self.source_embedding = model.get_layer("source_embedding")
        self.encoder = model.get_layer("encoder_lstm")
        self.target_embedding = model.get_layer("target_embedding")
        self.decoder = model.get_layer("decoder_lstm")
        self.next_word = model.get_layer("next_word")
        names = {layer.name for layer in model.layers}
        self.attention = model.get_layer("attention") if "attention" in names else None
        self.combine = model.get_layer("attention_combine") if self.attention is not None else None
        # Never predicted: <pad> marks "after the end", <sos> only starts the decoder.
        forbidden = np.zeros(self.next_word.units, dtype=bool)
        forbidden[[PAD, SOS]] = True
        self.forbidden = forbidden

    def encode(self, source_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """``(encoder_outputs, source_mask, h, c)`` for int32 ``source_ids [B, S]``."""
        source_mask = tf.not_equal(source_ids, PAD)
        embedded = self.source_embedding(source_ids)
        outputs, h, c = self.encoder(embedded, mask=source_mask)
        return outputs, source_mask, h, c

    def step(self, token, encoder_outputs, source_mask, h, c):
        """Feeds int32 ``token [B]``; returns the greedy next token ``[B]`` and the new state."""
        embedded = self.target_embedding(token[:, None])
        outputs, h, c = self.decoder(embedded, initial_state=[h, c])
        if self.attention is not None:
            context = self.attention([outputs, encoder_outputs], mask=[None, source_mask])
            outputs = self.combine(tf.concat([outputs, context], axis=-1))
        probabilities = self.next_word(outputs)[:, 0, :]
        probabilities = tf.where(self.forbidden[None, :], -1.0, probabilities)
        return tf.argmax(probabilities, axis=-1, output_type=tf.int32), h, c


def greedy_decode(model: keras.Model, source_ids: np.ndarray, steps: int) -> np.ndarray:
    """Eager greedy decoding: int32 ``(B, steps)`` translation ids, ``<eos>`` then 0s.

    Rows that have emitted ``<eos>`` keep being fed ``<eos>`` (never ``<pad>``, which
    would make a zero-length masked step) and their outputs are ignored.
    """
    decoder = StepDecoder(model)
    encoder_outputs, source_mask, h, c = decoder.encode(tf.constant(source_ids, tf.int32))
    batch = len(source_ids)
    token = np.full(batch, SOS, dtype=np.int32)
    finished = np.zeros(batch, dtype=bool)
    out = np.zeros((batch, steps), dtype=np.int32)
    for t in range(steps):
        if finished.all():
            break
        next_token, h, c = decoder.step(tf.constant(token), encoder_outputs, source_mask, h, c)
        next_token = np.where(finished, PAD, next_token.numpy())
        out[:, t] = next_token
        finished |= next_token == EOS
        token = np.where(finished, EOS, next_token).astype(np.int32)
    return out


def translate_python(
    model: keras.Model, data: TranslationData, sentences: Sequence[str], *, batch_size: int = 256
) -> list[str]:
    """Translates with eager greedy decoding (the reference for the exported graph).

    Args:
        model: a trained model from :func:`build_model`.
        data: the data it was trained on (vocabularies, lengths).
        sentences: raw English sentences; unknown words become ``<unk>``.
        batch_size: sentences decoded together.

    Returns:
        One German translation per sentence: lowercase words joined by spaces.
    """
    ids = translation.encode_sources(list(sentences), data.source_vocab, data.source_len)
    translations: list[str] = []
    for start in range(0, len(ids), batch_size):
        decoded = greedy_decode(model, ids[start : start + batch_size], data.translation_len)
        translations.extend(translation.decode_ids(row, data.target_vocab) for row in decoded)
    return translations


# ---------------------------------------------------------------- export


class TranslatorExportModule(tf.Module):
    """The trained model with frozen vocabularies and in-graph greedy decoding.

    Signatures (see ``docs/contracts.md``): ``serving_default(source_ids int32 [None, S])
    -> {"translation_ids": int32 [None, T]}`` and ``translate(sentences string [None]) ->
    {"translation": string [None]}``.
    """

    def __init__(self, model: keras.Model, data: TranslationData):
        super().__init__(name="translator_export")
        self.model = model  # tracked: the SavedModel carries its variables
        self.source_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(data.source_vocab),
                tf.range(len(data.source_vocab), dtype=tf.int64),
            ),
            default_value=UNK,
        )
        self._target_vocab = list(data.target_vocab)
        self._max_source_tokens = data.max_source_tokens
        self._source_len = data.source_len
        self._translation_len = data.translation_len
        self.serving_default = tf.function(
            self._translate_ids,
            input_signature=[tf.TensorSpec([None, data.source_len], tf.int32, name="source_ids")],
        )
        self.translate = tf.function(
            self._translate_sentences,
            input_signature=[tf.TensorSpec([None], tf.string, name="sentences")],
        )

    def encode_sentences(self, sentences: tf.Tensor) -> tf.Tensor:
        """The graph twin of :func:`training.translation.encode_sources`."""
        lowered = tf.strings.lower(sentences, encoding="utf-8")
        words = tf.strings.split(tf.strings.regex_replace(lowered, _NON_WORD, " "))
        ids = tf.cast(self.source_table.lookup(words[:, : self._max_source_tokens]), tf.int32)
        eos = tf.RaggedTensor.from_tensor(tf.fill([tf.shape(sentences)[0], 1], EOS))
        ids = tf.concat([ids, eos], axis=1)
        return ids.to_tensor(default_value=PAD, shape=[None, self._source_len])

    def _decode(self, source_ids: tf.Tensor) -> tf.Tensor:
        decoder = StepDecoder(self.model)
        encoder_outputs, source_mask, h, c = decoder.encode(source_ids)
        batch = tf.shape(source_ids)[0]
        steps = self._translation_len
        positions = tf.range(steps)[None, :]

        def unfinished(t, token, h, c, finished, out):
            return tf.logical_and(t < steps, tf.logical_not(tf.reduce_all(finished)))

        def step(t, token, h, c, finished, out):
            next_token, h, c = decoder.step(token, encoder_outputs, source_mask, h, c)
            next_token = tf.where(finished, PAD, next_token)
            out = tf.where(tf.equal(positions, t), next_token[:, None], out)
            finished = tf.logical_or(finished, tf.equal(next_token, EOS))
            token = tf.where(finished, EOS, next_token)
            return t + 1, token, h, c, finished, out

        loop_vars = (
            tf.constant(0),
            tf.fill([batch], SOS),
            h,
            c,
            tf.zeros([batch], tf.bool),
            tf.zeros([batch, steps], tf.int32),
        )
        *_, out = tf.while_loop(unfinished, step, loop_vars)
        return tf.ensure_shape(out, [None, steps])

    def _translate_ids(self, source_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"translation_ids": self._decode(source_ids)}

    def _translate_sentences(self, sentences: tf.Tensor) -> dict[str, tf.Tensor]:
        ids = self._decode(self.encode_sentences(sentences))
        words = tf.gather(tf.constant(self._target_vocab), ids)
        # After <eos> every id is <pad>, so this keeps exactly the words before <eos>.
        keep = tf.logical_and(tf.not_equal(ids, PAD), tf.not_equal(ids, EOS))
        text = tf.strings.reduce_join(tf.ragged.boolean_mask(words, keep), axis=1, separator=" ")
        return {"translation": tf.ensure_shape(text, [None])}


def make_export_module(model: keras.Model, data: TranslationData) -> tf.Module:
    """Wraps a trained model for ``tf.saved_model.save`` with both signatures.

    Save with ``signatures={"serving_default": m.serving_default.get_concrete_function(),
    "translate": m.translate.get_concrete_function()}``.
    """
    return TranslatorExportModule(model, data)
