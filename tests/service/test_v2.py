"""The Open Inference Protocol (KServe V2) doors of a real ``bentoml serve``, driven by
Triton's own client (``tritonclient``: HTTP binary and JSON, gRPC; sync and ``aio``).

Every answer is compared with the TF Serving REST door's for the same input and signature:
one engine, so the V2 door must only change the wire format.
"""

from __future__ import annotations

import asyncio
import json
import re

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_grpc_aio
import tritonclient.http as triton_http
import tritonclient.http.aio as triton_http_aio
from test_batching import batch_histogram
from tritonclient.utils import InferenceServerException

from tfserving_api._proto.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tfserving_api.tensors import to_tensor_proto

pytestmark = pytest.mark.integration

TEXTS = ["the oil prices rose sharply", "a wonderful film <br /> with brilliant actors", "bad"]
SENTENCES = ["i like green apples .", "tom is here ."]
MODELS = ("reuters", "imdb", "cifar", "mnist", "cosine", "translator")


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def triton(server):
    address = server.url.removeprefix("http://")
    client = triton_http.InferenceServerClient(address, network_timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def triton_rpc(server):
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    yield client
    client.close()


def signature_of(server, model: str) -> tuple[str, dict]:
    """The default (user-level) signature of ``model`` and its metadata."""
    meta = json.loads((server.store.export_path(model) / "metadata.json").read_text())
    for name in ("predict_text", "predict_images", "forecast", "translate"):
        if name in meta["signatures"]:
            return name, meta["signatures"][name]
    raise AssertionError(f"{model} has no user-level signature")


def sample(server, model: str, signature: str | None = None, rows: int = 2):
    """``(signature, input name, V2 datatype, array)`` for the model's default signature."""
    meta = json.loads((server.store.export_path(model) / "metadata.json").read_text())
    name = signature or signature_of(server, model)[0]
    ((tensor, spec),) = meta["signatures"][name]["inputs"].items()
    rng = np.random.default_rng(len(model))
    shape = (rows, *spec["shape"][1:])
    if spec["dtype"] == "string":
        texts = SENTENCES if model == "translator" else TEXTS
        return name, tensor, "BYTES", np.array([t.encode() for t in texts[:rows]], dtype=object)
    if spec["dtype"] == "uint8":
        return name, tensor, "UINT8", rng.integers(0, 256, size=shape, dtype=np.uint8)
    if spec["dtype"] == "int32":
        return name, tensor, "INT32", rng.integers(1, 20, size=shape).astype(np.int32)
    scale = 1.0 if model in ("cifar", "mnist") else 20.0
    return name, tensor, "FP32", (rng.random(shape) * scale).astype(np.float32)


def tfserving(http, model: str, signature: str, tensor: str, array: np.ndarray) -> dict:
    values = [b.decode() for b in array] if array.dtype == object else array.tolist()
    response = http.post(
        f"/v1/models/{model}:predict",
        json={"signature_name": signature, "inputs": {tensor: values}},
    )
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    return outputs if isinstance(outputs, dict) else {"only": outputs}


def assert_same(result, expected: dict, names: list[str]) -> None:
    for name in names:
        got = result.as_numpy(name)
        want = expected[name] if name in expected else expected["only"]
        if got.dtype == object:
            got = [g.decode() if isinstance(g, bytes) else g for g in got.tolist()]
            assert got == want, name
        else:
            np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-6, err_msg=name)


def test_server_health_and_metadata(triton, http) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert meta["name"] == "keras-serving" and "binary_tensor_data" in meta["extensions"]
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}


@pytest.mark.parametrize("model", MODELS)
def test_model_ready_and_metadata(server, triton, model) -> None:
    assert triton.is_model_ready(model)
    signature, spec = signature_of(server, model)
    meta = triton.get_model_metadata(model)
    assert meta["name"] == model and meta["platform"] == "tensorflow_savedmodel"
    version = meta["versions"][-1]
    assert triton.is_model_ready(model, version)
    assert triton.get_model_metadata(model, version) == meta
    ((tensor, input_spec),) = spec["inputs"].items()
    assert [i["name"] for i in meta["inputs"]] == [tensor]
    assert meta["inputs"][0]["shape"] == [-1 if d is None else d for d in input_spec["shape"]]
    assert [o["name"] for o in meta["outputs"]] == list(spec["outputs"])


def test_unknown_models_and_versions(triton) -> None:
    assert not triton.is_model_ready("nope")
    assert not triton.is_model_ready("imdb", "999")
    with pytest.raises(InferenceServerException) as caught:
        triton.get_model_metadata("nope")
    assert caught.value.status() == "404" and "nope" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        triton.get_model_metadata("imdb", "stable")  # not a number: a version label
    assert caught.value.status() == "404" and "label" in caught.value.message()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", MODELS)
def test_infer_every_model(server, http, triton, model, binary) -> None:
    signature, tensor, datatype, array = sample(server, model)
    infer_input = triton_http.InferInput(tensor, list(array.shape), datatype)
    infer_input.set_data_from_numpy(array, binary_data=binary)
    outputs = list(signature_of(server, model)[1]["outputs"])
    requested = [triton_http.InferRequestedOutput(n, binary_data=binary) for n in outputs]
    result = triton.infer(model, [infer_input], outputs=requested, request_id=f"{model}-1")
    answer = result.get_response()
    assert answer["model_name"] == model and answer["id"] == f"{model}-1"
    assert answer["parameters"] == {"signature_name": signature}
    assert_same(result, tfserving(http, model, signature, tensor, array), outputs)


def test_tensor_signature_by_input_name_and_signature_parameter(server, http, triton) -> None:
    for model, signature in (("imdb", "serving_default"), ("cifar", "serving_default")):
        _, tensor, datatype, array = sample(server, model, signature)
        infer_input = triton_http.InferInput(tensor, list(array.shape), datatype)
        infer_input.set_data_from_numpy(array)
        result = triton.infer(model, [infer_input])  # every output, binary
        assert result.get_response()["parameters"]["signature_name"] == signature
        assert_same(result, tfserving(http, model, signature, tensor, array), ["probabilities"])
    _, tensor, datatype, array = sample(server, "cosine", "serving_default")
    infer_input = triton_http.InferInput(tensor, list(array.shape), datatype)
    infer_input.set_data_from_numpy(array)
    result = triton.infer("cosine", [infer_input], parameters={"signature_name": "serving_default"})
    assert result.get_response()["parameters"]["signature_name"] == "serving_default"


def test_bad_requests_through_tritonclient(server, triton) -> None:
    _, tensor, datatype, array = sample(server, "cosine")
    cases = [
        ("nope", tensor, "FP32", array, "404", "nope"),
        ("cosine", "windows", "FP32", array, "400", "unknown input 'windows'"),
        ("cosine", tensor, "INT32", array.astype(np.int32)[:, :5], "400",
         "expected shape FP32 [-1, 10]"),
        ("cosine", tensor, "FP64", np.full_like(array, 1e300, dtype=np.float64), "400", "infinity"),
        ("imdb", "text", "INT32", np.ones((1,), np.int32), "400", "INT32 does not match"),
        ("cosine", tensor, "FP32", np.zeros((65, 10), np.float32), "413", "65 rows exceed"),
    ]
    for model, name, dt, data, status, fragment in cases:
        infer_input = triton_http.InferInput(name, list(data.shape), dt)
        infer_input.set_data_from_numpy(data)
        with pytest.raises(InferenceServerException) as caught:
            triton.infer(model, [infer_input])
        assert caught.value.status() == status, (model, name, caught.value.message())
        assert fragment in caught.value.message()


def test_binary_shape_mismatch_over_raw_http(http) -> None:
    header = json.dumps({"inputs": [{"name": "window", "datatype": "FP32", "shape": [1, 10],
                                     "parameters": {"binary_data_size": 8}}]}).encode()  # fmt: skip
    response = http.post(
        "/v2/models/cosine/infer",
        content=header + b"\x00" * 8,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert "8 bytes of raw contents, shape [1, 10] of FP32 needs 40" in response.json()["error"]
    for method, path in (("GET", "/v2/models/imdb/nothing"), ("POST", "/v2/models/imdb/ready")):
        response = http.request(method, path)
        assert response.status_code == 404
        assert "no such Open Inference Protocol endpoint" in response.json()["error"]


def test_aio_client(server, http) -> None:
    async def run() -> list:
        client = triton_http_aio.InferenceServerClient(server.url.removeprefix("http://"))
        try:
            assert await client.is_server_ready()
            assert await client.is_model_ready("imdb")
            results = []
            for model in ("imdb", "cifar", "translator"):
                signature, tensor, datatype, array = sample(server, model)
                infer_input = triton_http_aio.InferInput(tensor, list(array.shape), datatype)
                infer_input.set_data_from_numpy(array)
                result = await client.infer(model, [infer_input])
                results.append((model, signature, tensor, array, result))
            return results
        finally:
            await client.close()

    for model, signature, tensor, array, result in asyncio.run(run()):
        outputs = list(signature_of(server, model)[1]["outputs"])
        assert_same(result, tfserving(http, model, signature, tensor, array), outputs)


def test_v2_requests_are_counted_with_door_v2(http) -> None:
    metrics = http.get("/metrics").text
    series = r'keras_serving_requests_total\{{code="{}",door="v2",model="{}"\}} \d'
    assert re.search(series.format(200, "imdb"), metrics)
    assert re.search(series.format(400, "cosine"), metrics)


@pytest.mark.parametrize("model", MODELS)
def test_grpc_ready_metadata_and_infer_every_model(server, http, triton_rpc, model) -> None:
    assert triton_rpc.is_server_live() and triton_rpc.is_server_ready()
    assert triton_rpc.is_model_ready(model)
    signature, spec = signature_of(server, model)
    meta = triton_rpc.get_model_metadata(model, as_json=True)
    assert meta["platform"] == "tensorflow_savedmodel"
    assert [o["name"] for o in meta["outputs"]] == list(spec["outputs"])
    assert triton_rpc.is_model_ready(model, meta["versions"][-1])
    signature, tensor, datatype, array = sample(server, model)
    infer_input = triton_grpc.InferInput(tensor, list(array.shape), datatype)
    infer_input.set_data_from_numpy(array)
    result = triton_rpc.infer(model, [infer_input], request_id="g1")
    assert result.get_response().id == "g1"
    assert_same(result, tfserving(http, model, signature, tensor, array), list(spec["outputs"]))


def test_grpc_errors_and_reflection(server, triton_rpc) -> None:
    _, tensor, datatype, array = sample(server, "cosine")
    bad = triton_grpc.InferInput(tensor, [2, 5], datatype)
    bad.set_data_from_numpy(array.reshape(2, 10)[:, :5].copy())
    with pytest.raises(InferenceServerException) as caught:
        triton_rpc.infer("cosine", [bad])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "expected shape FP32 [-1, 10], got [2, 5]" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        triton_rpc.get_model_metadata("nope")
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )
    from google.protobuf import descriptor_pool

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        service = pool.FindServiceByName("inference.GRPCInferenceService")
        assert {"ServerLive", "ModelInfer", "ModelMetadata"} <= set(service.methods_by_name)


def test_grpc_aio_client(server, http) -> None:
    async def run() -> list:
        client = triton_grpc_aio.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        try:
            assert await client.is_server_ready() and await client.is_model_ready("mnist")
            results = []
            for model in ("mnist", "cosine", "translator"):
                signature, tensor, datatype, array = sample(server, model)
                infer_input = triton_grpc.InferInput(tensor, list(array.shape), datatype)
                infer_input.set_data_from_numpy(array)
                result = await client.infer(model, [infer_input])
                results.append((model, signature, tensor, array, result))
            return results
        finally:
            await client.close()

    for model, signature, tensor, array, result in asyncio.run(run()):
        outputs = list(signature_of(server, model)[1]["outputs"])
        assert_same(result, tfserving(http, model, signature, tensor, array), outputs)


def test_every_door_shares_the_batches(server, http) -> None:
    """tritonclient (HTTP and gRPC), a TF Serving gRPC stub and the friendly endpoint, at
    once, on imdb's predict_text queue: batches of more than one request, no errors."""
    before = batch_histogram(http.get("/metrics").text, "imdb", "predict_text")
    clients, per_client = 24, 6
    target = f"127.0.0.1:{server.grpc_port}"

    async def run() -> list[int]:
        v2_http = triton_http_aio.InferenceServerClient(server.url.removeprefix("http://"))
        v2_grpc = triton_grpc_aio.InferenceServerClient(target)
        channel = grpc.aio.insecure_channel(target)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        statuses: list[int] = []
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            async def one(index: int) -> None:
                for i in range(per_client):
                    text = f"client {index} review {i} fine"
                    door = index % 4
                    if door == 0:
                        tensor = triton_http_aio.InferInput("text", [1], "BYTES")
                        tensor.set_data_from_numpy(np.array([text.encode()], dtype=object))
                        await v2_http.infer("imdb", [tensor])
                    elif door == 1:
                        tensor = triton_grpc.InferInput("text", [1], "BYTES")
                        tensor.set_data_from_numpy(np.array([text.encode()], dtype=object))
                        await v2_grpc.infer("imdb", [tensor])
                    elif door == 2:
                        request = predict_pb2.PredictRequest()
                        request.model_spec.name = "imdb"
                        request.model_spec.signature_name = "predict_text"
                        request.inputs["text"].CopyFrom(to_tensor_proto([text]))
                        await stub.Predict(request, timeout=60)
                    else:
                        response = await client.post("/imdb/sentiment", json={"texts": [text]})
                        statuses.append(response.status_code)
                        continue
                    statuses.append(200)  # the clients raise on any error

            try:
                await asyncio.gather(*(one(i) for i in range(clients)))
            finally:
                await v2_http.close()
                await v2_grpc.close()
                await channel.close()
        return statuses

    statuses = asyncio.run(run())
    assert statuses == [200] * clients * per_client
    metrics = http.get("/metrics").text
    after = batch_histogram(metrics, "imdb", "predict_text")
    batches = after[float("inf")] - before.get(float("inf"), 0.0)
    single = after[1.0] - before.get(1.0, 0.0)
    assert 0 < batches < clients * per_client, batches
    assert batches - single > 0, "no batch held more than one request"
    for door in ("v2", "v2-grpc", "grpc", "rest"):
        assert f'keras_serving_requests_total{{code="200",door="{door}",model="imdb"}}' in metrics


def test_bench_payloads_of_the_v2_doors_are_answered(server) -> None:
    """``make bench``'s pre-encoded V2 requests (loadtest/doors.py), a few of each model,
    answered and checked by the bench's own checks (no load: the machine is shared)."""
    import aiohttp

    from loadtest.doors import GrpcChannels, door_call, grpc_method

    async def run() -> None:
        async with aiohttp.ClientSession(server.url) as session:
            for model in MODELS:
                for items in (1, 3):
                    call = door_call("v2-http", model, items)
                    await asyncio.gather(*(call(session, n) for n in range(3)))
        target = f"127.0.0.1:{server.grpc_port}"
        async with GrpcChannels(target, 4, method=grpc_method("v2-grpc")) as channels:
            for model in MODELS:
                call = door_call("v2-grpc", model, 2)
                await asyncio.gather(*(call(channels, n) for n in range(3)))

    asyncio.run(run())


def test_classification_extension_over_both_doors(server, http, triton, triton_rpc) -> None:
    """tritonclient's ``class_count``: the best classes as ``b"<score>:<index>:<label>"``,
    the same order and scores as the probabilities."""
    signature, tensor, datatype, array = sample(server, "cifar")
    probabilities = np.asarray(tfserving(http, "cifar", signature, tensor, array)["probabilities"])
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :3]
    meta = json.loads((server.store.export_path("cifar") / "metadata.json").read_text())
    labels = meta["labels"]

    rest_input = triton_http.InferInput(tensor, list(array.shape), datatype)
    rest_input.set_data_from_numpy(array)
    wanted = [triton_http.InferRequestedOutput("probabilities", class_count=3)]
    rest = triton.infer("cifar", [rest_input], outputs=wanted).as_numpy("probabilities")
    rpc_input = triton_grpc.InferInput(tensor, list(array.shape), datatype)
    rpc_input.set_data_from_numpy(array)
    wanted_rpc = [triton_grpc.InferRequestedOutput("probabilities", class_count=3)]
    rpc = triton_rpc.infer("cifar", [rpc_input], outputs=wanted_rpc).as_numpy("probabilities")
    for answer in (rest, rpc):
        assert answer.shape == (len(array), 3)
        for row, indices, scores in zip(answer.tolist(), best.tolist(), probabilities):
            parsed = [item.decode().split(":") for item in row]
            assert [int(index) for _, index, _ in parsed] == indices
            assert [label for _, _, label in parsed] == [labels[i] for i in indices]
            np.testing.assert_allclose([float(s) for s, _, _ in parsed], scores[indices], atol=1e-5)
