"""What the load generator sends through each door, encoded once, and how it checks answers.

Five doors reach the same models: ``http`` (the friendly JSON endpoints), ``tfserving``
(TF Serving REST, ``POST /v1/models/{m}:predict`` with ``instances``), ``grpc`` (TF
Serving's ``PredictionService/Predict``), and the Open Inference Protocol's: ``v2-http``
(``POST /v2/models/{m}/infer`` with the binary tensor data extension, as tritonclient sends
it) and ``v2-grpc`` (``GRPCInferenceService/ModelInfer`` with ``raw_input_contents``).
Each door's requests are built once per model and items-per-request, ``POOL`` distinct ones
cycled through during a run, so the generator spends its CPU on the protocol, not on
encoding: HTTP bodies are bytes, and gRPC requests are serialized ``PredictRequest`` (or
``ModelInferRequest``) bytes sent through a raw ``grpc.aio`` multicallable (no serializer,
no client library). Answers are checked cheaply but for real: the output tensor is decoded
(``tfserving_api.tensors.to_ndarray`` or the V2 raw contents over gRPC, the JSON body or
the V2 binary answer over REST) and its shape and range checked by
:func:`loadtest.checks.check_outputs`.

``tfserving``, ``grpc`` and the V2 doors call the signature the friendly endpoint calls (raw
text for imdb, reuters and the translator, float pixels in [0, 1] on ``serving_default`` for
images, ``forecast`` for cosine), so every door runs the same model function.

Typical usage::

    calls = door_call("grpc", "imdb", items=1)        # async (GrpcChannels, n) -> None
    async with GrpcChannels("127.0.0.1:8500", concurrency=64) as channels:
        await calls(channels, 0)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, Self

import numpy as np

from loadtest import checks, payloads
from loadtest.ceiling import model_inputs
from tfserving_api import open_inference
from tfserving_api._proto.inference import grpc_predict_v2_pb2
from tfserving_api._proto.tensorflow_serving.apis import predict_pb2
from tfserving_api.contract import (
    FORECAST_SIGNATURE,
    PREDICT_TEXT_SIGNATURE,
    TENSOR_SIGNATURE,
    TRANSLATE_SIGNATURE,
)
from tfserving_api.tensors import to_ndarray, to_tensor_proto

DOORS = ("http", "tfserving", "grpc", "v2-http", "v2-grpc")
GRPC_DOORS = ("grpc", "v2-grpc")  # sent through GrpcChannels, the others through aiohttp
POOL = 64  # distinct requests per model and size, cycled through by the workers
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
V2_HEADER = "Inference-Header-Content-Length"
CLIENTS_PER_CHANNEL = 16  # gRPC load: one HTTP/2 connection per this many workers
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# model -> (signature the friendly endpoint calls, its input, the output checked)
SIGNATURES: dict[str, tuple[str, str, str]] = {
    "imdb": (PREDICT_TEXT_SIGNATURE, "text", "probabilities"),
    "reuters": (PREDICT_TEXT_SIGNATURE, "text", "probabilities"),
    "cifar": (TENSOR_SIGNATURE, "pixels", "probabilities"),
    "mnist": (TENSOR_SIGNATURE, "pixels", "probabilities"),
    "cosine": (FORECAST_SIGNATURE, "window", "forecast"),
    "translator": (TRANSLATE_SIGNATURE, "sentences", "translation"),
}

Call = Callable[[Any, int], Awaitable[None]]  # (client, request number) -> None, or raises


class HttpStatus(Exception):
    """A non-200 answer."""


def _batches(model: str, items: int) -> list[np.ndarray]:
    return [model_inputs(model, items, seed=1000 * items + i) for i in range(POOL)]


@functools.cache
def grpc_requests(model: str, items: int = 1) -> tuple[bytes, ...]:
    """``POOL`` serialized ``PredictRequest`` messages of ``items`` items each.

    Args:
        model: One of :data:`SIGNATURES`.
        items: Items (rows) per request.

    Returns:
        The requests' wire bytes, ready for a multicallable without serializer.
    """
    signature, name, _ = SIGNATURES[model]
    requests = []
    for batch in _batches(model, items):
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = model, signature
        request.inputs[name].CopyFrom(to_tensor_proto(batch))
        requests.append(request.SerializeToString())
    return tuple(requests)


def _json_rows(batch: np.ndarray) -> list[Any]:
    if batch.dtype == object:
        return [value.decode() for value in batch]
    if batch.dtype.kind == "f":  # 4 decimals: the same pixels, a third of the JSON
        return np.round(batch.astype(np.float64), 4).tolist()
    return batch.tolist()


@functools.cache
def tfserving_bodies(model: str, items: int = 1) -> tuple[bytes, ...]:
    """``POOL`` pre-encoded TF Serving REST bodies (row format: ``instances``).

    Args:
        model: One of :data:`SIGNATURES`.
        items: Items (rows) per request.

    Returns:
        JSON bodies for ``POST /v1/models/{model}:predict``.
    """
    signature, _, _ = SIGNATURES[model]
    return tuple(
        json.dumps(
            {"signature_name": signature, "instances": _json_rows(batch)}, separators=(",", ":")
        ).encode()
        for batch in _batches(model, items)
    )


def check_predict_response(model: str, data: bytes, items: int) -> None:
    """Decodes a serialized ``PredictResponse`` and checks its output tensor.

    Raises:
        checks.BadResponse: the output is missing or has the wrong shape or values.
    """
    response = predict_pb2.PredictResponse.FromString(data)
    output = SIGNATURES[model][2]
    if output not in response.outputs:
        raise checks.BadResponse(f"no output {output!r} in {sorted(response.outputs)}")
    checks.check_outputs(model, {output: to_ndarray(response.outputs[output])}, items)


def check_tfserving_body(model: str, body: bytes, items: int) -> None:
    """Checks a TF Serving REST ``{"predictions": [...]}`` answer (row format).

    Raises:
        checks.BadResponse: no ``predictions``, or a wrong output.
    """
    output = SIGNATURES[model][2]
    try:
        rows = json.loads(body)["predictions"]
        # Several outputs: one object per row; one output: the bare values (as TF Serving).
        values = [row[output] for row in rows] if rows and isinstance(rows[0], dict) else rows
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise checks.BadResponse(f"malformed predictions ({exc}): {body[:200]!r}") from None
    checks.check_outputs(model, {output: np.asarray(values)}, items)


def _v2_tensor(batch: np.ndarray) -> tuple[str, bytes]:
    row = open_inference.datatype_for(batch.dtype)
    return row.name, open_inference.to_raw(batch, row)


@functools.cache
def v2_http_bodies(model: str, items: int = 1) -> tuple[tuple[bytes, int], ...]:
    """``POOL`` pre-encoded V2 ``/infer`` bodies in the binary tensor data extension: the
    JSON header (input described, ``binary_data_size``; outputs binary), then the raw tensor.

    Returns:
        ``(body, JSON header length)`` pairs; the length is sent as
        ``Inference-Header-Content-Length``.
    """
    signature, name, _ = SIGNATURES[model]
    bodies = []
    for batch in _batches(model, items):
        datatype, raw = _v2_tensor(batch)
        header = json.dumps(
            {
                "inputs": [
                    {"name": name, "datatype": datatype, "shape": list(batch.shape),
                     "parameters": {"binary_data_size": len(raw)}}
                ],
                "parameters": {"signature_name": signature, "binary_data_output": True},
            },
            separators=(",", ":"),
        ).encode()  # fmt: skip
        bodies.append((header + raw, len(header)))
    return tuple(bodies)


@functools.cache
def v2_grpc_requests(model: str, items: int = 1) -> tuple[bytes, ...]:
    """``POOL`` serialized ``ModelInferRequest`` messages (``raw_input_contents``)."""
    signature, name, _ = SIGNATURES[model]
    requests = []
    for batch in _batches(model, items):
        datatype, raw = _v2_tensor(batch)
        request = grpc_predict_v2_pb2.ModelInferRequest(model_name=model)
        request.inputs.add(name=name, datatype=datatype, shape=batch.shape)
        request.raw_input_contents.append(raw)
        request.parameters["signature_name"].string_param = signature
        requests.append(request.SerializeToString())
    return tuple(requests)


def _v2_output(outputs: list[dict[str, Any]], raws: list[bytes], output: str) -> np.ndarray:
    names = [o.get("name") for o in outputs]
    if output not in names:
        raise checks.BadResponse(f"no output {output!r} in {names}")
    index = names.index(output)
    tensor = outputs[index]
    try:
        row = open_inference.datatype(tensor["datatype"])
        return open_inference.from_raw(row, list(tensor["shape"]), raws[index])
    except (KeyError, IndexError, ValueError) as exc:
        raise checks.BadResponse(f"output {output!r} does not decode: {exc}") from None


def check_v2_http_body(model: str, body: bytes, header_length: str | None, items: int) -> None:
    """Checks a binary V2 ``/infer`` answer: JSON header, then every output's raw bytes.

    Raises:
        checks.BadResponse: no header length, malformed JSON, or a wrong output.
    """
    if header_length is None or not (header_length.isascii() and header_length.isdigit()):
        raise checks.BadResponse(f"no {V2_HEADER} header: {body[:200]!r}")
    size = int(header_length)
    try:
        outputs = json.loads(body[:size])["outputs"]
        raws, offset = [], size
        for tensor in outputs:
            length = tensor["parameters"]["binary_data_size"]
            raws.append(body[offset : offset + length])
            offset += length
    except (KeyError, TypeError, ValueError) as exc:
        raise checks.BadResponse(f"malformed V2 answer ({exc}): {body[:200]!r}") from None
    output = SIGNATURES[model][2]
    checks.check_outputs(model, {output: _v2_output(outputs, raws, output)}, items)


def check_infer_response(model: str, data: bytes, items: int) -> None:
    """Decodes a serialized ``ModelInferResponse`` and checks its output (raw contents).

    Raises:
        checks.BadResponse: the output is missing or has the wrong shape or values.
    """
    response = grpc_predict_v2_pb2.ModelInferResponse.FromString(data)
    outputs = [{"name": o.name, "datatype": o.datatype, "shape": list(o.shape)}
               for o in response.outputs]  # fmt: skip
    output = SIGNATURES[model][2]
    array = _v2_output(outputs, list(response.raw_output_contents), output)
    checks.check_outputs(model, {output: array}, items)


def post_call(path: str, bodies: Any, check: Callable[[bytes, str | None], None]) -> Call:
    """POSTs ``bodies`` in turn (JSON bytes, or V2's ``(bytes, header length)``) to ``path``;
    a non-200 raises :class:`HttpStatus`, else ``check(body, V2 header length)`` runs."""

    def request(n: int) -> tuple[bytes, dict[str, str]]:
        body = bodies[n % len(bodies)]
        if isinstance(body, bytes):
            return body, {"Content-Type": "application/json"}
        return body[0], {"Content-Type": "application/octet-stream", V2_HEADER: str(body[1])}

    async def call(session: Any, n: int) -> None:
        data, headers = request(n)
        async with session.post(path, data=data, headers=headers) as response:
            body = await response.read()
            if response.status != 200:
                raise HttpStatus(f"HTTP {response.status}: {body[:200]!r}")
        check(body, response.headers.get(V2_HEADER))

    return call


def door_call(door: str, model: str, items: int = 1, path: str | None = None) -> Call:
    """The checked request of ``model`` through ``door``, ``items`` items per request.

    Args:
        door: ``http``, ``tfserving``, ``grpc``, ``v2-http`` or ``v2-grpc``.
        model: imdb, reuters, cifar, mnist, cosine or translator.
        items: Items per request (cosine's friendly endpoint always takes one window).
        path: An HTTP path instead of the door's own (a bare server); ignored for gRPC.

    Returns:
        An async callable ``(client, request number)``: an aiohttp session for the HTTP
        doors, :class:`GrpcChannels` (with :func:`grpc_method` of the door) for gRPC ones.
    """
    if door not in DOORS:
        raise ValueError(f"unknown door {door!r}; choose from {', '.join(DOORS)}")
    if model not in SIGNATURES:
        raise ValueError(f"unknown model {model!r}")
    if door in GRPC_DOORS:
        build, check = {
            "grpc": (grpc_requests, check_predict_response),
            "v2-grpc": (v2_grpc_requests, check_infer_response),
        }[door]
        requests = build(model, items)

        async def rpc(channels: GrpcChannels, n: int) -> None:
            check(model, await channels.predict(requests[n % len(requests)], n), items)

        return rpc
    if door == "v2-http":
        bodies, default = v2_http_bodies(model, items), f"/v2/models/{model}/infer"
    elif door == "tfserving":
        bodies, default = tfserving_bodies(model, items), f"/v1/models/{model}:predict"
    else:
        bodies, default = payloads.json_bodies(model, items), payloads.PATHS[model]

    def check(body: bytes, header_length: str | None) -> None:
        if door == "v2-http":
            check_v2_http_body(model, body, header_length, items)
        elif door == "tfserving":
            check_tfserving_body(model, body, items)
        else:
            checks.check(model, checks.from_json(model, json.loads(body)), items)

    return post_call(path or default, bodies, check)


def grpc_method(door: str) -> str:
    """The RPC a gRPC door's requests go to."""
    return INFER_METHOD if door == "v2-grpc" else PREDICT_METHOD


class GrpcChannels:
    """``grpc.aio`` channels to one target, each its own HTTP/2 connection (a local
    subchannel pool: otherwise channels to one target share one connection), with the raw
    ``Predict`` (or ``method``) multicallable: bytes in, bytes out, no (de)serializer in the
    generator.

    Args:
        target: ``host:port``.
        concurrency: Closed-loop workers; one channel per ``CLIENTS_PER_CHANNEL`` of them.
        timeout: Deadline per call, seconds.
        method: The RPC's path (``PREDICT_METHOD``, ``INFER_METHOD``).
    """

    def __init__(
        self, target: str, concurrency: int, timeout: float = 30.0, method: str = PREDICT_METHOD
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.method = method
        self.count = max(1, -(-concurrency // CLIENTS_PER_CHANNEL))
        self.channels: list[Any] = []
        self.methods: list[Any] = []

    async def __aenter__(self) -> Self:
        import grpc

        options = [
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        for _ in range(self.count):
            channel = grpc.aio.insecure_channel(self.target, options=options)
            self.channels.append(channel)
            self.methods.append(channel.unary_unary(self.method, _registered_method=True))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for channel in self.channels:
            await channel.close()

    async def predict(self, request: bytes, n: int) -> bytes:
        """Sends one serialized request on channel ``n % count``; its answer's bytes."""
        return await self.methods[n % self.count](request, timeout=self.timeout)
