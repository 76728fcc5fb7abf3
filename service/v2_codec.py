"""The Open Inference Protocol ("KServe V2") <-> the gateway's numpy batches. No I/O.

Shared by the V2 doors (:mod:`service.v2_rest`, :mod:`service.v2_grpc`): which signature a
request runs, its one input decoded and validated with the rules every door shares
(:func:`service.inputs.check_batch`), the outputs it asked for, and the metadata.

The V2 names are the signature's own (``docs/contracts.md``): tensor ``text`` of
``predict_text``, ``token_ids`` of ``serving_default``, and so on. The ``signature_name``
request parameter chooses the signature; without it, the one whose input the request names,
the model's user-level signature first (``predict_text``, ``predict_images``, ``forecast``,
``translate``). Model metadata describes that default signature.

Validation happens before decoding: datatype, then the claimed shape against the
signature and the caps (``SERVICE_MAX_ITEMS`` rows, ``SERVICE_MAX_BODY_BYTES`` elements),
then the byte or value count against the shape (:mod:`tfserving_api.open_inference`), and
only then are values converted.

Typical usage::

    signature = choose_signature(model.info, request.signature_name, request.input_names)
    batch = decode_inputs(request.inputs, signature, limits, model.info.vocab_size)
    outputs = await model.run(signature.name, batch)
"""

from __future__ import annotations

import functools
import typing as t
from dataclasses import dataclass, field
from importlib import metadata as _metadata

import numpy as np

from service.catalog import TENSOR_SIGNATURE, ModelInfo, SignatureSpec, TensorSpec
from service.client_text import clip
from service.errors import InvalidInput
from service.grpc_codec import Limits, check_claimed_shape, token_vocab
from service.inputs import check_batch
from tfserving_api.open_inference import (
    BYTES,
    Datatype,
    TensorError,
    datatype,
    datatype_for,
    element_count,
    from_contents,
    from_json,
    from_raw,
)

SERVER_NAME = "keras-serving"
PLATFORM = "tensorflow_savedmodel"
BINARY_EXTENSION = "binary_tensor_data"
CLASSIFICATION_EXTENSION = "classification"
SIGNATURE_PARAMETER = "signature_name"
_NO_DATA = object()


def server_version() -> str:
    """The installed package's version (``GET /v2``, ``ServerMetadata``)."""
    try:
        return _metadata.version(SERVER_NAME)
    except _metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def quote(value: t.Any) -> str:
    """A client value for an error message, quoted and cut (:func:`service.client_text.clip`)."""
    return f"'{clip(value)}'" if isinstance(value, str) else clip(repr(value))


@dataclass
class InputTensor:
    """One request input as it arrived: its description and exactly one of raw bytes, typed
    ``InferTensorContents`` or JSON ``data``."""

    field: str  # where it came from, for messages: "inputs[0]"
    name: t.Any
    datatype: t.Any
    shape: t.Any
    raw: bytes | memoryview | None = None
    contents: t.Any = None
    data: t.Any = _NO_DATA


@dataclass
class InferRequest:
    """What a V2 inference request asks, whatever its wire form."""

    inputs: list[InputTensor]
    # (field, name) of each requested output; empty: every output.
    outputs: list[tuple[str, t.Any]] = field(default_factory=list)
    id: str = ""
    signature_name: str | None = None
    # Triton's classification extension: output name -> (field, requested class count).
    classification: dict[str, tuple[str, t.Any]] = field(default_factory=dict)

    @property
    def input_names(self) -> list[t.Any]:
        return [tensor.name for tensor in self.inputs]


@functools.lru_cache(maxsize=1024)  # one entry per signature tensor of the loaded models
def expected(spec: TensorSpec) -> str:
    """``BYTES [-1]``: a signature tensor as V2 metadata spells it."""
    dims = ", ".join("-1" if d is None else str(d) for d in spec.shape)
    return f"{datatype_for(spec.dtype).name} [{dims}]"


def default_signature(info: ModelInfo) -> SignatureSpec:
    """The signature V2 requests run unless they say otherwise: the user-level one."""
    return info.signature(info.user_signature or TENSOR_SIGNATURE)


def choose_signature(
    info: ModelInfo, requested: t.Any, input_names: t.Sequence[t.Any] = ()
) -> SignatureSpec:
    """The signature a request runs: ``requested`` (the ``signature_name`` parameter), else
    the default one if it takes the input the request names, else the one that does.

    Raises:
        InvalidInput: ``signature_name`` is not a string.
        ModelNotFound: the model has no such signature.
    """
    if requested is not None:
        if not isinstance(requested, str):
            raise InvalidInput(f"parameters.{SIGNATURE_PARAMETER}: expected a string")
        return info.signature(requested)
    default = default_signature(info)
    names = [n for n in input_names if isinstance(n, str)]
    if not names or names[0] in default.inputs:
        return default
    for signature in info.signatures.values():
        if names[0] in signature.inputs:
            return signature
    return default  # decode_inputs names the input it does not know


def decode_inputs(
    inputs: t.Sequence[InputTensor],
    signature: SignatureSpec,
    limits: Limits,
    vocab_size: int | None = None,
) -> np.ndarray:
    """The request's inputs -> the validated batch for the signature's only input.

    Raises:
        InvalidInput: no input, an unknown or repeated one, or a bad tensor.
        PayloadTooLarge: over a cap.
    """
    spec = signature.input
    takes = f"signature '{signature.name}' takes '{spec.name}': {expected(spec)}"
    if not inputs:
        raise InvalidInput(f"inputs: must not be empty ({takes})")
    chosen = None
    for tensor in inputs:
        if not isinstance(tensor.name, str):
            raise InvalidInput(f"{tensor.field}.name: expected a string")
        if tensor.name != spec.name:
            raise InvalidInput(
                f"{tensor.field}.name: unknown input {quote(tensor.name)} ({takes})"
            )
        if chosen is not None:
            raise InvalidInput(f"{tensor.field}.name: input '{spec.name}' is given twice")
        chosen = tensor
    assert chosen is not None
    return decode_input(chosen, spec, limits, token_vocab(signature, vocab_size))


def _fits(row: Datatype, spec: TensorSpec) -> bool:
    """Integers for integer and float inputs, floats for float inputs, BYTES for strings, as
    the other doors accept them (values are range-checked afterwards)."""
    if spec.dtype == "string" or row.is_bytes:
        return spec.dtype == "string" and row.is_bytes
    want = np.dtype(spec.dtype).kind
    return row.numpy.kind in "iu" or (row.numpy.kind == "f" and want == "f")


def decode_input(
    tensor: InputTensor, spec: TensorSpec, limits: Limits, vocab_size: int | None = None
) -> np.ndarray:
    """One input -> the validated batch for ``spec``; the shape is checked against the
    signature and the caps, and the contents against the shape, before any value is read.

    Raises:
        InvalidInput: wrong datatype, shape, encoding or values (the message names the field).
        PayloadTooLarge: more rows than ``limits.max_rows``, or too many elements.
    """
    name = tensor.field
    try:
        row = datatype(tensor.datatype)
    except TensorError as exc:
        raise InvalidInput(f"{name}.datatype: {exc}") from None
    if not _fits(row, spec):
        raise InvalidInput(
            f"{name}.datatype: {row.name} does not match the signature's {expected(spec)}"
        )
    try:
        element_count(tensor.shape)  # a list of integers >= 0
    except TensorError as exc:
        raise InvalidInput(f"{name}.{exc}") from None
    shape = list(tensor.shape)
    check_claimed_shape(shape, spec, name, expected(spec), limits)
    try:
        if tensor.raw is not None:
            array = from_raw(row, shape, tensor.raw)
        elif tensor.contents is not None:
            array = from_contents(row, shape, tensor.contents)
        elif tensor.data is not _NO_DATA:
            array = from_json(row, shape, tensor.data)
        else:
            raise InvalidInput(f"{name}: no data (JSON 'data' or binary contents)")
    except TensorError as exc:
        raise InvalidInput(f"{name}: {exc}") from None
    if row.numpy.kind == "f" and np.dtype(spec.dtype).kind == "f":
        with np.errstate(over="ignore"):  # FP64 beyond FP32's range becomes inf: refused next
            array = array.astype(spec.dtype)
    # The rules every door shares: UTF-8 and not blank text, token ids, pixel ranges...
    return check_batch(array, spec, name, limits.max_rows, vocab_size, limits.max_text_chars)


def select_outputs(signature: SignatureSpec, requested: t.Sequence[tuple[str, t.Any]]) -> list[str]:
    """The outputs to answer: the requested ones (``(field, name)`` pairs), or all.

    Raises:
        InvalidInput: a requested name the signature does not have.
    """
    if not requested:
        return list(signature.outputs)
    names = []
    for where, name in requested:
        if not isinstance(name, str) or name not in signature.outputs:
            known = ", ".join(signature.outputs)
            raise InvalidInput(
                f"{where}.name: signature '{signature.name}' has no output {quote(name)} "
                f"(has: {known})"
            )
        names.append(name)
    return list(dict.fromkeys(names))


def class_counts(
    signature: SignatureSpec, requested: t.Mapping[str, tuple[str, t.Any]]
) -> dict[str, int]:
    """Triton's classification extension: the validated class count of each output asked
    as classes (``parameters.classification``), capped at the number of classes.

    Raises:
        InvalidInput: a count that is not a positive integer, or an output without classes
            (only float ``[n, C]`` outputs, the probabilities, have them).
    """
    counts = {}
    for name, (where, count) in requested.items():
        spec = signature.outputs.get(name)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidInput(f"{where}.parameters.classification: expected a positive integer")
        if spec is None or not spec.dtype.startswith("float") or len(spec.shape) != 2:
            raise InvalidInput(
                f"{where}.parameters.classification: output {quote(name)} has no classes "
                "(ask it of a float [n, C] output: probabilities)"
            )
        classes = spec.shape[1]
        counts[name] = count if classes is None else min(count, classes)
    return counts


def classify(scores: np.ndarray, count: int, labels: t.Sequence[str] = ()) -> np.ndarray:
    """The ``count`` best classes of each row, best first, as Triton's classification
    extension spells them: ``b"<score>:<index>[:<label>]"`` (score as C++'s
    ``std::to_string``, six decimals), a BYTES ``[n, count]`` array."""
    named = len(labels) == scores.shape[1]
    best = np.argsort(-scores, axis=1, kind="stable")[:, :count]
    rows = np.empty(best.shape, dtype=object)
    for i, indices in enumerate(best.tolist()):
        for j, index in enumerate(indices):
            text = f"{float(scores[i, index]):f}:{index}"
            rows[i, j] = (f"{text}:{labels[index]}" if named else text).encode()
    return rows


def output_tensor(
    outputs: t.Mapping[str, np.ndarray],
    signature: SignatureSpec,
    name: str,
    classes: int | None = None,
    labels: t.Sequence[str] = (),
) -> tuple[Datatype, np.ndarray]:
    """One model output as its V2 datatype and array (its ``classes`` best classes as BYTES
    when the request asked for classification)."""
    if classes:
        return BYTES, classify(np.asarray(outputs[name]), classes, labels)
    row = datatype_for(signature.outputs[name].dtype)
    array = outputs[name]
    if not row.is_bytes:
        array = np.asarray(array, dtype=row.numpy)
    return row, array


def tensor_metadata(spec: TensorSpec) -> dict[str, t.Any]:
    return {
        "name": spec.name,
        "datatype": datatype_for(spec.dtype).name,
        "shape": [-1 if d is None else d for d in spec.shape],
    }


def model_metadata(info: ModelInfo, versions: t.Iterable[int]) -> dict[str, t.Any]:
    """``GET /v2/models/{m}`` / ``ModelMetadata``: the default signature's tensors."""
    signature = default_signature(info)
    return {
        "name": info.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [tensor_metadata(s) for s in signature.inputs.values()],
        "outputs": [tensor_metadata(s) for s in signature.outputs.values()],
    }


def server_metadata(extensions: t.Sequence[str]) -> dict[str, t.Any]:
    """``GET /v2`` / ``ServerMetadata``."""
    return {"name": SERVER_NAME, "version": server_version(), "extensions": list(extensions)}
