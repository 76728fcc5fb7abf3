"""The client next to the real TensorFlow / TF Serving: one process, and either side's
servicer or stub against the other's.

Skipped where TensorFlow is not installed (a client-only environment).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent import futures

import grpc
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfs_predict = pytest.importorskip("tensorflow_serving.apis.predict_pb2")

from tensorflow_serving.apis import get_model_metadata_pb2 as tfs_metadata  # noqa: E402
from tensorflow_serving.apis import prediction_service_pb2_grpc as tfs_grpc  # noqa: E402

from clients.grpc import Client as GrpcClient  # noqa: E402
from clients.types import ModelRef  # noqa: E402

COEXIST = """
import numpy as np
def ours():
    import clients.grpc, clients.http
    from tfserving_api._proto.tensorflow_serving.apis import predict_pb2
    return predict_pb2
def theirs():
    from tensorflow_serving.apis import (get_model_metadata_pb2, model_service_pb2_grpc,
        predict_pb2, prediction_service_pb2_grpc)
    import tensorflow as tf
    return predict_pb2
{order}
request = real.PredictRequest()
request.model_spec.name = "cosine"
request.inputs["window"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 10), np.float32)))
copy = mine.PredictRequest.FromString(request.SerializeToString())
assert copy.SerializeToString() == request.SerializeToString()
print("ok")
"""


@pytest.mark.parametrize(
    "order",
    ["mine = ours(); real = theirs()", "real = theirs(); mine = ours()"],
    ids=["clients_first", "tensorflow_serving_first"],
)
def test_clients_and_tensorflow_serving_share_a_process(order: str) -> None:
    code = textwrap.dedent(COEXIST.replace("{order}", order + "\nimport tensorflow as tf"))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


class RealServicer(tfs_grpc.PredictionServiceServicer):
    """What the service's gRPC module does: the real tensorflow_serving servicer."""

    def Predict(self, request, context):
        texts = tf.make_ndarray(request.inputs["text"])
        probabilities = np.array([[0.25, 0.5, 0.25]] * len(texts), np.float32)
        response = tfs_predict.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = 4
        response.outputs["probabilities"].CopyFrom(tf.make_tensor_proto(probabilities))
        return response

    def GetModelMetadata(self, request, context):
        response = tfs_metadata.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        if "labels" in request.metadata_field:
            response.metadata["labels"].Pack(tf.make_tensor_proto(["cocoa", "grain", "oil"]))
        return response


@pytest.fixture(scope="module")
def real_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    tfs_grpc.add_PredictionServiceServicer_to_server(RealServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def test_our_client_against_a_tensorflow_serving_servicer(real_server) -> None:
    with GrpcClient(real_server) as client:
        [result] = client.classify_topic(["oil"], top_k=2)
    assert [(s.label, s.index) for s in result.topics] == [("grain", 1), ("cocoa", 0)]
    assert result.model == ModelRef("reuters", 4)


def test_stock_tf_serving_stub_against_our_servicer(fake_tfs) -> None:
    _, target = fake_tfs
    request = tfs_predict.PredictRequest()
    request.model_spec.name = "cosine"
    request.model_spec.signature_name = "forecast"
    request.inputs["window"].CopyFrom(tf.make_tensor_proto(np.ones((2, 10), np.float32)))
    with grpc.insecure_channel(target) as channel:
        response = tfs_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["forecast"]), [1.0, 1.0])
