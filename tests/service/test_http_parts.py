"""In-process tests of the HTTP middleware (Starlette TestClient) and of cross-worker readiness."""

from __future__ import annotations

import os

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from service.lifecycle import PeerReadiness
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


def test_server_is_ready_only_when_every_worker_is(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVICE_RUNTIME_DIR", str(tmp_path / "run"))
    first, second = PeerReadiness(2, 1, 4242), PeerReadiness(2, 2, 4242)
    assert not first.all_ready()
    first.mark_ready()
    assert not first.all_ready() and not second.all_ready()
    second.mark_ready()
    assert first.all_ready() and second.all_ready()
    # A worker that crashed still counts: the others serve while its replacement warms up
    # without taking traffic (tests/service/test_lifecycle.py has the whole policy).
    (first.directory / "worker-2").write_text("999999999")
    assert first.all_ready()
    assert (first.directory / "worker-1").read_text() == str(os.getpid())
    # Shutting down: the marker goes, and the directory with the last one.
    second.withdraw()
    first.withdraw()
    assert not first.directory.exists()


def test_a_single_worker_needs_no_peers(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVICE_RUNTIME_DIR", str(tmp_path / "run"))
    alone = PeerReadiness(4, None, 4242)  # not started by bentoml serve: no worker index
    assert not alone.all_ready()
    alone.mark_ready()
    assert alone.all_ready()


def test_refusals_are_one_info_line_without_traceback(caplog):
    import logging

    from service.errors import InvalidInput, ModelFailure, Overloaded, log_refusal

    with caplog.at_level(logging.INFO, logger="bentoml.keras_serving.requests"):
        log_refusal(InvalidInput("texts[0]: must not be empty"), "rest", "/imdb/sentiment")
        log_refusal(Overloaded("imdb/predict_text: full"), "grpc", "Predict")  # counted, not logged
        log_refusal(ModelFailure("boom"), "grpc", "Predict")  # the batcher logged it already
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records] == [
        ("INFO", "rest /imdb/sentiment: 400 texts[0]: must not be empty", None)
    ]
