"""The generated TF Serving protos: private descriptor pool, and in sync with the generator."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_protos_stay_out_of_the_default_pool() -> None:
    code = (
        "import clients.grpc\n"
        "from google.protobuf import descriptor_pool\n"
        "from tfserving_api._proto._pool import POOL\n"
        "name = 'tensorflow_serving/apis/predict.proto'\n"
        "assert POOL.FindFileByName(name).package == 'tensorflow.serving'\n"
        "try:\n"
        "    descriptor_pool.Default().FindFileByName(name)\n"
        "except KeyError:\n"
        "    print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.stdout.strip() == "ok", result.stderr[-2000:]


def test_message_full_names_are_tf_servings() -> None:
    from tfserving_api._proto.tensorflow.core.framework import tensor_pb2
    from tfserving_api._proto.tensorflow_serving.apis import predict_pb2, prediction_service_pb2

    assert predict_pb2.PredictRequest.DESCRIPTOR.full_name == "tensorflow.serving.PredictRequest"
    assert tensor_pb2.TensorProto.DESCRIPTOR.full_name == "tensorflow.TensorProto"
    service = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
    assert service.full_name == "tensorflow.serving.PredictionService"
    assert {m.name for m in service.methods} == {
        "Classify", "Regress", "Predict", "MultiInference", "GetModelMetadata",
    }  # fmt: skip


@pytest.mark.skipif(
    importlib.util.find_spec("grpc_tools") is None
    or importlib.util.find_spec("tensorflow") is None,
    reason="regenerating needs grpcio-tools and an installed tensorflow(-serving-api)",
)
def test_generated_code_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "tools/compile_protos.py", "--check"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_open_inference_protos_live_beside_tritonclients() -> None:
    # tritonclient registers its own inference.* messages (grpc_service.proto) in the default
    # pool; ours are in the private one, so both import in one process and parse each
    # other's bytes (same field numbers).
    code = (
        "import tritonclient.grpc.service_pb2 as triton\n"
        "from tfserving_api._proto.inference import grpc_predict_v2_pb2 as ours\n"
        "from google.protobuf import descriptor_pool\n"
        "from tfserving_api._proto._pool import POOL\n"
        "name = 'inference/grpc_predict_v2.proto'\n"
        "assert POOL.FindFileByName(name).package == 'inference'\n"
        "request = triton.ModelInferRequest(model_name='imdb', raw_input_contents=[b'x'])\n"
        "request.inputs.add(name='text', datatype='BYTES', shape=[1])\n"
        "mine = ours.ModelInferRequest.FromString(request.SerializeToString())\n"
        "assert mine.inputs[0].name == 'text' and mine.raw_input_contents == [b'x']\n"
        "load = triton.RepositoryModelLoadRequest(model_name='imdb')\n"
        "assert ours.RepositoryModelLoadRequest.FromString(load.SerializeToString()).model_name == 'imdb'\n"
        "try:\n"
        "    descriptor_pool.Default().FindFileByName(name)\n"
        "except KeyError:\n"
        "    print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.stdout.strip() == "ok", result.stderr[-2000:]


def test_open_inference_service_methods() -> None:
    from tfserving_api._proto.inference import grpc_predict_v2_pb2

    service = grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert {m.name for m in service.methods} == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
        "ModelInfer", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload",
    }  # fmt: skip
