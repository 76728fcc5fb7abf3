"""TensorFlow Serving's gRPC API, served from each gateway worker next to its HTTP app.

Started by the gateway's ``on_startup`` hook (:func:`serve`) on ``$GRPC_HOST:$GRPC_PORT``
(default ``0.0.0.0:8500``) in the worker's own event loop, so a gRPC request reaches the
same :class:`~service.dispatch.ModelClient` — and so the same runner batch queues — as
the HTTP doors. Several gateway workers share the port (gRPC sets ``SO_REUSEPORT`` on
Linux). Stopped gracefully by the ``on_shutdown`` hook.

Services:

* ``tensorflow.serving.PredictionService``: ``Predict`` (every model and signature),
  ``GetModelMetadata`` (``signature_def``, plus ``labels``: the class names as a 1-D
  DT_STRING tensor), ``Classify`` (models with class probabilities, over ``tf.Example``
  features named like the signature input) and ``Regress`` (cosine). ``MultiInference``
  answers UNIMPLEMENTED, as do Classify/Regress on models they do not fit.
* ``tensorflow.serving.ModelService``: ``GetModelStatus`` (``HandleReloadConfigRequest``
  is not in the protos served here).
* ``grpc.health.v1.Health`` (``""`` and both TF Serving services: NOT_SERVING until every
  model's runner is ready) and server reflection.

Typical usage::

    GRPC_PORT=8500 bentoml serve          # then, with TF Serving's own client:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel("localhost:8500"))
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import typing as t
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from clients._proto.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from service import grpc_codec as codec
from service.config import _int
from service.dispatch import ModelClient, track
from service.errors import (
    GRPC_STATUS,
    InvalidInput,
    ModelNotFound,
    NotReady,
    PayloadTooLarge,
    ServingError,
)

logger = logging.getLogger("bentoml.keras_serving.grpc")

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
HEALTH_SERVICES = ("", PREDICTION_SERVICE, MODEL_SERVICE)
# Messages a little over the cap still reach the handler, which answers RESOURCE_EXHAUSTED
# with the cap in its message; far bigger ones are refused by gRPC itself (same code).
MESSAGE_MARGIN_BYTES = 1024 * 1024
POLL_NOT_READY_S = 1.0
POLL_READY_S = 10.0

Resolver = t.Callable[[str, "str | int | None"], ModelClient]


@dataclass(frozen=True)
class GrpcSettings:
    """The ``GRPC_*`` environment variables (documented in ``service/ARCHITECTURE.md``)."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = 8500
    tls_cert: Path | None = None
    tls_key: Path | None = None
    grace_s: float = 5.0

    @classmethod
    def from_env(cls) -> GrpcSettings:
        """Reads ``GRPC_ENABLED``, ``GRPC_HOST``, ``GRPC_PORT``, ``GRPC_TLS_CERT``,
        ``GRPC_TLS_KEY`` and ``GRPC_GRACE_S``.

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
        except OSError as exc:
            raise ValueError(
                f"GRPC_TLS_CERT/GRPC_TLS_KEY: cannot read {exc.filename}: {exc.strerror}"
            ) from None
        return grpc.ssl_server_credentials([pair])


def status_code(error: ServingError) -> grpc.StatusCode:
    """The gRPC code of a service error (``service.errors.GRPC_STATUS``, by class)."""
    for cls in type(error).__mro__:
        if cls in GRPC_STATUS:
            return getattr(grpc.StatusCode, GRPC_STATUS[cls])
    return grpc.StatusCode.INTERNAL


def _rpc(method: t.Callable[..., t.Awaitable[t.Any]]) -> t.Callable[..., t.Awaitable[t.Any]]:
    """Turns service errors into statuses; anything else is a logged INTERNAL, so nothing a
    client sends can take the worker down."""

    @functools.wraps(method)
    async def handler(self: t.Any, request: t.Any, context: grpc.aio.ServicerContext) -> t.Any:
        try:
            return await method(self, request, context)
        except ServingError as exc:
            await context.abort(status_code(exc), exc.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error, see the server log")

    return handler


class Models:
    """What the servicers share: model lookup, readiness and the request caps."""

    def __init__(
        self,
        clients: t.Mapping[str, ModelClient],
        resolve: Resolver,
        limits: codec.Limits,
        started: t.Callable[[], bool] = lambda: True,
    ) -> None:
        self.clients = clients
        self.limits = limits
        self.ready: set[str] = set()
        self._resolve = resolve
        self._started = started

    def metric_name(self, name: str) -> str:
        return name if name in self.clients else "unknown"  # bounded label values

    def get(self, spec: model_pb2.ModelSpec) -> ModelClient:
        """The client of ``spec``'s model at ``spec``'s version (the served one if none).

        Raises:
            InvalidInput: no model name.
            ModelNotFound: unknown model, version or version label.
        """
        if not spec.name:
            raise InvalidInput("model_spec.name: required")
        if spec.WhichOneof("version_choice") == "version_label":
            raise ModelNotFound(
                f"model_spec.version_label: model '{spec.name}' has no version label '{spec.version_label}' "
                "(labels are not used; leave the version empty for the served one)"
            )
        version = spec.version.value if spec.HasField("version") else None
        return self._resolve(spec.name, version)

    async def is_ready(self, client: ModelClient) -> bool:
        """Whether the model's runner answers its readiness probe (cached once true)."""
        name = client.info.name
        if name in self.ready:
            return True
        if not self._started():
            return False
        try:
            ready = await client.is_ready()
        except Exception as exc:  # noqa: BLE001 - an unreachable runner is simply not ready
            logger.debug("%s: readiness probe failed: %s", name, exc)
            ready = False
        if ready:
            self.ready.add(name)
        return ready

    async def check_ready(self, client: ModelClient) -> None:
        """Raises:
        NotReady: the model is still loading or its runner is unreachable."""
        if not await self.is_ready(client):
            raise NotReady(f"model '{client.info.name}' is loading, retry later")

    def check_size(self, request: t.Any) -> None:
        size = request.ByteSize()
        if size > self.limits.max_bytes:
            raise PayloadTooLarge(
                f"request: {size} bytes exceed the cap of {self.limits.max_bytes}"
            )

    def model_spec(self, client: ModelClient, signature: str = "") -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=client.info.name, signature_name=signature)
        spec.version.value = client.info.version
        return spec


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService`` over the gateway's model clients."""

    def __init__(self, models: Models) -> None:
        self.models = models

    async def _run(
        self, client: ModelClient, signature: str, batch: t.Any
    ) -> list[dict[str, t.Any]]:
        await self.models.check_ready(client)
        try:
            return await client.run(signature, batch)
        except NotReady:
            self.models.ready.discard(client.info.name)  # probe again before the next call
            raise

    @_rpc
    async def Predict(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        with track(self.models.metric_name(request.model_spec.name), "grpc"):
            self.models.check_size(request)
            client = self.models.get(request.model_spec)
            signature = client.info.signature(request.model_spec.signature_name)
            names = codec.select_outputs(signature, request.output_filter)
            batch = codec.decode_inputs(
                request.inputs, signature, self.models.limits, client.info.vocab_size
            )
            rows = await self._run(client, signature.name, batch)
        response = predict_pb2.PredictResponse(
            model_spec=self.models.model_spec(client, signature.name)
        )
        for name, tensor in codec.encode_outputs(rows, signature, names).items():
            response.outputs[name].CopyFrom(tensor)
        return response

    @_rpc
    async def GetModelMetadata(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        client = self.models.get(request.model_spec)
        fields = codec.check_metadata_fields(request.metadata_field)
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=self.models.model_spec(client)
        )
        if codec.SIGNATURE_DEF_FIELD in fields:
            response.metadata[codec.SIGNATURE_DEF_FIELD].Pack(codec.signature_def_map(client.info))
        labels = codec.labels_tensor(client.info)
        if codec.LABELS_FIELD in fields and labels is not None:
            response.metadata[codec.LABELS_FIELD].Pack(labels)
        return response

    async def _run_examples(
        self, request: t.Any, fit: t.Callable[..., t.Any]
    ) -> tuple[ModelClient, t.Any, list[dict[str, t.Any]]]:
        # Whether the model fits is decided before counting the request: like MultiInference,
        # an UNIMPLEMENTED answer is not a model request (nor a 5xx in the request metric).
        client = self.models.get(request.model_spec)
        signature = fit(client.info, request.model_spec.signature_name)
        with track(client.info.name, "grpc"):
            self.models.check_size(request)
            batch = codec.examples_batch(request.input, signature.input, self.models.limits)
            rows = await self._run(client, signature.name, batch)
        return client, signature, rows

    @_rpc
    async def Classify(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        client, signature, rows = await self._run_examples(request, codec.classify_signature)
        return classification_pb2.ClassificationResponse(
            model_spec=self.models.model_spec(client, signature.name),
            result=codec.classification_result(rows, client.info),
        )

    @_rpc
    async def Regress(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> regression_pb2.RegressionResponse:
        client, signature, rows = await self._run_examples(request, codec.regress_signature)
        return regression_pb2.RegressionResponse(
            model_spec=self.models.model_spec(client, signature.name),
            result=codec.regression_result(rows, signature),
        )

    async def MultiInference(self, request: t.Any, context: grpc.aio.ServicerContext) -> t.NoReturn:
        # The generated default raises NotImplementedError, which grpc.aio logs as an error
        # with a traceback on every call; the status (UNIMPLEMENTED) is the same.
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "MultiInference is not supported; use Predict, Classify or Regress",
        )


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService/GetModelStatus``: the one served version."""

    def __init__(self, models: Models) -> None:
        self.models = models

    @_rpc
    async def GetModelStatus(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        client = self.models.get(request.model_spec)
        ready = await self.models.is_ready(client)
        state = get_model_status_pb2.ModelVersionStatus
        response = get_model_status_pb2.GetModelStatusResponse()
        response.model_version_status.add(
            version=client.info.version, state=state.AVAILABLE if ready else state.LOADING
        )  # status: error_code OK (0), empty message
        return response


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
        health_pb2.DESCRIPTOR,
    ):
        add(file)
    add(reflection_pb2.DESCRIPTOR)
    return pool


class GrpcServer:
    """The gRPC server of one gateway worker: servicers, health, reflection, readiness."""

    def __init__(self, models: Models, settings: GrpcSettings) -> None:
        self.models = models
        self.settings = settings
        self.port: int | None = None
        self.health = health.aio.HealthServicer()
        max_bytes = models.limits.max_bytes + MESSAGE_MARGIN_BYTES
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.max_send_message_length", max_bytes),
                ("grpc.so_reuseport", 1),
            ]
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(models), self.server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(models), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        services = (PREDICTION_SERVICE, MODEL_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
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
            ", TLS" if credentials else "",
            f"{self.settings.address.rsplit(':', 1)[0]}:{self.port}",
        )
        return self.port

    async def _watch_readiness(self) -> None:
        serving = None
        while True:
            states = await asyncio.gather(
                *(self.models.is_ready(c) for c in self.models.clients.values())
            )
            for client, ready in zip(self.models.clients.values(), states):
                if not ready:
                    self.models.ready.discard(client.info.name)
            now = all(states)
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
            # Once all are ready, a cached "ready" is re-probed only after a failed call.
            await asyncio.sleep(POLL_READY_S if now else POLL_NOT_READY_S)

    async def stop(self) -> None:
        """Health NOT_SERVING, refuse new calls, let calls in flight finish (``GRPC_GRACE_S``)."""
        await self.health.enter_graceful_shutdown()
        if self._watch is not None:
            self._watch.cancel()
        await self.server.stop(self.settings.grace_s)
        logger.info("gRPC server stopped")


async def serve(gateway: t.Any) -> GrpcServer | None:
    """Starts the gRPC door of a :class:`service.service.Gateway` instance (its startup hook).

    Returns:
        The running server, or ``None`` with ``GRPC_ENABLED=0``.
    """
    settings = GrpcSettings.from_env()
    if not settings.enabled:
        logger.info("gRPC disabled (GRPC_ENABLED=0)")
        return None
    models = Models(
        gateway.models,
        gateway.model,
        codec.Limits(
            max_rows=gateway.settings.max_items, max_bytes=gateway.settings.max_body_bytes
        ),
        # BentoML sets this right after the startup hooks, once the runner clients are open.
        started=lambda: getattr(gateway, "__self_proxy__", None) is not None,
    )
    server = GrpcServer(models, settings)
    await server.start()
    return server
