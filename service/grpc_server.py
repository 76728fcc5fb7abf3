"""TensorFlow Serving's gRPC API, served from each worker next to its HTTP app.

Started by the service's ``on_startup`` hook (:func:`serve`) on ``$GRPC_HOST:$GRPC_PORT``
(default ``0.0.0.0:8500``) in the worker's own event loop, so a gRPC request reaches the
same :class:`~service.served_model.ServedModel` — and so the same batch queues — as
the HTTP doors. Several workers share the port (gRPC sets ``SO_REUSEPORT`` on
Linux). On SIGTERM (:meth:`GrpcServer.begin_shutdown`) health turns NOT_SERVING and new calls
are refused with UNAVAILABLE while the calls in flight finish (they are registered in the
worker's :class:`~service.lifecycle.Drain`); the ``on_shutdown`` hook then stops the server.

Services:

* ``tensorflow.serving.PredictionService``: ``Predict`` (every model and signature),
  ``GetModelMetadata`` (``signature_def``, plus ``labels``: the class names as a 1-D
  DT_STRING tensor), ``Classify`` (models with class probabilities, over ``tf.Example``
  features named like the signature input) and ``Regress`` (cosine). ``MultiInference``
  answers UNIMPLEMENTED, as do Classify/Regress on models they do not fit.
* ``tensorflow.serving.ModelService``: ``GetModelStatus`` (``HandleReloadConfigRequest``
  is not in the protos served here).
* ``inference.GRPCInferenceService``: the Open Inference Protocol (KServe V2), in
  :mod:`service.v2_grpc`.
* ``grpc.health.v1.Health`` (``""``, both TF Serving services and the V2 one: NOT_SERVING
  until every model of the worker is loaded and warmed up) and server reflection.

The handlers are in :mod:`service.grpc_servicers`, the proto <-> numpy conversions in
:mod:`service.grpc_codec`; this module configures, starts and stops the server.

Typical usage::

    GRPC_PORT=8500 bentoml serve          # then, with TF Serving's own client:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel("localhost:8500"))
"""

from __future__ import annotations

import asyncio
import logging
import os
import typing as t
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from service import grpc_codec as codec
from service.auth import AuthSettings, token_interceptors
from service.config import _float, _int
from service.grpc_servicers import Models, ModelServicer, PredictionServicer, Undecodable
from service.lifecycle import SHUTTING_DOWN, Drain
from service.v2_grpc import SERVICE as INFERENCE_SERVICE
from service.v2_grpc import InferenceServicer
from tfserving_api._proto.inference import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
from tfserving_api._proto.tensorflow_serving.apis import (
    model_service_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

logger = logging.getLogger("bentoml.keras_serving.grpc")

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
HEALTH_SERVICES = ("", PREDICTION_SERVICE, MODEL_SERVICE, INFERENCE_SERVICE)
# Messages a little over the cap still reach the handler, which answers RESOURCE_EXHAUSTED
# with the cap in its message; far bigger ones are refused by gRPC itself (same code).
MESSAGE_MARGIN_BYTES = 1024 * 1024
POLL_READY_S = 0.5  # how often health follows the models' state (an attribute read)


@dataclass(frozen=True)
class GrpcSettings:
    """The ``GRPC_*`` environment variables (documented in ``service/ARCHITECTURE.md``)."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = 8500
    tls_cert: Path | None = None
    tls_key: Path | None = None
    grace_s: float = 5.0
    # Mutual TLS: clients must present a certificate this CA bundle signed.
    tls_ca: Path | None = None
    # Streams one connection may have open at once (further calls wait client-side).
    max_concurrent_streams: int = 256
    # A connection without a call for this long is closed (GOAWAY); 0 = never.
    max_connection_idle_s: float = 300.0
    # Every connection is closed after this long (GOAWAY; the client reconnects, possibly to
    # another worker or replica, which is how long-lived clients rebalance); 0 = never.
    # Short by default: each worker owns its SO_REUSEPORT listener and the kernel hashes a
    # connection to one of them, so this is what spreads one channel (or four that hashed
    # 3:1) over the workers. Four channels, 10-s windows: within 15 % of each other in 3 of
    # 3 runs at 1 s, 6 of 11 at 2 s, 1 of 6 at 5 s; 0 failed calls (loadtest/RESULTS.md).
    max_connection_age_s: float = 1.0
    # ... and the calls still running on it get this long to finish.
    max_connection_age_grace_s: float = 60.0

    def channel_options(self) -> list[tuple[str, int]]:
        """The gRPC core options these settings stand for (0 = gRPC's default: off)."""
        options = [("grpc.max_concurrent_streams", self.max_concurrent_streams)]
        for name, seconds in (
            ("grpc.max_connection_idle_ms", self.max_connection_idle_s),
            ("grpc.max_connection_age_ms", self.max_connection_age_s),
            ("grpc.max_connection_age_grace_ms", self.max_connection_age_grace_s),
        ):
            if seconds > 0:
                options.append((name, int(seconds * 1000)))
        return options

    @classmethod
    def from_env(cls) -> GrpcSettings:
        """Reads ``GRPC_ENABLED``, ``GRPC_HOST``, ``GRPC_PORT``, ``GRPC_TLS_CERT``,
        ``GRPC_TLS_KEY``, ``GRPC_TLS_CA``, ``GRPC_GRACE_S``, ``GRPC_MAX_CONCURRENT_STREAMS``,
        ``GRPC_MAX_CONNECTION_IDLE_S``, ``GRPC_MAX_CONNECTION_AGE_S`` and
        ``GRPC_MAX_CONNECTION_AGE_GRACE_S``.

        Raises:
            ValueError: a variable is unusable (the message names it).
        """
        enabled = os.environ.get("GRPC_ENABLED", "1").strip().lower()
        if enabled not in ("0", "1", "false", "true", ""):
            raise ValueError(f"GRPC_ENABLED={enabled!r}: expected 1 or 0")
        cert = os.environ.get("GRPC_TLS_CERT", "").strip()
        key = os.environ.get("GRPC_TLS_KEY", "").strip()
        if bool(cert) != bool(key):
            raise ValueError("GRPC_TLS_CERT and GRPC_TLS_KEY must be set together (PEM file paths)")
        ca = os.environ.get("GRPC_TLS_CA", "").strip()
        if ca and not cert:
            raise ValueError("GRPC_TLS_CA needs GRPC_TLS_CERT and GRPC_TLS_KEY (mutual TLS)")
        port = _int("GRPC_PORT", 8500)
        if port > 65535:
            raise ValueError(f"GRPC_PORT={port} is not a TCP port")
        return cls(
            enabled=enabled not in ("0", "false"),
            host=os.environ.get("GRPC_HOST", "").strip() or "0.0.0.0",
            port=port,
            tls_cert=Path(cert) if cert else None,
            tls_key=Path(key) if key else None,
            grace_s=float(_int("GRPC_GRACE_S", 5)),
            tls_ca=Path(ca) if ca else None,
            max_concurrent_streams=_int("GRPC_MAX_CONCURRENT_STREAMS", 256, minimum=1),
            max_connection_idle_s=_float("GRPC_MAX_CONNECTION_IDLE_S", 300.0),
            max_connection_age_s=_float("GRPC_MAX_CONNECTION_AGE_S", 1.0),
            max_connection_age_grace_s=_float("GRPC_MAX_CONNECTION_AGE_GRACE_S", 60.0),
        )

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    def credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials from the PEM files, or ``None`` for plaintext.

        Raises:
            ValueError: a file is missing or unreadable.
        """
        if self.tls_cert is None or self.tls_key is None:
            return None
        try:
            pair = (self.tls_key.read_bytes(), self.tls_cert.read_bytes())
            ca = self.tls_ca.read_bytes() if self.tls_ca is not None else None
        except OSError as exc:
            raise ValueError(
                f"GRPC_TLS_CERT/GRPC_TLS_KEY/GRPC_TLS_CA: cannot read {exc.filename}: "
                f"{exc.strerror}"
            ) from None
        # With a CA: require a client certificate and verify it against the CA (mTLS).
        return grpc.ssl_server_credentials(
            [pair], root_certificates=ca, require_client_auth=ca is not None
        )


class _Recorder:
    """Stands in for a server to catch the method handlers a generated ``add_*`` builds."""

    def add_generic_rpc_handlers(self, handlers: t.Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, t.Any]) -> None:
        self.service, self.handlers = service, handlers


def _tolerant(parse: t.Callable[[bytes], t.Any]) -> t.Callable[[bytes], t.Any]:
    def deserialize(data: bytes) -> t.Any:
        try:
            return parse(data)
        except DecodeError as exc:  # answered INVALID_ARGUMENT by the handler, not UNKNOWN
            return Undecodable(str(exc) or "not a valid protobuf message")

    return deserialize


def _drained(behavior: t.Callable[..., t.Awaitable[t.Any]], drain: Drain) -> t.Callable:
    async def call(request: t.Any, context: grpc.aio.ServicerContext) -> t.Any:
        if not drain.accepting:
            await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        task = asyncio.current_task()
        if task is None:
            return await behavior(request, context)
        drain.in_flight.add(task)
        try:
            return await behavior(request, context)
        finally:
            drain.in_flight.discard(task)

    return call


def add_tolerant_servicer(
    add: t.Callable[[t.Any, t.Any], None],
    servicer: t.Any,
    server: t.Any,
    drain: Drain | None = None,
) -> None:
    """``add(servicer, server)`` (a generated ``add_*Servicer_to_server``), except that bytes
    that do not parse as the request message reach the handler as :class:`Undecodable`
    instead of failing inside gRPC (which answers ``UNKNOWN`` and logs a traceback), and,
    with a ``drain``, every unary call is registered in it and refused with UNAVAILABLE
    once it is closed."""
    recorder = _Recorder()
    add(servicer, recorder)
    handlers = {}
    for name, handler in recorder.handlers.items():
        changes: dict[str, t.Any] = {
            "request_deserializer": _tolerant(handler.request_deserializer)
        }
        if drain is not None and handler.unary_unary is not None:
            changes["unary_unary"] = _drained(handler.unary_unary, drain)
        handlers[name] = handler._replace(**changes)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(recorder.service, handlers),)
    )
    server.add_registered_method_handlers(recorder.service, handlers)


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """One pool with every served service's files, for server reflection: the TF Serving
    protos live in the client's private pool, health and reflection in the default one."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: t.Any) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
        added.add(file.name)

    for file in (
        prediction_service_pb2.DESCRIPTOR,
        model_service_pb2.DESCRIPTOR,
        grpc_predict_v2_pb2.DESCRIPTOR,
        health_pb2.DESCRIPTOR,
    ):
        add(file)
    add(reflection_pb2.DESCRIPTOR)
    return pool


class GrpcServer:
    """The gRPC server of one worker: servicers, health, reflection, readiness."""

    def __init__(
        self,
        models: Models,
        settings: GrpcSettings,
        ready: t.Callable[[], bool] | None = None,
        drain: Drain | None = None,
    ) -> None:
        self.models = models
        self.ready = ready or (lambda: models.ready)
        self.settings = settings
        self.drain = drain
        self.port: int | None = None
        self.health = health.aio.HealthServicer()
        max_bytes = models.limits.max_bytes + MESSAGE_MARGIN_BYTES
        self.server = grpc.aio.server(
            interceptors=token_interceptors(models.auth),  # SERVICE_AUTH_TOKENS
            options=[
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.max_send_message_length", max_bytes),
                ("grpc.so_reuseport", 1),
                # Idle and long-lived connections cannot pile up (GRPC_MAX_CONNECTION_*).
                *settings.channel_options(),
            ]
        )
        add_tolerant_servicer(
            prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server,
            PredictionServicer(models),
            self.server,
            drain,
        )
        add_tolerant_servicer(
            model_service_pb2_grpc.add_ModelServiceServicer_to_server,
            ModelServicer(models),
            self.server,
            drain,
        )
        add_tolerant_servicer(
            grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
            InferenceServicer(models, self.ready),
            self.server,
            drain,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        services = (
            PREDICTION_SERVICE,
            MODEL_SERVICE,
            INFERENCE_SERVICE,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(services, self.server, pool=reflection_pool())
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Binds, starts serving (NOT_SERVING until every model is ready) and returns the port.

        Raises:
            RuntimeError: the address cannot be bound.
        """
        for service in HEALTH_SERVICES:
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        credentials = self.settings.credentials()
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(self.settings.address)
            else:
                self.port = self.server.add_secure_port(self.settings.address, credentials)
        except RuntimeError as exc:
            raise RuntimeError(
                f"gRPC cannot listen on {self.settings.address} (GRPC_HOST/GRPC_PORT): {exc}"
            ) from None
        await self.server.start()
        self._watch = asyncio.get_running_loop().create_task(self._watch_readiness())
        logger.info(
            "gRPC (TF Serving API%s) listening on %s",
            (", mutual TLS" if self.settings.tls_ca else ", TLS") if credentials else "",
            f"{self.settings.address.rsplit(':', 1)[0]}:{self.port}",
        )
        return self.port

    async def _watch_readiness(self) -> None:
        serving = None
        while True:
            now = self.ready()
            if now != serving:
                status = (
                    health_pb2.HealthCheckResponse.SERVING
                    if now
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                for service in HEALTH_SERVICES:
                    await self.health.set(service, status)
                logger.info("gRPC health: %s", "SERVING" if now else "NOT_SERVING")
                serving = now
            await asyncio.sleep(POLL_READY_S)

    async def begin_shutdown(self) -> None:
        """Health NOT_SERVING for good (a drain, closed by the caller, refuses new calls).
        Health and reflection keep answering until :meth:`stop`."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace_s: float | None = None) -> None:
        """Health NOT_SERVING, refuse new calls, let calls in flight finish for ``grace_s``
        seconds (default ``GRPC_GRACE_S``), then cancel them."""
        await self.begin_shutdown()
        await self.server.stop(self.settings.grace_s if grace_s is None else grace_s)
        logger.info("gRPC server stopped")


async def serve(server: t.Any, drain: Drain | None = None) -> GrpcServer | None:
    """Starts the gRPC door of a :class:`service.service.ModelServer` (its startup hook);
    its calls are registered in ``drain`` (see :class:`service.lifecycle.Drain`).

    Returns:
        The running server, or ``None`` with ``GRPC_ENABLED=0``.
    """
    settings = GrpcSettings.from_env()
    if not settings.enabled:
        logger.info("gRPC disabled (GRPC_ENABLED=0)")
        return None
    models = Models(
        server.models,
        server.model,
        codec.Limits(
            max_rows=server.settings.max_items,
            max_bytes=server.settings.max_body_bytes,
            max_text_chars=server.settings.max_text_chars,
        ),
        reload=server.engine.reload,
        auth=AuthSettings.from_env(),
        config=lambda: server.engine.config,
    )
    grpc_server = GrpcServer(models, settings, server.ready, drain)
    await grpc_server.start()
    return grpc_server
