"""Greedy decoding of a trained translator (:mod:`training.models.translator`): eagerly in
Python (:func:`translate_python`, the reference), and inside the exported graph
(:func:`make_export_module`), both from the training model's own layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from training import translation
from training.translation import EOS, PAD, SOS, UNK, TranslationData

# Python's Unicode ``\w`` is letters, digits and "_"; RE2's ``\w`` is ASCII-only, hence
# the explicit classes (keeps "straße" and "äpfel" whole, exactly like the Python side).
_NON_WORD = r"[^\p{L}\p{N}_]+"


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
