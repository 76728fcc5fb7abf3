"""In-process tests of the gateway's parts: middleware (Starlette TestClient), model client."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest
from bentoml.exceptions import BentoMLException
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from service.catalog import ModelInfo, SignatureSpec, TensorSpec
from service.dispatch import ModelClient
from service.errors import InvalidInput, ModelFailure, ModelNotFound, NotReady
from service.middleware import BodyLimitMiddleware, ErrorShapeMiddleware


async def bentoml_style_4xx(request):
    # What BentoML 1.4 answers for a 4xx BentoMLException: the body wrapped in a list.
    return JSONResponse([{"error": "texts: must not be empty"}], status_code=400)


async def echo(request):
    return PlainTextResponse(str(len(await request.body())))


@pytest.fixture
def client():
    app = Starlette(
        routes=[
            Route("/bad", bentoml_style_4xx, methods=["POST"]),
            Route("/echo", echo, methods=["POST"]),
        ]
    )
    app.add_middleware(ErrorShapeMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=10)
    return TestClient(app)


def test_error_bodies_are_one_shape(client):
    assert client.post("/bad").json() == {"error": "texts: must not be empty"}
    missing = client.post("/nowhere")
    assert (missing.status_code, missing.json()) == (404, {"error": "Not Found: POST /nowhere"})
    assert client.get("/echo").json() == {"error": "Method Not Allowed: GET /echo"}


def test_body_cap_applies_to_declared_and_streamed_bodies(client):
    assert client.post("/echo", content=b"x" * 10).text == "10"
    too_big = client.post("/echo", content=b"x" * 11)
    assert too_big.status_code == 413 and "exceeds the cap of 10 bytes" in too_big.json()["error"]
    streamed = client.post("/echo", content=iter([b"x" * 6, b"x" * 6]))
    assert streamed.status_code == 413


SPEC = TensorSpec("window", "float32", (None, 2))
INFO = ModelInfo(
    name="toy",
    version=1,
    variant="v",
    tag="toy:1",
    labels=(),
    signatures={
        "serving_default": SignatureSpec("serving_default", {"window": SPEC}, {"forecast": SPEC}),
        "forecast": SignatureSpec("forecast", {"window": SPEC}, {"forecast": SPEC}),
    },
)


class FakeAsync:
    """Stands in for BentoML's ``RemoteProxy.to_async``: fails as scripted, then answers."""

    def __init__(self, failures: list[BaseException]):
        self.failures = failures
        self.calls = 0

    async def predict(self, inputs: np.ndarray):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return [{"outputs": {"forecast": float(row.sum())}, "started": 0.0} for row in inputs]

    predict_raw = predict


class FakeRunner:
    def __init__(self, failures: list[BaseException]):
        self.to_async = FakeAsync(failures)


def run(client: ModelClient, signature: str = "serving_default"):
    return asyncio.run(client.run(signature, np.ones((2, 2), np.float32)))


def test_connection_failures_are_retried():
    runner = FakeRunner([aiohttp.ServerDisconnectedError(), RuntimeError("Session is closed")])
    assert run(ModelClient(INFO, runner)) == [{"forecast": 2.0}, {"forecast": 2.0}]
    assert runner.to_async.calls == 3


@pytest.mark.parametrize(
    "failures, error",
    [
        ([aiohttp.ClientConnectionError()] * 3, NotReady),
        ([BentoMLException("busy", error_code=503)], NotReady),
        ([BentoMLException("boom", error_code=500)], ModelFailure),
        ([InvalidInput("x: bad")], InvalidInput),
    ],
)
def test_runner_failures_map_to_serving_errors(failures, error):
    with pytest.raises(error):
        run(ModelClient(INFO, FakeRunner(list(failures))))


def test_unknown_signature_and_failed_rows():
    with pytest.raises(ModelNotFound, match="no signature 'nope'"):
        run(ModelClient(INFO, FakeRunner([])), "nope")

    class FailingRow(FakeAsync):
        async def predict(self, inputs):
            return [{"__error__": "boom"}, {"outputs": {}, "started": 0.0}]

    runner = FakeRunner([])
    runner.to_async = FailingRow([])
    with pytest.raises(ModelFailure, match="failed on this input"):
        run(ModelClient(INFO, runner))
