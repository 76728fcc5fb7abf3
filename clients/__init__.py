"""Python clients for the model service: HTTP (`clients.http`) and TF-Serving gRPC
(`clients.grpc`), with the same methods, result types (`clients.types`) and errors
(`clients.errors`). Needs grpcio, protobuf, numpy and httpx (the ``client`` extra) but
not TensorFlow.

Typical usage::

    from clients import GrpcClient, HttpClient

    with HttpClient("http://localhost:3000") as http, GrpcClient("localhost:8500") as grpc:
        print(http.sentiment(["What a film!"]))
        print(grpc.classify_topic(["Oil prices rose sharply"], top_k=3))

    python -m clients sentiment "What a film!" --grpc
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clients.errors import (
    ClientError,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    PermissionDenied,
    ResourceExhausted,
    ServerError,
    Unauthenticated,
    Unavailable,
    Unsupported,
)
from clients.retry import RetryPolicy

if TYPE_CHECKING:
    from clients.grpc import AsyncClient as AsyncGrpcClient
    from clients.grpc import Client as GrpcClient
    from clients.http import AsyncClient as AsyncHttpClient
    from clients.http import Client as HttpClient

__all__ = [
    "AsyncGrpcClient",
    "AsyncHttpClient",
    "ClientError",
    "DeadlineExceeded",
    "GrpcClient",
    "HttpClient",
    "InvalidInput",
    "ModelNotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryPolicy",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "Unsupported",
]

# Imported on first use so that HTTP-only code never loads grpc, and vice versa.
_LAZY = {
    "HttpClient": ("clients.http", "Client"),
    "AsyncHttpClient": ("clients.http", "AsyncClient"),
    "GrpcClient": ("clients.grpc", "Client"),
    "AsyncGrpcClient": ("clients.grpc", "AsyncClient"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'clients' has no attribute {name!r}")
