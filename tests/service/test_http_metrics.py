"""HTTP request series are labelled by route template or ``unmatched``, never the raw path."""

from __future__ import annotations

from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from service.http_metrics import UNMATCHED, RouteMetrics, endpoint_label
from service.middleware import BodyLimitMiddleware


async def model_status(request):
    return JSONResponse({"name": request.path_params["name"]})


async def echo(request):
    return PlainTextResponse(str(len(await request.body())))


def endpoints() -> dict[str, float]:
    """``bentoml_service_request_total`` by endpoint label, in this process."""
    counts: dict[str, float] = {}
    for metric in REGISTRY.collect():
        if metric.name == "bentoml_service_request":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    key = sample.labels["endpoint"]
                    counts[key] = counts.get(key, 0) + sample.value
    return counts


def test_labels_are_route_templates_or_unmatched():
    app = Starlette(
        routes=[
            Route("/v1/models/{name}", model_status, methods=["GET"]),
            Route("/echo", echo, methods=["POST"]),
        ]
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=10)
    app.add_middleware(RouteMetrics, known_paths={"/echo"})
    client = TestClient(app)
    before = endpoints()
    for i in range(300):
        assert client.get(f"/x{i}" + "a" * 2000).status_code == 404
        assert client.get(f"/v1/models/m{i}").status_code == 200
    assert client.get("/echo").status_code == 405  # a partial match: still its template
    assert client.post("/echo", content=b"x" * 11).status_code == 413  # refused before routing
    after = endpoints()
    grown = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert grown == {UNMATCHED: 300, "/v1/models/{name}": 300, "/echo": 2}


def test_endpoint_label_is_a_closed_set():
    route = Route("/v1/models/{name}", model_status)
    assert endpoint_label({"route": route, "path": "/v1/models/zzz"}, ()) == "/v1/models/{name}"
    assert endpoint_label({"path": "/livez"}, {"/livez"}) == "/livez"
    assert endpoint_label({"path": "/x" * 10_000}, {"/livez"}) == UNMATCHED
