"""The BentoML service: a gateway in front of one batching runner per model.

``bentoml serve`` (from the repository root; ``bentofile.yaml`` names ``Gateway``) serves the
latest registered version of every model in the store (``$BENTOML_HOME``). This file only
wires: model runners from :mod:`service.runners`, the friendly endpoints of
:mod:`service.endpoints`, TF Serving's REST API from :mod:`service.tfserving_rest`.
See ``service/ARCHITECTURE.md``.

Typical usage::

    bentoml serve                       # http://localhost:3000, docs at /docs
    curl -X POST localhost:3000/imdb/sentiment -H 'content-type: application/json' \\
         -d '{"texts": ["a wonderful film"]}'
"""

from __future__ import annotations

import typing as t
from pathlib import Path

import _bentoml_impl.server
import bentoml
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from service import endpoints, tfserving_rest
from service.catalog import ModelInfo, bento_tags, latest_tags
from service.config import ServingSettings
from service.dispatch import ModelClient, track
from service.errors import ModelNotFound, ServingError
from service.middleware import BodyLimitMiddleware, ErrorShapeMiddleware
from service.runners import runner_service
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

SETTINGS = ServingSettings.from_env()
# Inside a built Bento (<bento>/src/service/service.py) serve the versions it was built with.
TAGS = bento_tags(Path(__file__).resolve().parents[2] / "bento.yaml", SETTINGS.models)
MODELS: dict[str, ModelInfo] = {
    name: ModelInfo.from_path(name, tag, bentoml.models.get(tag).path)
    for name, tag in (TAGS or latest_tags(SETTINGS.models)).items()
}
RUNNERS = {name: runner_service(info, SETTINGS) for name, info in MODELS.items()}


async def docs_page(request: Request) -> FileResponse:
    """Swagger UI at ``/docs`` (BentoML serves it at ``/``; the spec is ``/docs.json``)."""
    return FileResponse(Path(_bentoml_impl.server.__file__).parent / "main-openapi.html")


EXTRA_ROUTES = Starlette(
    routes=[*tfserving_rest.routes, Route("/docs", docs_page, methods=["GET"])]
)


def with_runners(cls: type) -> type:
    """Adds one ``bentoml.depends`` attribute per model runner (named after the model)."""
    for name, runner in RUNNERS.items():
        setattr(cls, name, bentoml.depends(runner))
    return cls


@bentoml.service(
    name="keras_serving",
    workers=SETTINGS.gateway_workers,
    traffic={"timeout": SETTINGS.timeout_s},
)
@bentoml.asgi_app(EXTRA_ROUTES, path="/")
@with_runners
class Gateway:
    """Friendly JSON endpoints and TF Serving's REST API for every served model."""

    def __init__(self) -> None:
        self.settings = SETTINGS
        self.models = {
            name: ModelClient(info, getattr(self, name)) for name, info in MODELS.items()
        }

    def model(self, name: str, version: str | int | None = None) -> ModelClient:
        """The client of model ``name`` (at ``version``, when given).

        Raises:
            ModelNotFound: not served, or not at that version.
        """
        client = self.models.get(name)
        if client is None:
            served = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"model '{name}' is not served (served: {served})")
        if version is not None and str(version) != str(client.info.version):
            raise ModelNotFound(
                f"version {version} of model '{name}' is not served (serving version {client.info.version})"
            )
        return client

    @bentoml.on_startup
    async def _start_grpc(self) -> None:
        """TF Serving's gRPC API on ``$GRPC_PORT``, in this worker's event loop."""
        from service import grpc_server  # grpc, health and reflection: gateway workers only

        self.grpc = await grpc_server.serve(self)

    @bentoml.on_shutdown
    async def _stop_grpc(self) -> None:
        if getattr(self, "grpc", None) is not None:
            await self.grpc.stop()

    async def _answer(
        self,
        name: str,
        handler: t.Callable[..., t.Awaitable[dict]],
        response: type[BaseModel],
        **fields: t.Any,
    ) -> t.Any:
        try:
            with track(name, "rest"):
                return response.model_validate(
                    await handler(self.model(name), settings=self.settings, **fields)
                )
        except ServingError as exc:
            return JSONResponse(exc.to_json(), status_code=int(exc.error_code))

    @bentoml.api(route="/reuters/classify", input_spec=TopicsRequest)
    async def reuters_classify(self, texts: list[str], top_k: int = 3) -> TopicsResponse:
        """The most likely Reuters topics of each newswire text."""
        return await self._answer(
            "reuters", endpoints.classify_topics, TopicsResponse, texts=texts, top_k=top_k
        )

    @bentoml.api(route="/imdb/sentiment", input_spec=SentimentRequest)
    async def imdb_sentiment(self, texts: list[str]) -> SentimentResponse:
        """Positive or negative, for each movie review."""
        return await self._answer("imdb", endpoints.sentiment, SentimentResponse, texts=texts)

    @bentoml.api(route="/cifar/classify", input_spec=ImagesRequest)
    async def cifar_classify(self, images: list[t.Any], top_k: int = 1) -> ImagesResponse:
        """CIFAR-10 class of each image (nested arrays, base64 or uploaded PNG/JPEG)."""
        return await self._answer(
            "cifar", endpoints.classify_images, ImagesResponse, images=images, top_k=top_k
        )

    @bentoml.api(route="/mnist/classify", input_spec=ImagesRequest)
    async def mnist_classify(self, images: list[t.Any], top_k: int = 1) -> ImagesResponse:
        """Handwritten digit of each image (nested arrays, base64 or uploaded PNG/JPEG)."""
        return await self._answer(
            "mnist", endpoints.classify_images, ImagesResponse, images=images, top_k=top_k
        )

    @bentoml.api(route="/cosine/forecast", input_spec=ForecastRequest)
    async def cosine_forecast(self, window: list[float], horizon: int = 1) -> ForecastResponse:
        """The next ``horizon`` values of the series (recursive one-step forecasts)."""
        return await self._answer(
            "cosine", endpoints.forecast, ForecastResponse, window=window, horizon=horizon
        )

    @bentoml.api(route="/translate", input_spec=TranslateRequest)
    async def translate(self, sentences: list[str]) -> TranslateResponse:
        """English -> German translation of each sentence."""
        return await self._answer(
            "translator", endpoints.translate, TranslateResponse, sentences=sentences
        )


Gateway.add_asgi_middleware(ErrorShapeMiddleware)
Gateway.add_asgi_middleware(BodyLimitMiddleware, max_bytes=SETTINGS.max_body_bytes)
