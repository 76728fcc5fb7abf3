"""Who may call what: bearer tokens for the admin calls and, optionally, for inference.

One place decides, and every door asks it the same way:

* **Admin calls** (``HandleReloadConfigRequest`` today; any call that changes what is served
  tomorrow) are refused with ``PERMISSION_DENIED`` / 403 unless ``SERVICE_ADMIN_TOKEN`` is set
  and the call carries ``authorization: Bearer <that token>``. A handler calls
  :func:`require_admin` with the gRPC call's metadata (or :func:`require_admin_header` with
  an HTTP ``Authorization`` header) before doing anything.
* **Inference** is open unless ``SERVICE_AUTH_TOKENS`` (comma-separated) is set; then every
  door needs one of them (or the admin token): 401 / ``UNAUTHENTICATED`` otherwise. HTTP asks
  :class:`RequireToken` (ASGI middleware: every path but the probes, and ``/metrics`` unless
  ``SERVICE_METRICS_AUTH=1``), gRPC asks :class:`TokenInterceptor` (every method but gRPC
  health). A new door is covered without a line of its own: only the open paths are listed.

Tokens are compared with :func:`hmac.compare_digest` against every configured token, so the
time taken says nothing about how much of a guess was right. This mirrors Triton's
``--grpc-restricted-protocol=model-repository:<header>=<key>`` and ``--http-restricted-api``.

Typical usage::

    settings = AuthSettings.from_env()
    require_admin(context.invocation_metadata(), settings)   # in an admin RPC
    grpc.aio.server(interceptors=token_interceptors(settings))
    Service.add_asgi_middleware(RequireToken, settings=settings)
"""

from __future__ import annotations

import hmac
import logging
import os
import typing as t
from dataclasses import dataclass
from http import HTTPStatus

import grpc

from service.errors import ServingError, error_response

logger = logging.getLogger("bentoml.keras_serving.auth")

ADMIN_TOKEN_ENV = "SERVICE_ADMIN_TOKEN"
AUTH_TOKENS_ENV = "SERVICE_AUTH_TOKENS"
METRICS_AUTH_ENV = "SERVICE_METRICS_AUTH"
# Paths any caller reaches: the orchestrator's probes carry no token.
OPEN_PATHS = frozenset(
    {"/livez", "/readyz", "/healthz", "/v2/health/live", "/v2/health/ready"}  # + V2's probes
)
METRICS_PATH = "/metrics"
# gRPC methods any caller reaches: health checks (Kubernetes' grpc probe sends no metadata).
OPEN_GRPC_PREFIXES = (
    "/grpc.health.v1.Health/",
    # The Open Inference Protocol's own probes (KServe and Triton deployments use them).
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
)


class Unauthenticated(ServingError):
    """No valid bearer token on a door that needs one."""

    error_code = HTTPStatus.UNAUTHORIZED
    grpc_code = "UNAUTHENTICATED"

    def to_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="keras-serving"'}


class PermissionDenied(ServingError):
    """An admin call without the admin token (or with admin calls switched off)."""

    error_code = HTTPStatus.FORBIDDEN
    grpc_code = "PERMISSION_DENIED"


@dataclass(frozen=True)
class AuthSettings:
    """``SERVICE_ADMIN_TOKEN``, ``SERVICE_AUTH_TOKENS`` and ``SERVICE_METRICS_AUTH``."""

    # The token admin calls must carry; "" = admin calls are refused, whoever asks.
    admin_token: str = ""
    # Tokens accepted on the inference doors; empty = inference is open (TF Serving's way).
    tokens: tuple[str, ...] = ()
    # With tokens: /metrics needs one too.
    metrics_auth: bool = False

    @classmethod
    def from_env(cls) -> AuthSettings:
        """Reads the three variables.

        Raises:
            ValueError: a variable is unusable (the message names it, never the token).
        """
        admin = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
        tokens = tuple(t.strip() for t in os.environ.get(AUTH_TOKENS_ENV, "").split(",") if t.strip())
        for name, values in ((ADMIN_TOKEN_ENV, (admin,) if admin else ()), (AUTH_TOKENS_ENV, tokens)):
            for value in values:
                if any(c.isspace() for c in value) or not value.isprintable():
                    raise ValueError(f"{name}: a token must be printable and without spaces")
        metrics = os.environ.get(METRICS_AUTH_ENV, "").strip().lower()
        if metrics not in ("", "0", "1", "false", "true"):
            raise ValueError(f"{METRICS_AUTH_ENV}={metrics!r}: expected 1 or 0")
        return cls(admin_token=admin, tokens=tokens, metrics_auth=metrics in ("1", "true"))

    @property
    def inference_open(self) -> bool:
        return not self.tokens

    def path_needs_token(self, path: str) -> bool:
        """Whether an HTTP request to ``path`` must carry an inference token."""
        if not self.tokens or path in OPEN_PATHS:
            return False
        if path == METRICS_PATH:
            return self.metrics_auth
        return True

    def method_needs_token(self, method: str) -> bool:
        """Whether a gRPC call of ``method`` (``/package.Service/Method``) needs a token."""
        return bool(self.tokens) and not method.startswith(OPEN_GRPC_PREFIXES)


def bearer_token(authorization: str | bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (None for anything else)."""
    if authorization is None:
        return None
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def _matches(token: str | None, accepted: t.Iterable[str]) -> bool:
    """Constant-time: every accepted token is compared, whatever the first ones said."""
    presented = (token or "").encode("utf-8", "surrogateescape")
    found = False
    for candidate in accepted:
        found |= hmac.compare_digest(presented, candidate.encode())
    return found and token is not None


def metadata_authorization(metadata: t.Iterable[t.Any] | None) -> str | None:
    """The ``authorization`` value of gRPC call metadata (pairs or ``grpc.aio.Metadata``)."""
    for item in metadata or ():
        key, value = item[0], item[1]
        if key.lower() == "authorization":
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def check_admin(authorization: str | bytes | None, call: str, settings: AuthSettings) -> None:
    """Raises :class:`PermissionDenied` unless ``authorization`` carries the admin token.

    Args:
        authorization: the ``Authorization`` header or metadata value (None: absent).
        call: the admin call's name, for the message (e.g. ``HandleReloadConfigRequest``).
        settings: where the admin token is.
    """
    if not settings.admin_token:
        raise PermissionDenied(
            f"{call}: admin calls are disabled on this server; start it with "
            f"{ADMIN_TOKEN_ENV}=<secret> and send the metadata "
            "'authorization: Bearer <secret>'"
        )
    if not _matches(bearer_token(authorization), (settings.admin_token,)):
        raise PermissionDenied(
            f"{call}: needs the admin token: send 'authorization: Bearer <{ADMIN_TOKEN_ENV}>'"
        )


def check_inference(authorization: str | bytes | None, settings: AuthSettings) -> None:
    """Raises :class:`Unauthenticated` unless inference is open or ``authorization`` carries
    one of ``SERVICE_AUTH_TOKENS`` (or the admin token)."""
    if settings.inference_open:
        return
    accepted = (*settings.tokens, *((settings.admin_token,) if settings.admin_token else ()))
    if not _matches(bearer_token(authorization), accepted):
        raise Unauthenticated(
            "authorization: this server needs 'Authorization: Bearer <token>' with one of "
            f"its {AUTH_TOKENS_ENV}"
        )


_SETTINGS: AuthSettings | None = None


def settings_from_env() -> AuthSettings:
    """The process's settings, read once."""
    global _SETTINGS
    if _SETTINGS is None:
        _SETTINGS = AuthSettings.from_env()
    return _SETTINGS


def require_admin(
    metadata: t.Iterable[t.Any] | None,
    call: str = "admin call",
    settings: AuthSettings | None = None,
) -> None:
    """For a gRPC admin handler: ``require_admin(context.invocation_metadata(), "Name")``.

    Raises:
        PermissionDenied: no admin token configured, or the call does not carry it.
    """
    check_admin(metadata_authorization(metadata), call, settings or settings_from_env())


def require_admin_header(
    authorization: str | None, call: str = "admin call", settings: AuthSettings | None = None
) -> None:
    """For an HTTP admin endpoint: ``require_admin_header(request.headers.get("authorization"))``.

    Raises:
        PermissionDenied: no admin token configured, or the request does not carry it.
    """
    check_admin(authorization, call, settings or settings_from_env())


class RequireToken:
    """ASGI middleware: with ``SERVICE_AUTH_TOKENS``, a request to any path but the probes
    (and ``/metrics`` unless ``SERVICE_METRICS_AUTH=1``) without a valid bearer token is
    answered 401 before anything else reads it."""

    def __init__(self, app: t.Any, settings: AuthSettings | None = None) -> None:
        self.app = app
        self.settings = settings or settings_from_env()

    async def __call__(self, scope: t.Any, receive: t.Any, send: t.Any) -> None:
        if scope["type"] != "http" or not self.settings.path_needs_token(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = next(
            (value for key, value in scope.get("headers") or () if key == b"authorization"), None
        )
        try:
            check_inference(authorization, self.settings)
        except Unauthenticated as exc:
            await error_response(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """gRPC server interceptor: with ``SERVICE_AUTH_TOKENS``, every method but gRPC health
    needs ``authorization: Bearer <token>`` metadata (UNAUTHENTICATED otherwise)."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings

    async def intercept_service(
        self,
        continuation: t.Callable[[grpc.HandlerCallDetails], t.Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not self.settings.method_needs_token(details.method):
            return handler
        try:
            check_inference(metadata_authorization(details.invocation_metadata), self.settings)
        except Unauthenticated as exc:
            return _refusing(handler, exc.message)
        return handler


def _refusing(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour replaced by an UNAUTHENTICATED abort (same arity)."""

    async def unary(request: t.Any, context: grpc.aio.ServicerContext) -> t.Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(request: t.Any, context: grpc.aio.ServicerContext) -> t.AsyncIterator:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover (an async generator that never yields)

    for kind, behaviour in (
        ("unary_unary", unary),
        ("stream_unary", unary),
        ("unary_stream", streaming),
        ("stream_stream", streaming),
    ):
        if getattr(handler, kind) is not None:
            return handler._replace(**{kind: behaviour})
    return handler


def token_interceptors(settings: AuthSettings) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors a gRPC server needs: none while inference is open (no cost per call)."""
    return [] if settings.inference_open else [TokenInterceptor(settings)]
