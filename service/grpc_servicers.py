"""The RPCs of the gRPC door: TF Serving's ``PredictionService`` and ``ModelService`` over the
gateway's :class:`~service.dispatch.ModelClient` objects (the runners' batch queues).

Every handler validates at the door (:mod:`service.grpc_codec`), counts the request in the
same metrics as the HTTP doors (door ``grpc``) and turns a
:class:`~service.errors.ServingError` into its status code (each class's ``grpc_code``);
anything unexpected is logged and answered INTERNAL. :mod:`service.grpc_server` runs them.

Typical usage::

    models = Models(gateway.models, gateway.model, Limits(max_rows=64, max_bytes=8 << 20))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(models), server
    )
"""

from __future__ import annotations

import asyncio
import functools
import logging
import typing as t

import grpc

from service import grpc_codec as codec
from service.dispatch import ModelClient, track
from service.errors import (
    InvalidInput,
    ModelNotFound,
    NotReady,
    PayloadTooLarge,
    ServingError,
)
from tfserving_api._proto.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

logger = logging.getLogger("bentoml.keras_serving.grpc")

Resolver = t.Callable[[str, "str | int | None"], ModelClient]


def status_code(error: ServingError) -> grpc.StatusCode:
    """The gRPC code of a service error: its class's ``grpc_code`` (INTERNAL by default)."""
    return getattr(grpc.StatusCode, error.grpc_code)


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
        """Raises ``NotReady`` while the model loads or its runner is unreachable."""
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
