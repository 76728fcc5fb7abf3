"""Every HTTP status and gRPC code maps to the right error, one line per mapping."""

from __future__ import annotations

import grpc
import httpx
import pytest

from clients import errors
from clients.errors import (
    ClientError,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    ResourceExhausted,
    ServerError,
    Unavailable,
    Unsupported,
)


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("status", "expected", "retryable"),
    [
        (400, InvalidInput, False),
        (422, InvalidInput, False),
        (404, ModelNotFound, False),
        (408, DeadlineExceeded, False),
        (504, DeadlineExceeded, False),
        (413, ResourceExhausted, False),
        (429, ResourceExhausted, True),
        (502, Unavailable, True),
        (503, Unavailable, True),
        (500, ServerError, False),
        (501, Unsupported, False),
        (401, errors.Unauthenticated, False),
        (403, errors.PermissionDenied, False),
        (405, ClientError, False),
    ],
)
def test_from_http(status: int, expected: type, retryable: bool) -> None:
    error = errors.from_http(status, {"error": "input 'texts' is missing"})
    assert type(error) is expected
    assert error.retryable is retryable and error.http_status == status
    assert "input 'texts' is missing" in error.message


@pytest.mark.parametrize(
    ("code", "expected", "retryable"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidInput, False),
        (grpc.StatusCode.FAILED_PRECONDITION, InvalidInput, False),
        (grpc.StatusCode.OUT_OF_RANGE, InvalidInput, False),
        (grpc.StatusCode.NOT_FOUND, ModelNotFound, False),
        (grpc.StatusCode.UNAVAILABLE, Unavailable, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded, False),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted, False),
        (grpc.StatusCode.INTERNAL, ServerError, False),
        (grpc.StatusCode.UNKNOWN, ServerError, False),
        (grpc.StatusCode.DATA_LOSS, ServerError, False),
        (grpc.StatusCode.UNIMPLEMENTED, Unsupported, False),
        # A server shutting down cancels the calls it had not started (grpc/grpc#41785).
        (grpc.StatusCode.CANCELLED, Unavailable, True),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied, False),
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated, False),
        (grpc.StatusCode.ABORTED, ClientError, False),
    ],
)
def test_from_rpc_error(code: grpc.StatusCode, expected: type, retryable: bool) -> None:
    error = errors.from_rpc_error(FakeRpcError(code, "Servable not found for request"))
    assert type(error) is expected
    assert error.retryable is retryable and error.grpc_code == code.name
    assert "Servable not found for request" in error.message


@pytest.mark.parametrize(
    ("name", "expected"),
    [("NOT_FOUND", ModelNotFound), ("INVALID_ARGUMENT", InvalidInput), ("CANCELLED", ClientError)],
)
def test_from_grpc_code(name: str, expected: type) -> None:
    # TensorFlow's error codes (a reload's StatusProto) share gRPC's names.
    error = errors.from_grpc_code(name, "label 'stable' points at version 9, not served")
    assert type(error) is expected and error.grpc_code == name
    assert "label 'stable'" in error.message


@pytest.mark.parametrize(
    ("exception", "expected"),
    [
        (httpx.ConnectError("Connection refused"), Unavailable),
        (httpx.RemoteProtocolError("Server disconnected"), Unavailable),
        (httpx.ReadTimeout("timed out"), DeadlineExceeded),
        (httpx.ConnectTimeout("timed out"), DeadlineExceeded),
    ],
)
def test_from_transport_error(exception: Exception, expected: type) -> None:
    assert type(errors.from_transport_error(exception)) is expected


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"error": "bad dtype for 'window'"}, "bad dtype for 'window'"),
        ({"detail": "Not Found"}, "Not Found"),
        ("upstream connect error", "upstream connect error"),
        (None, "HTTP 400"),
    ],
)
def test_from_http_message(payload: object, message: str) -> None:
    assert errors.from_http(400, payload).message == message


def test_errors_are_also_builtin_kinds() -> None:
    assert isinstance(InvalidInput("x"), ValueError)
    assert isinstance(ModelNotFound("x"), LookupError)
    assert isinstance(DeadlineExceeded("x"), TimeoutError)
    assert isinstance(Unsupported("x"), NotImplementedError)
