"""HTTP protocol (no I/O): the service's friendly JSON endpoints plus TF Serving's REST API.

Request and response shapes are those of docs/contracts.md. `predict` uses TF Serving's
columnar ``{"signature_name", "inputs"}`` body (bytes as ``{"b64": ...}``) and casts the
JSON outputs back to the signature's dtypes, looked up once per (model, version,
signature) through the metadata endpoint, so `predict` returns the same arrays as over
gRPC (float32 stays float32, strings come back as bytes).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np

from clients import _inputs
from clients._api import Op
from clients.errors import (
    ClientError,
    DeadlineExceeded,
    InvalidInput,
    ServerError,
    Unavailable,
    Unsupported,
)
from clients.types import (
    Forecast,
    ImageClassification,
    LabelScore,
    ModelInfo,
    ModelRef,
    ModelStatus,
    SentimentResult,
    SignatureInfo,
    TensorSpec,
    TopicPrediction,
    Translation,
    VersionStatus,
)
from tfserving_api.contract import TENSOR_SIGNATURE
from tfserving_api.tensors import TensorError, as_array, dtype_for

DEFAULT_SIGNATURE = TENSOR_SIGNATURE


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP exchange for the client to perform; the response is the decoded JSON."""

    method: str
    path: str
    content: bytes | None = None  # a JSON body, already encoded
    retry: bool = True  # False for probes: they must answer fast, not retry
    expect_json: bool = True  # probes answer plain text


def _post(path: str, body: Any) -> HttpRequest:
    try:
        # allow_nan=False: NaN/Infinity are not JSON; fail here rather than on the server.
        content = json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
    except ValueError:
        raise InvalidInput("inputs contain NaN or infinity, which JSON cannot carry") from None
    except TypeError as e:  # complex numbers, arbitrary objects
        raise InvalidInput(f"inputs cannot be sent as JSON: {e}") from None
    return HttpRequest("POST", path, content)


def _model_path(model: str, version: int | None = None, label: str | None = None) -> str:
    """TF Serving REST's model prefix: the latest, a version or a label."""
    path = f"/v1/models/{quote(model, safe='')}"
    if version is not None:
        return f"{path}/versions/{version}"
    if label is not None:
        return f"{path}/labels/{quote(label, safe='')}"
    return path


def _friendly_body(body: dict[str, Any], version: Any, label: Any) -> dict[str, Any]:
    """A friendly endpoint's body with the optional ``version`` or ``label`` field."""
    version, label = _inputs.version_or_label(version, label)
    if version is not None:
        body["version"] = version
    if label is not None:
        body["label"] = label
    return body


def _model_ref(payload: Mapping[str, Any], fallback: str) -> ModelRef:
    model = payload.get("model") or {}
    version = model.get("version")
    return ModelRef(
        name=model.get("name", fallback),
        version=None if version is None else int(version),
        variant=model.get("variant"),
    )


def _field(payload: Any, key: str) -> Any:
    if not isinstance(payload, Mapping) or key not in payload:
        raise ServerError(f"response has no {key!r} field: {str(payload)[:200]}")
    return payload[key]


def _batch(payload: Any, key: str, size: int) -> list[Any]:
    """The per-item results list of a response, which must match the request's batch."""
    items = _field(payload, key)
    if not isinstance(items, list) or len(items) != size:
        count = len(items) if isinstance(items, list) else type(items).__name__
        raise ServerError(f"expected {size} {key}, got {count}")
    return items


def _scores(items: Sequence[Mapping[str, Any]], label_key: str) -> tuple[LabelScore, ...]:
    return tuple(
        LabelScore(item.get(label_key), int(item["index"]), float(item["probability"]))
        for item in items
    )


def _to_json(value: Any) -> Any:
    """A numpy array / array-like as TF Serving REST JSON (bytes as {"b64": ...})."""
    array = as_array(value)
    if array.dtype.kind in "OSU":

        def encode(item: Any) -> Any:
            if isinstance(item, list):
                return [encode(i) for i in item]
            if isinstance(item, (bytes, np.bytes_)):
                return {"b64": base64.b64encode(bytes(item)).decode("ascii")}
            if isinstance(item, str):
                return item
            raise InvalidInput(f"string inputs hold str or bytes, got {type(item).__name__}")

        return encode(array.tolist())
    dtype_for(array.dtype)  # rejects what a TensorProto could not carry either
    return array.tolist()


def _from_json(value: Any, spec: TensorSpec | None) -> np.ndarray:
    """A REST JSON output as an array, with the signature's dtype when known."""

    def decode(item: Any) -> Any:
        if isinstance(item, list):
            return [decode(i) for i in item]
        if isinstance(item, dict) and "b64" in item:
            return base64.b64decode(item["b64"])
        return item

    value = decode(value)
    if spec is not None and spec.dtype == "string":
        array = np.array(value, dtype=object)
        flat = array.reshape(-1)
        flat[:] = [v.encode() if isinstance(v, str) else v for v in flat]
        return array
    if spec is not None:
        try:
            return np.asarray(value, dtype=dtype_for(spec.dtype).numpy)
        except TensorError:
            pass  # a dtype outside our table: leave it as JSON gave it
    array = np.asarray(value)
    return array.astype(object) if array.dtype.kind == "U" else array


def _tensor_spec(info: Mapping[str, Any]) -> TensorSpec:
    shape_info = info.get("tensor_shape") or {}
    if shape_info.get("unknown_rank"):
        shape = None
    else:
        shape = tuple(
            None if int(d.get("size", -1)) < 0 else int(d["size"])
            for d in shape_info.get("dim", [])
        )
    dtype = info.get("dtype", "DT_INVALID")
    try:
        name = dtype_for(dtype).name
    except TensorError:
        name = dtype.removeprefix("DT_").lower()
    return TensorSpec(name, shape)


def parse_signatures(signature_defs: Mapping[str, Any]) -> dict[str, SignatureInfo]:
    """TF Serving REST `signature_def` JSON as SignatureInfo objects."""
    return {
        name: SignatureInfo(
            name=name,
            inputs={k: _tensor_spec(v) for k, v in (sig.get("inputs") or {}).items()},
            outputs={k: _tensor_spec(v) for k, v in (sig.get("outputs") or {}).items()},
            method_name=sig.get("method_name", ""),
        )
        for name, sig in signature_defs.items()
    }


class RestProtocol:
    """The HTTP flavour of the operations declared in `clients._api.SyncAPI`."""

    def __init__(self) -> None:
        # (model, version, label, signature) -> its outputs, or None when metadata was
        # unavailable. REST predict answers do not say which version answered a label, so
        # a label is a key of its own (a signature's dtypes do not change between versions
        # in practice; if they did, only the cast of JSON numbers would be off).
        self._output_specs: dict[
            tuple[str, int | None, str | None, str], Mapping[str, TensorSpec] | None
        ] = {}

    def classify_topic(
        self, texts: Sequence[str], top_k: int, version: int | None, label: str | None
    ) -> Op[list[TopicPrediction]]:
        batch = _inputs.texts(texts)
        body = {"texts": batch, "top_k": _inputs.positive_int(top_k, "top_k")}
        body = _friendly_body(body, version, label)
        payload = yield _post("/reuters/classify", body)
        model = _model_ref(payload, "reuters")
        return [
            TopicPrediction(_scores(item["topics"], "topic"), model)
            for item in _batch(payload, "results", len(batch))
        ]

    def sentiment(
        self, texts: Sequence[str], version: int | None, label: str | None
    ) -> Op[list[SentimentResult]]:
        batch = _inputs.texts(texts)
        payload = yield _post("/imdb/sentiment", _friendly_body({"texts": batch}, version, label))
        model = _model_ref(payload, "imdb")
        return [
            SentimentResult(
                label=item["label"],
                probability=float(item["probability"]),
                positive_probability=float(item["positive_probability"]),
                model=model,
            )
            for item in _batch(payload, "results", len(batch))
        ]

    def classify_image(
        self, images: Any, model: str, top_k: int, version: int | None, label: str | None
    ) -> Op[list[ImageClassification]]:
        name = _inputs.image_model(model)
        batch = _inputs.images(images)
        body = {"images": batch.tolist(), "top_k": _inputs.positive_int(top_k, "top_k")}
        body = _friendly_body(body, version, label)
        payload = yield _post(f"/{name}/classify", body)
        ref = _model_ref(payload, name)
        return [
            ImageClassification(
                label=item.get("label"),
                index=int(item["index"]),
                probability=float(item["probability"]),
                top=_scores(item.get("top") or [item], "label"),
                model=ref,
            )
            for item in _batch(payload, "results", len(batch))
        ]

    def forecast(
        self, window: Sequence[float], horizon: int, version: int | None, label: str | None
    ) -> Op[Forecast]:
        body = {
            "window": _inputs.window(window).tolist(),
            "horizon": _inputs.positive_int(horizon, "horizon"),
        }
        body = _friendly_body(body, version, label)
        payload = yield _post("/cosine/forecast", body)
        values = tuple(float(v) for v in _field(payload, "forecast"))
        return Forecast(values, _model_ref(payload, "cosine"))

    def translate(
        self, sentences: Sequence[str], version: int | None, label: str | None
    ) -> Op[list[Translation]]:
        sources = _inputs.texts(sentences, "sentences")
        payload = yield _post("/translate", _friendly_body({"sentences": sources}, version, label))
        model = _model_ref(payload, "translator")
        texts = _batch(payload, "translations", len(sources))
        return [Translation(s, t, model) for s, t in zip(sources, texts, strict=True)]

    def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        signature: str | None,
        version: int | None,
        label: str | None,
    ) -> Op[dict[str, np.ndarray]]:
        version, label = _inputs.version_or_label(version, label)
        body: dict[str, Any] = {
            "inputs": {k: _to_json(v) for k, v in _inputs.inputs(inputs).items()}
        }
        if signature:
            body["signature_name"] = signature
        payload = yield _post(f"{_model_path(model, version, label)}:predict", body)
        outputs = _field(payload, "outputs")
        specs = yield from self._outputs_of(model, version, label, signature or DEFAULT_SIGNATURE)
        if not isinstance(outputs, dict):
            # TF Serving drops the name when a signature has a single output.
            names = list(specs or {}) or ["outputs"]
            outputs = {names[0]: outputs}
        return {k: _from_json(v, (specs or {}).get(k)) for k, v in outputs.items()}

    def _outputs_of(
        self, model: str, version: int | None, label: str | None, signature: str
    ) -> Op[Mapping[str, TensorSpec] | None]:
        key = (model, version, label, signature)
        if key not in self._output_specs:
            try:
                info = yield from self.metadata(model, version, label)
            except ClientError:
                # Best effort: the prediction itself succeeded; keep JSON's own types.
                self._output_specs[key] = None
            else:
                sig = info.signatures.get(signature)
                self._output_specs[key] = sig.outputs if sig else None
        return self._output_specs[key]

    def metadata(self, model: str, version: int | None, label: str | None) -> Op[ModelInfo]:
        version, label = _inputs.version_or_label(version, label)
        payload = yield HttpRequest("GET", f"{_model_path(model, version, label)}/metadata")
        spec = payload.get("model_spec") or {}
        metadata = payload.get("metadata") or {}
        defs = (metadata.get("signature_def") or {}).get("signature_def") or {}
        labels = payload.get("labels", metadata.get("labels"))
        return ModelInfo(
            name=spec.get("name", model),
            version=int(spec["version"]) if spec.get("version") not in (None, "") else version,
            signatures=parse_signatures(defs),
            labels=tuple(labels) if labels is not None else None,
        )

    def status(self, model: str, version: int | None, label: str | None) -> Op[ModelStatus]:
        version, label = _inputs.version_or_label(version, label)
        payload = yield HttpRequest("GET", _model_path(model, version, label))
        versions = sorted(
            (
                VersionStatus(
                    version=int(item.get("version", 0)),
                    state=item.get("state", "UNKNOWN"),
                    error_code=(item.get("status") or {}).get("error_code", "OK"),
                    error_message=(item.get("status") or {}).get("error_message", ""),
                )
                for item in _field(payload, "model_version_status")
            ),
            key=lambda v: v.version,
        )
        return ModelStatus(model, tuple(versions))

    def reload_config(self, models: Any) -> Op[None]:
        # Raised on the call, so before anything is sent.
        raise Unsupported(
            "reload_config is gRPC-only: TF Serving has no REST API for "
            "ModelService/HandleReloadConfigRequest; use clients.grpc.Client"
        )

    def health(self) -> Op[bool]:
        return (yield from self._probe("/livez"))

    def ready(self) -> Op[bool]:
        return (yield from self._probe("/readyz"))

    def _probe(self, path: str) -> Op[bool]:
        try:
            yield HttpRequest("GET", path, retry=False, expect_json=False)
        except (Unavailable, DeadlineExceeded):
            return False
        return True
