"""Hostile input against the real session server (issue 15): every probe is one row, with
the status it must get and a fragment of its message; none is a 5xx, none leaves a traceback.
"""

from __future__ import annotations

import base64
import functools
import io
import re

import httpx
import pytest
from PIL import Image

pytestmark = pytest.mark.integration

LONG = "x" * 1_000_000  # a client string far past what any message should echo
LONG_PATH = "y" * 50_000  # as long as a request line may be
CLIPPED = "x" * 199 + "…"  # what an echo of LONG looks like


@functools.cache
def big_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4096, 4096)).save(buffer, format="PNG")
    return buffer.getvalue()


def big_pngs(count: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{i}.png", big_png(), "image/png")) for i in range(count)]

# (case, method, path, request kwargs for httpx, expected status, fragment of "error")
PROBES = [
    # ---- versions: ASCII digits only ("²".isdigit() is True, int("²") raises: was a 500)
    ("version superscript", "GET", "/v1/models/imdb/versions/%C2%B2", {}, 400,
     "version: '²' is not a version number"),
    ("version arabic-indic", "GET", "/v1/models/imdb/versions/%D9%A1", {}, 400,
     "version: '١' is not a version number"),
    ("version superscript metadata", "GET", "/v1/models/imdb/versions/%C2%B2/metadata", {}, 400,
     "version: '²' is not a version number"),
    ("version arabic-indic predict", "POST", "/v1/models/cosine/versions/%D9%A1:predict",
     {"json": {"instances": [[0.0] * 10]}}, 400, "version: '١' is not a version number"),
    ("version of twenty digits", "GET", "/v1/models/imdb/versions/" + "1" * 20, {}, 400,
     "is not a version number"),
    ("version unknown", "GET", "/v1/models/imdb/versions/999", {}, 404,
     "model 'imdb' has no version 999"),
    ("friendly version arabic-indic in a form", "POST", "/mnist/classify",
     {"data": {"version": "١"}, "files": {"images": ("a.png", b"\x89PNG", "image/png")}}, 400,
     "version: '١' is not a version number"),
    ("friendly version underscore in a form", "POST", "/mnist/classify",
     {"data": {"version": "3_0"}, "files": {"images": ("a.png", b"\x89PNG", "image/png")}}, 400,
     "version: '3_0' is not a version number"),
    # ---- echoed client strings are cut to 200 characters (a 5 MB label made a 5 MB body)
    ("long model name", "GET", "/v1/models/" + LONG_PATH, {}, 404, "model 'yyyy"),
    ("long label", "GET", "/v1/models/imdb/labels/" + LONG_PATH, {}, 404,
     "has no version label 'yyy"),
    ("long unknown route", "GET", "/" + LONG_PATH, {}, 404, "Not Found: GET /yyy"),
    ("long unknown TF Serving route", "POST", "/v1/" + LONG_PATH, {}, 404,
     "no such TF Serving endpoint"),
    ("long signature name", "POST", "/v1/models/imdb:predict",
     {"json": {"signature_name": LONG, "instances": [[1] * 500]}}, 404,
     f"has no signature '{CLIPPED}'"),
    ("long unknown field", "POST", "/v1/models/imdb:predict",
     {"json": {LONG: 1, "instances": [[1] * 500]}}, 400, f"{CLIPPED}: unknown field"),
    ("long input name", "POST", "/v1/models/cosine:predict",
     {"json": {"inputs": {LONG: [[0.0] * 10]}}}, 400, f"inputs.{CLIPPED}: unknown input"),
    ("long friendly label", "POST", "/imdb/sentiment", {"json": {"texts": ["a"], "label": LONG}},
     404, f"has no version label '{CLIPPED}'"),
    ("long friendly field", "POST", "/imdb/sentiment", {"json": {"texts": ["a"], LONG: 1}},
     400, f"{CLIPPED}: unknown field"),
    # ---- nested JSON: shape checked before numpy converts it
    ("ragged instances", "POST", "/v1/models/cosine:predict",
     {"json": {"instances": [[0.0] * 10, [0.0] * 9]}}, 400, "instances: nested lists must be "
     "rectangular"),
    ("100k rows", "POST", "/v1/models/cosine:predict", {"json": {"instances": [[0] * 10] * 100_000}},
     413, "instances: 100000 rows exceed the cap of 64"),
    ("deep instances", "POST", "/v1/models/cosine:predict",
     {"content": b'{"instances": ' + b"[" * 500 + b"1" + b"]" * 500 + b"}"}, 400,
     "instances: nested deeper than 32 levels"),
    # ---- images: a pixel budget per request, from the headers, before any decoding
    ("64 PNGs of 4096x4096 (took 11.6 s on the event loop)", "POST", "/cifar/classify",
     {"files": big_pngs(64)}, 413,
     "images[4]: the images up to this one hold 83886080 pixels, over the cap of 67108864"),
    ("64 PNGs of 4096x4096 as base64", "POST", "/mnist/classify",
     {"json": {"images": [{"b64": base64.b64encode(big_png()).decode()}] * 64}},
     413, "(SERVICE_MAX_PIXELS)"),
]  # fmt: skip


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def log_start(server) -> int:
    return server.log.stat().st_size


@pytest.mark.parametrize(
    "case, method, path, kwargs, status, fragment", PROBES, ids=[p[0] for p in PROBES]
)
def test_hostile_request_gets_its_status(
    http, log_start, case, method, path, kwargs, status, fragment
):
    response = http.request(method, path, **kwargs)
    assert response.status_code == status, response.text[:2000]
    body = response.json()
    assert set(body) == {"error"}, body
    assert fragment in body["error"], body["error"][:2000]
    assert len(response.content) < 2_000, "the answer echoes too much of the request"


# gRPC: (case, method, request, code, fragment of the details)
def _grpc_probes():
    from tfserving_api._proto.tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        predict_pb2,
    )
    from tfserving_api.tensors import to_tensor_proto

    window = to_tensor_proto([[0.0] * 10], "float32")
    predict = predict_pb2.PredictRequest
    return [
        ("long model name", "Predict", predict(model_spec={"name": LONG}), "NOT_FOUND",
         f"model '{CLIPPED}' is not served"),
        ("long label", "Predict",
         predict(model_spec={"name": "cosine", "version_label": LONG}, inputs={"window": window}),
         "NOT_FOUND", f"no version label '{CLIPPED}'"),
        ("long signature", "Predict",
         predict(model_spec={"name": "cosine", "signature_name": LONG}, inputs={"window": window}),
         "NOT_FOUND", f"no signature '{CLIPPED}'"),
        ("long input name", "Predict",
         predict(model_spec={"name": "cosine"}, inputs={LONG: window}), "INVALID_ARGUMENT",
         f"inputs['{CLIPPED}']: unknown input"),
        ("long output filter", "Predict",
         predict(model_spec={"name": "cosine"}, inputs={"window": window}, output_filter=[LONG]),
         "INVALID_ARGUMENT", f"no output '{CLIPPED}'"),
        ("long metadata field", "GetModelMetadata",
         get_model_metadata_pb2.GetModelMetadataRequest(
             model_spec={"name": "cosine"}, metadata_field=[LONG]),
         "INVALID_ARGUMENT", f"metadata_field: '{CLIPPED}' is not supported"),
        ("long status model", "GetModelStatus",
         get_model_status_pb2.GetModelStatusRequest(model_spec={"name": LONG}), "NOT_FOUND",
         f"model '{CLIPPED}' is not served"),
    ]  # fmt: skip


GRPC_PROBES = _grpc_probes()
GRPC_PATHS = {
    "Predict": "/tensorflow.serving.PredictionService/Predict",
    "GetModelMetadata": "/tensorflow.serving.PredictionService/GetModelMetadata",
    "GetModelStatus": "/tensorflow.serving.ModelService/GetModelStatus",
}


@pytest.fixture(scope="module")
def channel(server, log_start):
    import grpc

    with grpc.insecure_channel(
        f"127.0.0.1:{server.grpc_port}", options=[("grpc.max_send_message_length", 16 << 20)]
    ) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield channel


@pytest.mark.parametrize(
    "method, request_, code, fragment", [p[1:] for p in GRPC_PROBES], ids=[p[0] for p in GRPC_PROBES]
)
def test_hostile_rpc_gets_its_status_and_a_short_message(channel, method, request_, code, fragment):
    import grpc

    call = channel.unary_unary(GRPC_PATHS[method])
    with pytest.raises(grpc.RpcError) as caught:
        call(request_.SerializeToString(), timeout=30)
    assert caught.value.code().name == code, caught.value.details()[:2000]
    details = caught.value.details()
    assert fragment in details and len(details) < 2_000, details[:2000]


def test_no_traceback_and_no_500_from_these_probes(http, server, log_start):
    with server.log.open("rb") as log:
        log.seek(log_start)
        text = log.read().decode("utf-8", "replace")
    assert "Traceback" not in text, text[-4000:]
    # Echoes are clipped in the log too: no line carries a client's megabyte.
    longest = max((len(line) for line in text.splitlines()), default=0)
    assert longest < 3_000, longest
    metrics = http.get("/metrics").text
    assert not [
        line for line in metrics.splitlines()
        if re.search(r'code="500"', line) and float(line.split()[-1]) > 0
    ]  # fmt: skip
