"""Typed errors shared by the HTTP and gRPC clients.

Every failure a client method can raise is a `ClientError`; the subclasses say what went
wrong in transport-neutral terms, so code written against `clients.http.Client` keeps
working with `clients.grpc.Client`. They are built in one place — `from_http`,
`from_rpc_error` and `from_transport_error` below — and carry the server's own message.

Typical usage::

    from clients import errors
    from clients.http import Client

    with Client("http://localhost:3000") as client:
        try:
            client.sentiment(["great film"])
        except errors.InvalidInput as e:      # HTTP 400/422, gRPC INVALID_ARGUMENT
            print("fix the request:", e)
        except errors.Unavailable:            # 502/503, UNAVAILABLE, connection refused
            print("server not ready; already retried", client.retry.max_attempts, "times")
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base class of every error raised by `clients`.

    Attributes:
        message: The server's message (or ours, for failures before reaching it).
        http_status: The HTTP status code, when the error came from an HTTP response.
        grpc_code: The gRPC status code name (e.g. ``"NOT_FOUND"``), for gRPC errors.
        retryable: Whether sending the same request again may succeed.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        grpc_code: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.grpc_code = grpc_code
        if retryable is not None:
            self.retryable = retryable

    def __repr__(self) -> str:
        origin = self.grpc_code or self.http_status
        return f"{type(self).__name__}({self.message!r}{f', {origin}' if origin else ''})"


class InvalidInput(ClientError, ValueError):
    """The request is wrong (dtype, shape, missing field, NaN...). Never retried."""


class ModelNotFound(ClientError, LookupError):
    """No such model, version or signature on the server."""


class Unavailable(ClientError):
    """The server cannot take the request now: not ready, down, unreachable. Retried."""

    retryable = True


class DeadlineExceeded(ClientError, TimeoutError):
    """The call did not finish within its timeout. Not retried: the budget is spent."""


class ResourceExhausted(ClientError):
    """Too big (413, message or batch over the cap) or too many requests (429).

    Only the rate-limit flavour (HTTP 429) is retryable; a request over a size cap
    fails the same way every time.
    """


class ServerError(ClientError):
    """The server failed while handling a valid request (5xx, INTERNAL, UNKNOWN)."""


class Unauthenticated(ClientError, PermissionError):
    """No valid token: the server wants ``token=`` (HTTP 401, UNAUTHENTICATED)."""


class PermissionDenied(ClientError, PermissionError):
    """The call needs more than the token sent, e.g. `reload_config` without the server's
    admin token (HTTP 403, PERMISSION_DENIED)."""


class Unsupported(ClientError, NotImplementedError):
    """The server or the transport does not offer this operation (HTTP 501,
    UNIMPLEMENTED, or e.g. `reload_config` over HTTP, which TF Serving has no REST for)."""


_HTTP_STATUS: dict[int, type[ClientError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: PermissionDenied,
    404: ModelNotFound,
    408: DeadlineExceeded,
    413: ResourceExhausted,
    422: InvalidInput,
    429: ResourceExhausted,
    501: Unsupported,
    502: Unavailable,
    503: Unavailable,
    504: DeadlineExceeded,
}

_GRPC_CODE: dict[str, type[ClientError]] = {
    "INVALID_ARGUMENT": InvalidInput,
    "OUT_OF_RANGE": InvalidInput,
    "FAILED_PRECONDITION": InvalidInput,
    "NOT_FOUND": ModelNotFound,
    "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "RESOURCE_EXHAUSTED": ResourceExhausted,
    "INTERNAL": ServerError,
    "UNKNOWN": ServerError,
    "DATA_LOSS": ServerError,
    "UNIMPLEMENTED": Unsupported,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
}


def from_http(status: int, payload: Any) -> ClientError:
    """The error for a non-2xx HTTP response.

    Args:
        status: The HTTP status code.
        payload: The decoded JSON body (``{"error": "..."}`` from this service and from
            TF Serving's REST API), or the raw text when the body was not JSON.

    Returns:
        The matching `ClientError` subclass, carrying the server's message.
    """
    if isinstance(payload, dict) and "error" in payload:
        message = str(payload["error"])
    elif isinstance(payload, dict) and "detail" in payload:  # Starlette/FastAPI style
        message = str(payload["detail"])
    elif isinstance(payload, (str, bytes)) and payload:
        message = payload.decode(errors="replace") if isinstance(payload, bytes) else payload
        message = message.strip()[:500]
    else:
        message = f"HTTP {status}"
    cls = _HTTP_STATUS.get(status) or (ServerError if status >= 500 else ClientError)
    if cls is ClientError:  # 405, 409...: the status is the useful part
        message = f"HTTP {status}: {message}" if message != f"HTTP {status}" else message
    retryable = status == 429 if cls is ResourceExhausted else None
    return cls(message, http_status=status, retryable=retryable)


def from_rpc_error(error: Any) -> ClientError:
    """The error for a failed gRPC call.

    Args:
        error: A `grpc.RpcError` (sync or `grpc.aio.AioRpcError`); anything with
            ``code()`` and ``details()`` works.

    Returns:
        The matching `ClientError` subclass, carrying the server's status details.
    """
    code = error.code()
    name = getattr(code, "name", str(code))
    message = error.details() or name
    if name == "UNAVAILABLE" and "connect" in message.lower():
        message = f"cannot reach the server: {message}"
    if name == "CANCELLED":
        # These clients never cancel a call of their own (a spent timeout is
        # DEADLINE_EXCEEDED): a CANCELLED comes from a server shutting down with the call
        # received but not yet started (grpc/grpc#41785), so another replica may answer it.
        message = f"the server cancelled the call (shutting down?): {message}"
        return Unavailable(message, grpc_code=name)
    return from_grpc_code(name, message)


def from_grpc_code(name: str, message: str) -> ClientError:
    """The error for a gRPC status code by name, e.g. the ``error_code`` of the
    `StatusProto` a `HandleReloadConfigRequest` answers with.

    Args:
        name: The code's name (``"NOT_FOUND"``...); TensorFlow's error codes share them.
        message: The server's message.

    Returns:
        The matching `ClientError` subclass.
    """
    message = message or name
    cls = _GRPC_CODE.get(name)
    if cls is None:  # CANCELLED, ABORTED...: the code is the useful part
        cls, message = ClientError, f"{name}: {message}"
    return cls(message, grpc_code=name)


def from_transport_error(error: Exception) -> ClientError:
    """The error for an HTTP request that got no response (httpx transport errors).

    Args:
        error: An `httpx.TransportError` (connection refused, timeout, reset...).

    Returns:
        `DeadlineExceeded` for timeouts, `Unavailable` for everything else.
    """
    import httpx  # only HTTP users get here; the gRPC client must not need httpx

    if isinstance(error, httpx.TimeoutException):
        return DeadlineExceeded(f"timed out: {error or type(error).__name__}")
    return Unavailable(f"cannot reach the server: {error or type(error).__name__}")
