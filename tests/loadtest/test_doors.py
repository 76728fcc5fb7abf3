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
    # Compared as messages: protobuf does not promise one byte order for map fields (the
    # outputs), and the bytes of two serializations differed now and then.
    parse = predict_pb2.PredictResponse.FromString
    assert parse(answer) == parse(fixed_predict_response())


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


# ---------------------------------------------------------------- the V2 doors


def _served_info(model: str):
    """The ModelInfo the service would build, from the signatures the payloads target."""
    from service.catalog import ModelInfo, SignatureSpec, TensorSpec

    signature, name, output = doors.SIGNATURES[model]
    batch = doors._batches(model, 1)[0]
    dtype = "string" if batch.dtype == object else str(batch.dtype)
    spec = TensorSpec(name, dtype, (None, *batch.shape[1:]))
    outputs = {output: TensorSpec(output, "float32", (None,))}
    signatures = {signature: SignatureSpec(signature, {name: spec}, outputs)}
    return ModelInfo(model, 1, "v", f"{model}:x", (), signatures)


@pytest.mark.parametrize("model", sorted(doors.SIGNATURES))
@pytest.mark.parametrize("items", [1, 3])
def test_v2_http_bodies_decode_with_the_servers_own_parser(model, items):
    from service import v2_codec
    from service.grpc_codec import Limits
    from service.v2_rest import parse_infer_request

    bodies = doors.v2_http_bodies(model, items)
    assert len(bodies) == doors.POOL and len({body for body, _ in bodies}) > 1
    body, length = bodies[0]
    request, _, binary_default = parse_infer_request(body, str(length))
    assert binary_default is True and request.signature_name == doors.SIGNATURES[model][0]
    info = _served_info(model)
    signature = v2_codec.choose_signature(info, request.signature_name, request.input_names)
    batch = v2_codec.decode_inputs(request.inputs, signature, Limits(64, 8 << 20))
    expected = doors._batches(model, items)[0]
    assert batch.shape == expected.shape
    if expected.dtype != object:
        np.testing.assert_array_equal(batch, expected)


@pytest.mark.parametrize("model", sorted(doors.SIGNATURES))
def test_v2_grpc_requests_are_model_infer_requests(model):
    from service.v2_grpc import infer_request
    from tfserving_api._proto.inference import grpc_predict_v2_pb2

    requests = doors.v2_grpc_requests(model, 2)
    message = grpc_predict_v2_pb2.ModelInferRequest.FromString(requests[0])
    assert message.model_name == model and len(message.raw_input_contents) == 1
    parsed = infer_request(message)
    assert parsed.signature_name == doors.SIGNATURES[model][0]
    assert parsed.inputs[0].shape[0] == 2


def test_v2_answers_are_checked():
    from tfserving_api._proto.inference import grpc_predict_v2_pb2

    response = grpc_predict_v2_pb2.ModelInferResponse(model_name="imdb")
    response.outputs.add(name="probabilities", datatype="FP32", shape=[2, 2])
    response.raw_output_contents.append(ROWS.tobytes())
    doors.check_infer_response("imdb", response.SerializeToString(), 2)
    with pytest.raises(checks.BadResponse, match="for 1 items"):
        doors.check_infer_response("imdb", response.SerializeToString(), 1)
    with pytest.raises(checks.BadResponse, match="no output 'translation'"):
        doors.check_infer_response("translator", response.SerializeToString(), 2)
    header = json.dumps({"outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [2, 2],
                                      "parameters": {"binary_data_size": 16}}]}).encode()  # fmt: skip
    doors.check_v2_http_body("imdb", header + ROWS.tobytes(), str(len(header)), 2)
    with pytest.raises(checks.BadResponse, match="does not decode"):
        doors.check_v2_http_body("imdb", header + ROWS.tobytes()[:8], str(len(header)), 2)
    with pytest.raises(checks.BadResponse, match="no Inference-Header-Content-Length"):
        doors.check_v2_http_body("imdb", header, None, 2)


def test_v2_grpc_door_uses_model_infer():
    assert doors.grpc_method("v2-grpc") == doors.INFER_METHOD
    assert doors.grpc_method("grpc") == doors.PREDICT_METHOD
    assert set(doors.GRPC_DOORS) <= set(doors.DOORS)


def test_v2_targets_compare_with_the_tf_serving_door_of_the_transport():
    from loadtest.targets import summarize

    def record(mode: str, throughput: float) -> dict:
        return {"model": "imdb", "mode": mode, "concurrency": 64, "items": 1, "throughput": throughput,
                "p50_ms": 1.0, "p99_ms": 10.0, "errors": 0}  # fmt: skip

    records = [record("tfserving", 100.0), record("v2-http", 90.0), record("grpc", 200.0),
               record("v2-grpc", 160.0)]  # fmt: skip
    summary = summarize(records, ("imdb",))
    row = summary["ratios"]["imdb"]["by_concurrency"]["64"]
    assert row["v2-http_over_tfserving_throughput"] == pytest.approx(0.9)
    assert row["v2-grpc_over_grpc_throughput"] == pytest.approx(0.8)
    verdicts = {
        t["target"]: t["met"]
        for t in summary["targets"]
        if "/ tfserving" in t["target"] or "/ grpc" in t["target"]
    }
    assert verdicts == {"imdb v2-http c=64: throughput / tfserving": True,
                        "imdb v2-grpc c=64: throughput / grpc": False}  # fmt: skip
