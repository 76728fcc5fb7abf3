"""gRPC client speaking TensorFlow Serving's protocol (default port 8500).

`Client` and `AsyncClient` have the same methods as their HTTP twins in `clients.http`
and return the same `clients.types` results, but talk only to
`tensorflow.serving.PredictionService` / `ModelService` and `grpc.health.v1.Health`, so
they also work against a real TF Serving (minus label names, see `clients._tfs`). The
protos are the TF-free copy in `tfserving_api._proto`: no TensorFlow needed. One channel
per client is reused across calls; close it with `with` / `async with` or `close()`.
Failed calls raise `clients.errors.ClientError` subclasses; UNAVAILABLE is retried with
exponential backoff (`clients.retry.RetryPolicy`).

Typical usage::

    import numpy as np
    from clients.grpc import Client

    with Client("localhost:8500", timeout=10) as client:
        [result] = client.classify_image(np.zeros((1, 28, 28), np.uint8), model="mnist")
        print(result.index, result.label, result.probability)
        outputs = client.predict("imdb", {"text": ["a fine film"]}, signature="predict_text")
        print(outputs["probabilities"])

    # Many replicas: a headless Service's name (every pod's address) or a list; the calls
    # go round-robin over the replicas, and a retry goes to another one.
    with Client("dns:///keras-serving-grpc.default.svc.cluster.local:8500") as client:
        print(client.sentiment(["a fine film"]))
    with Client("ipv4:10.0.0.1:8500,10.0.0.2:8500") as client:
        print(client.sentiment(["a fine film"]))
        # Versions: pin one, or ask a label; move the label (TF Serving's model config).
        print(client.sentiment(["a fine film"], label="canary")[0].model.version)
        client.reload_config({"imdb": {"versions": [1, 2], "labels": {"stable": 1, "canary": 2}}})
        print(client.status("imdb").versions)

    # TLS with a private CA, and asyncio
    from clients.grpc import AsyncClient

    async with AsyncClient("grpcs://models.internal:8500", root_certificates="ca.pem") as client:
        print(await client.sentiment(["Dull and far too long."]))

    # A server with SERVICE_AUTH_TOKENS / SERVICE_ADMIN_TOKEN (and GRPC_TLS_CA: mutual TLS)
    Client("grpcs://models.internal:8500", root_certificates="ca.pem", token="t0k3n",
           admin_token="4dm1n", client_certificate="me.pem", client_key="me.key")
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from clients._api import AsyncAPI, Op, SyncAPI, run, run_async
from clients._tfs import Rpc, TFServingProtocol
from clients.errors import from_rpc_error
from clients.retry import RetryPolicy, call_with_retries, call_with_retries_async
from tfserving_api._proto.grpc_health.v1 import health_pb2_grpc
from tfserving_api._proto.tensorflow_serving.apis import (
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

__all__ = ["DEFAULT_TARGET", "AsyncClient", "Client"]

DEFAULT_TARGET = "localhost:8500"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # gRPC's 4 MiB default is one cifar batch of ~100
T = TypeVar("T")


# gRPC's own name-resolver schemes: the target goes to the channel as it is, and every
# address it resolves to becomes a subchannel (gRPC's naming doc, doc/naming.md).
RESOLVER_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")
# gRPC's round_robin policy: one connection per resolved address, each call on the next
# ready one. Without it a channel uses pick_first: every call on the first address only.
# With client-side health checking (gRPC's A17: a grpc.health.v1 Watch per connection), a
# replica still loading its models or draining (health NOT_SERVING) gets no calls; a
# server without the health service counts as healthy.
ROUND_ROBIN = json.dumps(
    {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
)


def parse_target(target: str) -> tuple[str, bool]:
    """The channel target and whether to use TLS.

    ``host:port``, ``grpc://host:port`` and ``grpcs://host:port`` (TLS) name one server;
    gRPC's resolver URIs (``dns:///svc.ns.svc.cluster.local:8500``, a headless Service
    whose name resolves to every pod; ``ipv4:10.0.0.1:8500,10.0.0.2:8500``, a fixed list)
    are passed through for the channel to resolve, and balanced over (``round_robin``).
    """
    for scheme, tls in (("grpcs://", True), ("grpc://", False)):
        if target.startswith(scheme):
            return target[len(scheme) :].rstrip("/"), tls
    if target.startswith(RESOLVER_SCHEMES):
        return target, False
    if "://" in target:
        raise ValueError(
            f"unsupported scheme in {target!r}; use host:port, grpc://, grpcs:// or a gRPC "
            f"resolver target ({', '.join(s + '...' for s in RESOLVER_SCHEMES)})"
        )
    return target, False


def _pem(value: str | Path | bytes | None) -> bytes | None:
    return Path(value).read_bytes() if isinstance(value, (str, Path)) else value


def _credentials(
    tls: bool,
    root_certificates: str | Path | bytes | None,
    client_certificate: str | Path | bytes | None = None,
    client_key: str | Path | bytes | None = None,
) -> grpc.ChannelCredentials | None:
    if (client_certificate is None) != (client_key is None):
        raise ValueError("client_certificate and client_key go together (mutual TLS)")
    if root_certificates is None and client_certificate is None and not tls:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(root_certificates),  # None: the system's roots
        private_key=_pem(client_key),
        certificate_chain=_pem(client_certificate),
    )


def _channel_options(
    max_message_bytes: int,
    tls_server_name: str | None,
    options: Sequence[tuple[str, Any]],
    balance: bool = True,
) -> list[tuple[str, Any]]:
    result = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    if tls_server_name:
        result.append(("grpc.ssl_target_name_override", tls_server_name))
    if balance and not any(name == "grpc.service_config" for name, _ in options):
        result.append(("grpc.service_config", ROUND_ROBIN))
    return result + list(options)


# The admin RPCs: they carry `admin_token`, every other call `token`.
ADMIN_METHODS = frozenset({"HandleReloadConfigRequest"})


def _call_metadata(
    token: str | None, admin_token: str | None
) -> dict[str, tuple[tuple[str, str], ...] | None]:
    """Per method kind, the ``authorization`` metadata to send (None: none)."""

    def bearer(value: str | None) -> tuple[tuple[str, str], ...] | None:
        return (("authorization", f"Bearer {value}"),) if value else None

    return {"call": bearer(token), "admin": bearer(admin_token or token)}


def _stub_methods(channel: Any) -> dict[str, Any]:
    prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    return {
        "Predict": prediction.Predict,
        "GetModelMetadata": prediction.GetModelMetadata,
        "GetModelStatus": models.GetModelStatus,
        "HandleReloadConfigRequest": models.HandleReloadConfigRequest,
        "Check": health_pb2_grpc.HealthStub(channel).Check,
    }


class Client(SyncAPI):
    """Blocking gRPC client. Methods: see `clients._api.SyncAPI`.

    Args:
        target: ``host:port``; ``grpcs://host:port`` for TLS with the system CAs; or a
            gRPC resolver target naming many replicas, ``dns:///name:8500`` or
            ``ipv4:10.0.0.1:8500,10.0.0.2:8500``: calls go round-robin over every address
            (a retried call goes to the next one, so a dead replica is routed around).
        timeout: Default deadline in seconds per RPC, per call overridable.
        retry: A `RetryPolicy`, or an int of max attempts (1 disables retries).
        root_certificates: PEM CA bundle (path or bytes); turns TLS on.
        tls_server_name: Expected server name when it differs from the target host.
        labels: Label names per model, e.g. ``{"reuters": [...]}``; other models' names
            are asked from the server once (GetModelMetadata field ``"labels"``).
        max_message_bytes: Send/receive size cap.
        options: Extra gRPC channel options (a ``grpc.service_config`` of yours replaces
            the round-robin one).
        balance: gRPC's ``round_robin`` policy over the addresses the target resolves to
            (the default); False keeps gRPC's ``pick_first`` (one address at a time).
        token: Bearer token sent with every call (a server with ``SERVICE_AUTH_TOKENS``).
        admin_token: Bearer token sent with admin calls (`reload_config`): the server's
            ``SERVICE_ADMIN_TOKEN``; defaults to `token`.
        client_certificate: PEM certificate chain (path or bytes) for mutual TLS (a server
            with ``GRPC_TLS_CA``), with `client_key`.
        client_key: PEM private key (path or bytes) of `client_certificate`.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | int | None = None,
        root_certificates: str | Path | bytes | None = None,
        tls_server_name: str | None = None,
        labels: Mapping[str, Sequence[str]] | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        options: Sequence[tuple[str, Any]] = (),
        balance: bool = True,
        token: str | None = None,
        admin_token: str | None = None,
        client_certificate: str | Path | bytes | None = None,
        client_key: str | Path | bytes | None = None,
    ) -> None:
        self.target, tls = parse_target(target)
        self.timeout = timeout
        self.retry = RetryPolicy.coerce(retry)
        self._ops = TFServingProtocol(labels)
        self._metadata = _call_metadata(token, admin_token)
        credentials = _credentials(tls, root_certificates, client_certificate, client_key)
        channel_options = _channel_options(max_message_bytes, tls_server_name, options, balance)
        if credentials is None:
            self._channel = grpc.insecure_channel(self.target, options=channel_options)
        else:
            self._channel = grpc.secure_channel(self.target, credentials, options=channel_options)
        self._methods = _stub_methods(self._channel)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target!r})"

    def _send(self, rpc: Rpc, timeout: float | None) -> Any:
        method = self._methods[rpc.method]

        def attempt() -> Any:
            try:
                return method(
                    rpc.request,
                    timeout=self.timeout if timeout is None else timeout,
                    metadata=self._metadata["admin" if rpc.method in ADMIN_METHODS else "call"],
                )
            except grpc.RpcError as e:
                raise from_rpc_error(e) from None

        policy = self.retry if rpc.retry else RetryPolicy(max_attempts=1)
        return call_with_retries(attempt, policy)

    def _run(self, op: Op[T], timeout: float | None) -> T:
        return run(op, lambda rpc: self._send(rpc, timeout))

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


class AsyncClient(AsyncAPI):
    """asyncio gRPC client (`grpc.aio`); same arguments as `Client`, methods are coroutines.

    The channel is opened on first use, inside the running event loop, as `grpc.aio`
    requires.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | int | None = None,
        root_certificates: str | Path | bytes | None = None,
        tls_server_name: str | None = None,
        labels: Mapping[str, Sequence[str]] | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        options: Sequence[tuple[str, Any]] = (),
        balance: bool = True,
        token: str | None = None,
        admin_token: str | None = None,
        client_certificate: str | Path | bytes | None = None,
        client_key: str | Path | bytes | None = None,
    ) -> None:
        self.target, tls = parse_target(target)
        self.timeout = timeout
        self.retry = RetryPolicy.coerce(retry)
        self._ops = TFServingProtocol(labels)
        self._metadata = _call_metadata(token, admin_token)
        self._credentials = _credentials(tls, root_certificates, client_certificate, client_key)
        self._options = _channel_options(max_message_bytes, tls_server_name, options, balance)
        self._channel: grpc.aio.Channel | None = None
        self._methods: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target!r})"

    def _open(self) -> dict[str, Any]:
        if self._channel is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            else:
                self._channel = grpc.aio.secure_channel(
                    self.target, self._credentials, options=self._options
                )
            self._methods = _stub_methods(self._channel)
        return self._methods

    async def _send(self, rpc: Rpc, timeout: float | None) -> Any:
        method = self._open()[rpc.method]

        async def attempt() -> Any:
            try:
                return await method(
                    rpc.request,
                    timeout=self.timeout if timeout is None else timeout,
                    metadata=self._metadata["admin" if rpc.method in ADMIN_METHODS else "call"],
                )
            except grpc.RpcError as e:
                raise from_rpc_error(e) from None

        policy = self.retry if rpc.retry else RetryPolicy(max_attempts=1)
        return await call_with_retries_async(attempt, policy)

    async def _run(self, op: Op[T], timeout: float | None) -> T:
        return await run_async(op, lambda rpc: self._send(rpc, timeout))

    async def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
