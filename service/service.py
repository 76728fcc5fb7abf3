"""The BentoML service: every model in-process in every worker, behind every door.

``bentoml serve`` (from the repository root; ``bentofile.yaml`` names ``ModelServer``) starts
``SERVICE_WORKERS`` processes of this one service. Each worker loads every served model
(:mod:`service.engine`, one thread and one batch queue per model signature), answers the
friendly JSON endpoints and TF Serving's REST API (through :mod:`service.http_router`, which
skips BentoML's per-request machinery) and runs a gRPC server on the shared gRPC port.
This file only wires; see ``service/ARCHITECTURE.md``.

Typical usage::

    bentoml serve                       # http://localhost:3000, docs at /docs; gRPC on :8500
    curl -X POST localhost:3000/imdb/sentiment -H 'content-type: application/json' \\
         -d '{"texts": ["a wonderful film"]}'
"""

from __future__ import annotations

import gc
import logging
import os
import time
import typing as t
from dataclasses import replace
from pathlib import Path

import bentoml
from pydantic import BaseModel

from service import endpoints
from service.auth import AuthSettings, RequireToken
from service.catalog import (
    ModelInfo,
    Stored,
    StoredVersion,
    bento_tags,
    latest_tags,
    stored_versions,
)
from service.config import ServingSettings, cuda_device_for_worker
from service.connections import ConnectionSettings
from service.connections import install as install_connection_guards
from service.cpus import sizing_message
from service.engine import Engine
from service.errors import ServingError, error_response, log_refusal
from service.http_metrics import RouteMetrics
from service.http_router import PROBE_PATHS, FastRoutes
from service.lifecycle import (
    DRAIN,
    PeerReadiness,
    RefuseWhileDraining,
    on_stop_signal,
    open_when_warm,
)
from service.logs import configure_logging
from service.metrics import WORKERS, track
from service.runtime_files import server_directory
from service.model_versions import ModelVersions
from service.schemas import (
    ForecastRequest,
    ForecastResponse,
    ImagesRequest,
    ImagesResponse,
    SentimentRequest,
    SentimentResponse,
    TopicsRequest,
    TopicsResponse,
    TranslateRequest,
    TranslateResponse,
)
from service.served_model import ServedModel

SETTINGS = ServingSettings.from_env()
AUTH = AuthSettings.from_env()
# A header timeout and a connection cap in uvicorn's HTTP protocol (it starts after this import).
install_connection_guards(ConnectionSettings.from_env())
configure_logging(SETTINGS.log_format)
logger = logging.getLogger("bentoml.keras_serving.service")
# One card per worker on GPU machines, chosen before TensorFlow first looks at the devices.
_CARD = cuda_device_for_worker(
    bentoml.server_context.worker_index, SETTINGS.gpus, os.environ.get("CUDA_VISIBLE_DEVICES")
)
if _CARD is not None:
    os.environ["CUDA_VISIBLE_DEVICES"] = _CARD
# Inside a built Bento (<bento>/src/service/service.py) serve the versions it was built with,
# unless SERVICE_MODEL_SOURCE=store asks for the store at BENTOML_HOME (a shared volume).
TAGS = (
    None
    if SETTINGS.model_source == "store"
    else bento_tags(Path(__file__).resolve().parents[2] / "bento.yaml", SETTINGS.models)
)
MODELS: dict[str, ModelInfo] = {
    name: ModelInfo.from_path(name, tag, bentoml.models.get(tag).path)
    for name, tag in (TAGS or latest_tags(SETTINGS.models)).items()
}


def packaged_versions() -> Stored:
    """A built Bento serves what it packaged: those versions only, never re-read."""
    return {
        name: {info.version: StoredVersion(info, str(bentoml.models.get(info.tag).path))}
        for name, info in MODELS.items()
    }


def store_versions() -> Stored:
    """What the BentoML store holds now, for the models this server serves."""
    return stored_versions(tuple(MODELS))


def model_attribute(name: str) -> str:
    return f"{name}_model"


def with_models(cls: type) -> type:
    """One ``bentoml.models.BentoModel`` class attribute per served model, so that
    ``bentoml build`` packages them with the Bento."""
    for name, info in MODELS.items():
        setattr(cls, model_attribute(name), bentoml.models.BentoModel(info.tag))
    return cls


SERVICE_NAME = "keras_serving"


def service_config(settings: ServingSettings) -> dict[str, t.Any]:
    """BentoML's service options: workers, timeout, GPUs, and the per-request middleware
    kept (access log and tracing only when asked for: their cost is in ARCHITECTURE.md)."""
    config: dict[str, t.Any] = {
        "workers": settings.workers,
        "traffic": {"timeout": settings.timeout_s},
        "logging": {"access": {"enabled": settings.access_log}},
        # BentoML's metrics middleware labels its series with the raw path (unbounded);
        # service.http_metrics records the same series by route template, and serves /metrics.
        "metrics": {"enabled": False},
    }
    if not settings.tracing:
        config["tracing"] = {"excluded_urls": [".*"]}
    if settings.gpus > 0:
        config["resources"] = {"gpu": settings.gpus}
    return config


@bentoml.service(name=SERVICE_NAME, **service_config(SETTINGS))
@with_models
class ModelServer:
    """Friendly JSON endpoints, TF Serving's REST and gRPC APIs for every served model."""

    def __init__(self) -> None:
        self.settings = SETTINGS
        # Where a config from HandleReloadConfigRequest reaches the server's other workers:
        # this server's private runtime directory (service.runtime_files).
        runtime = server_directory(os.getppid())
        shared = runtime / "reload-config.json"
        if TAGS:  # inside a Bento: the packaged versions, no store to watch
            settings = replace(SETTINGS, poll_s=0)
            self.engine = Engine(settings, packaged_versions, MODELS, shared_config=shared)
        else:
            self.engine = Engine(SETTINGS, store_versions, MODELS, shared_config=shared)
        self.engine.start()  # loads and warms up in the background; see ready()
        WORKERS.set(1)  # keras_serving_workers: the live workers' sum
        if bentoml.server_context.worker_index in (None, 1):  # once per server
            logger.info(
                sizing_message(SETTINGS.workers, SETTINGS.workers_source, SETTINGS.tf_threads)
            )
        self.peers = PeerReadiness(
            SETTINGS.workers, bentoml.server_context.worker_index, os.getppid(), runtime
        )
        self.stopping = False
        self.grpc: t.Any = None  # service.grpc_server.GrpcServer once the doors are open
        self._stop_deadline: float | None = None

    @property
    def models(self) -> dict[str, ModelVersions]:
        return self.engine.models

    def model(
        self, name: str, version: str | int | None = None, label: str | None = None
    ) -> ServedModel:
        """The version of ``name`` that answers: ``version``, ``label`` or the default.

        Raises:
            ModelNotFound: not served, or no such version or label.
            NotReady: that version is loading, failed or unloading.
        """
        return self.engine.model(name, version, label)

    def ready(self) -> bool:
        """Every model of every worker is loaded and warmed up (``/readyz``, gRPC health)."""
        if self.stopping or not self.engine.ready:
            return False
        if not self.peers.marked:
            # The loaded models are millions of long-lived Python objects (TensorFlow's
            # graphs): move them out of the garbage collector's reach, or every full
            # collection walks them all and stalls requests for hundreds of ms.
            gc.freeze()
            self.peers.mark_ready()
        return self.peers.all_ready()

    async def __is_ready__(self) -> bool:
        return self.ready()

    @bentoml.on_startup
    async def _start(self) -> None:
        """Graceful shutdown on SIGTERM, then TF Serving's gRPC API on ``$GRPC_PORT`` in this
        worker's event loop. A replacement for a crashed worker returns (so uvicorn starts
        accepting HTTP) and binds gRPC only once its models are warm."""
        from service import grpc_server

        on_stop_signal(self._begin_shutdown)
        # A replacement whose model failed to load keeps waiting (the engine logged why):
        # its peers serve, and a worker that would answer 503 must not take connections.
        await open_when_warm(self.peers, lambda: self.engine.ready, lambda: self.stopping)
        if self.engine.ready:
            self.ready()  # a replacement marks itself ready before its doors open
        if not self.stopping:
            self.grpc = await grpc_server.serve(self, DRAIN)

    async def _begin_shutdown(self) -> None:
        """SIGTERM: unready at once, new requests refused, the accepted ones finish (for up
        to ``SERVICE_GRACE_S``); uvicorn then closes and :meth:`_stop` unloads the models."""
        self.stopping = True  # /readyz 503 and gRPC health NOT_SERVING at once
        self.peers.withdraw()  # ... in every worker of this server
        self._stop_deadline = time.monotonic() + self.settings.grace_s
        DRAIN.close()
        if self.grpc is not None:
            await self.grpc.begin_shutdown()
        await DRAIN.finish(self.settings.grace_s)

    @bentoml.on_shutdown
    async def _stop(self) -> None:
        self.stopping = True
        self.peers.withdraw()
        DRAIN.close()
        if self.grpc is not None:
            left = self.settings.grace_s
            if self._stop_deadline is not None:
                left = max(0.0, self._stop_deadline - time.monotonic())
            await self.grpc.stop(left)
        await self.engine.close()

    async def _answer(
        self,
        name: str,
        handler: t.Callable[..., t.Awaitable[dict]],
        response: type[BaseModel],
        version: int | None,
        label: str | None,
        **fields: t.Any,
    ) -> t.Any:
        try:
            with track(name, "rest"):
                model = self.model(name, version, label)
                return response.model_validate(
                    await handler(model, settings=self.settings, **fields)
                )
        except ServingError as exc:
            log_refusal(exc, "rest", name)
            return error_response(exc)

    @bentoml.api(route="/reuters/classify", input_spec=TopicsRequest)
    async def reuters_classify(
        self, texts: list[str], top_k: int = 3, version: int | None = None, label: str | None = None
    ) -> TopicsResponse:
        """The most likely Reuters topics of each newswire text."""
        return await self._answer(
            "reuters",
            endpoints.classify_topics,
            TopicsResponse,
            version,
            label,
            texts=texts,
            top_k=top_k,
        )

    @bentoml.api(route="/imdb/sentiment", input_spec=SentimentRequest)
    async def imdb_sentiment(
        self, texts: list[str], version: int | None = None, label: str | None = None
    ) -> SentimentResponse:
        """Positive or negative, for each movie review."""
        return await self._answer(
            "imdb", endpoints.sentiment, SentimentResponse, version, label, texts=texts
        )

    @bentoml.api(route="/cifar/classify", input_spec=ImagesRequest)
    async def cifar_classify(
        self,
        images: list[t.Any],
        top_k: int = 1,
        version: int | None = None,
        label: str | None = None,
    ) -> ImagesResponse:
        """CIFAR-10 class of each image (nested arrays, base64 or uploaded PNG/JPEG)."""
        return await self._answer(
            "cifar",
            endpoints.classify_images,
            ImagesResponse,
            version,
            label,
            images=images,
            top_k=top_k,
        )

    @bentoml.api(route="/mnist/classify", input_spec=ImagesRequest)
    async def mnist_classify(
        self,
        images: list[t.Any],
        top_k: int = 1,
        version: int | None = None,
        label: str | None = None,
    ) -> ImagesResponse:
        """Handwritten digit of each image (nested arrays, base64 or uploaded PNG/JPEG)."""
        return await self._answer(
            "mnist",
            endpoints.classify_images,
            ImagesResponse,
            version,
            label,
            images=images,
            top_k=top_k,
        )

    @bentoml.api(route="/cosine/forecast", input_spec=ForecastRequest)
    async def cosine_forecast(
        self,
        window: list[float],
        horizon: int = 1,
        version: int | None = None,
        label: str | None = None,
    ) -> ForecastResponse:
        """The next ``horizon`` values of the series (recursive one-step forecasts)."""
        return await self._answer(
            "cosine",
            endpoints.forecast,
            ForecastResponse,
            version,
            label,
            window=window,
            horizon=horizon,
        )

    @bentoml.api(route="/translate", input_spec=TranslateRequest)
    async def translate(
        self, sentences: list[str], version: int | None = None, label: str | None = None
    ) -> TranslateResponse:
        """English -> German translation of each sentence."""
        return await self._answer(
            "translator",
            endpoints.translate,
            TranslateResponse,
            version,
            label,
            sentences=sentences,
        )


# Outermost of the service's middleware: every request counted under its route template.
ModelServer.add_asgi_middleware(
    RouteMetrics,
    known_paths={api.route for api in ModelServer.apis.values()} | PROBE_PATHS,
    service_name=SERVICE_NAME,
)
# Next, with SERVICE_AUTH_TOKENS: no token, no door (the probes stay open).
if not AUTH.inference_open:
    ModelServer.add_asgi_middleware(RequireToken, settings=AUTH)
# Next: once shutting down, new requests are refused at once.
ModelServer.add_asgi_middleware(RefuseWhileDraining, drain=DRAIN)
# Next: the hot routes skip BentoML's per-request machinery.
ModelServer.add_asgi_middleware(FastRoutes, settings=SETTINGS, apis=ModelServer.apis)
