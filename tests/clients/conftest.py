"""Fakes of the service for client tests: a real in-process gRPC server implementing the
generated TF Serving servicers, and an `httpx.MockTransport` handler for the HTTP API.

Both compute the same toy "models" (`toy_*` below), so a test can check that the two
clients return equal results.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import httpx
import numpy as np
import pytest

from tfserving_api._proto.grpc_health.v1 import health_pb2, health_pb2_grpc
from tfserving_api._proto.tensorflow.core.protobuf import meta_graph_pb2
from tfserving_api._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tfserving_api.tensors import dtype_for, shape_proto, to_ndarray, to_tensor_proto

LABELS = {
    "reuters": ["cocoa", "grain", "oil", "earn"],
    "cifar": ["airplane", "automobile", "bird"],
    "mnist": ["0", "1", "2"],
}
SIGNATURES = {  # model -> signature -> (inputs, outputs) as {name: (dtype, shape)}
    "cosine": {
        "serving_default": ({"window": ("DT_FLOAT", [-1, 10])}, {"forecast": ("DT_FLOAT", [-1])}),
        "forecast": ({"window": ("DT_FLOAT", [-1, 10])}, {"forecast": ("DT_FLOAT", [-1])}),
    },
    "imdb": {
        "predict_text": (
            {"text": ("DT_STRING", [-1])},
            {"probabilities": ("DT_FLOAT", [-1, 2]), "label": ("DT_INT64", [-1])},
        ),
    },
}


# Version labels every fake model has; a request naming neither a version nor a label is
# answered by version 1.
VERSION_LABELS = {"stable": 1, "canary": 2}


def toy_text_probabilities(texts: list[str], classes: int) -> np.ndarray:
    """Deterministic fake class probabilities of texts."""
    rows = []
    for text in texts:
        logits = np.array([(len(text) * (i + 1)) % 7 for i in range(classes)], np.float64)
        rows.append(np.exp(logits) / np.exp(logits).sum())
    return np.array(rows, np.float32)


def toy_image_probabilities(images: np.ndarray, classes: int = 3) -> np.ndarray:
    """Deterministic fake class probabilities from mean pixel brightness (0..1)."""
    mean = images.reshape(len(images), -1).astype(np.float64).mean(axis=1)
    logits = np.stack([mean * (i + 1) * 3 for i in range(classes)], axis=1)
    return (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)


def toy_forecast(windows: np.ndarray) -> np.ndarray:
    """Next value of each window: its mean plus its last value, halved."""
    return ((windows.mean(axis=1) + windows[:, -1]) / 2).astype(np.float32)


def toy_translate(sentence: str) -> str:
    return " ".join(reversed(sentence.split())).upper()


class FakeTFServing(
    prediction_service_pb2_grpc.PredictionServiceServicer,
    model_service_pb2_grpc.ModelServiceServicer,
    health_pb2_grpc.HealthServicer,
):
    """The toy models behind TF Serving's gRPC API. `fail_with` queues status codes to
    abort the next calls with; `calls` records (method, request); `versions` is what
    GetModelStatus reports, as (version, state name, error code, error message)."""

    def __init__(self) -> None:
        self.fail_with: list[grpc.StatusCode] = []
        self.calls: list[tuple[str, object]] = []
        self.serve_labels = True
        self.serving = True
        self.delay = 0.0  # seconds to stall each call, to test deadlines
        self.versions: list[tuple[int, str, int, str]] = [(1, "AVAILABLE", 0, "")]
        self.reload_error: tuple[int, str] = (0, "")  # HandleReloadConfigRequest's status

    def _enter(self, method: str, request: object, context: grpc.ServicerContext) -> None:
        self.calls.append((method, request))
        if self.delay:
            time.sleep(self.delay)
        if self.fail_with:
            code = self.fail_with.pop(0)
            context.abort(code, f"injected {code.name}")

    def Predict(self, request, context):
        self._enter("Predict", request, context)
        spec = request.model_spec
        name, signature = spec.name, spec.signature_name or "serving_default"
        inputs = {k: to_ndarray(v) for k, v in request.inputs.items()}
        outputs: dict[str, np.ndarray] = {}
        if name in ("reuters", "imdb") and signature == "predict_text":
            texts = [t.decode() for t in inputs["text"]]
            probabilities = toy_text_probabilities(texts, 4 if name == "reuters" else 2)
            outputs = {
                "probabilities": probabilities,
                "label": probabilities.argmax(1).astype(np.int64),
            }
        elif name in ("cifar", "mnist") and signature == "predict_images" and "images" in inputs:
            if inputs["images"].dtype != np.uint8:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "images must be uint8")
            outputs = {"probabilities": toy_image_probabilities(inputs["images"] / 255.0)}
        elif name in ("cifar", "mnist") and signature == "serving_default" and "pixels" in inputs:
            outputs = {"probabilities": toy_image_probabilities(inputs["pixels"])}
        elif name == "cosine" and signature in ("forecast", "serving_default"):
            window = inputs.get("window")
            if window is None or window.dtype != np.float32 or window.ndim != 2:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "window must be float32 [None, 10]")
            outputs = {"forecast": toy_forecast(window)}
        elif name == "translator" and signature == "translate":
            sentences = [toy_translate(s.decode()) for s in inputs["sentences"]]
            outputs = {"translation": np.array(sentences, dtype=object)}
        else:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"model {name!r} signature {signature!r} not found"
            )
        response = predict_pb2.PredictResponse()
        response.model_spec.name = name
        response.model_spec.version.value = answering_version(spec, context)
        response.model_spec.signature_name = signature
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(to_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):
        self._enter("GetModelMetadata", request, context)
        name = request.model_spec.name
        if name not in LABELS and name not in SIGNATURES:
            context.abort(grpc.StatusCode.NOT_FOUND, f"model {name!r} not found")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = answering_version(request.model_spec, context)
        for field in request.metadata_field:
            if field == "signature_def":
                response.metadata[field].Pack(signature_def_map(name))
            elif field == "labels" and self.serve_labels and name in LABELS:
                response.metadata[field].Pack(to_tensor_proto(LABELS[name]))
            elif field != "labels" or not self.serve_labels:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported field {field!r}")
        return response

    def GetModelStatus(self, request, context):
        self._enter("GetModelStatus", request, context)
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state, code, message in self.versions:
            status = response.model_version_status.add(version=version)
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            status.status.error_code, status.status.error_message = code, message
        return response

    def HandleReloadConfigRequest(self, request, context):
        self._enter("HandleReloadConfigRequest", request, context)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code, response.status.error_message = self.reload_error
        return response

    def Check(self, request, context):
        self._enter("Check", request, context)
        if request.service not in ("", "tensorflow.serving.PredictionService"):
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return health_pb2.HealthCheckResponse(status=status)


def answering_version(spec, context: grpc.ServicerContext) -> int:
    """The version a ModelSpec asks for: its version, its label's, or 1."""
    if spec.HasField("version"):
        return spec.version.value
    if spec.version_label:
        if spec.version_label not in VERSION_LABELS:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown label {spec.version_label!r}")
        return VERSION_LABELS[spec.version_label]
    return 1


def signature_def_map(model: str) -> get_model_metadata_pb2.SignatureDefMap:
    result = get_model_metadata_pb2.SignatureDefMap()
    for sig_name, (inputs, outputs) in SIGNATURES.get(model, {}).items():
        sig = result.signature_def[sig_name]
        sig.method_name = "tensorflow/serving/predict"
        for target, specs in ((sig.inputs, inputs), (sig.outputs, outputs)):
            for key, (dtype, shape) in specs.items():
                target[key].CopyFrom(
                    meta_graph_pb2.TensorInfo(
                        name=f"{key}:0",
                        dtype=dtype_for(dtype).enum,
                        tensor_shape=shape_proto(tuple(None if d < 0 else d for d in shape)),
                    )
                )
    return result


@pytest.fixture(scope="module")
def grpc_server() -> Iterator[tuple[FakeTFServing, str]]:
    """A real gRPC server on 127.0.0.1:<free port> serving `FakeTFServing`."""
    servicer = FakeTFServing()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture
def fake_tfs(grpc_server) -> Iterator[tuple[FakeTFServing, str]]:
    """The module's server, with the servicer's knobs reset for this test."""
    servicer, target = grpc_server
    servicer.fail_with.clear()
    servicer.calls.clear()
    servicer.serve_labels = True
    servicer.serving = True
    servicer.delay = 0.0
    servicer.versions = [(1, "AVAILABLE", 0, "")]
    servicer.reload_error = (0, "")
    yield servicer, target


# ---- HTTP -----------------------------------------------------------------------------


def _model(name: str, body: dict) -> dict:
    """The friendly endpoints' `model`: the version the body's version or label asks."""
    label = body.get("label")
    version = body.get("version") or VERSION_LABELS.get(label, 1)
    return {"name": name, "version": version}


def _scores(probabilities: np.ndarray, labels: list[str], k: int, key: str) -> list[dict]:
    order = np.argsort(-probabilities.astype(np.float64), kind="stable")[:k]
    return [
        {key: labels[i], "index": int(i), "probability": float(probabilities[i])} for i in order
    ]


def fake_http_handler(request: httpx.Request) -> httpx.Response:
    """The toy models behind the service's HTTP API (docs/contracts.md)."""
    path = request.url.path
    body = json.loads(request.content) if request.content else {}
    if body.get("label") not in (None, *VERSION_LABELS):
        return httpx.Response(404, json={"error": f"unknown label {body['label']!r}"})
    if path == "/reuters/classify":
        probabilities = toy_text_probabilities(body["texts"], 4)
        k = body.get("top_k", 3)
        results = [{"topics": _scores(p, LABELS["reuters"], k, "topic")} for p in probabilities]
        return httpx.Response(200, json={"results": results, "model": _model("reuters", body)})
    if path == "/imdb/sentiment":
        results = []
        for p in toy_text_probabilities(body["texts"], 2):
            index = int(p.argmax())
            results.append(
                {
                    "label": ["negative", "positive"][index],
                    "probability": float(p[index]),
                    "positive_probability": float(p[1]),
                }
            )
        return httpx.Response(200, json={"results": results, "model": _model("imdb", body)})
    if path in ("/cifar/classify", "/mnist/classify"):
        model = path.split("/")[1]
        images = np.array(body["images"])
        scaled = images / 255.0 if images.dtype.kind == "i" else images
        results = []
        for p in toy_image_probabilities(scaled):
            top = _scores(p, LABELS[model], body.get("top_k", 1), "label")
            results.append({**top[0], "top": top})
        return httpx.Response(200, json={"results": results, "model": _model(model, body)})
    if path == "/cosine/forecast":
        window = np.array(body["window"], np.float32)
        values = []
        for _ in range(body.get("horizon", 1)):
            values.append(float(toy_forecast(window[None])[0]))
            window = np.append(window[1:], np.float32(values[-1]))
        return httpx.Response(200, json={"forecast": values, "model": _model("cosine", body)})
    if path == "/translate":
        return httpx.Response(
            200,
            json={
                "translations": [toy_translate(s) for s in body["sentences"]],
                "model": _model("translator", body),
            },
        )
    if path == "/v1/models/cosine/metadata":
        defs = {
            name: {
                "inputs": {k: _rest_info(*v) for k, v in inputs.items()},
                "outputs": {k: _rest_info(*v) for k, v in outputs.items()},
                "method_name": "tensorflow/serving/predict",
            }
            for name, (inputs, outputs) in SIGNATURES["cosine"].items()
        }
        return httpx.Response(
            200,
            json={
                "model_spec": {"name": "cosine", "signature_name": "", "version": "1"},
                "metadata": {"signature_def": {"signature_def": defs}},
            },
        )
    if path == "/v1/models/cosine:predict":
        window = np.array(body["inputs"]["window"], np.float32)
        # A single output: TF Serving drops its name.
        return httpx.Response(200, json={"outputs": toy_forecast(window).tolist()})
    if path == "/v1/models/cosine":
        return httpx.Response(
            200,
            json={
                "model_version_status": [
                    {
                        "version": "1",
                        "state": "AVAILABLE",
                        "status": {"error_code": "OK", "error_message": ""},
                    }
                ]
            },
        )
    if path in ("/livez", "/readyz"):
        return httpx.Response(200, text="\n")
    return httpx.Response(404, json={"error": f"no route {path}"})


def _rest_info(dtype: str, shape: list[int]) -> dict:
    return {
        "dtype": dtype,
        "tensor_shape": {
            "dim": [{"size": str(d), "name": ""} for d in shape],
            "unknown_rank": False,
        },
        "name": "x:0",
    }


@pytest.fixture
def fake_http() -> httpx.MockTransport:
    """A transport that answers like the service's HTTP API."""
    return httpx.MockTransport(fake_http_handler)
