"""The Open Inference Protocol's gRPC API: ``inference.GRPCInferenceService``, on the same port
and through the same :class:`~service.served_model.ServedModel` objects as TF Serving's.

``ServerLive``, ``ServerReady`` (every model of every worker warm, as gRPC health),
``ModelReady``, ``ServerMetadata``, ``ModelMetadata`` (the default signature),
``ModelInfer``, and the model repository extension's admin calls (``RepositoryIndex``,
``RepositoryModelLoad``, ``RepositoryModelUnload``: :mod:`service.v2_repository`).
``ModelInfer`` takes inputs in ``raw_input_contents`` (what tritonclient sends) or typed
``contents``, the ``signature_name`` parameter, ``outputs`` honoured, ``id`` echoed; the
answer is always in ``raw_output_contents``, the only form tritonclient's ``as_numpy``
reads. A ``model_version`` that is not a number names a version label. Requests are
counted with door ``v2-grpc``; errors are the status codes of ``service/errors.py``.
The request decoding and validation are :mod:`service.v2_codec`'s, shared with the REST door.

Typical usage::

    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(models, ready=server.ready), grpc_server
    )
"""

from __future__ import annotations

import typing as t

import grpc
from google.protobuf import json_format

from service import v2_codec as v2
from service import v2_repository as repository
from service.auth import require_admin
from service.errors import DeadlineExceeded, InvalidInput, NotReady, Unsupported
from service.grpc_servicers import Models, _rpc
from service.metrics import track
from service.served_model import ServedModel
from tfserving_api._proto.inference import grpc_predict_v2_pb2 as pb
from tfserving_api._proto.inference import grpc_predict_v2_pb2_grpc
from tfserving_api.open_inference import to_raw

DOOR = "v2-grpc"
SERVICE = "inference.GRPCInferenceService"
EXTENSIONS = (
    v2.BINARY_EXTENSION, v2.CLASSIFICATION_EXTENSION, repository.REPOSITORY_EXTENSION
)


def _parameter(parameters: t.Mapping[str, t.Any], key: str) -> t.Any:
    """A request parameter's value (whichever of its oneof is set), or None."""
    if key not in parameters:
        return None
    value = parameters[key]
    choice = value.WhichOneof("parameter_choice")
    return None if choice is None else getattr(value, choice)


def infer_request(request: pb.ModelInferRequest) -> v2.InferRequest:
    """A ``ModelInferRequest`` -> the protocol-neutral request of :mod:`service.v2_codec`.

    Raises:
        InvalidInput: raw contents that do not pair with the inputs, or given with typed
            contents.
    """
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs "
            "(one per input, in order)"
        )
    inputs = []
    for index, tensor in enumerate(request.inputs):
        where = f"inputs[{index}]"
        item = v2.InputTensor(
            field=where, name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape)
        )
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(f"{where}.contents: not allowed with raw_input_contents")
            item.raw = raw[index]
        elif tensor.HasField("contents"):
            item.contents = tensor.contents
        inputs.append(item)
    outputs = [(f"outputs[{i}]", output.name) for i, output in enumerate(request.outputs)]
    classification = {
        output.name: (f"outputs[{i}]", _parameter(output.parameters, "classification"))
        for i, output in enumerate(request.outputs)
        if "classification" in output.parameters
    }
    return v2.InferRequest(
        inputs=inputs,
        outputs=outputs,
        id=request.id,
        signature_name=_parameter(request.parameters, v2.SIGNATURE_PARAMETER),
        classification=classification,
    )


class InferenceServicer(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` over the worker's models."""

    def __init__(self, models: Models, ready: t.Callable[[], bool] | None = None) -> None:
        self.models = models
        self.ready = ready or (lambda: models.ready)

    def _resolve(self, name: str, version: str) -> ServedModel:
        """The version answering ``name`` at ``version`` (empty: the default; not a number:
        a version label).

        Raises:
            InvalidInput: no model name.
            ModelNotFound, NotReady: as :meth:`service.service.ModelServer.model`.
        """
        if not name:
            raise InvalidInput("name: required (the model's name)")
        label = None
        if version and not (version.isascii() and version.isdigit()):
            version, label = "", version
        return self.models.resolve(name, version or None, label)

    @_rpc
    async def ServerLive(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=bool(self.ready()))

    @_rpc
    async def ModelReady(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        try:
            model = self._resolve(request.name, request.version)
        except NotReady:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=bool(model.ready))

    @_rpc
    async def ServerMetadata(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return json_format.ParseDict(v2.server_metadata(EXTENSIONS), pb.ServerMetadataResponse())

    @_rpc
    async def ModelMetadata(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        model = self._resolve(request.name, request.version)
        versions = self.models.models[model.info.name].status()
        served = [v for v, state, _ in versions if state == "AVAILABLE"]
        return json_format.ParseDict(
            v2.model_metadata(model.info, served), pb.ModelMetadataResponse()
        )

    @_rpc
    async def ModelInfer(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        with track(self.models.metric_name(request.model_name), DOOR):
            self.models.check_size(request)
            model = self._resolve(request.model_name, request.model_version)
            parsed = infer_request(request)
            signature = v2.choose_signature(
                model.info, parsed.signature_name, parsed.input_names
            )
            names = v2.select_outputs(signature, parsed.outputs)
            classes = v2.class_counts(signature, parsed.classification)
            batch = v2.decode_inputs(
                parsed.inputs, signature, self.models.limits, model.info.vocab_size
            )
            outputs = await model.run(signature.name, batch)
        response = pb.ModelInferResponse(
            model_name=model.info.name, model_version=str(model.info.version), id=request.id
        )
        response.parameters[v2.SIGNATURE_PARAMETER].string_param = signature.name
        for name in names:
            row, array = v2.output_tensor(
                outputs, signature, name, classes.get(name), model.info.labels
            )
            response.outputs.add(name=name, datatype=row.name, shape=array.shape)
            response.raw_output_contents.append(to_raw(array, row))
        return response

    # ------------------------------------------------------------ model repository (admin)

    @_rpc
    async def RepositoryIndex(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        require_admin(context.invocation_metadata(), "RepositoryIndex", self.models.auth)
        response = pb.RepositoryIndexResponse()
        for row in repository.repository_index(self.models.models, request.ready):
            response.models.add(**row)
        return response

    @_rpc
    async def RepositoryModelLoad(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        require_admin(context.invocation_metadata(), "RepositoryModelLoad", self.models.auth)
        if self.models.reload is None:
            raise Unsupported("RepositoryModelLoad: config reloads are off here")
        parameters = {
            key: _parameter(request.parameters, key) for key in request.parameters
        }
        config = repository.load_config(
            self.models.config(),
            request.model_name,
            self.models.models,
            repository.config_parameter(parameters),
        )
        try:
            await self.models.reload(config)
        except TimeoutError as exc:
            raise DeadlineExceeded(f"config: {exc}") from None
        return pb.RepositoryModelLoadResponse()

    @_rpc
    async def RepositoryModelUnload(
        self, request: t.Any, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        require_admin(context.invocation_metadata(), "RepositoryModelUnload", self.models.auth)
        repository.refuse_unload(request.model_name, self.models.models)
