"""gRPC protocol (no I/O): everything through TF Serving's services.

The typed methods are thin layers over `Predict` with the signatures of
docs/contracts.md; top-k, sentiment labels and recursive forecasts are computed here
from the raw `probabilities` / `label` / `forecast` outputs.

Label names: TF Serving's metadata carries no class names, so the client asks for them
once per model with ``GetModelMetadata(metadata_field=["labels"])``. A server that has
them answers with ``metadata["labels"]``: an `Any` packing a `tensorflow.TensorProto`,
DT_STRING, 1-D, the UTF-8 names in class-index order. A server that does not (stock TF
Serving rejects unknown fields with INVALID_ARGUMENT) just leaves `label` None in the
results; indices are always there. Names passed to the client's constructor
(``labels={"reuters": [...]}``) take precedence and skip the lookup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clients import _inputs
from clients._api import Op
from clients.errors import ClientError, DeadlineExceeded, ModelNotFound, ServerError, Unavailable
from clients.types import (
    Forecast,
    ImageClassification,
    ModelInfo,
    ModelRef,
    ModelStatus,
    SentimentResult,
    SignatureInfo,
    TensorSpec,
    TopicPrediction,
    Translation,
    VersionStatus,
    sentiment_result,
    top_scores,
)
from tfserving_api._proto.grpc_health.v1 import health_pb2
from tfserving_api._proto.tensorflow.core.framework import tensor_pb2, types_pb2
from tfserving_api._proto.tensorflow.core.protobuf import meta_graph_pb2
from tfserving_api._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
    status_pb2,
)
from tfserving_api.contract import (
    FORECAST_SIGNATURE,
    FORECAST_STEPS_SIGNATURE,
    LABELS_FIELD,
    PREDICT_IMAGES_SIGNATURE,
    PREDICT_TEXT_SIGNATURE,
    SIGNATURE_DEF_FIELD,
    TENSOR_SIGNATURE,
    TRANSLATE_SIGNATURE,
)
from tfserving_api.tensors import BY_ENUM, shape_of, to_ndarray, to_tensor_proto

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
_ERROR_CODE = status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type


@dataclass(frozen=True)
class Rpc:
    """One unary call for the client to make; the response is the reply message."""

    method: str  # "Predict", "GetModelMetadata", "GetModelStatus" or "Check"
    request: Any
    retry: bool = True  # False for probes: they must answer fast, not retry


def model_spec(
    name: str, version: int | None = None, signature: str | None = None
) -> model_pb2.ModelSpec:
    """A ModelSpec; no version means the latest, as in TF Serving."""
    spec = model_pb2.ModelSpec(name=name, signature_name=signature or "")
    if version is not None:
        spec.version.value = version
    return spec


def _model_ref(response: predict_pb2.PredictResponse, fallback: str) -> ModelRef:
    spec = response.model_spec
    version = spec.version.value if spec.HasField("version") else None
    return ModelRef(spec.name or fallback, version)


def _output(response: predict_pb2.PredictResponse, name: str, rows: int) -> np.ndarray:
    """Output `name`, which must have one row per request item."""
    if name not in response.outputs:
        raise ServerError(f"response has no output {name!r}; got {sorted(response.outputs)}")
    array = to_ndarray(response.outputs[name])
    if array.ndim == 0 or len(array) != rows:
        raise ServerError(f"output {name!r} has shape {array.shape}, expected {rows} rows")
    return array


def _tensor_spec(info: meta_graph_pb2.TensorInfo) -> TensorSpec:
    row = BY_ENUM.get(info.dtype)
    if row is not None:
        name = row.name
    elif info.dtype in types_pb2.DataType.values():  # e.g. DT_BFLOAT16: report, don't fail
        name = types_pb2.DataType.Name(info.dtype).removeprefix("DT_").lower()
    else:
        name = str(info.dtype)
    return TensorSpec(name, shape_of(info.tensor_shape))


def parse_signatures(signature_defs: Mapping[str, Any]) -> dict[str, SignatureInfo]:
    """`SignatureDef` messages as SignatureInfo objects."""
    return {
        name: SignatureInfo(
            name=name,
            inputs={k: _tensor_spec(v) for k, v in sig.inputs.items()},
            outputs={k: _tensor_spec(v) for k, v in sig.outputs.items()},
            method_name=sig.method_name,
        )
        for name, sig in signature_defs.items()
    }


class TFServingProtocol:
    """The gRPC flavour of `clients._api.Operations`."""

    def __init__(self, labels: Mapping[str, Sequence[str]] | None = None) -> None:
        # model -> label names, or None once the server said it has none
        self._labels: dict[str, tuple[str, ...] | None] = {
            model: tuple(names) for model, names in (labels or {}).items()
        }
        # Whether the server's cosine export has `forecast_steps` (None: not asked yet).
        self._forecast_steps: bool | None = None

    def _predict(
        self, model: str, signature: str, inputs: Mapping[str, Any], version: int | None = None
    ) -> Op[predict_pb2.PredictResponse]:
        request = predict_pb2.PredictRequest(model_spec=model_spec(model, version, signature))
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(
                value if isinstance(value, tensor_pb2.TensorProto) else to_tensor_proto(value)
            )
        return (yield Rpc("Predict", request))

    def labels(self, model: str) -> Op[tuple[str, ...] | None]:
        """Label names of `model`, looked up once (see the module docstring)."""
        if model not in self._labels:
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=model_spec(model), metadata_field=[LABELS_FIELD]
            )
            try:
                response = yield Rpc("GetModelMetadata", request)
            except (Unavailable, DeadlineExceeded):
                raise  # transient: report it, and ask again next time
            except ClientError:
                # INVALID_ARGUMENT (stock TF Serving), UNIMPLEMENTED...: no names here.
                self._labels[model] = None
            else:
                self._labels[model] = self._unpack_labels(response)
        return self._labels[model]

    @staticmethod
    def _unpack_labels(response: Any) -> tuple[str, ...] | None:
        if LABELS_FIELD not in response.metadata:
            return None
        tensor = tensor_pb2.TensorProto()
        if not response.metadata[LABELS_FIELD].Unpack(tensor):
            raise ServerError("metadata['labels'] does not hold a tensorflow.TensorProto")
        return tuple(
            v.decode("utf-8") if isinstance(v, bytes) else str(v)
            for v in to_ndarray(tensor).reshape(-1)
        )

    def classify_topic(self, texts: Sequence[str], top_k: int) -> Op[list[TopicPrediction]]:
        batch, k = _inputs.texts(texts), _inputs.positive_int(top_k, "top_k")
        response = yield from self._predict("reuters", PREDICT_TEXT_SIGNATURE, {"text": batch})
        probabilities = _output(response, "probabilities", len(batch))
        labels = yield from self.labels("reuters")
        model = _model_ref(response, "reuters")
        return [TopicPrediction(top_scores(p, k, labels), model) for p in probabilities]

    def sentiment(self, texts: Sequence[str]) -> Op[list[SentimentResult]]:
        batch = _inputs.texts(texts)
        response = yield from self._predict("imdb", PREDICT_TEXT_SIGNATURE, {"text": batch})
        probabilities = _output(response, "probabilities", len(batch))
        # `label` is the model's own argmax; prefer it so ties break as on the server.
        has_label = "label" in response.outputs
        labels = _output(response, "label", len(batch)) if has_label else [None] * len(batch)
        model = _model_ref(response, "imdb")
        return [
            sentiment_result(p, label, model)
            for p, label in zip(probabilities, labels, strict=True)
        ]

    def classify_image(self, images: Any, model: str, top_k: int) -> Op[list[ImageClassification]]:
        name, k = _inputs.image_model(model), _inputs.positive_int(top_k, "top_k")
        batch = _inputs.images(images)
        if batch.dtype == np.uint8:
            response = yield from self._predict(name, PREDICT_IMAGES_SIGNATURE, {"images": batch})
        else:
            response = yield from self._predict(name, TENSOR_SIGNATURE, {"pixels": batch})
        probabilities = _output(response, "probabilities", len(batch))
        labels = yield from self.labels(name)
        ref = _model_ref(response, name)
        results = []
        for p in probabilities:
            top = top_scores(p, k, labels)
            results.append(
                ImageClassification(top[0].label, top[0].index, top[0].probability, top, ref)
            )
        return results

    def forecast(self, window: Sequence[float], horizon: int) -> Op[Forecast]:
        history, steps = _inputs.window(window), _inputs.positive_int(horizon, "horizon")
        values: list[float] = []
        ref = ModelRef("cosine")
        # Recursive multi-step forecast: each prediction slides into the window. Exports
        # with `forecast_steps` do 100 steps in one call; older ones take one call a step.
        while len(values) < steps:
            if steps - len(values) > 1 and self._forecast_steps is not False:
                try:
                    response = yield from self._predict(
                        "cosine", FORECAST_STEPS_SIGNATURE, {"window": history[None, :]}
                    )
                except ModelNotFound:
                    self._forecast_steps = False  # an older export: one step per call
                    continue
                self._forecast_steps = True
                new = _output(response, "forecast", 1).reshape(-1)[: steps - len(values)]
            else:
                response = yield from self._predict(
                    "cosine", FORECAST_SIGNATURE, {"window": history[None, :]}
                )
                new = _output(response, "forecast", 1).reshape(-1)[:1]
            new = new.astype(np.float32)
            values.extend(float(v) for v in new)
            history = np.concatenate([history, new])[-len(history) :]
            ref = _model_ref(response, "cosine")
        return Forecast(tuple(values), ref)

    def translate(self, sentences: Sequence[str]) -> Op[list[Translation]]:
        sources = _inputs.texts(sentences, "sentences")
        response = yield from self._predict(
            "translator", TRANSLATE_SIGNATURE, {"sentences": sources}
        )
        texts = _output(response, "translation", len(sources))
        model = _model_ref(response, "translator")
        return [
            Translation(s, t.decode("utf-8") if isinstance(t, bytes) else str(t), model)
            for s, t in zip(sources, texts, strict=True)
        ]

    def predict(
        self, model: str, inputs: Mapping[str, Any], signature: str | None, version: int | None
    ) -> Op[dict[str, np.ndarray]]:
        items = _inputs.inputs(inputs)
        response = yield from self._predict(model, signature or "", items, _inputs.version(version))
        return {name: to_ndarray(tensor) for name, tensor in response.outputs.items()}

    def metadata(self, model: str, version: int | None) -> Op[ModelInfo]:
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=model_spec(model, _inputs.version(version)),
            metadata_field=[SIGNATURE_DEF_FIELD],
        )
        response = yield Rpc("GetModelMetadata", request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        if SIGNATURE_DEF_FIELD in response.metadata:
            if not response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map):
                raise ServerError("metadata['signature_def'] is not a SignatureDefMap")
        labels = yield from self.labels(model)
        spec = response.model_spec
        return ModelInfo(
            name=spec.name or model,
            version=spec.version.value if spec.HasField("version") else version,
            signatures=parse_signatures(signature_map.signature_def),
            labels=labels,
        )

    def status(self, model: str) -> Op[ModelStatus]:
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_spec(model))
        response = yield Rpc("GetModelStatus", request)
        state = get_model_status_pb2.ModelVersionStatus.State
        versions = tuple(
            VersionStatus(
                version=v.version,
                state=state.Name(v.state) if v.state in state.values() else str(v.state),
                error_code=_code_name(v.status.error_code),
                error_message=v.status.error_message,
            )
            for v in response.model_version_status
        )
        return ModelStatus(model, versions)

    def health(self) -> Op[bool]:
        return (yield from self._check(""))

    def ready(self) -> Op[bool]:
        try:
            return (yield from self._check(PREDICTION_SERVICE, missing_ok=False))
        except ModelNotFound:
            # The server does not report the service separately: overall health it is.
            return (yield from self._check(""))

    def _check(self, service: str, missing_ok: bool = True) -> Op[bool]:
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            response = yield Rpc("Check", request, retry=False)
        except (Unavailable, DeadlineExceeded):
            return False
        except ModelNotFound:
            if missing_ok:
                return False
            raise
        return response.status == health_pb2.HealthCheckResponse.SERVING


def _code_name(code: int) -> str:
    value = _ERROR_CODE.values_by_number.get(code)
    return value.name if value else str(code)
