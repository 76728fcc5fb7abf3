"""TF Serving's protos <-> the numpy batches and model outputs of the gateway. No I/O.

The gRPC door (:mod:`service.grpc_server`) uses these pure functions: decode and validate a
request's ``TensorProto`` inputs (or ``tf.Example`` lists, for Classify/Regress) against a
signature, and encode model outputs back into ``TensorProto`` outputs, ``SignatureDefMap``
metadata and classification/regression results.

The protos come from the protocol package shared with the clients (``tfserving_api._proto``,
a private descriptor pool, the same wire format) and ``tfserving_api.tensors`` is the
numpy <-> TensorProto table, so the door never imports TensorFlow:
``tensorflow_serving.apis`` would pull all of it in (~600 MB and several seconds per gateway
worker) only to parse messages.

Typical usage::

    signature = info.signature(request.model_spec.signature_name)
    batch = decode_inputs(request.inputs, signature, limits, info.vocab_size)
    outputs = await model.run(signature.name, batch)
    tensors = encode_outputs(outputs, signature, select_outputs(signature, request.output_filter))
"""

from __future__ import annotations

import functools
import math
import typing as t
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from service.catalog import TENSOR_SIGNATURE, ModelInfo, SignatureSpec, TensorSpec
from service.client_text import clip
from service.errors import InvalidInput, PayloadTooLarge, Unsupported
from service.inputs import check_batch
from tfserving_api._proto.tensorflow.core.framework import types_pb2
from tfserving_api._proto.tensorflow.core.protobuf import meta_graph_pb2
from tfserving_api._proto.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    regression_pb2,
)
from tfserving_api.contract import LABELS_FIELD, SIGNATURE_DEF_FIELD
from tfserving_api.tensors import (
    BY_ENUM,
    TensorError,
    TensorProto,
    dtype_for,
    fill_tensor_proto,
    shape_of,
    shape_proto,
    to_ndarray,
)
from tfserving_api.tensors import to_tensor_proto as _to_tensor_proto

PREDICT_METHOD = "tensorflow/serving/predict"
METADATA_FIELDS = (SIGNATURE_DEF_FIELD, LABELS_FIELD)


@dataclass(frozen=True)
class Limits:
    """What one request may carry (``SERVICE_MAX_ITEMS``, ``SERVICE_MAX_BODY_BYTES``,
    ``SERVICE_MAX_TEXT_CHARS``)."""

    max_rows: int
    max_bytes: int
    max_text_chars: int = 20_000


def _dtype_name(enum: int) -> str:
    if enum in types_pb2.DataType.values():
        return types_pb2.DataType.Name(enum)
    return str(enum)


def _tf_dtype(spec: TensorSpec) -> str:
    return _dtype_name(dtype_for(spec.dtype).enum)


@functools.lru_cache(maxsize=1024)  # one entry per signature tensor of the loaded models
def _expected(spec: TensorSpec) -> str:
    dims = ", ".join("-1" if d is None else str(d) for d in spec.shape)
    return f"{_tf_dtype(spec)} [{dims}]"


# ---------------------------------------------------------------- Predict


def check_claimed_shape(
    shape: Sequence[int],
    spec: TensorSpec,
    field: str,
    expected: str,
    limits: Limits,
) -> None:
    """The shape a request tensor claims, against the signature and the caps, before any
    value is read: shared by the TF Serving gRPC door and the Open Inference Protocol doors.

    Args:
        shape: the claimed dims, each an int >= 0.
        field: the tensor, for messages (``inputs['window']``, ``inputs[0]``).
        expected: the signature's tensor as the protocol spells it (``DT_FLOAT [-1, 10]``,
            ``FP32 [-1, 10]``).

    Raises:
        InvalidInput: a wrong rank or dimension, or no rows.
        PayloadTooLarge: more rows than ``limits.max_rows``, or more elements than
            ``limits.max_bytes``.
    """
    if len(shape) != len(spec.shape) or any(
        want is not None and got != want for got, want in zip(shape[1:], spec.row_shape)
    ):
        raise InvalidInput(f"{field}: expected shape {expected}, got {clip(repr(list(shape)))}")
    if shape[0] == 0:
        raise InvalidInput(f"{field}: must not be empty")
    if shape[0] > limits.max_rows:
        raise PayloadTooLarge(
            f"{field}: {shape[0]} rows exceed the cap of {limits.max_rows} per request"
        )
    if (elements := math.prod(shape)) > limits.max_bytes:
        raise PayloadTooLarge(f"{field}: {elements} elements exceed the request cap")


def decode_input(
    proto: TensorProto, spec: TensorSpec, field: str, limits: Limits, vocab_size: int | None = None
) -> np.ndarray:
    """One request tensor -> the validated numpy batch for ``spec``.

    The shape is checked before any value is decoded, so that a tiny message claiming a huge
    shape (TensorProto's "repeat the last value" shorthand) cannot make the gateway allocate it.

    Raises:
        InvalidInput: wrong dtype, shape, encoding or values (the message names ``field``).
        PayloadTooLarge: more rows than ``limits.max_rows``.
    """
    row = BY_ENUM.get(proto.dtype)
    # Every signature input is text, integers or reals: bool and complex never fit one.
    if row is None or (row.name == "string") != (spec.dtype == "string") or row.numpy.kind in "bc":
        raise InvalidInput(
            f"{field}: dtype {_dtype_name(proto.dtype)} does not match the signature's {_expected(spec)}"
        )
    shape = shape_of(proto.tensor_shape)
    if shape is None or None in shape:
        raise InvalidInput(
            f"{field}: the tensor shape must be fully defined (expected {_expected(spec)})"
        )
    check_claimed_shape(shape, spec, field, _expected(spec), limits)
    try:
        array = to_ndarray(proto)
    except TensorError as exc:
        raise InvalidInput(f"{field}: {exc}") from None
    if array.dtype.kind == "f" and spec.dtype != "string" and np.dtype(spec.dtype).kind == "f":
        # Cast before the finiteness check: a float64 beyond float32's range becomes inf.
        with np.errstate(over="ignore"):
            array = array.astype(spec.dtype)
    # Also the rules every door shares, e.g. strings must be UTF-8 and not blank.
    return check_batch(array, spec, field, limits.max_rows, vocab_size, limits.max_text_chars)


def decode_inputs(
    inputs: Mapping[str, TensorProto],
    signature: SignatureSpec,
    limits: Limits,
    vocab_size: int | None = None,
) -> np.ndarray:
    """``PredictRequest.inputs`` -> the batch for the signature's only input.

    Raises:
        InvalidInput: a missing or unknown input, or a bad tensor.
        PayloadTooLarge: too many rows.
    """
    spec = signature.input
    unknown = sorted(set(inputs) - set(signature.inputs))
    if unknown:
        raise InvalidInput(
            f"inputs['{clip(unknown[0])}']: unknown input "
            f"(signature '{signature.name}' takes '{spec.name}')"
        )
    if spec.name not in inputs:
        raise InvalidInput(
            f"inputs['{spec.name}']: required input is missing (signature '{signature.name}' takes "
            f"'{spec.name}': {_expected(spec)})"
        )
    vocab = token_vocab(signature, vocab_size)
    return decode_input(inputs[spec.name], spec, f"inputs['{spec.name}']", limits, vocab)


def token_vocab(signature: SignatureSpec, vocab_size: int | None) -> int | None:
    """The bound token ids of ``signature``'s input must stay under: the model's vocabulary
    for the integer input of its tensor signature (text models), else None (no ids)."""
    if signature.name == TENSOR_SIGNATURE and signature.input.dtype.startswith("int"):
        return vocab_size
    return None


def select_outputs(signature: SignatureSpec, output_filter: Sequence[str]) -> list[str]:
    """The outputs to return: ``output_filter`` (validated) or all, in signature order.

    Raises:
        InvalidInput: the filter names an output the signature does not have.
    """
    if not output_filter:
        return list(signature.outputs)
    for name in output_filter:
        if name not in signature.outputs:
            known = ", ".join(signature.outputs)
            raise InvalidInput(
                f"output_filter: signature '{signature.name}' has no output '{clip(name)}' "
                f"(has: {known})"
            )
    return list(dict.fromkeys(output_filter))


def encode_outputs(
    outputs: Mapping[str, np.ndarray], signature: SignatureSpec, names: Sequence[str]
) -> dict[str, TensorProto]:
    """Model outputs (numpy, batch first) -> ``PredictResponse.outputs``."""
    return {name: _to_tensor_proto(outputs[name], signature.outputs[name].dtype) for name in names}


def encode_outputs_into(
    into: t.MutableMapping[str, TensorProto],
    outputs: Mapping[str, np.ndarray],
    signature: SignatureSpec,
    names: Sequence[str],
) -> None:
    """:func:`encode_outputs` written straight into a response's ``outputs`` map (each
    tensor built in place from the numpy buffer, not built and then copied)."""
    for name in names:
        fill_tensor_proto(into[name], outputs[name], signature.outputs[name].dtype)


# ---------------------------------------------------------------- GetModelMetadata


def _tensor_info(spec: TensorSpec, signature: str) -> meta_graph_pb2.TensorInfo:
    return meta_graph_pb2.TensorInfo(
        name=f"{signature}_{spec.name}:0",
        dtype=dtype_for(spec.dtype).enum,
        tensor_shape=shape_proto(spec.shape),
    )


def signature_def_map(info: ModelInfo) -> get_model_metadata_pb2.SignatureDefMap:
    """What TF Serving packs under ``metadata["signature_def"]``."""
    result = get_model_metadata_pb2.SignatureDefMap()
    for name, spec in info.signatures.items():
        signature = result.signature_def[name]
        signature.method_name = PREDICT_METHOD
        for key, tensor in spec.inputs.items():
            signature.inputs[key].CopyFrom(_tensor_info(tensor, name))
        for key, tensor in spec.outputs.items():
            signature.outputs[key].CopyFrom(_tensor_info(tensor, name))
    return result


def labels_tensor(info: ModelInfo) -> TensorProto | None:
    """Label names in class order as a 1-D DT_STRING tensor (``metadata["labels"]``, an
    extension read by ``clients.grpc``), or ``None`` for models without classes."""
    if not info.labels:
        return None
    return _to_tensor_proto(np.array([label.encode() for label in info.labels], dtype=object))


def check_metadata_fields(fields: Sequence[str]) -> list[str]:
    """Like TF Serving, at least one field, and only known ones.

    Raises:
        InvalidInput: no field, or an unsupported one.
    """
    if not fields:
        raise InvalidInput(f"metadata_field: list at least one of: {', '.join(METADATA_FIELDS)}")
    for name in fields:
        if name not in METADATA_FIELDS:
            raise InvalidInput(
                f"metadata_field: '{clip(name)}' is not supported "
                f"(supported: {', '.join(METADATA_FIELDS)})"
            )
    return list(dict.fromkeys(fields))


# ---------------------------------------------------------------- Classify / Regress


def classify_signature(info: ModelInfo, name: str) -> SignatureSpec:
    """The signature Classify runs: the requested one, by default the user-level one
    (raw text or uint8 images); it must output ``probabilities``.

    Raises:
        ModelNotFound: unknown signature.
        Unsupported: the model does not classify.
    """
    signature = info.signature(name or info.user_signature or TENSOR_SIGNATURE)
    if "probabilities" not in signature.outputs:
        raise Unsupported(
            f"Classify: model '{info.name}' signature '{signature.name}' has no class probabilities; use Predict"
        )
    return signature


def regress_signature(info: ModelInfo, name: str) -> SignatureSpec:
    """The signature Regress runs: one float output of one value per example.

    Raises:
        ModelNotFound: unknown signature.
        Unsupported: the model does not regress.
    """
    signature = info.signature(name or info.user_signature or TENSOR_SIGNATURE)
    outputs = list(signature.outputs.values())
    if len(outputs) != 1 or not outputs[0].dtype.startswith("float") or len(outputs[0].shape) != 1:
        raise Unsupported(
            f"Regress: model '{info.name}' signature '{signature.name}' has no single float output; use Predict"
        )
    return signature


def examples_batch(
    request_input: t.Any, spec: TensorSpec, limits: Limits, vocab_size: int | None = None
) -> np.ndarray:
    """``tensorflow.serving.Input`` (tf.Example lists) -> the batch for ``spec``.

    Each example holds the signature input as the feature of the same name: ``bytes_list``
    with one value for a string input; ``float_list`` or ``int64_list`` with the row's
    values flattened (row-major) for a numeric one. Context features apply to every example;
    other features are ignored, as TF Serving's example parsing does.

    Raises:
        InvalidInput: no examples, a missing or mistyped feature, wrong value count.
        PayloadTooLarge: more examples than ``limits.max_rows``.
    """
    kind = request_input.WhichOneof("kind")
    if kind is None:
        raise InvalidInput("input: expected example_list or example_list_with_context")
    examples = getattr(request_input, kind).examples
    context = (
        request_input.example_list_with_context.context.features.feature
        if kind == "example_list_with_context"
        else {}
    )
    if not examples:
        raise InvalidInput(f"input.{kind}.examples: must not be empty")
    if len(examples) > limits.max_rows:
        raise PayloadTooLarge(
            f"input.{kind}.examples: {len(examples)} examples exceed the cap of {limits.max_rows}"
        )
    size = math.prod(spec.row_shape) if spec.dtype != "string" else 1
    rows = []
    for index, example in enumerate(examples):
        field = f"input.{kind}.examples[{index}].features['{spec.name}']"
        features = example.features.feature
        feature = features[spec.name] if spec.name in features else context.get(spec.name)
        if feature is None:
            raise InvalidInput(f"{field}: required feature is missing")
        rows.append(_feature_values(feature, spec, size, field))
    if spec.dtype == "string":
        array = np.empty(len(rows), dtype=object)
        array[:] = [row[0] for row in rows]
    else:
        array = np.stack(rows).reshape(len(rows), *spec.row_shape)
        if array.dtype.kind == "f":
            with np.errstate(over="ignore"):
                array = array.astype(spec.dtype)
    return check_batch(
        array,
        spec,
        f"input.{kind}.examples[*].features['{spec.name}']",
        limits.max_rows,
        vocab_size,
        limits.max_text_chars,
    )


def _feature_values(feature: t.Any, spec: TensorSpec, size: int, field: str) -> t.Any:
    kind = feature.WhichOneof("kind")
    if spec.dtype == "string":
        if kind != "bytes_list" or len(feature.bytes_list.value) != 1:
            raise InvalidInput(f"{field}: expected a bytes_list with one value")
        return list(feature.bytes_list.value)
    integer = np.dtype(spec.dtype).kind in "iu"
    accepted = ("int64_list",) if integer else ("float_list", "int64_list")
    if kind not in accepted:
        raise InvalidInput(f"{field}: expected {' or '.join(accepted)}, got {kind or 'nothing'}")
    values = getattr(feature, kind).value
    if len(values) != size:
        raise InvalidInput(
            f"{field}: expected {size} values (shape {list(spec.row_shape)}), got {len(values)}"
        )
    return np.asarray(values, dtype=np.int64 if kind == "int64_list" else np.float64)


def classification_result(
    outputs: Mapping[str, np.ndarray], info: ModelInfo
) -> classification_pb2.ClassificationResult:
    """Every class with its score, in class-index order, per example (as TF Serving)."""
    result = classification_pb2.ClassificationResult()
    probabilities = outputs["probabilities"]
    classes = probabilities.shape[-1]
    names = list(info.labels) if len(info.labels) == classes else [str(i) for i in range(classes)]
    for row in probabilities.tolist():
        result.classifications.add().classes.extend(
            classification_pb2.Class(label=name, score=p) for name, p in zip(names, row)
        )
    return result


def regression_result(
    outputs: Mapping[str, np.ndarray], signature: SignatureSpec
) -> regression_pb2.RegressionResult:
    """The signature's single output, one value per example."""
    (name,) = signature.outputs
    result = regression_pb2.RegressionResult()
    values = outputs[name].reshape(len(outputs[name]), -1)[:, 0].tolist()
    result.regressions.extend(regression_pb2.Regression(value=v) for v in values)
    return result
