"""In-process tests of the HTTP middleware (Starlette TestClient) and of cross-worker readiness."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import types

import pytest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from service import http_router
from service.config import ServingSettings
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


# ------------------------------------------- our middleware around BentoML's (issue 17)


class Tagged:
    """A pass-through middleware that remembers its tag (which chain, built for where)."""

    def __init__(self, app, tag):
        self.app, self.tag = app, tag

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def probe_services():
    import bentoml

    @bentoml.service(name="outer_probe")
    class Probe:
        @bentoml.api
        def hello(self, name: str) -> str:
            return name

    @bentoml.service(name="other_probe")
    class Other:
        @bentoml.api
        def hello(self, name: str) -> str:
            return name

    return Probe, Other


def test_our_middleware_goes_around_bentomls_stack_unless_it_is_needed(probe_services):
    from starlette.applications import Starlette

    probe, other = probe_services
    keep = [False]

    def chain(outside):
        return [(Tagged, {"tag": ("first", outside)}), (Tagged, {"tag": ("second", outside)})]

    http_router.outside_bentoml(probe, chain, lambda: keep[0])
    app = probe.to_asgi()
    # Outermost first, then BentoML's whole app (with its own middleware) inside.
    assert isinstance(app, Tagged) and app.tag == ("first", True)
    assert isinstance(app.app, Tagged) and app.app.tag == ("second", True)
    assert isinstance(app.app.app, Starlette)
    assert "Tagged" not in [m.cls.__name__ for m in app.app.app.user_middleware]
    assert isinstance(other.to_asgi(), Starlette)  # another service is left as it was

    keep[0] = True  # tracing, the access log or CORS: inside BentoML's stack, as before
    inside = probe.to_asgi()
    assert isinstance(inside, Starlette)
    names = [m.cls.__name__ for m in inside.user_middleware]
    assert names.index("TimeoutMiddleware") < names.index("Tagged")
    assert [m.kwargs["tag"] for m in inside.user_middleware if m.cls is Tagged] == [
        ("first", False),
        ("second", False),
    ]


class EchoBody(BaseModel):
    text: str

    @classmethod
    async def from_http_request(cls, request, _):
        return cls.model_validate_json(await request.body())


def _fast_routes(monkeypatch, delay_s):
    """FastRoutes as outside BentoML's stack (``own_timeout``), SERVICE_TIMEOUT_S=1, with
    one friendly endpoint that answers after ``delay_s``."""
    monkeypatch.setattr(http_router, "_service", lambda: None)

    async def func(service, text):
        await asyncio.sleep(delay_s)
        return JSONResponse({"echo": text})

    api = types.SimpleNamespace(route="/echo", input_spec=EchoBody, func=func)
    settings = dataclasses.replace(ServingSettings.from_env(), timeout_s=1)

    async def bentoml_app(scope, receive, send):
        await PlainTextResponse("bentoml")(scope, receive, send)

    routes = http_router.FastRoutes(bentoml_app, settings, {"echo": api}, own_timeout=True)
    return TestClient(routes)


def test_outside_bentomls_stack_the_hot_routes_keep_its_timeout(monkeypatch):
    slow = _fast_routes(monkeypatch, delay_s=3)
    answer = slow.post("/echo", content=b'{"text": "hi"}')
    assert answer.status_code == 504
    assert answer.json() == {"error": "Not able to process the request in 1 seconds"}
    fast = _fast_routes(monkeypatch, delay_s=0)
    assert fast.post("/echo", content=b'{"text": "hi"}').json() == {"echo": "hi"}
    assert fast.get("/elsewhere").text == "bentoml"  # everything else: BentoML's app
