"""The benchmark's pre-encoded requests, cheap output checks, bare gRPC channels and servers."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from loadtest import checks, doors
from loadtest.bare_servers import LAYERS, fixed_predict_response, start_grpc
from loadtest.procs import _answers, _process_name, free_port
from tfserving_api._proto.tensorflow_serving.apis import predict_pb2
from tfserving_api.tensors import to_ndarray

ROWS = np.array([[0.2, 0.8], [0.6, 0.4]], np.float32)


@pytest.mark.parametrize(
    ("model", "outputs", "items"),
    [
        ("imdb", {"probabilities": ROWS}, 2),
        ("cifar", {"probabilities": np.full((1, 10), 0.1, np.float32)}, 1),
        ("translator", {"translation": np.array([b"ich", b"du"], object)}, 2),
        ("cosine", {"forecast": np.array([1.5], np.float32)}, 1),
    ],
)
def test_valid_outputs_pass(model, outputs, items):
    checks.check_outputs(model, outputs, items)


@pytest.mark.parametrize(
    ("model", "outputs", "items", "message"),
    [
        ("imdb", {"probabilities": ROWS}, 1, "for 1 items"),
        ("imdb", {}, 1, "shape ()"),
        ("imdb", {"probabilities": ROWS * 2}, 2, "outside [0, 1]"),
        ("imdb", {"probabilities": ROWS / 2}, 2, "do not sum to 1"),
        ("reuters", {"probabilities": ROWS}, 2, "2 classes, expected 46"),
        ("translator", {"translation": np.array([1, 2])}, 2, "translation of shape"),
        ("cosine", {"forecast": np.array([np.nan], np.float32)}, 1, "forecast"),
    ],
)
def test_wrong_outputs_are_bad_responses(model, outputs, items, message):
    with pytest.raises(checks.BadResponse, match=message.replace("[", r"\[")):
        checks.check_outputs(model, outputs, items)


@pytest.mark.parametrize("model", sorted(doors.SIGNATURES))
@pytest.mark.parametrize("items", [1, 3])
def test_grpc_requests_are_serialized_predict_requests_of_the_friendly_signature(model, items):
    requests = doors.grpc_requests(model, items)
    assert len(requests) == doors.POOL and len(set(requests)) > 1
    request = predict_pb2.PredictRequest.FromString(requests[0])
    signature, name, _ = doors.SIGNATURES[model]
    assert (request.model_spec.name, request.model_spec.signature_name) == (model, signature)
    assert to_ndarray(request.inputs[name]).shape[0] == items


def test_images_go_as_float_pixels_in_both_tf_serving_doors():
    pixels = to_ndarray(predict_pb2.PredictRequest.FromString(doors.grpc_requests("cifar")[0]).inputs["pixels"])  # fmt: skip
    assert pixels.dtype == np.float32 and pixels.shape == (1, 32, 32, 3) and pixels.max() <= 1.0
    body = json.loads(doors.tfserving_bodies("cifar", 2)[0])
    assert body["signature_name"] == "serving_default"
    assert np.asarray(body["instances"]).shape == (2, 32, 32, 3)


def test_tfserving_bodies_carry_text_as_json_strings():
    body = json.loads(doors.tfserving_bodies("imdb", 2)[0])
    assert body["signature_name"] == "predict_text"
    assert [type(text) for text in body["instances"]] == [str, str]


@pytest.mark.parametrize(
    "body",
    [
        {"predictions": [{"probabilities": [0.2, 0.8], "label": 1}]},  # several outputs: objects
    ],
)
def test_tfserving_answers_are_checked(body):
    doors.check_tfserving_body("imdb", json.dumps(body).encode(), 1)
    doors.check_tfserving_body("cosine", b'{"predictions": [0.5, 1.5]}', 2)  # one output: bare
    with pytest.raises(checks.BadResponse, match="malformed"):
        doors.check_tfserving_body("imdb", b'{"outputs": []}', 1)
    with pytest.raises(checks.BadResponse):
        doors.check_tfserving_body("imdb", json.dumps(body).encode(), 2)


def test_a_predict_response_is_decoded_and_checked():
    doors.check_predict_response("imdb", fixed_predict_response(), 1)
    with pytest.raises(checks.BadResponse, match="no output 'translation'"):
        doors.check_predict_response("translator", fixed_predict_response(), 1)


def test_bare_grpc_channels_reach_a_grpc_server_with_pre_serialized_requests():
    port = free_port()

    async def scenario() -> list[bytes]:
        server = await start_grpc(port)
        try:
            call = doors.door_call("grpc", "imdb")
            async with doors.GrpcChannels(f"127.0.0.1:{port}", concurrency=20) as channels:
                assert channels.count == 2  # one connection per 16 clients
                await asyncio.wait_for(
                    asyncio.gather(*(call(channels, n) for n in range(8))), timeout=20
                )
                return [await channels.predict(doors.grpc_requests("imdb")[0], 1)]
        finally:
            await server.stop(None)

    [answer] = asyncio.run(scenario())
    assert answer == fixed_predict_response()


def test_server_processes_are_named_by_role():
    serve = ["/v/bin/python", "/v/bin/bentoml", "serve", "--port", "3000"]
    worker = ["python", "-m", "_bentoml_impl.worker.service", ".", "--worker-id", "2"]
    assert _process_name(serve, is_root=True) == "arbiter"
    assert _process_name(worker, is_root=False) == "worker 2"
    assert _process_name(["python", "-m", "loadtest.naive_server"], is_root=True) == "main"
    assert not _answers(f"tcp://127.0.0.1:{free_port()}")


def test_every_layer_has_a_command_and_a_readiness_check():
    for layer in LAYERS:
        command = layer.command("/v/bin/python", 3200)
        assert "3200" in command
        assert layer.ready_url(3200).startswith("tcp://" if layer.door == "grpc" else "http://")
