"""Our TF-free protos and tensor codec against the real TensorFlow / TF Serving ones.

Skipped where TensorFlow is not installed (a client-only environment).
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfs_predict = pytest.importorskip("tensorflow_serving.apis.predict_pb2")

from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2  # noqa: E402
from tensorflow_serving.apis import get_model_metadata_pb2 as tfs_metadata  # noqa: E402
from test_tensors import SAMPLES  # noqa: E402

from tfserving_api._proto.tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    predict_pb2,
)
from tfserving_api.tensors import to_ndarray, to_tensor_proto  # noqa: E402

TF_DTYPES = sorted(set(SAMPLES))


@pytest.mark.parametrize("use_tensor_content", [True, False], ids=["tensor_content", "typed_val"])
@pytest.mark.parametrize("name", TF_DTYPES)
def test_ours_to_tf_make_ndarray(name: str, use_tensor_content: bool) -> None:
    array = SAMPLES[name]
    ours = to_tensor_proto(array, use_tensor_content=use_tensor_content)
    theirs = tf_tensor_pb2.TensorProto.FromString(ours.SerializeToString())
    np.testing.assert_array_equal(tf.make_ndarray(theirs), array)


@pytest.mark.parametrize("name", TF_DTYPES)
def test_tf_make_tensor_proto_to_ours(name: str) -> None:
    array = SAMPLES[name]
    theirs = tf.make_tensor_proto(array)
    back = to_ndarray(tf_tensor_pb2.TensorProto.FromString(theirs.SerializeToString()))
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize(
    "value",
    [np.float32(2.5), np.float16(1.5), True, 7, "one string", np.complex64(1 - 1j)],
    ids=repr,
)
def test_tf_scalars_use_typed_fields_and_we_read_them(value) -> None:
    theirs = tf.make_tensor_proto(value)
    back = to_ndarray(tf_tensor_pb2.TensorProto.FromString(theirs.SerializeToString()))
    np.testing.assert_array_equal(back, tf.make_ndarray(theirs))


@pytest.mark.parametrize(("value", "dtype"), [(5.0, tf.float32), (3, tf.int64), (b"x", tf.string)])
def test_tf_broadcast_shorthand(value, dtype) -> None:
    theirs = tf.make_tensor_proto(value, dtype=dtype, shape=[2, 3])
    back = to_ndarray(tf_tensor_pb2.TensorProto.FromString(theirs.SerializeToString()))
    np.testing.assert_array_equal(back, tf.make_ndarray(theirs))


def test_predict_request_wire_format_is_tf_servings() -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "imdb"
    request.model_spec.signature_name = "predict_text"
    request.model_spec.version.value = 3
    request.inputs["text"].CopyFrom(to_tensor_proto(["a fine film"]))
    theirs = tfs_predict.PredictRequest.FromString(request.SerializeToString())
    assert theirs.model_spec.version.value == 3
    assert tf.make_ndarray(theirs.inputs["text"]).tolist() == [b"a fine film"]
    assert theirs.SerializeToString(deterministic=True) == request.SerializeToString(
        deterministic=True
    )


def test_signature_def_map_in_any_parses_both_ways() -> None:
    theirs = tfs_metadata.GetModelMetadataResponse()
    signature_map = tfs_metadata.SignatureDefMap()
    signature_map.signature_def["serving_default"].inputs["pixels"].dtype = 1
    theirs.metadata["signature_def"].Pack(signature_map)
    ours = get_model_metadata_pb2.GetModelMetadataResponse.FromString(theirs.SerializeToString())
    unpacked = get_model_metadata_pb2.SignatureDefMap()
    assert ours.metadata["signature_def"].Unpack(unpacked)
    assert unpacked.signature_def["serving_default"].inputs["pixels"].dtype == 1
