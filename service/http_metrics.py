"""BentoML's HTTP request series, labelled from a closed set: the route, never the raw path.

BentoML 1.4's own metrics middleware (``RunnerTrafficMetricsMiddleware``, the outermost of
its stack) labels every series with ``scope["path"]``: 300 GETs to distinct 60 KB paths
grew ``/metrics`` (and the multiprocess files under ``$BENTOML_HOME``) to 361 MB. The
service turns that middleware off (``metrics: {enabled: false}``, which also drops
BentoML's ``/metrics`` route) and records the same series itself, under the same names:

* ``bentoml_service_request_total{endpoint, service_name, service_version,
  http_response_code, runner_name}`` and ``bentoml_service_request_duration_seconds`` (same
  labels, Prometheus' default buckets), ``bentoml_service_request_in_progress``;
* ``endpoint`` is the template of the route that answered (Starlette puts it in
  ``scope["route"]``, e.g. ``/v1/models/{name}/versions/{version}``), else the path when it
  is one of a fixed set (e.g. a 413 before routing), else ``unmatched``.

:func:`metrics_view` serves ``/metrics`` as BentoML did (the sum over every worker).

Typical usage::

    ModelServer.add_asgi_middleware(RouteMetrics, known_paths={"/imdb/sentiment", "/livez"})
    Route("/metrics", metrics_view, methods=["GET"])
"""

from __future__ import annotations

import asyncio
import time
import typing as t
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram
from starlette.requests import Request
from starlette.responses import Response

from service.metrics import TALLY
from service.middleware import ASGIApp, Message, Receive, Scope, Send

# BentoML's namespace for the entry service's HTTP series: dashboards keep working.
NAMESPACE = "bentoml_service"
UNMATCHED = "unmatched"
METRICS_PATH = "/metrics"
_LABELS = ["endpoint", "service_name", "service_version", "http_response_code", "runner_name"]

REQUESTS = Counter(
    f"{NAMESPACE}_request_total",
    "HTTP requests, by route template (or 'unmatched') and status.",
    _LABELS,
)
DURATION = Histogram(
    f"{NAMESPACE}_request_duration_seconds",
    "HTTP request duration in seconds, by route template (or 'unmatched') and status.",
    _LABELS,
)
IN_PROGRESS = Gauge(
    f"{NAMESPACE}_request_in_progress",
    "HTTP requests being answered now.",
    ["service_name", "service_version", "runner_name"],
    multiprocess_mode="livesum",
)


def endpoint_label(scope: Scope, known_paths: t.Container[str]) -> str:
    """The ``endpoint`` label of a request once answered: its route's template, a known
    plain path, or ``unmatched``: a closed set whatever the client sends."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if isinstance(template, str) and template:
        return template
    path = scope.get("path", "")
    return path if path in known_paths else UNMATCHED


class RouteMetrics:
    """Counts and times every HTTP request under a bounded ``endpoint`` label.

    Args:
        app: the rest of the stack.
        known_paths: plain paths that may label a request no route matched (yet), e.g. one
            refused before routing (413, shutting down).
        service_name: the ``service_name``/``runner_name`` label (BentoML's service name).
    """

    def __init__(
        self, app: ASGIApp, known_paths: Iterable[str] = (), service_name: str = ""
    ) -> None:
        self.app = app
        self.known_paths = frozenset(known_paths)
        self.service_name = service_name

    def _service_labels(self) -> tuple[str, str, str]:
        from bentoml._internal.context import server_context

        return (
            server_context.bento_name or "",
            server_context.bento_version or "",
            self.service_name or server_context.service_name or "",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") == METRICS_PATH:
            return await self.app(scope, receive, send)
        name, version, runner = labels = self._service_labels()
        started = time.perf_counter()
        status = 500  # what the client gets if the stack raises before answering

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # The counter and the gauge go through the per-turn tally (service.metrics.Tally):
        # one mmap write per series per loop turn instead of three per request.
        TALLY.add(IN_PROGRESS, labels)
        try:
            await self.app(scope, receive, observed)
        finally:
            TALLY.add(IN_PROGRESS, labels, -1)
            series = (endpoint_label(scope, self.known_paths), name, version, str(status), runner)
            TALLY.add(REQUESTS, series)
            DURATION.labels(*series).observe(time.perf_counter() - started)


async def metrics_view(request: Request) -> Response:
    """``GET /metrics``: every worker's series (prometheus_client's multiprocess mode, as
    BentoML's own route)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    client = BentoMLContainer.metrics_client.get()
    content = await asyncio.to_thread(client.generate_latest)
    return Response(content, media_type=client.CONTENT_TYPE_LATEST)
