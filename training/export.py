"""Export trained Keras models as TF-Serving-style SavedModel repositories.

Layout: ``<out>/<model>/<version>/`` (integer versions, increasing), a SavedModel with a
tensor signature (``serving_default``) and a user-level signature that takes what a person
has (raw text, uint8 images, a float window, sentences), plus ``metadata.json``.
See ``docs/contracts.md`` for the exact signature names.

Typical usage::

    module = build_export_module("imdb", model, dataset)
    path = save_export(module, out_dir / "imdb")   # -> exports/imdb/3
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training import data as data_lib
from training.models.cosine import MAX_HORIZON

# Whether the tensor signature is compiled with XLA. XLA compiles once per input shape, so
# the service pads batches to a few fixed sizes and warms each of them up at start-up.
JIT_COMPILE = os.environ.get("EXPORT_JIT_COMPILE", "1") != "0"


def _classifier_outputs(probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
    if probabilities.shape[-1] == 1:  # a sigmoid: expose both classes like every classifier
        probabilities = tf.concat([1.0 - probabilities, probabilities], axis=-1)
    return {
        "probabilities": tf.identity(probabilities, name="probabilities"),
        "label": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
    }


class TextClassifierExport(tf.Module):
    """Token ids -> probabilities, and raw text -> probabilities with the vocabulary frozen in.

    Text is encoded exactly as :func:`training.data.encode_texts` does (see docs/contracts.md).
    """

    def __init__(self, model: keras.Model, word_index: dict[str, int], vocab_size: int):
        super().__init__()
        self.model = model
        self.maxlen = int(model.inputs[0].shape[1])
        words = [w for w, rank in word_index.items() if rank + data_lib.INDEX_FROM < vocab_size]
        ids = [word_index[w] + data_lib.INDEX_FROM for w in words]
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(words, tf.string), tf.constant(ids, tf.int64)
            ),
            default_value=data_lib.OOV,
        )
        self.serving_default = tf.function(
            self._predict_ids,
            input_signature=[tf.TensorSpec([None, self.maxlen], tf.int32, name="token_ids")],
            jit_compile=JIT_COMPILE,
        )
        self.predict_text = tf.function(
            self._predict_text,
            input_signature=[tf.TensorSpec([None], tf.string, name="text")],
        )

    def _predict_ids(self, token_ids):
        return _classifier_outputs(self.model(token_ids, training=False))

    def encode(self, text: tf.Tensor) -> tf.Tensor:
        """Raw strings -> right-padded int32 ids, shape ``[batch, maxlen]``."""
        text = tf.strings.lower(text, encoding="utf-8")
        text = tf.strings.regex_replace(text, "<br />", " ")
        text = tf.strings.regex_replace(text, "[^a-z0-9']", " ")
        tokens = tf.strings.split(text)
        ids = tf.ragged.map_flat_values(self.table.lookup, tokens)
        start = tf.fill([tf.shape(text)[0], 1], tf.constant(data_lib.START, tf.int64))
        ids = tf.concat([tf.RaggedTensor.from_tensor(start), ids], axis=1)
        ids = ids[:, : self.maxlen]
        return tf.cast(
            ids.to_tensor(default_value=data_lib.PAD, shape=[None, self.maxlen]), tf.int32
        )

    def _predict_text(self, text):
        return self.serving_default(self.encode(text))


class ImageClassifierExport(tf.Module):
    """Float pixels in [0, 1] -> probabilities, and uint8 images -> probabilities."""

    def __init__(self, model: keras.Model):
        super().__init__()
        self.model = model
        shape = [None, *model.inputs[0].shape[1:]]
        self.serving_default = tf.function(
            self._predict_pixels,
            input_signature=[tf.TensorSpec(shape, tf.float32, name="pixels")],
            jit_compile=JIT_COMPILE,
        )
        self.predict_images = tf.function(
            self._predict_images,
            input_signature=[tf.TensorSpec(shape, tf.uint8, name="images")],
        )

    def _predict_pixels(self, pixels):
        return _classifier_outputs(self.model(pixels, training=False))

    def _predict_images(self, images):
        return self.serving_default(tf.cast(images, tf.float32) / 255.0)


class ForecasterExport(tf.Module):
    """A window of past values -> the next value, or the next ``max_horizon`` values.

    ``forecast_steps`` runs the recursive forecast inside the graph, so a whole horizon
    costs one call instead of one per step: step k feeds the previous predictions back
    into the window (``window = concat(window[:, 1:], [prediction])``), exactly as the
    service does with the one-step signature. A client wanting fewer steps takes a prefix.
    """

    def __init__(self, model: keras.Model, max_horizon: int = MAX_HORIZON):
        super().__init__()
        self.model = model
        self.max_horizon = max_horizon
        window = int(model.inputs[0].shape[1])
        spec = tf.TensorSpec([None, window], tf.float32, name="window")
        self.serving_default = tf.function(
            self._forecast, input_signature=[spec], jit_compile=JIT_COMPILE
        )
        self.forecast = tf.function(self._forecast, input_signature=[spec])
        # XLA compiles the loop with the model inside it (a while op over fused steps).
        self.forecast_steps = tf.function(
            self._forecast_steps, input_signature=[spec], jit_compile=JIT_COMPILE
        )

    def _forecast(self, window):
        return {"forecast": tf.reshape(self.model(window, training=False), [-1])}

    def _forecast_steps(self, window):
        def step(k, window, forecasts):
            prediction = tf.reshape(self.model(window, training=False), [-1])
            window = tf.concat([window[:, 1:], prediction[:, None]], axis=1)
            return k + 1, window, forecasts.write(k, prediction)

        forecasts = tf.TensorArray(tf.float32, size=self.max_horizon, element_shape=[None])
        _, _, forecasts = tf.while_loop(
            lambda k, *_: k < self.max_horizon,
            step,
            (tf.constant(0), window, forecasts),
            maximum_iterations=self.max_horizon,
        )
        steps = tf.transpose(forecasts.stack())  # [max_horizon, batch] -> [batch, max_horizon]
        return {"forecast": tf.ensure_shape(steps, [None, self.max_horizon])}


SIGNATURES: dict[str, tuple[str, ...]] = {
    "text": ("serving_default", "predict_text"),
    "image": ("serving_default", "predict_images"),
    "window": ("serving_default", "forecast", "forecast_steps"),
    "sentences": ("serving_default", "translate"),
}


def build_export_module(
    input_kind: str, model: keras.Model, dataset: Any, vocab_size: int = 0
) -> tf.Module:
    """Wraps a trained model in a ``tf.Module`` carrying the serving signatures.

    Args:
        input_kind: the model module's ``INPUT`` (``text``, ``image``, ``window``).
        model: the trained Keras model.
        dataset: the :class:`training.data.Dataset` it was trained on (for the vocabulary).
        vocab_size: the text models' vocabulary cut.

    Returns:
        A module whose attributes named in :data:`SIGNATURES` are ``tf.function`` s.
    """
    if input_kind == "text":
        return TextClassifierExport(model, dataset.word_index, vocab_size)
    if input_kind == "image":
        return ImageClassifierExport(model)
    if input_kind == "window":
        return ForecasterExport(model)
    raise ValueError(f"no generic export for input kind {input_kind!r}")


def next_version(model_dir: Path) -> int:
    """The next integer version under ``model_dir`` (1 when there is none)."""
    # str.isdigit() alone takes "²", which int() refuses.
    numbered = [p.name for p in model_dir.glob("*") if p.is_dir() and p.name.isascii()]
    versions = [int(name) for name in numbered if name.isdigit()]
    return max(versions, default=0) + 1


def signature_specs(module: tf.Module, names: tuple[str, ...]) -> dict[str, dict]:
    """Input/output dtype and shape of every signature, for ``metadata.json``."""
    specs = {}
    for name in names:
        fn = getattr(module, name).get_concrete_function()
        inputs = {
            spec.name: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
            for spec in fn.structured_input_signature[0]
        }
        outputs = {
            key: {"dtype": t.dtype.name, "shape": t.shape.as_list()}
            for key, t in fn.structured_outputs.items()
        }
        specs[name] = {"inputs": inputs, "outputs": outputs}
    return specs


def save_export(
    module: tf.Module, model_dir: Path, names: tuple[str, ...], minimum: int = 1
) -> Path:
    """Saves ``module`` as the next version under ``model_dir`` (at least ``minimum``) and
    returns its path."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / str(max(next_version(model_dir), minimum))
    signatures = {name: getattr(module, name).get_concrete_function() for name in names}
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


def write_metadata(path: Path, metadata: dict) -> None:
    """Writes ``metadata.json`` next to the SavedModel (numpy scalars become floats)."""

    def default(value):
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(f"not JSON serializable: {type(value).__name__}")

    (path / "metadata.json").write_text(json.dumps(metadata, indent=2, default=default) + "\n")
