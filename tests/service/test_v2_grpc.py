"""``inference.GRPCInferenceService`` in-process (``service.grpc_server`` over a fake cosine
model), driven by tritonclient's gRPC client and by raw messages: readiness, metadata,
``raw_input_contents`` and typed ``contents``, and the bad-input table (0 x UNKNOWN or
INTERNAL). The live server is exercised in ``test_v2.py``."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from grpc_fakes import WINDOW
from grpc_health.v1 import health_pb2
from tritonclient.utils import InferenceServerException

from service import errors
from tfserving_api._proto.inference import grpc_predict_v2_pb2 as pb
from tfserving_api._proto.inference import grpc_predict_v2_pb2_grpc

Code = grpc.StatusCode


def infer_input(array: np.ndarray, name: str = "window", datatype: str = "FP32"):
    tensor = triton_grpc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_readiness_metadata_and_infer_with_tritonclient(fake_grpc) -> None:
    served = fake_grpc()
    client = triton_grpc.InferenceServerClient(served.target)
    try:
        assert client.is_server_live()
        assert not client.is_server_ready() and not client.is_model_ready("cosine")
        assert served.health("inference.GRPCInferenceService") == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
        served.model.ready = True
        served.wait_serving()
        assert client.is_server_ready() and client.is_model_ready("cosine")
        assert client.is_model_ready("cosine", "1")
        assert served.health("inference.GRPCInferenceService") == (
            health_pb2.HealthCheckResponse.SERVING
        )
        meta = client.get_server_metadata(as_json=True)
        assert meta["name"] == "keras-serving"
        assert meta["extensions"] == ["binary_tensor_data", "classification", "model_repository"]
        meta = client.get_model_metadata("cosine", as_json=True)
        assert meta["name"] == "cosine" and meta["versions"] == ["1"]
        assert meta["platform"] == "tensorflow_savedmodel"
        assert meta["inputs"] == [{"name": "window", "datatype": "FP32", "shape": ["-1", "10"]}]
        assert meta["outputs"] == [{"name": "forecast", "datatype": "FP32", "shape": ["-1"]}]

        result = client.infer("cosine", [infer_input(WINDOW)], request_id="r1")
        assert result.as_numpy("forecast").tolist() == [45.0]
        response = result.get_response()
        assert response.id == "r1" and response.model_version == "1"
        assert response.parameters["signature_name"].string_param == "forecast"
        assert len(response.raw_output_contents) == 1 and not response.outputs[0].HasField(
            "contents"
        )
        ids = np.arange(10, dtype=np.int64)[None]
        ints = client.infer("cosine", [infer_input(ids, "window", "INT64")])
        assert ints.as_numpy("forecast").tolist() == [45.0]
    finally:
        client.close()


def test_typed_contents_are_accepted(fake_grpc) -> None:
    served = fake_grpc()
    served.model.ready = True
    request = pb.ModelInferRequest(model_name="cosine")
    tensor = request.inputs.add(name="window", datatype="FP32", shape=[2, 10])
    tensor.contents.fp32_contents.extend([1.0] * 20)
    with served.channel() as channel:
        response = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, timeout=5
        )
    assert np.frombuffer(response.raw_output_contents[0], "<f4").tolist() == [10.0, 10.0]
    assert list(response.outputs[0].shape) == [2]


def _request(
    shape=(1, 10), datatype="FP32", raw: list[bytes] | None = None, name="window", **fields
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=fields.pop("model_name", "cosine"), **fields)
    request.inputs.add(name=name, datatype=datatype, shape=list(shape))
    request.raw_input_contents.extend([WINDOW.tobytes()] if raw is None else raw)
    return request


def _with_contents(request: pb.ModelInferRequest) -> pb.ModelInferRequest:
    request.inputs[0].contents.fp32_contents.extend([0.0] * 10)
    return request


def _two_inputs() -> pb.ModelInferRequest:
    request = _request()
    request.inputs.add(name="window", datatype="FP32", shape=[1, 10])
    request.raw_input_contents.append(WINDOW.tobytes())
    return request


def _output(name: str) -> pb.ModelInferRequest:
    request = _request()
    request.outputs.add(name=name)
    return request


def _signature(name: str) -> pb.ModelInferRequest:
    request = _request()
    request.parameters["signature_name"].string_param = name
    return request


# (case, request, expected code, fragment of the details)
BAD = [
    ("no model name", _request(model_name=""), Code.INVALID_ARGUMENT, "name: required"),
    ("unknown model", _request(model_name="nope"), Code.NOT_FOUND, "model 'nope'"),
    ("unknown version", _request(model_version="7"), Code.NOT_FOUND, "version 7"),
    ("unknown input", _request(name="windows"), Code.INVALID_ARGUMENT,
     "inputs[0].name: unknown input 'windows'"),
    ("wrong datatype", _request(datatype="BYTES"), Code.INVALID_ARGUMENT,
     "BYTES does not match the signature's FP32 [-1, 10]"),
    ("unknown datatype", _request(datatype="FLOAT"), Code.INVALID_ARGUMENT,
     "'FLOAT' is not a V2 datatype"),
    ("shape vs byte count", _request(raw=[b"\x00" * 8]), Code.INVALID_ARGUMENT,
     "8 bytes of raw contents, shape [1, 10] of FP32 needs 40"),
    ("wrong row shape", _request(shape=(1, 9), raw=[b"\x00" * 36]), Code.INVALID_ARGUMENT,
     "expected shape FP32 [-1, 10], got [1, 9]"),
    ("negative dim", _request(shape=(-1, 10)), Code.INVALID_ARGUMENT,
     "dimensions must be integers >= 0"),
    ("huge claimed shape", _request(shape=(2**62, 10)), Code.RESOURCE_EXHAUSTED, "rows exceed"),
    ("too many rows", _request(shape=(5, 10), raw=[b"\x00" * 200]), Code.RESOURCE_EXHAUSTED,
     "5 rows exceed the cap of 4"),
    ("no data", _request(raw=[]), Code.INVALID_ARGUMENT, "inputs[0]: no data"),
    ("raw count", _request(raw=[WINDOW.tobytes()] * 2), Code.INVALID_ARGUMENT,
     "raw_input_contents: 2 entries for 1 inputs"),
    ("raw and contents", _with_contents(_request()), Code.INVALID_ARGUMENT,
     "contents: not allowed with raw_input_contents"),
    ("input twice", _two_inputs(), Code.INVALID_ARGUMENT, "input 'window' is given twice"),
    ("nan", _request(raw=[np.full((1, 10), np.nan, np.float32).tobytes()]),
     Code.INVALID_ARGUMENT, "NaN"),
    ("unknown output", _output("logits"), Code.INVALID_ARGUMENT,
     "outputs[0].name: signature 'forecast' has no output 'logits'"),
    ("unknown signature", _signature("nope"), Code.NOT_FOUND, "no signature 'nope'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_", "code", "fragment"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_requests(fake_grpc, request_, code, fragment) -> None:
    served = fake_grpc()
    served.model.ready = True
    with served.channel() as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request_, timeout=5)
        assert caught.value.code() == code, caught.value.details()
        assert fragment in caught.value.details()
        assert stub.ModelInfer(_request(), timeout=5).raw_output_contents  # still serving


def test_undecodable_bytes_are_invalid_argument(fake_grpc) -> None:
    served = fake_grpc()
    with served.channel() as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as caught:
            call(b"\xff\xff\xff", timeout=5)
    assert caught.value.code() == Code.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("error", "code"),
    [(cls("injected"), getattr(Code, name)) for cls, name in errors.GRPC_STATUS.items()]
    + [(RuntimeError("a bug"), Code.INTERNAL)],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.name,
)
def test_every_service_error_maps_to_its_status(fake_grpc, error, code) -> None:
    served = fake_grpc()
    served.model.ready = True
    served.model.fail = error
    client = triton_grpc.InferenceServerClient(served.target)
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.infer("cosine", [infer_input(WINDOW)])
        assert caught.value.status() == f"StatusCode.{code.name}"
    finally:
        client.close()


def test_model_ready_of_unknown_model_is_not_found(fake_grpc) -> None:
    served = fake_grpc()
    with served.channel() as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelReady(pb.ModelReadyRequest(name="nope"), timeout=5)
        assert caught.value.code() == Code.NOT_FOUND
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelMetadata(pb.ModelMetadataRequest(name=""), timeout=5)
        assert caught.value.code() == Code.INVALID_ARGUMENT
