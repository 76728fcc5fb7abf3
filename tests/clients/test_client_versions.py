"""Model versions and labels (issue 9) without a server: what each transport puts on the
wire for `version=` / `label=`, refusing both, and status with several versions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np
import pytest

from clients import grpc as grpc_client
from clients import http as http_client
from clients._rest import HttpRequest, RestProtocol
from clients._tfs import Rpc, TFServingProtocol
from clients.types import ModelStatus, VersionStatus

WINDOW = [0.0] * 10
# Every method that addresses a model, with its arguments before version and label, as
# the protocols take them (the clients' keyword arguments map to these one to one).
FRIENDLY = [
    ("classify_topic", (["oil"], 2), "/reuters/classify", "reuters"),
    ("sentiment", (["fine"],), "/imdb/sentiment", "imdb"),
    ("classify_image", (np.zeros((1, 28, 28), np.uint8), "mnist", 1), "/mnist/classify", "mnist"),
    ("forecast", (WINDOW, 1), "/cosine/forecast", "cosine"),
    ("translate", (["the cat"],), "/translate", "translator"),
]
GENERIC = [
    ("predict", ("cosine", {"window": np.zeros((1, 10), np.float32)}, "forecast")),
    ("metadata", ("cosine",)),
    ("status", ("cosine",)),
]
# (keyword arguments, what they select) for the three ways to address a model.
SELECTORS = [({}, {}), ({"version": 3}, {"version": 3}), ({"label": "canary"}, {"label": "canary"})]
SELECTOR_IDS = ["latest", "version", "label"]


def first_request(protocol: Any, method: str, args: tuple, version=None, label=None) -> Any:
    """The first request an operation would send (no I/O)."""
    return next(getattr(protocol, method)(*args, version, label))


# ---- HTTP -----------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "fields"), SELECTORS, ids=SELECTOR_IDS)
@pytest.mark.parametrize(("method", "args", "path", "_"), FRIENDLY, ids=[r[0] for r in FRIENDLY])
def test_friendly_bodies_carry_version_or_label(method, args, path, _, kwargs, fields) -> None:
    request = first_request(RestProtocol(), method, args, **kwargs)
    body = json.loads(request.content)
    assert (request.method, request.path) == ("POST", path)
    assert {k: body[k] for k in ("version", "label") if k in body} == fields


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "expected"),
    [
        ("predict", GENERIC[0][1], {}, ("POST", "/v1/models/cosine:predict")),
        ("predict", GENERIC[0][1], {"version": 3}, ("POST", "/v1/models/cosine/versions/3:predict")),
        ("predict", GENERIC[0][1], {"label": "canary"}, ("POST", "/v1/models/cosine/labels/canary:predict")),
        ("metadata", ("cosine",), {}, ("GET", "/v1/models/cosine/metadata")),
        ("metadata", ("cosine",), {"version": 3}, ("GET", "/v1/models/cosine/versions/3/metadata")),
        ("metadata", ("cosine",), {"label": "canary"}, ("GET", "/v1/models/cosine/labels/canary/metadata")),
        ("status", ("cosine",), {}, ("GET", "/v1/models/cosine")),
        ("status", ("cosine",), {"version": 3}, ("GET", "/v1/models/cosine/versions/3")),
        ("status", ("cosine",), {"label": "canary"}, ("GET", "/v1/models/cosine/labels/canary")),
        ("status", ("cosine",), {"label": "a b/c"}, ("GET", "/v1/models/cosine/labels/a%20b%2Fc")),
    ],
)  # fmt: skip
def test_tf_serving_rest_paths(method, args, kwargs, expected) -> None:
    request = first_request(RestProtocol(), method, args, **kwargs)
    assert isinstance(request, HttpRequest) and (request.method, request.path) == expected


def test_predict_signature_lookup_uses_the_same_label() -> None:
    # Outputs are cast to the signature's dtypes, read from the metadata of the same label.
    op = RestProtocol().predict(*GENERIC[0][1], None, "canary")
    next(op)
    metadata = op.send({"outputs": [[0.5]]})
    assert metadata.path == "/v1/models/cosine/labels/canary/metadata"


# ---- gRPC -----------------------------------------------------------------------------


def _spec_fields(spec) -> dict:
    fields = {}
    if spec.HasField("version"):
        fields["version"] = spec.version.value
    if spec.version_label:
        fields["label"] = spec.version_label
    return fields


@pytest.mark.parametrize(("kwargs", "fields"), SELECTORS, ids=SELECTOR_IDS)
@pytest.mark.parametrize(("method", "args", "_", "model"), FRIENDLY, ids=[r[0] for r in FRIENDLY])
def test_predict_model_spec_carries_version_or_label(
    method, args, _, model, kwargs, fields
) -> None:
    rpc = first_request(TFServingProtocol(), method, args, **kwargs)
    assert (rpc.method, rpc.request.model_spec.name) == ("Predict", model)
    assert _spec_fields(rpc.request.model_spec) == fields


@pytest.mark.parametrize(("kwargs", "fields"), SELECTORS, ids=SELECTOR_IDS)
@pytest.mark.parametrize(
    ("method", "args", "rpc_name"),
    [(*GENERIC[0], "Predict"), (*GENERIC[1], "GetModelMetadata"), (*GENERIC[2], "GetModelStatus")],
    ids=["predict", "metadata", "status"],
)
def test_generic_model_spec_carries_version_or_label(
    method, args, rpc_name, kwargs, fields
) -> None:
    rpc = first_request(TFServingProtocol(), method, args, **kwargs)
    assert isinstance(rpc, Rpc) and rpc.method == rpc_name
    assert _spec_fields(rpc.request.model_spec) == fields


def test_label_names_are_looked_up_for_the_version_that_answered(fake_tfs) -> None:
    servicer, target = fake_tfs
    with grpc_client.Client(target, retry=1) as client:
        [by_label] = client.classify_topic(["oil"], label="canary")
        [by_version] = client.classify_topic(["oil"], version=2)
        [latest] = client.classify_topic(["oil"])
    assert by_label.model.version == by_version.model.version == 2 and latest.model.version == 1
    assert by_label.label is not None
    lookups = [r for name, r in servicer.calls if name == "GetModelMetadata"]
    # canary answered as version 2: its names serve version=2 too; version 1 asks again.
    assert [_spec_fields(r.model_spec) for r in lookups] == [{"version": 2}, {"version": 1}]


# ---- both transports ------------------------------------------------------------------


def _refuse(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"sent {request.url}")


def _clients(target: str) -> dict[str, Any]:
    return {
        "http": http_client.Client(transport=httpx.MockTransport(_refuse), retry=1),
        "http-async": http_client.AsyncClient(transport=httpx.MockTransport(_refuse), retry=1),
        "grpc": grpc_client.Client(target, retry=1),
        "grpc-async": grpc_client.AsyncClient(target, retry=1),
    }


CLIENT_CALLS = [
    ("classify_topic", (["oil"],)),
    ("sentiment", (["fine"],)),
    ("classify_image", (np.zeros((1, 28, 28), np.uint8), "mnist")),
    ("forecast", (WINDOW,)),
    ("translate", (["the cat"],)),
    *GENERIC,
]


@pytest.mark.parametrize("kind", ["http", "http-async", "grpc", "grpc-async"])
def test_version_and_label_together_raise_before_sending(fake_tfs, kind) -> None:
    servicer, target = fake_tfs
    client = _clients(target)[kind]

    async def call_async(method: str, args: tuple) -> None:
        await getattr(client, method)(*args, version=2, label="stable")

    for method, args in CLIENT_CALLS:
        with pytest.raises(ValueError, match="not both"):
            if kind.endswith("async"):
                asyncio.run(call_async(method, args))
            else:
                getattr(client, method)(*args, version=2, label="stable")
    assert servicer.calls == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"version": 0}, "version must be a positive integer"), ({"label": ""}, "label must be")],
)
def test_bad_version_or_label_is_invalid_input(kwargs, message) -> None:
    for protocol in (RestProtocol(), TFServingProtocol()):
        with pytest.raises(ValueError, match=message):
            first_request(protocol, "sentiment", (["x"],), **kwargs)


# Several versions in TF Serving's order-free answer: one serving, one loading, one
# that failed to load, one unloaded.
SEVERAL = [
    (3, "LOADING", 0, ""),
    (1, "END", 0, ""),
    (4, "END", 3, "truncated saved_model.pb"),
    (2, "AVAILABLE", 0, ""),
]
EXPECTED_STATUS = ModelStatus(
    "imdb",
    (
        VersionStatus(1, "END", "OK", ""),
        VersionStatus(2, "AVAILABLE", "OK", ""),
        VersionStatus(3, "LOADING", "OK", ""),
        VersionStatus(4, "END", "INVALID_ARGUMENT", "truncated saved_model.pb"),
    ),
)


def test_grpc_status_lists_every_version(fake_tfs) -> None:
    servicer, target = fake_tfs
    servicer.versions = SEVERAL
    with grpc_client.Client(target, retry=1) as client:
        status = client.status("imdb")
    assert status == EXPECTED_STATUS and status.available


def test_http_status_lists_every_version() -> None:
    codes = {0: "OK", 3: "INVALID_ARGUMENT"}
    payload = {
        "model_version_status": [
            {
                "version": str(version),
                "state": state,
                "status": {"error_code": codes[code], "error_message": message},
            }
            for version, state, code, message in SEVERAL
        ]
    }

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models/imdb"
        return httpx.Response(200, json=payload)

    with http_client.Client(transport=httpx.MockTransport(answer), retry=1) as client:
        status = client.status("imdb")
    assert status == EXPECTED_STATUS and status.available
