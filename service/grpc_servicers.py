"""The RPCs of the gRPC door: TF Serving's ``PredictionService`` and ``ModelService`` over the
worker's :class:`~service.engine.ServedModel` objects (the same batch queues as HTTP).

Every handler validates at the door (:mod:`service.grpc_codec`), counts the request in the
same metrics as the HTTP doors (door ``grpc``) and turns a
:class:`~service.errors.ServingError` into its status code (each class's ``grpc_code``);
anything unexpected is logged and answered INTERNAL. :mod:`service.grpc_server` runs them.

Typical usage::

    models = Models(server.models, server.model, Limits(max_rows=64, max_bytes=8 << 20))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(models), server
    )
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import typing as t

import grpc

from service import grpc_codec as codec
from service.engine import ServedModel, request_deadline
from service.errors import (
    InvalidInput,
    ModelNotFound,
    PayloadTooLarge,
    ServingError,
    log_refusal,
)
from service.metrics import track
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

Resolver = t.Callable[[str, "str | int | None"], ServedModel]


def status_code(error: ServingError) -> grpc.StatusCode:
    """The gRPC code of a service error: its class's ``grpc_code`` (INTERNAL by default)."""
    return getattr(grpc.StatusCode, error.grpc_code)


class Undecodable:
    """What a handler receives for bytes that are not its request message."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _rpc(method: t.Callable[..., t.Awaitable[t.Any]]) -> t.Callable[..., t.Awaitable[t.Any]]:
    """Turns service errors into statuses; anything else is a logged INTERNAL, so nothing a
    client sends can take the worker down."""

    @functools.wraps(method)
    async def handler(self: t.Any, request: t.Any, context: grpc.aio.ServicerContext) -> t.Any:
        if isinstance(request, Undecodable):
            logger.info("%s: undecodable request (%s)", method.__name__, request.reason)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request: not a valid {method.__name__} request message ({request.reason})",
            )
        remaining = context.time_remaining()
        if remaining is not None:  # the call's deadline: expired requests never reach the model
            request_deadline.set(time.monotonic() + remaining)
        try:
            return await method(self, request, context)
        except ServingError as exc:
            log_refusal(exc, "grpc", method.__name__)
            await context.abort(status_code(exc), exc.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error, see the server log")

    return handler


class Models:
    """What the servicers share: model lookup and the request caps."""

    def __init__(
        self, models: t.Mapping[str, ServedModel], resolve: Resolver, limits: codec.Limits
    ) -> None:
        self.models = models
        self.limits = limits
        self._resolve = resolve

    def metric_name(self, name: str) -> str:
        return name if name in self.models else "unknown"  # bounded label values

    @property
    def ready(self) -> bool:
        """Every model of this worker is loaded and warmed up."""
        return all(model.ready for model in self.models.values())

    def get(self, spec: model_pb2.ModelSpec) -> ServedModel:
        """The model of ``spec`` at ``spec``'s version (the served one if none).

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

    def check_size(self, request: t.Any) -> None:
        size = request.ByteSize()
        if size > self.limits.max_bytes:
            raise PayloadTooLarge(
                f"request: {size} bytes exceed the cap of {self.limits.max_bytes}"
            )

    def model_spec(self, model: ServedModel, signature: str = "") -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=model.info.name, signature_name=signature)
        spec.version.value = model.info.version
        return spec


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService`` over the gateway's model clients."""

    def __init__(self, models: Models) -> None:
        self.models = models

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
            outputs = await client.run(signature.name, batch)
        response = predict_pb2.PredictResponse(
            model_spec=self.models.model_spec(client, signature.name)
        )
        for name, tensor in codec.encode_outputs(outputs, signature, names).items():
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
    ) -> tuple[ServedModel, t.Any, dict[str, t.Any]]:
        # Whether the model fits is decided before counting the request: like MultiInference,
        # an UNIMPLEMENTED answer is not a model request (nor a 5xx in the request metric).
        client = self.models.get(request.model_spec)
        signature = fit(client.info, request.model_spec.signature_name)
        with track(client.info.name, "grpc"):
            self.models.check_size(request)
            batch = codec.examples_batch(request.input, signature.input, self.models.limits)
            outputs = await client.run(signature.name, batch)
        return client, signature, outputs

    @_rpc
    async def Classify(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        client, signature, outputs = await self._run_examples(request, codec.classify_signature)
        return classification_pb2.ClassificationResponse(
            model_spec=self.models.model_spec(client, signature.name),
            result=codec.classification_result(outputs, client.info),
        )

    @_rpc
    async def Regress(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> regression_pb2.RegressionResponse:
        client, signature, outputs = await self._run_examples(request, codec.regress_signature)
        return regression_pb2.RegressionResponse(
            model_spec=self.models.model_spec(client, signature.name),
            result=codec.regression_result(outputs, signature),
        )

    async def MultiInference(self, request: t.Any, context: grpc.aio.ServicerContext) -> t.NoReturn:
        # The generated default raises NotImplementedError, which grpc.aio logs as an error
        # with a traceback on every call; the status (UNIMPLEMENTED) is the same.
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "MultiInference is not supported; use Predict, Classify or Regress",
        )


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService/GetModelStatus``: the served version and its state."""

    def __init__(self, models: Models) -> None:
        self.models = models

    @_rpc
    async def GetModelStatus(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        model = self.models.get(request.model_spec)
        states = get_model_status_pb2.ModelVersionStatus
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add(
            version=model.info.version, state=getattr(states, model.state.value)
        )  # status: error_code OK (0), empty message, unless loading failed
        if model.error:
            status.status.error_code = 2  # tensorflow.error.Code UNKNOWN, as TF Serving reports
            status.status.error_message = model.error
        return response
