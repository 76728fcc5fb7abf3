"""The HTTP doors, served without BentoML's per-request machinery.

BentoML still declares the service: the friendly endpoints are typed ``@bentoml.api``
methods (documented at ``/docs``, callable with BentoML's own clients), and ``bentoml
serve`` runs the workers. But its per-request path (``@bentoml.api`` dispatch, request
context, tracing and access-log middleware) costs more CPU than our models on a small
machine (measured in ``service/ARCHITECTURE.md``). This ASGI middleware, installed as the
service's outermost middleware, answers the hot routes itself:

* every ``@bentoml.api`` route: the body is parsed by the method's own ``input_spec``
  (:class:`service.schemas.RequestModel`, JSON or multipart) and the *same* bound method is
  called, so both paths share one implementation;
* TensorFlow Serving's REST routes (:mod:`service.tfserving_rest`), the Open Inference
  Protocol's (:mod:`service.v2_rest`), the ``/docs`` page and ``/metrics`` (BentoML's is
  off with its path-labelled metrics, :mod:`service.http_metrics`).

Everything else (``/readyz``, ``/livez``, ``/docs.json``, unknown routes) falls through to
BentoML's app. On both paths every error body is ``{"error": "..."}``
and bodies over ``SERVICE_MAX_BODY_BYTES`` are 413 before any parsing.

Typical usage::

    Service.add_asgi_middleware(FastRoutes, settings=settings)
"""

from __future__ import annotations

import logging
import time
import typing as t
from pathlib import Path

import bentoml
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route, Router

from service import tfserving_rest, v2_rest
from service.client_text import clip
from service.config import ServingSettings
from service.errors import (
    ServingError,
    error_response,
    internal_error_response,
    log_refusal,
)
from service.http_metrics import METRICS_PATH, metrics_view
from service.middleware import (
    ASGIApp,
    BodyLimitMiddleware,
    ErrorShapeMiddleware,
    Receive,
    Scope,
    Send,
    http_exception_json,
)
from service.served_model import request_deadline

logger = logging.getLogger("bentoml.keras_serving.http")

# BentoML's own routes that label metrics by their path (service.http_metrics).
PROBE_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/docs", "/docs.json", METRICS_PATH})


# Resolved once: ``bentoml.get_current_service`` goes through the package's lazy
# ``__getattr__`` (an ``import_module``) on every attribute access.
_service: t.Callable[[], t.Any] = bentoml.get_current_service


def api_route(name: str, api: t.Any) -> Route:
    """A route calling the function of the service's ``@bentoml.api`` method ``name`` (an
    ``APIMethod``: ``route``, ``input_spec``, ``func``) directly, in this process."""
    input_spec: type[BaseModel] = api.input_spec
    fields = tuple(input_spec.model_fields)
    func = api.func

    async def endpoint(request: Request) -> Response:
        try:
            data = await input_spec.from_http_request(request, None)  # type: ignore[attr-defined]
        except ServingError as exc:
            log_refusal(exc, "rest", api.route)
            return error_response(exc)
        try:
            result = await func(_service(), **{key: getattr(data, key) for key in fields})
        except Exception:  # a server fault, never the client's: log it once, answer 500
            logger.exception("POST %s failed", api.route)
            return internal_error_response()
        if isinstance(result, Response):
            return result
        return Response(result.model_dump_json(), media_type="application/json")

    return Route(api.route, endpoint, methods=["POST"], name=name)


async def docs_page(request: Request) -> FileResponse:
    """Swagger UI at ``/docs`` (BentoML serves it at ``/``; the spec is ``/docs.json``)."""
    import _bentoml_impl.server

    return FileResponse(Path(_bentoml_impl.server.__file__).parent / "main-openapi.html")


class FastRoutes:
    """Routes the hot paths to our handlers and everything else to BentoML's app."""

    def __init__(
        self, app: ASGIApp, settings: ServingSettings, apis: t.Mapping[str, t.Any]
    ) -> None:
        friendly = [api_route(name, api) for name, api in apis.items()]
        routes = [*friendly, *tfserving_rest.routes, *v2_rest.routes]
        routes.append(Route("/docs", docs_page, methods=["GET"]))
        # BentoML's /metrics is off with its metrics middleware (service.http_metrics).
        routes.append(Route(METRICS_PATH, metrics_view, methods=["GET"]))
        self.timeout_s = settings.timeout_s
        self.paths = {route.path for route in routes if "{" not in route.path}
        # Both paths answer errors as {"error": ...} and cap the body.
        self.app = BodyLimitMiddleware(ErrorShapeMiddleware(app), settings.max_body_bytes)
        router = Router(routes=routes, default=self.app)
        # Our handlers answer {"error": ...} themselves; ExceptionMiddleware shapes the
        # router's own HTTPExceptions (405 on a known path) the same way.
        self.fast = BodyLimitMiddleware(
            ExceptionMiddleware(router, handlers={HTTPException: http_exception_json}),
            settings.max_body_bytes,
        )
        # A POST to a friendly endpoint (a fixed path) goes straight to its endpoint: no
        # scan of the routes, no exception middleware or per-route wrappers around a
        # handler that answers its own errors (issue 17: a tenth of the request's CPU).
        self.direct = {route.path: route for route in friendly}
        self.direct_app = BodyLimitMiddleware(self._direct, settings.max_body_bytes)

    async def _direct(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.direct[scope["path"]]
        scope["route"] = route  # as the router sets it: the metrics label (http_metrics)
        response = await route.endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    def _is_fast(self, path: str) -> bool:
        return path in self.paths or path.startswith(("/v1/", "/v2/"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._is_fast(scope["path"]):
            return await self.app(scope, receive, send)
        token = request_deadline.set(time.monotonic() + self.timeout_s)
        started = False

        async def tracked(message: t.MutableMapping[str, t.Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        direct = scope["method"] == "POST" and scope["path"] in self.direct
        try:
            await (self.direct_app if direct else self.fast)(scope, receive, tracked)
        except Exception:  # a fault of ours: answered at once, never left to time out
            logger.exception("%s %s failed", scope.get("method"), clip(scope["path"]))
            if not started:
                await internal_error_response()(scope, receive, send)
        finally:
            request_deadline.reset(token)
