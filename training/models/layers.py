"""Building blocks shared by the model modules.

* ``build_variant``: the common body of every module's ``build_model``.
* ``scaled_raw_ids``: the in-graph preprocessing of the "raw index" text variants.
* ``cudnn_ineligible_reasons`` / ``recurrent_layers``: check that every LSTM/GRU keeps
  the fused cuDNN kernel on GPU (Keras silently falls back to a loop that is ~10x slower).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import keras
import tensorflow as tf

ConfigT = TypeVar("ConfigT")

# Keras' TensorFlow backend accepts exactly these callables for the cuDNN path
# (keras/src/backend/tensorflow/rnn.py, `_do_lstm_arguments_support_cudnn`).
_CUDNN_ACTIVATIONS = (keras.activations.tanh, keras.ops.tanh, tf.tanh)
_CUDNN_RECURRENT_ACTIVATIONS = (keras.activations.sigmoid, keras.ops.sigmoid, tf.sigmoid)


def build_variant(
    model_name: str,
    variants: Mapping[str, Callable[[ConfigT], keras.Model]],
    variant: str,
    config: ConfigT,
) -> keras.Model:
    """Builds ``variants[variant](config)``.

    Args:
        model_name: the model's ``NAME``, used in the error message.
        variants: the model's ``VARIANTS`` table.
        variant: the variant to build.
        config: the model's ``Config``.

    Returns:
        The uncompiled model.

    Raises:
        ValueError: ``variant`` is not in ``variants``.
    """
    try:
        builder = variants[variant]
    except KeyError:
        valid = ", ".join(sorted(variants))
        raise ValueError(
            f"unknown variant {variant!r} for model {model_name!r}; valid variants: {valid}"
        ) from None
    return builder(config)


def scaled_raw_ids(token_ids: Any, length: int, vocab_size: int) -> Any:
    """Turns int token ids ``(batch, length)`` into float features ``(batch, length, 1)``.

    The seed's "raw index" variants feed the word index itself to the RNN; scaling by
    ``1 / vocab_size`` keeps it in [0, 1) so the tanh/sigmoid gates do not saturate.
    Done in the graph so the exported signature still takes int32 ids.

    Args:
        token_ids: symbolic int tensor of shape ``(batch, length)``.
        length: the sequence length.
        vocab_size: ids are in ``[0, vocab_size)``.

    Returns:
        Symbolic float32 tensor of shape ``(batch, length, 1)``.
    """
    x = keras.layers.Reshape((length, 1), name="as_steps")(token_ids)
    # Rescaling casts to its float32 compute dtype before scaling.
    return keras.layers.Rescaling(1.0 / vocab_size, name="scale_ids")(x)


def _is_cudnn_rnn(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, (keras.layers.LSTM, keras.layers.GRU))


def cudnn_ineligible_reasons(layer: keras.layers.Layer) -> list[str]:
    """Explains why ``layer`` would not run on the cuDNN kernel on a GPU.

    Mirrors the conditions of Keras' TensorFlow backend: tanh activation, sigmoid
    recurrent activation, no recurrent dropout, not unrolled, with bias, ``use_cudnn``
    not disabled, and ``reset_after=True`` for GRU. A runtime condition (masks must be
    right-padded) is a data contract, see docs/contracts.md.

    Args:
        layer: an ``LSTM``, a ``GRU`` or a ``Bidirectional`` wrapping one of them.

    Returns:
        One human-readable reason per violated condition; ``[]`` when eligible.

    Raises:
        TypeError: ``layer`` is not one of the supported recurrent layers.
    """
    if isinstance(layer, keras.layers.Bidirectional):
        return [
            f"{direction}: {reason}"
            for direction, inner in (
                ("forward", layer.forward_layer),
                ("backward", layer.backward_layer),
            )
            for reason in cudnn_ineligible_reasons(inner)
        ]
    if not _is_cudnn_rnn(layer):
        raise TypeError(
            f"{layer.name!r} ({type(layer).__name__}) has no cuDNN kernel; "
            "expected LSTM, GRU or Bidirectional"
        )

    reasons = []
    if layer.activation not in _CUDNN_ACTIVATIONS:
        reasons.append(f"activation is {_activation_name(layer.activation)}, not tanh")
    if layer.recurrent_activation not in _CUDNN_RECURRENT_ACTIVATIONS:
        reasons.append(
            f"recurrent_activation is {_activation_name(layer.recurrent_activation)}, "
            "not sigmoid"
        )
    if layer.recurrent_dropout:
        reasons.append(f"recurrent_dropout is {layer.recurrent_dropout}, not 0")
    if layer.unroll:
        reasons.append("unroll is True")
    if not layer.use_bias:
        reasons.append("use_bias is False")
    if layer.use_cudnn is False:
        reasons.append("use_cudnn is False")
    if isinstance(layer, keras.layers.GRU) and not layer.reset_after:
        reasons.append("GRU reset_after is False")
    return [f"{layer.name}: {reason}" for reason in reasons]


def _activation_name(activation: Callable[..., Any]) -> str:
    return getattr(activation, "__name__", repr(activation))


def recurrent_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every ``LSTM``, ``GRU`` and ``Bidirectional`` layer of ``model``, nested models included."""
    return list(_walk_recurrent(model))


def _walk_recurrent(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        if isinstance(layer, keras.layers.Bidirectional) or _is_cudnn_rnn(layer):
            yield layer
        elif isinstance(layer, keras.Model):
            yield from _walk_recurrent(layer)
