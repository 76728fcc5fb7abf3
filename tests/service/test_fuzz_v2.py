"""Malformed Open Inference Protocol (KServe V2) requests against a real ``bentoml serve``, on
both V2 doors: one row per kind of bad request with its exact status, then a bounded
property-based fuzz of bodies, binary tensors and ``ModelInferRequest`` messages. Nothing a
client sends may be answered 5xx, UNKNOWN or INTERNAL, or leave a traceback in the log.
"""

from __future__ import annotations

import json
import re
import typing as t
import urllib.parse

import grpc
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadtest.hostile import v2_bytes_flood
from tfserving_api._proto.inference import grpc_predict_v2_pb2 as pb
from tfserving_api.open_inference import DATATYPES, serialize_bytes

pytestmark = pytest.mark.integration

Code = grpc.StatusCode
MODELS = ("reuters", "imdb", "cifar", "mnist", "cosine", "translator")
INFER = "/inference.GRPCInferenceService/ModelInfer"
CLIENT_ERRORS = {Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.RESOURCE_EXHAUSTED}
WINDOW = np.arange(10, dtype=np.float32)[None]
FUZZ = settings(
    max_examples=200,
    derandomize=True,  # the same cases on every run: a CI failure reproduces locally
    database=None,
    deadline=None,  # a shared 2-core machine: latency is not what is tested here
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def log_start(server) -> int:
    """Where the server log stood before this module's first request."""
    return server.log.stat().st_size


@pytest.fixture(scope="module")
def http(server, log_start):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def channel(server, log_start):
    with grpc.insecure_channel(
        f"127.0.0.1:{server.grpc_port}", options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield channel


def assert_client_error_shape(status: int, body: bytes, what: str) -> None:
    """A 4xx is ``{"error": "<message>"}``; nothing is 5xx."""
    assert status < 500, f"{what}: {status} {body[:500]!r}"
    if status >= 400:
        payload = json.loads(body)
        assert isinstance(payload, dict) and set(payload) == {"error"}, (what, payload)
        assert isinstance(payload["error"], str) and payload["error"], (what, payload)


def binary(header: dict, data: bytes) -> dict[str, t.Any]:
    """httpx kwargs for a binary tensor data body: JSON header, then ``data``."""
    head = json.dumps(header).encode()
    return {
        "content": head + data,
        "headers": {"Inference-Header-Content-Length": str(len(head))},
    }


def window_input(**overrides: t.Any) -> dict:
    return {"name": "window", "datatype": "FP32", "shape": [1, 10],
            "data": WINDOW.ravel().tolist(), **overrides}  # fmt: skip


def text_input(**overrides: t.Any) -> dict:
    return {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a film"], **overrides}


FLOOD = v2_bytes_flood()  # loadtest/hostile.py's probe: 64 texts, then 8 MB of zero lengths
# (id, method, path, httpx request kwargs, expected status, fragment of "error")
HTTP_ROWS = [
    ("unknown model", "POST", "/v2/models/nope/infer", {"json": {"inputs": [window_input()]}},
     404, "nope"),
    ("unknown version", "POST", "/v2/models/cosine/versions/999/infer",
     {"json": {"inputs": [window_input()]}}, 404, "has no version 999"),
    ("version of twenty digits", "GET", "/v2/models/cosine/versions/" + "1" * 20, {}, 400,
     "is not a version number"),
    ("superscript version is a label", "GET", "/v2/models/cosine/versions/%C2%B2/ready", {}, 404,
     "no version label '²'"),
    ("unknown label", "POST", "/v2/models/cosine/labels/stable/infer",
     {"json": {"inputs": [window_input()]}}, 404, "no version label 'stable'"),
    ("unknown endpoint", "GET", "/v2/repository/nothing", {}, 404,
     "no such Open Inference Protocol endpoint"),
    ("not json", "POST", "/v2/models/cosine/infer", {"content": b"{"}, 400, "not valid JSON"),
    ("json nested too deep", "POST", "/v2/models/cosine/infer",
     {"content": b"[" * 100_000 + b"]" * 100_000}, 400, "request body"),
    ("header length not a number", "POST", "/v2/models/cosine/infer",
     {"content": b"{}", "headers": {"Inference-Header-Content-Length": "-1"}}, 400,
     "Inference-Header-Content-Length: expected a byte count"),
    ("header length of 40 digits", "POST", "/v2/models/cosine/infer",
     {"content": b"{}", "headers": {"Inference-Header-Content-Length": "9" * 40}}, 400,
     "expected a byte count"),
    ("header length past the body", "POST", "/v2/models/cosine/infer",
     {"content": b"{}", "headers": {"Inference-Header-Content-Length": "3"}}, 400,
     "3 exceeds the body's 2 bytes"),
    ("data and binary", "POST", "/v2/models/cosine/infer",
     binary({"inputs": [window_input(data=None) | {"parameters": {"binary_data_size": 8}}]},
            b"\x00" * 8), 400, "both 'data'"),
    ("binary too short for the shape", "POST", "/v2/models/cosine/infer",
     binary({"inputs": [{"name": "window", "datatype": "FP32", "shape": [1, 10],
                         "parameters": {"binary_data_size": 8}}]}, b"\x00" * 8),
     400, "8 bytes of raw contents, shape [1, 10] of FP32 needs 40"),
    ("binary size past the body", "POST", "/v2/models/cosine/infer",
     binary({"inputs": [{"name": "window", "datatype": "FP32", "shape": [1, 10],
                         "parameters": {"binary_data_size": 4000}}]}, b"\x00" * 40),
     400, "4000 bytes claimed, 40 left"),
    ("binary bytes left over", "POST", "/v2/models/cosine/infer",
     binary({"inputs": [window_input()]}, b"\x00" * 40), 400, "belong to no input"),
    ("bytes element runs past", "POST", "/v2/models/imdb/infer",
     binary({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                         "parameters": {"binary_data_size": 8}}]}, b"\xff\xff\xff\x7fabcd"),
     400, "BYTES element 0: 2147483647 bytes claimed"),
    ("huge claimed bytes count", "POST", "/v2/models/imdb/infer",
     binary({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [4],
                         "parameters": {"binary_data_size": 8}}]}, b"\x00" * 8),
     400, "8 bytes cannot hold 4 BYTES elements"),
    ("8 MB of BYTES length prefixes", "POST", "/v2/models/imdb/infer",
     {"content": FLOOD[0], "headers": {"Inference-Header-Content-Length": str(FLOOD[1])}},
     400, "bytes left after 64 BYTES elements"),
    ("huge claimed shape", "POST", "/v2/models/cosine/infer",
     binary({"inputs": [{"name": "window", "datatype": "FP32", "shape": [2**62, 10],
                         "parameters": {"binary_data_size": 40}}]}, b"\x00" * 40),
     413, "rows exceed the cap of 64"),
    ("wrong datatype", "POST", "/v2/models/imdb/infer",
     {"json": {"inputs": [text_input(datatype="FP32", data=[1.0])]}}, 400,
     "FP32 does not match the signature's BYTES [-1]"),
    ("wrong row shape", "POST", "/v2/models/cosine/infer",
     {"json": {"inputs": [window_input(shape=[2, 5])]}}, 400,
     "expected shape FP32 [-1, 10], got [2, 5]"),
    ("unknown input", "POST", "/v2/models/imdb/infer",
     {"json": {"inputs": [text_input(name="texts")]}}, 400, "unknown input 'texts'"),
    ("lone surrogate input name", "POST", "/v2/models/imdb/infer",
     {"content": b'{"inputs": [{"name": "\\ud800", "datatype": "BYTES", "shape": [1], '
                 b'"data": ["a"]}]}'}, 400, "unknown input"),
    ("lone surrogate text", "POST", "/v2/models/imdb/infer",
     {"content": b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], '
                 b'"data": ["\\ud800"]}]}'}, 400, "not valid UTF-8"),
    ("invalid utf-8 bytes", "POST", "/v2/models/imdb/infer",
     binary({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                         "parameters": {"binary_data_size": 6}}]}, serialize_bytes([b"\xc3("])),
     400, "not valid UTF-8"),
    ("blank text", "POST", "/v2/models/imdb/infer", {"json": {"inputs": [text_input(data=[" "])]}},
     400, "must not be empty"),
    ("too many rows", "POST", "/v2/models/imdb/infer",
     {"json": {"inputs": [text_input(shape=[65], data=["a"] * 65)]}}, 413, "65 rows exceed"),
    ("text over the cap", "POST", "/v2/models/translator/infer",
     {"json": {"inputs": [{"name": "sentences", "datatype": "BYTES", "shape": [1],
                           "data": ["a" * 20_001]}]}}, 413, "20001 characters exceed"),
    ("body over the cap", "POST", "/v2/models/imdb/infer", {"content": b"x" * (8 * 1024 * 1024 + 1)},
     413, "exceeds the cap"),
    ("pixels out of range", "POST", "/v2/models/mnist/infer",
     {"json": {"inputs": [{"name": "images", "datatype": "INT32", "shape": [1, 28, 28, 1],
                           "data": [256] * 784}]}}, 400, "values must fit uint8"),
    ("nan", "POST", "/v2/models/cosine/infer",
     {"content": b'{"inputs": [{"name": "window", "datatype": "FP32", "shape": [1, 10], '
                 b'"data": [NaN, 0, 0, 0, 0, 0, 0, 0, 0, 0]}]}'}, 400, "NaN"),
    ("unknown signature", "POST", "/v2/models/cosine/infer",
     {"json": {"inputs": [window_input()], "parameters": {"signature_name": "nope"}}}, 404,
     "no signature 'nope'"),
    ("unknown output", "POST", "/v2/models/cosine/infer",
     {"json": {"inputs": [window_input()], "outputs": [{"name": "x" * 5000}]}}, 400,
     "has no output"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "method", "path", "kwargs", "status", "fragment"), HTTP_ROWS,
    ids=[row[0] for row in HTTP_ROWS],
)  # fmt: skip
def test_malformed_http_request_is_a_4xx(http, case, method, path, kwargs, status, fragment):
    response = http.request(method, path, **kwargs)
    assert_client_error_shape(response.status_code, response.content, case)
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert fragment in error, error
    assert len(error) < 1000, "client strings must be cut in messages"


def infer_request(model: str = "cosine", **fields: t.Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, **fields)
    return request


def with_input(request: pb.ModelInferRequest, name="window", datatype="FP32", shape=(1, 10),
               raw: bytes | None = None) -> pb.ModelInferRequest:  # fmt: skip
    request.inputs.add(name=name, datatype=datatype, shape=list(shape))
    request.raw_input_contents.append(WINDOW.tobytes() if raw is None else raw)
    return request


def with_contents(request: pb.ModelInferRequest, values: list[float]) -> pb.ModelInferRequest:
    tensor = request.inputs.add(name="window", datatype="FP32", shape=[1, 10])
    tensor.contents.fp32_contents.extend(values)
    return request


# (id, request message or raw bytes, expected code, fragment of the details)
GRPC_ROWS = [
    ("corrupt bytes", b"\x0a\xff\xff\xff\xff\x0f", Code.INVALID_ARGUMENT,
     "not a valid ModelInfer request message"),
    ("no model name", with_input(infer_request("")), Code.INVALID_ARGUMENT, "name: required"),
    ("unknown model", with_input(infer_request("nope")), Code.NOT_FOUND, "nope"),
    ("unknown version", with_input(infer_request(model_version="999")), Code.NOT_FOUND,
     "has no version 999"),
    ("unknown label", with_input(infer_request(model_version="stable")), Code.NOT_FOUND,
     "no version label 'stable'"),
    ("shape vs byte count", with_input(infer_request(), raw=b"\x00" * 8), Code.INVALID_ARGUMENT,
     "8 bytes of raw contents, shape [1, 10] of FP32 needs 40"),
    ("huge claimed shape", with_input(infer_request(), shape=(2**62, 10)),
     Code.RESOURCE_EXHAUSTED, "rows exceed the cap of 64"),
    ("huge claimed bytes count", with_input(infer_request("imdb"), "text", "BYTES", (60,),
                                            b"\x00" * 8),
     Code.INVALID_ARGUMENT, "8 bytes cannot hold 60 BYTES elements"),
    ("contents count", with_contents(infer_request(), [0.0] * 9), Code.INVALID_ARGUMENT,
     "fp32_contents has 9 values, shape [1, 10] needs 10"),
    ("no inputs", infer_request(), Code.INVALID_ARGUMENT, "inputs: must not be empty"),
    ("wrong datatype", with_input(infer_request(), datatype="BOOL", raw=b"\x00" * 10),
     Code.INVALID_ARGUMENT, "BOOL does not match the signature's FP32 [-1, 10]"),
    ("unknown datatype", with_input(infer_request(), datatype="x" * 10_000),
     Code.INVALID_ARGUMENT, "is not a V2 datatype"),
    ("invalid utf-8", with_input(infer_request("imdb"), "text", "BYTES", (1,),
                                 serialize_bytes([b"\xff"])),
     Code.INVALID_ARGUMENT, "not valid UTF-8"),
    ("message over the cap", with_input(infer_request(), raw=b"\x00" * (10 << 20)),
     Code.RESOURCE_EXHAUSTED, ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "request_", "code", "fragment"), GRPC_ROWS, ids=[row[0] for row in GRPC_ROWS]
)
def test_malformed_grpc_request_gets_its_status(channel, case, request_, code, fragment):
    payload = request_ if isinstance(request_, bytes) else request_.SerializeToString()
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(INFER)(payload, timeout=30)
    error = caught.value
    assert error.code() not in (Code.UNKNOWN, Code.INTERNAL), (error.code(), error.details())
    assert error.code() == code, error.details()
    assert fragment in (error.details() or ""), error.details()


# ---------------------------------------------------------------- property-based

_NAMES = st.one_of(
    st.sampled_from(["text", "token_ids", "images", "pixels", "window", "sentences",
                     "source_ids", ""]),
    st.text(max_size=8),
)  # fmt: skip
_DATATYPES = st.one_of(st.sampled_from([d.name for d in DATATYPES] + ["BF16"]), st.text(max_size=6))
_DIMS = st.one_of(
    st.integers(-2, 66), st.sampled_from([10, 28, 32, 200, 500, 2**31, 2**62, -(2**63)])
)
_SHAPES = st.lists(_DIMS, max_size=5)


@st.composite
def v2_messages(draw) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(MODELS + ("nope",))),
        model_version=draw(st.sampled_from(["", "1", "2", "x"])),
    )
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 2))):
        tensor = request.inputs.add(
            name=draw(_NAMES), datatype=draw(_DATATYPES), shape=draw(_SHAPES)
        )
        if raw:
            request.raw_input_contents.append(draw(st.binary(max_size=96)))
        else:
            contents = tensor.contents
            contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=12)))
            contents.int_contents.extend(
                draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=12))
            )
            contents.int64_contents.extend(
                draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4))
            )
            contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=12), max_size=4)))
    if draw(st.booleans()):
        request.parameters["signature_name"].string_param = draw(
            st.sampled_from(["serving_default", "forecast", "predict_text", "nope"])
        )
    for name in draw(st.lists(st.sampled_from(["label", "probabilities", "forecast", "x"]),
                              max_size=2)):  # fmt: skip
        request.outputs.add(name=name)
    return request


def test_random_model_infer_requests_are_answered_or_refused(channel):
    call = channel.unary_unary(INFER)

    @FUZZ
    @given(request=v2_messages())
    def fuzz(request: pb.ModelInferRequest) -> None:
        try:
            call(request.SerializeToString(), timeout=30)
        except grpc.RpcError as error:
            assert error.code() in CLIENT_ERRORS, (error.code(), error.details())

    fuzz()


def test_random_bytes_to_every_v2_method_are_a_client_error(channel):
    methods = ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
               "ModelInfer"]  # fmt: skip

    @FUZZ
    @given(method=st.sampled_from(methods), payload=st.binary(max_size=64))
    def fuzz(method: str, payload: bytes) -> None:
        try:
            channel.unary_unary(f"/inference.GRPCInferenceService/{method}")(payload, timeout=30)
        except grpc.RpcError as error:
            assert error.code() in CLIENT_ERRORS, (method, error.code(), error.details())

    fuzz()


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_INPUTS = st.fixed_dictionaries(
    {},
    optional={
        "name": _NAMES, "datatype": _DATATYPES, "shape": st.one_of(_SHAPES, _JSON),
        "data": st.one_of(_JSON, st.lists(st.floats(-2, 300), max_size=12)),
        "parameters": st.one_of(
            st.fixed_dictionaries({"binary_data_size": st.integers(-1, 64)}), _JSON
        ),
    },
)  # fmt: skip
_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=8), _JSON),
        "inputs": st.one_of(st.lists(_INPUTS, max_size=2), _JSON),
        "outputs": st.one_of(st.lists(st.fixed_dictionaries({"name": _NAMES}), max_size=2), _JSON),
        "parameters": st.one_of(
            st.fixed_dictionaries({"signature_name": st.sampled_from(["forecast", "x"]),
                                   "binary_data_output": st.booleans()}), _JSON),
    },
)  # fmt: skip


def test_random_v2_http_requests_are_answered_or_a_4xx(http):
    @FUZZ
    @given(
        name=st.one_of(st.sampled_from(MODELS), st.text(min_size=1, max_size=8)),
        version=st.sampled_from([None, "1", "x", "0"]),
        suffix=st.sampled_from(["/infer", "/ready", ""]),
        body=_BODIES,
        tail=st.one_of(st.none(), st.binary(max_size=64)),
    )
    def fuzz(name: str, version: str | None, suffix: str, body: dict, tail: bytes | None) -> None:
        path = f"/v2/models/{urllib.parse.quote(name, safe='')}"
        path += (f"/versions/{version}" if version else "") + suffix
        head = json.dumps(body, allow_nan=True).encode()
        headers = {} if tail is None else {"Inference-Header-Content-Length": str(len(head))}
        method = "POST" if suffix == "/infer" else "GET"
        content = head + (tail or b"") if method == "POST" else None
        response = http.request(method, path, content=content, headers=headers)
        assert_client_error_shape(response.status_code, response.content, f"{method} {path}")

    fuzz()


# ---------------------------------------------------------------- afterwards


def test_no_traceback_and_no_server_error_from_these_requests(server, http, log_start):
    with server.log.open("rb") as log:
        log.seek(log_start)
        text = log.read().decode("utf-8", "replace")
    assert "Traceback" not in text, text[text.index("Traceback") - 2000 :][:6000]
    errors = [line for line in text.splitlines() if "[ERROR]" in line]
    assert not errors, errors[:10]
    metrics = http.get("/metrics").text
    failed = re.findall(
        r'keras_serving_requests_total\{code="5\d\d",door="v2(?:-grpc)?"[^}]*\} (\S+)', metrics
    )
    assert all(float(count) == 0 for count in failed), failed
    assert http.get("/v2/health/ready").status_code == 200
