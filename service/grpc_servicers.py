"""The RPCs of the gRPC door: TF Serving's ``PredictionService`` and ``ModelService`` over the
worker's :class:`~service.served_model.ServedModel` objects (the same batch queues as HTTP).

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
from service.auth import AuthSettings, require_admin, settings_from_env
from service.client_text import clip
from service.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    PayloadTooLarge,
    ServingError,
    Unsupported,
    log_refusal,
)
from service.metrics import track
from service.model_versions import ModelVersions
from service.served_model import ServedModel, request_deadline
from service.versions import ConfigError, ServingConfig, config_from_proto
from tfserving_api._proto.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

logger = logging.getLogger("bentoml.keras_serving.grpc")

Reloader = t.Callable[[ServingConfig], t.Awaitable[None]]
# (name, version, label) -> the version that answers (ModelServer.model).
Resolver = t.Callable[[str, "int | None", "str | None"], ServedModel]


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
        self,
        models: t.Mapping[str, ModelVersions],
        resolve: Resolver,
        limits: codec.Limits,
        reload: Reloader | None = None,
        auth: AuthSettings | None = None,
        config: t.Callable[[], ServingConfig] | None = None,
    ) -> None:
        self.models = models
        self.limits = limits
        self.reload = reload  # HandleReloadConfigRequest (None: refused, UNIMPLEMENTED)
        # The model config in force (V2 RepositoryModelLoad edits it); default: no config.
        self.config = config or ServingConfig
        # Who may call the admin RPCs, and the inference tokens (default: the environment's).
        self.auth = auth or settings_from_env()
        self._resolve = resolve

    def resolve(self, name: str, version: int | str | None, label: str | None) -> ServedModel:
        """The version of ``name`` answering ``version``, ``label`` or neither."""
        return self._resolve(name, version, label)

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
        choice = spec.WhichOneof("version_choice")
        try:
            if choice == "version_label":
                return self._resolve(spec.name, None, spec.version_label)
            return self._resolve(spec.name, spec.version.value if choice else None, None)
        except ServingError as exc:  # name the proto field the client set
            field, _, rest = exc.message.partition(":")
            if choice and field in ("version", "label"):
                exc.message = (
                    f"model_spec.{'version' if field == 'version' else 'version_label'}:{rest}"
                )
            raise

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
        response = predict_pb2.PredictResponse()
        spec = response.model_spec
        spec.name, spec.signature_name = client.info.name, signature.name
        spec.version.value = client.info.version
        codec.encode_outputs_into(response.outputs, outputs, signature, names)
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
            batch = codec.examples_batch(
                request.input,
                signature.input,
                self.models.limits,
                codec.token_vocab(signature, client.info.vocab_size),
            )
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
    """``tensorflow.serving.ModelService``: every version's state, and config reloads."""

    def __init__(self, models: Models) -> None:
        self.models = models

    @_rpc
    async def GetModelStatus(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        if not spec.name:
            raise InvalidInput("model_spec.name: required")
        versions = self.models.models.get(spec.name)
        if versions is None:
            self.models.get(spec)  # ModelNotFound naming the served models
        rows = versions.status()
        if spec.WhichOneof("version_choice") is not None:
            wanted = (
                self.models.get(spec).info.version if spec.version_label else spec.version.value
            )
            rows = [row for row in rows if row[0] == wanted]
            if not rows:
                raise ModelNotFound(
                    f"model_spec.version: model '{clip(spec.name)}' has no version {wanted}"
                )
        states = get_model_status_pb2.ModelVersionStatus
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state, error in rows:
            status = response.model_version_status.add(
                version=version, state=getattr(states, state)
            )  # status: error_code OK (0), empty message, unless loading failed
            if error:
                status.status.error_code = 2  # tensorflow.error.Code UNKNOWN, as TF Serving
                status.status.error_message = error
        return response

    @_rpc
    async def HandleReloadConfigRequest(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        # An admin call: it changes what every client is served (service.auth).
        require_admin(context.invocation_metadata(), "HandleReloadConfigRequest", self.models.auth)
        if self.models.reload is None:
            raise Unsupported("HandleReloadConfigRequest: config reloads are off here")
        try:
            config = config_from_proto(request.config)
        except ConfigError as exc:
            raise InvalidInput(str(exc)) from None
        try:
            await self.models.reload(config)
        except TimeoutError as exc:
            raise DeadlineExceeded(f"config: {exc}") from None
        return model_management_pb2.ReloadConfigResponse()
