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
(``labels={"reuters": [...]}``) take precedence and skip the lookup. Names are kept per
version that answered (a new version may be trained on other classes), so a label that
moves to another version is looked up again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clients import _inputs
from clients._api import Op
from clients.errors import (
    ClientError,
    DeadlineExceeded,
    ModelNotFound,
    ServerError,
    Unavailable,
    from_grpc_code,
)
from clients.model_config import reload_config_request
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

    method: str  # "Predict", "GetModelMetadata", "GetModelStatus", "Check"...
    request: Any
    retry: bool = True  # False for probes: they must answer fast, not retry


def model_spec(
    name: str,
    version: int | None = None,
    signature: str | None = None,
    label: str | None = None,
) -> model_pb2.ModelSpec:
    """A ModelSpec; no version and no label means the latest, as in TF Serving."""
    spec = model_pb2.ModelSpec(name=name, signature_name=signature or "")
    if version is not None:
        spec.version.value = version
    elif label is not None:
        spec.version_label = label
    return spec


def _answered_version(response: Any) -> int | None:
    """The version named in a response's `model_spec` (None if the server did not say)."""
    spec = response.model_spec
    return spec.version.value if spec.HasField("version") else None


def _model_ref(response: predict_pb2.PredictResponse, fallback: str) -> ModelRef:
    return ModelRef(response.model_spec.name or fallback, _answered_version(response))


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
    """The gRPC flavour of the operations declared in `clients._api.SyncAPI`."""

    def __init__(self, labels: Mapping[str, Sequence[str]] | None = None) -> None:
        # model -> label names given to the constructor, for every version
        self._given_labels = {model: tuple(names) for model, names in (labels or {}).items()}
        # (model, version, version label) -> label names, or None once the server said it
        # has none. The version is the one that answered when the server says it.
        self._labels: dict[tuple[str, int | None, str | None], tuple[str, ...] | None] = {}
        # (version, version label) of cosine -> whether that export has `forecast_steps`.
        self._forecast_steps: dict[tuple[int | None, str | None], bool] = {}

    def _predict(
        self,
        model: str,
        signature: str,
        inputs: Mapping[str, Any],
        version: int | None = None,
        label: str | None = None,
    ) -> Op[predict_pb2.PredictResponse]:
        spec = model_spec(model, version, signature, label)
        request = predict_pb2.PredictRequest(model_spec=spec)
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(
                value if isinstance(value, tensor_pb2.TensorProto) else to_tensor_proto(value)
            )
        return (yield Rpc("Predict", request))

    def labels(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> Op[tuple[str, ...] | None]:
        """Label names of a version of `model`, looked up once (see the module docstring)."""
        if model in self._given_labels:
            return self._given_labels[model]
        key = (model, version, None if version is not None else label)
        if key not in self._labels:
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=model_spec(model, version, label=key[2]),
                metadata_field=[LABELS_FIELD],
            )
            try:
                response = yield Rpc("GetModelMetadata", request)
            except (Unavailable, DeadlineExceeded):
                raise  # transient: report it, and ask again next time
            except ClientError:
                # INVALID_ARGUMENT (stock TF Serving), UNIMPLEMENTED...: no names here.
                self._labels[key] = None
            else:
                self._labels[key] = self._unpack_labels(response)
        return self._labels[key]

    def _labels_of(
        self, model: str, response: Any, version: int | None, label: str | None
    ) -> Op[tuple[str, ...] | None]:
        """Label names of the version that produced `response`."""
        answered = _answered_version(response)
        if answered is not None:
            return (yield from self.labels(model, answered))
        return (yield from self.labels(model, version, label))

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

    def classify_topic(
        self, texts: Sequence[str], top_k: int, version: int | None, label: str | None
    ) -> Op[list[TopicPrediction]]:
        batch, k = _inputs.texts(texts), _inputs.positive_int(top_k, "top_k")
        version, label = _inputs.version_or_label(version, label)
        response = yield from self._predict(
            "reuters", PREDICT_TEXT_SIGNATURE, {"text": batch}, version, label
        )
        probabilities = _output(response, "probabilities", len(batch))
        labels = yield from self._labels_of("reuters", response, version, label)
        model = _model_ref(response, "reuters")
        return [TopicPrediction(top_scores(p, k, labels), model) for p in probabilities]

    def sentiment(
        self, texts: Sequence[str], version: int | None, label: str | None
    ) -> Op[list[SentimentResult]]:
        batch = _inputs.texts(texts)
        version, label = _inputs.version_or_label(version, label)
        response = yield from self._predict(
            "imdb", PREDICT_TEXT_SIGNATURE, {"text": batch}, version, label
        )
        probabilities = _output(response, "probabilities", len(batch))
        # `label` is the model's own argmax; prefer it so ties break as on the server.
        has_label = "label" in response.outputs
        labels = _output(response, "label", len(batch)) if has_label else [None] * len(batch)
        model = _model_ref(response, "imdb")
        return [
            sentiment_result(p, label, model)
            for p, label in zip(probabilities, labels, strict=True)
        ]

    def classify_image(
        self, images: Any, model: str, top_k: int, version: int | None, label: str | None
    ) -> Op[list[ImageClassification]]:
        name, k = _inputs.image_model(model), _inputs.positive_int(top_k, "top_k")
        batch = _inputs.images(images)
        version, label = _inputs.version_or_label(version, label)
        if batch.dtype == np.uint8:
            signature, inputs = PREDICT_IMAGES_SIGNATURE, {"images": batch}
        else:
            signature, inputs = TENSOR_SIGNATURE, {"pixels": batch}
        response = yield from self._predict(name, signature, inputs, version, label)
        probabilities = _output(response, "probabilities", len(batch))
        labels = yield from self._labels_of(name, response, version, label)
        ref = _model_ref(response, name)
        results = []
        for p in probabilities:
            top = top_scores(p, k, labels)
            results.append(
                ImageClassification(top[0].label, top[0].index, top[0].probability, top, ref)
            )
        return results

    def forecast(
        self, window: Sequence[float], horizon: int, version: int | None, label: str | None
    ) -> Op[Forecast]:
        history, steps = _inputs.window(window), _inputs.positive_int(horizon, "horizon")
        selector = _inputs.version_or_label(version, label)
        values: list[float] = []
        ref = ModelRef("cosine")
        # Recursive multi-step forecast: each prediction slides into the window. Exports
        # with `forecast_steps` do 100 steps in one call; older ones take one call a step.
        while len(values) < steps:
            if steps - len(values) > 1 and self._forecast_steps.get(selector) is not False:
                try:
                    response = yield from self._predict(
                        "cosine", FORECAST_STEPS_SIGNATURE, {"window": history[None, :]}, *selector
                    )
                except ModelNotFound:
                    self._forecast_steps[selector] = False  # an older export: a call a step
                    continue
                self._forecast_steps[selector] = True
                new = _output(response, "forecast", 1).reshape(-1)[: steps - len(values)]
            else:
                response = yield from self._predict(
                    "cosine", FORECAST_SIGNATURE, {"window": history[None, :]}, *selector
                )
                new = _output(response, "forecast", 1).reshape(-1)[:1]
            new = new.astype(np.float32)
            values.extend(float(v) for v in new)
            history = np.concatenate([history, new])[-len(history) :]
            ref = _model_ref(response, "cosine")
        return Forecast(tuple(values), ref)

    def translate(
        self, sentences: Sequence[str], version: int | None, label: str | None
    ) -> Op[list[Translation]]:
        sources = _inputs.texts(sentences, "sentences")
        version, label = _inputs.version_or_label(version, label)
        response = yield from self._predict(
            "translator", TRANSLATE_SIGNATURE, {"sentences": sources}, version, label
        )
        texts = _output(response, "translation", len(sources))
        model = _model_ref(response, "translator")
        return [
            Translation(s, t.decode("utf-8") if isinstance(t, bytes) else str(t), model)
            for s, t in zip(sources, texts, strict=True)
        ]

    def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        signature: str | None,
        version: int | None,
        label: str | None,
    ) -> Op[dict[str, np.ndarray]]:
        items = _inputs.inputs(inputs)
        version, label = _inputs.version_or_label(version, label)
        response = yield from self._predict(model, signature or "", items, version, label)
        return {name: to_ndarray(tensor) for name, tensor in response.outputs.items()}

    def metadata(self, model: str, version: int | None, label: str | None) -> Op[ModelInfo]:
        version, label = _inputs.version_or_label(version, label)
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=model_spec(model, version, label=label),
            metadata_field=[SIGNATURE_DEF_FIELD],
        )
        response = yield Rpc("GetModelMetadata", request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        packed = response.metadata.get(SIGNATURE_DEF_FIELD)
        if packed is not None and not packed.Unpack(signature_map):
            raise ServerError("metadata['signature_def'] is not a SignatureDefMap")
        labels = yield from self._labels_of(model, response, version, label)
        answered = _answered_version(response)
        return ModelInfo(
            name=response.model_spec.name or model,
            version=answered if answered is not None else version,
            signatures=parse_signatures(signature_map.signature_def),
            labels=labels,
        )

    def status(self, model: str, version: int | None, label: str | None) -> Op[ModelStatus]:
        version, label = _inputs.version_or_label(version, label)
        request = get_model_status_pb2.GetModelStatusRequest(
            model_spec=model_spec(model, version, label=label)
        )
        response = yield Rpc("GetModelStatus", request)
        state = get_model_status_pb2.ModelVersionStatus.State
        versions = (
            VersionStatus(
                version=v.version,
                state=state.Name(v.state) if v.state in state.values() else str(v.state),
                error_code=_code_name(v.status.error_code),
                error_message=v.status.error_message,
            )
            for v in response.model_version_status
        )
        return ModelStatus(model, tuple(sorted(versions, key=lambda v: v.version)))

    def reload_config(self, models: Any) -> Op[None]:
        request = reload_config_request(models)
        response = yield Rpc("HandleReloadConfigRequest", request)
        # TF Serving answers a refused config with OK and the error in `status`.
        if response.status.error_code != 0:
            name = _code_name(response.status.error_code)
            raise from_grpc_code(name, response.status.error_message)

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
