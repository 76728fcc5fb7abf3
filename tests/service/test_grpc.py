"""The gRPC door of a real ``bentoml serve``, driven by TF Serving's own stubs and protos
(``tensorflow_serving.apis`` + ``tf.make_tensor_proto``, as TF Serving's example clients do)
and compared with the exported SavedModels called in this process."""

from __future__ import annotations

import functools
import json
import time
from concurrent import futures

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from test_batching import batch_histogram

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

pytestmark = pytest.mark.integration

TEXTS = ["the oil prices rose sharply", "a wonderful film <br /> with brilliant actors", "bad"]
SENTENCES = ["i like green apples .", "tom is here ."]
SIGNATURES = [
    ("reuters", "serving_default"),
    ("reuters", "predict_text"),
    ("imdb", "serving_default"),
    ("imdb", "predict_text"),
    ("cifar", "serving_default"),
    ("cifar", "predict_images"),
    ("mnist", "serving_default"),
    ("mnist", "predict_images"),
    ("cosine", "serving_default"),
    ("cosine", "forecast"),
    ("translator", "serving_default"),
    ("translator", "translate"),
]
Code = grpc.StatusCode


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield channel


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@functools.cache
def _metadata(export: str) -> dict:
    with open(f"{export}/metadata.json") as file:
        return json.load(file)


def metadata(server, model: str) -> dict:
    return _metadata(str(server.store.export_path(model)))


def sample(server, model: str, signature: str, rows: int = 3) -> tuple[str, np.ndarray]:
    """A valid input batch for ``model``/``signature``: (input name, array)."""
    meta = metadata(server, model)
    ((name, spec),) = meta["signatures"][signature]["inputs"].items()
    rng = np.random.default_rng(len(model) * 31 + len(signature))
    shape = (rows, *spec["shape"][1:])
    if spec["dtype"] == "string":
        texts = SENTENCES if model == "translator" else TEXTS
        return name, np.array(texts[:rows], dtype=object)
    if spec["dtype"] == "uint8":
        return name, rng.integers(0, 256, size=shape, dtype=np.uint8)
    if spec["dtype"].startswith("int"):
        # Small ids: the synthetic translator's real vocabulary (~40) is far below the
        # configured source_vocab_size, the only size metadata.json records.
        return name, rng.integers(0, 20, size=shape).astype(spec["dtype"])
    scale = 1.0 if model in ("cifar", "mnist") else 20.0
    return name, (rng.random(shape) * scale).astype(spec["dtype"])


def predict_request(
    model: str, inputs: dict, signature: str = "", version: int | None = None
) -> predict_pb2.PredictRequest:
    """What TF Serving's example clients build (``tf.make_tensor_proto`` inputs)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(
            value if isinstance(value, type(request.inputs[key])) else tf.make_tensor_proto(value)
        )
    return request


def assert_outputs_match(outputs, expected: dict[str, np.ndarray]) -> None:
    assert set(outputs) == set(expected)
    for key, want in expected.items():
        got = tf.make_ndarray(outputs[key])
        assert got.dtype == want.dtype and got.shape == want.shape, (key, got.dtype, got.shape)
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=key)
        else:
            np.testing.assert_array_equal(got, want, err_msg=key)


@pytest.mark.parametrize("version", [None, 1], ids=["latest", "v1"])
@pytest.mark.parametrize(("model", "signature"), SIGNATURES)
def test_stock_tfserving_stub_matches_the_savedmodel(
    server, stub, reference, model, signature, version
) -> None:
    name, array = sample(server, model, signature)
    response = stub.Predict(predict_request(model, {name: array}, signature, version), timeout=60)
    assert (response.model_spec.name, response.model_spec.version.value) == (model, 1)
    assert response.model_spec.signature_name == signature
    assert_outputs_match(response.outputs, reference(model, signature, array))


def test_default_signature_and_output_filter(server, stub, reference) -> None:
    name, array = sample(server, "imdb", "serving_default", rows=2)
    request = predict_request("imdb", {name: array})  # no signature_name: serving_default
    request.output_filter.append("label")
    response = stub.Predict(request, timeout=60)
    assert response.model_spec.signature_name == "serving_default" and list(response.outputs) == [
        "label"
    ]
    np.testing.assert_array_equal(
        tf.make_ndarray(response.outputs["label"]),
        reference("imdb", "serving_default", array)["label"],
    )


def _tensor_info(info) -> tuple[str, list[int | None]]:
    dtype = tf.dtypes.as_dtype(info.dtype).name
    return dtype, [None if d.size < 0 else d.size for d in info.tensor_shape.dim]


@pytest.mark.parametrize("model", sorted({m for m, _ in SIGNATURES}))
def test_metadata_has_signature_defs_and_labels(server, stub, model) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        metadata_field=["signature_def", "labels"]
    )
    request.model_spec.name = model
    response = stub.GetModelMetadata(request, timeout=30)
    assert (response.model_spec.name, response.model_spec.version.value) == (model, 1)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    expected = metadata(server, model)
    assert set(signature_map.signature_def) == set(expected["signatures"])
    for name, signature in signature_map.signature_def.items():
        for kind in ("inputs", "outputs"):
            got = {k: _tensor_info(v) for k, v in getattr(signature, kind).items()}
            want = {
                k: (v["dtype"], v["shape"]) for k, v in expected["signatures"][name][kind].items()
            }
            assert got == want, (name, kind)
    labels = expected.get("labels") or []
    if labels:
        tensor = tf.make_tensor_proto("")
        assert response.metadata["labels"].Unpack(tensor)
        assert [v.decode() for v in tf.make_ndarray(tensor)] == labels
    else:
        assert "labels" not in response.metadata


def test_model_status(channel) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    for version in (None, 1):
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "translator"
        if version:
            request.model_spec.version.value = version
        (status,) = stub.GetModelStatus(request, timeout=30).model_version_status
        assert (status.version, status.state, status.status.error_code) == (
            1,
            get_model_status_pb2.ModelVersionStatus.AVAILABLE,
            0,
        )


def _examples(feature: str, rows: list) -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    for row in rows:
        example = request.input.example_list.examples.add()
        value = example.features.feature[feature]
        if isinstance(row, str):
            value.bytes_list.value.append(row.encode())
        elif np.asarray(row).dtype.kind == "f":
            value.float_list.value.extend(np.asarray(row).reshape(-1).tolist())
        else:
            value.int64_list.value.extend(np.asarray(row).reshape(-1).tolist())
    return request


def test_classify_text_and_image_examples(server, stub, reference) -> None:
    request = _examples("text", TEXTS)
    request.model_spec.name = "reuters"
    response = stub.Classify(request, timeout=60)
    expected = reference("reuters", "predict_text", np.array(TEXTS, dtype=object))["probabilities"]
    labels = metadata(server, "reuters")["labels"]
    assert response.model_spec.signature_name == "predict_text"
    for classifications, probabilities in zip(
        response.result.classifications, expected, strict=True
    ):
        assert [c.label for c in classifications.classes] == labels
        np.testing.assert_allclose(
            [c.score for c in classifications.classes], probabilities, atol=1e-5
        )

    _, images = sample(server, "mnist", "predict_images", rows=2)
    request = _examples("images", list(images))
    request.model_spec.name = "mnist"
    response = stub.Classify(request, timeout=60)
    expected = reference("mnist", "predict_images", images)["probabilities"]
    scores = [[c.score for c in r.classes] for r in response.result.classifications]
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_regress_cosine_windows(server, stub, reference) -> None:
    _, windows = sample(server, "cosine", "forecast", rows=2)
    examples = _examples("window", list(windows))
    request = regression_pb2.RegressionRequest(input=examples.input)
    request.model_spec.name = "cosine"
    response = stub.Regress(request, timeout=60)
    expected = reference("cosine", "forecast", windows)["forecast"]
    np.testing.assert_allclose([r.value for r in response.result.regressions], expected, atol=1e-4)


def _text(n: int, chars: int) -> np.ndarray:
    return np.array(["x" * chars] * n, dtype=object)


def _ids(rows: int = 1, width: int = 500, dtype=np.int32) -> np.ndarray:
    return np.ones((rows, width), dtype=dtype)


def _call(stub, channel, method: str, request):
    if method == "GetModelStatus":
        return model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=60)
    return getattr(stub, method)(request, timeout=60)


def _status(model: str, version: int) -> get_model_status_pb2.GetModelStatusRequest:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    request.model_spec.version.value = version
    return request


def _metadata_request(model: str, *fields: str) -> get_model_metadata_pb2.GetModelMetadataRequest:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    request.model_spec.name = model
    return request


def _labelled(request: predict_pb2.PredictRequest) -> predict_pb2.PredictRequest:
    request.model_spec.version_label = "stable"
    return request


def _classify(model: str) -> classification_pb2.ClassificationRequest:
    request = _examples("window", [np.zeros(10, np.float32)])
    request.model_spec.name = model
    return request


# One row per real bad request: (id, method, request, code, fragment of the message).
BAD_REQUESTS = [
    (
        "unknown model",
        "Predict",
        lambda: predict_request("nope", {"x": [1]}),
        Code.NOT_FOUND,
        "model 'nope' is not served",
    ),
    (
        "unknown version",
        "Predict",
        lambda: predict_request("imdb", {"token_ids": _ids()}, version=99),
        Code.NOT_FOUND,
        "model_spec.version: model 'imdb' has no version 99",
    ),
    (
        "unknown version label",
        "Predict",
        lambda: _labelled(predict_request("imdb", {"token_ids": _ids()})),
        Code.NOT_FOUND,
        "model_spec.version_label: model 'imdb' has no version label 'stable'",
    ),
    (
        "unknown signature",
        "Predict",
        lambda: predict_request("imdb", {"token_ids": _ids()}, "nope"),
        Code.NOT_FOUND,
        "no signature 'nope'",
    ),
    (
        "no model name",
        "Predict",
        lambda: predict_request("", {}),
        Code.INVALID_ARGUMENT,
        "model_spec.name: required",
    ),
    (
        "float ids",
        "Predict",
        lambda: predict_request("imdb", {"token_ids": _ids(dtype=np.float32)}),
        Code.INVALID_ARGUMENT,
        "inputs['token_ids']: expected integers",
    ),
    (
        "string images",
        "Predict",
        lambda: predict_request("mnist", {"images": [["a"]]}, "predict_images"),
        Code.INVALID_ARGUMENT,
        "inputs['images']: dtype DT_STRING",
    ),
    (
        "wrong shape",
        "Predict",
        lambda: predict_request("imdb", {"token_ids": _ids(width=3)}),
        Code.INVALID_ARGUMENT,
        "inputs['token_ids']: expected shape DT_INT32 [-1, 500], got [1, 3]",
    ),
    (
        "missing input",
        "Predict",
        lambda: predict_request("imdb", {}),
        Code.INVALID_ARGUMENT,
        "inputs['token_ids']: required input is missing",
    ),
    (
        "extra input",
        "Predict",
        lambda: predict_request("imdb", {"token_ids": _ids(), "extra": _ids()}),
        Code.INVALID_ARGUMENT,
        "inputs['extra']: unknown input",
    ),
    (
        "nan",
        "Predict",
        lambda: predict_request("cosine", {"window": np.full((1, 10), np.nan, np.float32)}),
        Code.INVALID_ARGUMENT,
        "inputs['window']: must not contain NaN",
    ),
    (
        "token id over vocab",
        "Predict",
        lambda: predict_request("imdb", {"token_ids": _ids() * 10**6}),
        Code.INVALID_ARGUMENT,
        "token ids must be in 0..9999",
    ),
    ("bad output filter", "Predict", lambda: _filtered(), Code.INVALID_ARGUMENT, "output_filter"),
    (
        "batch over the cap",
        "Predict",
        lambda: predict_request("imdb", {"token_ids": _ids(rows=65)}),
        Code.RESOURCE_EXHAUSTED,
        "65 rows exceed the cap of 64",
    ),
    (
        "text over the cap",
        "Predict",
        lambda: predict_request("translator", {"sentences": _text(1, 25_000)}, "translate"),
        Code.RESOURCE_EXHAUSTED,
        "25000 characters exceed the cap of 20000",
    ),
    (
        "pixels above 1",
        "Predict",
        lambda: predict_request("mnist", {"pixels": np.full((1, 28, 28, 1), 2.0, np.float32)}),
        Code.INVALID_ARGUMENT,
        "pixels must be in [0, 1]",
    ),
    (
        "message over the cap",
        "Predict",
        lambda: predict_request("imdb", {"text": _text(2, 4_400_000)}, "predict_text"),
        Code.RESOURCE_EXHAUSTED,
        "bytes exceed the cap of 8388608",
    ),
    (
        "message far over the cap",
        "Predict",
        lambda: predict_request("imdb", {"text": _text(4, 5_000_000)}, "predict_text"),
        Code.RESOURCE_EXHAUSTED,
        "larger than max",
    ),
    (
        "metadata field",
        "GetModelMetadata",
        lambda: _metadata_request("imdb", "nope"),
        Code.INVALID_ARGUMENT,
        "metadata_field: 'nope' is not supported",
    ),
    (
        "no metadata field",
        "GetModelMetadata",
        lambda: _metadata_request("imdb"),
        Code.INVALID_ARGUMENT,
        "at least one",
    ),
    (
        "metadata of unknown model",
        "GetModelMetadata",
        lambda: _metadata_request("nope", "signature_def"),
        Code.NOT_FOUND,
        "model 'nope'",
    ),
    (
        "status of unknown version",
        "GetModelStatus",
        lambda: _status("imdb", 7),
        Code.NOT_FOUND,
        "version 7",
    ),
    (
        "classify a forecaster",
        "Classify",
        lambda: _classify("cosine"),
        Code.UNIMPLEMENTED,
        "Classify: model 'cosine'",
    ),
    (
        "regress a classifier",
        "Regress",
        lambda: regression_pb2.RegressionRequest(model_spec={"name": "imdb"}),
        Code.UNIMPLEMENTED,
        "Regress: model 'imdb'",
    ),
    (
        "missing feature",
        "Classify",
        lambda: _classify("imdb"),
        Code.INVALID_ARGUMENT,
        "features['text']: required feature is missing",
    ),
    (
        "multi inference",
        "MultiInference",
        lambda: inference_pb2.MultiInferenceRequest(),
        Code.UNIMPLEMENTED,
        "MultiInference is not supported",
    ),
]


def _filtered() -> predict_pb2.PredictRequest:
    request = predict_request("imdb", {"token_ids": _ids()})
    request.output_filter.append("scores")
    return request


@pytest.mark.parametrize(
    ("case", "method", "build", "code", "message"),
    BAD_REQUESTS,
    ids=[row[0] for row in BAD_REQUESTS],
)
def test_bad_requests_get_a_status_and_a_clear_message(
    stub, channel, case, method, build, code, message
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _call(stub, channel, method, build())
    assert caught.value.code() == code, caught.value.details()
    assert message in (caught.value.details() or ""), caught.value.details()


def test_still_serving_after_every_bad_request(server, stub, reference) -> None:
    name, array = sample(server, "cosine", "forecast", rows=1)
    response = stub.Predict(predict_request("cosine", {name: array}, "forecast"), timeout=60)
    assert_outputs_match(response.outputs, reference("cosine", "forecast", array))


def test_health_answers_serving(channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 30  # the watcher polls the runners once a second
    for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
        while (
            status := health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=10
            ).status
        ) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
    with pytest.raises(grpc.RpcError) as caught:
        health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
    assert caught.value.code() == Code.NOT_FOUND


def test_reflection_lists_and_describes_the_services(channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    assert set(database.get_services()) == {
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    pool = descriptor_pool.DescriptorPool(database)
    prediction = pool.FindServiceByName("tensorflow.serving.PredictionService")
    assert {"Predict", "GetModelMetadata", "Classify", "Regress"} <= set(prediction.methods_by_name)
    assert (
        prediction.methods_by_name["Predict"]
        .input_type.fields_by_name["inputs"]
        .message_type.fields_by_name["value"]
        .message_type.full_name
        == "tensorflow.TensorProto"
    )
    assert pool.FindServiceByName("tensorflow.serving.ModelService").methods_by_name[
        "GetModelStatus"
    ]


CLIENTS = 32
REQUESTS_PER_CLIENT = 8


def test_concurrent_grpc_requests_share_the_batch_queue(server, stub) -> None:
    with httpx.Client(base_url=server.url) as http:
        before = batch_histogram(http.get("/metrics").text, "imdb", "predict_text")

    def client(index: int) -> list[Code]:
        codes = []
        for i in range(REQUESTS_PER_CLIENT):
            request = predict_request(
                "imdb", {"text": [f"client {index} review {i}"]}, "predict_text"
            )
            try:
                stub.Predict(request, timeout=60)
                codes.append(Code.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        return codes

    with futures.ThreadPoolExecutor(CLIENTS) as pool:
        codes = [code for result in pool.map(client, range(CLIENTS)) for code in result]
    assert codes == [Code.OK] * CLIENTS * REQUESTS_PER_CLIENT, {
        c: codes.count(c) for c in set(codes)
    }

    with httpx.Client(base_url=server.url) as http:
        metrics = http.get("/metrics").text
    after = batch_histogram(metrics, "imdb", "predict_text")
    batches = after[float("inf")] - before.get(float("inf"), 0.0)
    single = after[1.0] - before.get(1.0, 0.0)
    assert 0 < batches < CLIENTS * REQUESTS_PER_CLIENT, batches
    assert batches - single > 0, "no batch held more than one gRPC request"
    assert 'keras_serving_requests_total{code="200",door="grpc",model="imdb"}' in metrics
