"""One error taxonomy for every door of the service.

Each error is a :class:`bentoml.exceptions.BentoMLException` whose ``error_code`` is the HTTP
status; :data:`GRPC_STATUS` maps the same classes to gRPC status codes (for the gRPC door).
Messages name the offending field, e.g. ``texts[2]: must not be empty``; the HTTP body is
always ``{"error": message}``, the shape TensorFlow Serving's REST API uses.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from bentoml.exceptions import BentoMLException
from starlette.responses import JSONResponse

from service.client_text import clip

# The longest message a client gets back (and the log repeats).
MAX_MESSAGE_CHARS = 1000
_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if c not in (0x09,)}


class ServingError(BentoMLException):
    """Base of every error the service reports to a client on purpose."""

    error_code = HTTPStatus.INTERNAL_SERVER_ERROR
    grpc_code = "INTERNAL"

    def __init__(self, message: str):
        # Messages quote what the client sent: lone surrogates (valid JSON escapes, not
        # encodable text) and control characters must not break the answer or forge log lines.
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        message = message.translate(_CONTROL_ESCAPES)
        # The echoes in it are clipped where they are quoted (service.client_text.clip); this
        # bounds the whole, whatever a message quotes.
        message = clip(message, MAX_MESSAGE_CHARS)
        super().__init__(message, error_code=self.error_code)
        self.message = message

    def to_json(self) -> dict[str, str]:
        return {"error": self.message}

    def to_headers(self) -> dict[str, str]:
        """Extra HTTP response headers (e.g. ``Retry-After``)."""
        return {}


class InvalidInput(ServingError):
    """The request is malformed: missing/extra field, wrong type, shape, value."""

    error_code = HTTPStatus.BAD_REQUEST
    grpc_code = "INVALID_ARGUMENT"


class PayloadTooLarge(ServingError):
    """The body or the batch in it exceeds a documented cap."""

    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    grpc_code = "RESOURCE_EXHAUSTED"


class UnsupportedMediaType(ServingError):
    """The Content-Type is neither JSON nor (where accepted) multipart."""

    error_code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    grpc_code = "INVALID_ARGUMENT"


class ModelNotFound(ServingError):
    """Unknown model, version or signature."""

    error_code = HTTPStatus.NOT_FOUND
    grpc_code = "NOT_FOUND"


class NotReady(ServingError):
    """The model is still loading or warming up, or its runner is unreachable."""

    error_code = HTTPStatus.SERVICE_UNAVAILABLE
    grpc_code = "UNAVAILABLE"


class Overloaded(ServingError):
    """The model's queue holds more work than the request may wait for (or the row cap is
    reached): refused at once, before any work (retry after a pause)."""

    error_code = HTTPStatus.SERVICE_UNAVAILABLE
    grpc_code = "RESOURCE_EXHAUSTED"
    retry_after_s = 1

    def to_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class DeadlineExceeded(ServingError):
    """The request's deadline passed before the model could run it."""

    error_code = HTTPStatus.GATEWAY_TIMEOUT
    grpc_code = "DEADLINE_EXCEEDED"


class Unsupported(ServingError):
    """The model cannot answer this kind of request (e.g. gRPC Classify on a forecaster)."""

    error_code = HTTPStatus.NOT_IMPLEMENTED
    grpc_code = "UNIMPLEMENTED"


class ModelFailure(ServingError):
    """The model call itself failed (a server bug, never the client's input)."""

    error_code = HTTPStatus.INTERNAL_SERVER_ERROR
    grpc_code = "INTERNAL"


# Error class -> grpc.StatusCode member name, for ``context.abort(getattr(StatusCode, name))``.
GRPC_STATUS: dict[type[ServingError], str] = {
    cls: cls.grpc_code
    for cls in (
        InvalidInput,
        PayloadTooLarge,
        UnsupportedMediaType,
        ModelNotFound,
        NotReady,
        Overloaded,
        DeadlineExceeded,
        Unsupported,
        ModelFailure,
    )
}


_requests_log = logging.getLogger("bentoml.keras_serving.requests")


def log_refusal(error: ServingError, door: str, target: str) -> None:
    """One INFO line, no traceback, for a request answered with a service error on purpose
    (bad input, unknown model, not ready, deadline). Not logged here: ``Overloaded`` (a flood
    would flood the log; ``keras_serving_refused_total`` counts it) and ``ModelFailure``
    (the batcher already logged it at ERROR with its traceback)."""
    if isinstance(error, Overloaded | ModelFailure):
        return
    _requests_log.info("%s %s: %d %s", door, clip(target), int(error.error_code), error.message)


def error_response(error: ServingError) -> JSONResponse:
    """The HTTP answer to a service error: ``{"error": ...}``, its status and headers."""
    return JSONResponse(
        error.to_json(), status_code=int(error.error_code), headers=error.to_headers()
    )


def internal_error_response() -> JSONResponse:
    """The HTTP answer to a server fault (logged by the caller, with its traceback)."""
    return JSONResponse({"error": "internal error, see the server log"}, status_code=500)
