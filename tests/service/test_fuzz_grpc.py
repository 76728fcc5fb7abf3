"""Malformed gRPC requests against a real ``bentoml serve``: one row per kind of bad request
with its exact status code, and a bounded property-based fuzz of raw bytes and tensors.
Nothing a client sends may be answered UNKNOWN or INTERNAL or leave a traceback in the log.

Requests are built with the project's own protos (``tfserving_api._proto``, the same wire
format as ``tensorflow_serving.apis``) and sent as bytes through generic unary calls, so a
row can also be bytes no stub would send.
"""

from __future__ import annotations

import re
import typing as t

import grpc
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfserving_api._proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tfserving_api._proto.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
    regression_pb2,
)
from tfserving_api.tensors import to_tensor_proto

pytestmark = pytest.mark.integration

Code = grpc.StatusCode
Message = t.Any  # a generated protobuf message
PATHS = {
    "Predict": "/tensorflow.serving.PredictionService/Predict",
    "Classify": "/tensorflow.serving.PredictionService/Classify",
    "Regress": "/tensorflow.serving.PredictionService/Regress",
    "GetModelMetadata": "/tensorflow.serving.PredictionService/GetModelMetadata",
    "GetModelStatus": "/tensorflow.serving.ModelService/GetModelStatus",
}
# What a client's mistake may be answered with; everything else is the server's fault.
CLIENT_ERRORS = {
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.RESOURCE_EXHAUSTED,
    Code.UNIMPLEMENTED,
}
# The bytes of issue 10, item 3: a field tag, then a varint length that overflows.
CORRUPT = b"\x0a\xff\xff\xff\xff\x0f"


@pytest.fixture(scope="module")
def log_start(server) -> int:
    """Where the server log stood before this module's first request."""
    return server.log.stat().st_size


@pytest.fixture(scope="module")
def channel(server, log_start):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield channel


def send(channel: grpc.Channel, method: str, request: Message | bytes, timeout: float = 30):
    """``request`` (a message or raw bytes) through a generic unary call; the reply's bytes."""
    payload = request if isinstance(request, bytes) else request.SerializeToString()
    return channel.unary_unary(PATHS[method])(payload, timeout=timeout)


def tensor(dtype: int, shape: t.Sequence[int], **fields: t.Any) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape)
    return proto


def predict(model: str, signature: str = "", **inputs: tensor_pb2.TensorProto):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(value)
    return request


def examples(
    model: str,
    feature: str,
    kind: str,
    values: list,
    signature: str = "",
    count: int = 1,
    request_type: type = classification_pb2.ClassificationRequest,
):
    """A Classify (or Regress) request of ``count`` identical tf.Examples."""
    request = request_type()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for _ in range(count):
        value = request.input.example_list.examples.add().features.feature[feature]
        getattr(value, kind).value.extend(values)
    return request


def regress(feature: str, kind: str, values: list, count: int = 1):
    return examples("cosine", feature, kind, values, "", count, regression_pb2.RegressionRequest)


def nested_variant(depth: int) -> tensor_pb2.TensorProto:
    """A TensorProto nested ``depth`` times through ``variant_val`` (beyond protobuf's limit)."""
    inner = tensor_pb2.TensorProto()
    for _ in range(depth):
        outer = tensor_pb2.TensorProto()
        outer.variant_val.add().tensors.add().CopyFrom(inner)
        inner = outer
    return inner


def packed_strings(*items: bytes) -> bytes:
    """TF's packed DT_STRING ``tensor_content``: varint lengths, then the bytes."""
    lengths = b""
    for item in items:
        n = len(item)
        while n >= 0x80:
            lengths += bytes([n & 0x7F | 0x80])
            n >>= 7
        lengths += bytes([n])
    return lengths + b"".join(items)


F, I32, I64 = types_pb2.DT_FLOAT, types_pb2.DT_INT32, types_pb2.DT_INT64
WINDOW = [1.0] * 10
IDS = [1] * 500
PIXELS = [0.5] * 28 * 28

# (id, method, request: message or bytes, expected code, fragment of the details)
ROWS: list[t.Any] = [
    # ---- bytes that are not the request message
    *[
        (f"raw bytes {m}", m, CORRUPT, Code.INVALID_ARGUMENT, f"not a valid {m} request message")
        for m in PATHS
    ],
    ("garbage bytes", "Predict", b"\xff" * 16, Code.INVALID_ARGUMENT, "not a valid Predict"),
    (
        "truncated message",
        "Predict",
        predict("cosine", window=tensor(F, [1, 10], float_val=WINDOW)).SerializeToString()[:-3],
        Code.INVALID_ARGUMENT,
        "not a valid Predict",
    ),
    (
        "model name not utf-8",
        "Predict",
        b"\x0a\x03\x0a\x01\xff",
        Code.INVALID_ARGUMENT,
        "bad UTF-8",
    ),
    (
        "nested past the parser's depth",
        "Predict",
        predict("cosine", window=nested_variant(120)),
        Code.INVALID_ARGUMENT,
        "not a valid Predict",
    ),
    # ---- model spec
    ("missing model_spec", "Predict", predict_pb2.PredictRequest(), Code.INVALID_ARGUMENT,
     "model_spec.name: required"),
    ("missing model_spec metadata", "GetModelMetadata",
     get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]),
     Code.INVALID_ARGUMENT, "model_spec.name: required"),
    ("missing model_spec status", "GetModelStatus", get_model_status_pb2.GetModelStatusRequest(),
     Code.INVALID_ARGUMENT, "model_spec.name: required"),
    ("missing model_spec classify", "Classify", classification_pb2.ClassificationRequest(),
     Code.INVALID_ARGUMENT, "model_spec.name: required"),
    ("unknown model", "Predict", predict("nope", x=tensor(F, [1], float_val=[1.0])),
     Code.NOT_FOUND, "model 'nope' is not served"),
    ("unknown model status", "GetModelStatus",
     get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "nope"}), Code.NOT_FOUND,
     "model 'nope' is not served"),
    ("unknown version", "Predict",
     predict_pb2.PredictRequest(model_spec={"name": "cosine", "version": {"value": 2**62}}),
     Code.NOT_FOUND, f"version {2**62}"),
    ("negative version", "GetModelMetadata",
     get_model_metadata_pb2.GetModelMetadataRequest(
         model_spec={"name": "cosine", "version": {"value": -1}}, metadata_field=["signature_def"]),
     Code.NOT_FOUND, "version -1"),
    ("unknown signature", "Predict",
     predict("cosine", "nope", window=tensor(F, [1, 10], float_val=WINDOW)), Code.NOT_FOUND,
     "model 'cosine' has no signature 'nope'"),
    ("unknown metadata field", "GetModelMetadata",
     get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "imdb"}, metadata_field=["x"]),
     Code.INVALID_ARGUMENT, "metadata_field: 'x' is not supported"),
    # ---- input names
    ("unknown input name", "Predict",
     predict("cosine", values=tensor(F, [1, 10], float_val=WINDOW)), Code.INVALID_ARGUMENT,
     "inputs['values']: unknown input"),
    ("no input", "Predict", predict("cosine"), Code.INVALID_ARGUMENT,
     "inputs['window']: required input is missing"),
    # ---- dtypes
    ("floats for token ids", "Predict", predict("imdb", token_ids=tensor(F, [1, 500], float_val=[1.0])),
     Code.INVALID_ARGUMENT, "inputs['token_ids']: expected integers (int32), got floats"),
    ("bool for floats", "Predict",
     predict("cosine", window=tensor(types_pb2.DT_BOOL, [1, 10], bool_val=[True])),
     Code.INVALID_ARGUMENT, "dtype DT_BOOL does not match the signature's DT_FLOAT [-1, 10]"),
    ("complex, odd value count", "Predict",
     predict("cosine", window=tensor(types_pb2.DT_COMPLEX64, [1, 10], scomplex_val=[1.0] * 3)),
     Code.INVALID_ARGUMENT, "dtype DT_COMPLEX64 does not match"),
    ("dtype outside the enum", "Predict", predict("cosine", window=tensor(999, [1, 10])),
     Code.INVALID_ARGUMENT, "dtype 999 does not match"),
    ("DT_INVALID", "Predict", predict("cosine", window=tensor(types_pb2.DT_INVALID, [1, 10])),
     Code.INVALID_ARGUMENT, "dtype DT_INVALID does not match"),
    ("DT_VARIANT", "Predict", predict("cosine", window=tensor(types_pb2.DT_VARIANT, [1, 10])),
     Code.INVALID_ARGUMENT, "dtype DT_VARIANT does not match"),
    ("string tensor to a numeric input", "Predict",
     predict("cosine", window=tensor(types_pb2.DT_STRING, [1, 10], string_val=[b"1"])),
     Code.INVALID_ARGUMENT, "dtype DT_STRING does not match the signature's DT_FLOAT"),
    ("numeric tensor to a string input", "Predict",
     predict("translator", "translate", sentences=tensor(F, [1], float_val=[1.0])),
     Code.INVALID_ARGUMENT, "dtype DT_FLOAT does not match the signature's DT_STRING"),
    # Narrow types travel in wider fields; a value that does not fit used to wrap silently.
    ("uint8 int_val over 255", "Predict",
     predict("mnist", "predict_images",
             images=tensor(types_pb2.DT_UINT8, [1, 28, 28, 1], int_val=[300])),
     Code.INVALID_ARGUMENT, "int_val value 300 does not fit uint8"),
    ("int16 int_val over its range", "Predict",
     predict("imdb", token_ids=tensor(types_pb2.DT_INT16, [1, 500], int_val=[70_000])),
     Code.INVALID_ARGUMENT, "int_val value 70000 does not fit int16"),
    ("half_val outside 16 bits", "Predict",
     predict("cosine", window=tensor(types_pb2.DT_HALF, [1, 10], half_val=[70_000])),
     Code.INVALID_ARGUMENT, "half_val value 70000 does not fit uint16"),
    # ---- shapes
    ("claimed rows far beyond the content", "Predict",
     predict("cosine", window=tensor(F, [10**15, 10], float_val=[1.0])),
     Code.RESOURCE_EXHAUSTED, "1000000000000000 rows exceed the cap of 64"),
    ("claimed row far wider than the signature", "Predict",
     predict("cosine", window=tensor(F, [1, 10**15], float_val=[1.0])),
     Code.INVALID_ARGUMENT, "expected shape DT_FLOAT [-1, 10], got [1, 1000000000000000]"),
    ("claimed dims whose product overflows int64", "Predict",
     predict("cosine", window=tensor(F, [2**62, 2**62], float_val=[1.0])),
     Code.INVALID_ARGUMENT, "expected shape DT_FLOAT [-1, 10]"),
    ("claimed strings far beyond the content", "Predict",
     predict("translator", "translate", sentences=tensor(types_pb2.DT_STRING, [2**40], string_val=[b"a"])),
     Code.RESOURCE_EXHAUSTED, f"{2**40} rows exceed the cap of 64"),
    ("negative dim", "Predict", predict("cosine", window=tensor(F, [-5, 10], float_val=[1.0])),
     Code.INVALID_ARGUMENT, "the tensor shape must be fully defined"),
    ("most negative dim", "Predict",
     predict("cosine", window=tensor(F, [1, -(2**63)], float_val=[1.0])),
     Code.INVALID_ARGUMENT, "the tensor shape must be fully defined"),
    ("unknown rank", "Predict",
     predict("cosine", window=tensor_pb2.TensorProto(
         dtype=F, tensor_shape={"unknown_rank": True}, float_val=[1.0])),
     Code.INVALID_ARGUMENT, "the tensor shape must be fully defined"),
    ("scalar", "Predict", predict("cosine", window=tensor(F, [], float_val=[1.0])),
     Code.INVALID_ARGUMENT, "expected shape DT_FLOAT [-1, 10], got []"),
    ("rank 100", "Predict", predict("cosine", window=tensor(F, [1] * 100, float_val=[1.0])),
     Code.INVALID_ARGUMENT, "expected shape DT_FLOAT [-1, 10], got [1, 1,"),
    ("no rows", "Predict", predict("cosine", window=tensor(F, [0, 10])), Code.INVALID_ARGUMENT,
     "inputs['window']: must not be empty"),
    # ---- content that does not match its shape
    ("tensor_content one byte short", "Predict",
     predict("cosine", window=tensor(F, [1, 10], tensor_content=b"\0" * 39)),
     Code.INVALID_ARGUMENT, "tensor_content has 39 bytes, shape [1, 10] of float32 needs 40"),
    ("tensor_content one byte long", "Predict",
     predict("cosine", window=tensor(F, [1, 10], tensor_content=b"\0" * 41)),
     Code.INVALID_ARGUMENT, "tensor_content has 41 bytes"),
    ("tensor_content of 4 bytes for 64 rows", "Predict",
     predict("imdb", token_ids=tensor(I32, [64, 500], tensor_content=b"\0" * 4)),
     Code.INVALID_ARGUMENT, "tensor_content has 4 bytes, shape [64, 500] of int32 needs 128000"),
    ("more values than elements", "Predict",
     predict("cosine", window=tensor(F, [1, 10], float_val=[1.0] * 11)),
     Code.INVALID_ARGUMENT, "float_val has 11 values for 10 elements"),
    ("packed strings truncated", "Predict",
     predict("translator", "translate",
             sentences=tensor(types_pb2.DT_STRING, [1], tensor_content=b"\xff\xff\xff")),
     Code.INVALID_ARGUMENT, "truncated varint at offset 0"),
    ("packed string longer than the content", "Predict",
     predict("translator", "translate",
             sentences=tensor(types_pb2.DT_STRING, [1], tensor_content=b"\xff\xff\xff\xff\x0fab")),
     Code.INVALID_ARGUMENT, "string 0 of 1 needs 4294967295 bytes"),
    # ---- values
    ("string not utf-8", "Predict",
     predict("translator", "translate", sentences=tensor(types_pb2.DT_STRING, [1], string_val=[b"\xff"])),
     Code.INVALID_ARGUMENT, "inputs['sentences'][0]: not valid UTF-8 text"),
    ("strings left empty", "Predict",
     predict("translator", "translate", sentences=tensor(types_pb2.DT_STRING, [3])),
     Code.INVALID_ARGUMENT, "inputs['sentences'][0]: must not be empty"),
    ("token ids outside the vocabulary", "Predict",
     predict("imdb", token_ids=tensor(I32, [1, 500], int_val=[10_000])),
     Code.INVALID_ARGUMENT, "token ids must be in 0..9999"),
    ("negative token ids", "Predict", predict("reuters", token_ids=tensor(I32, [1, 200], int_val=[-1])),
     Code.INVALID_ARGUMENT, "token ids must be in 0.."),
    ("translator ids outside its vocabulary", "Predict",
     predict("translator", source_ids=tensor(I32, [1, 11], int_val=[5000])),
     Code.INVALID_ARGUMENT, "token ids must be in 0.."),
    ("int64 ids beyond int32", "Predict", predict("imdb", token_ids=tensor(I64, [1, 500], int64_val=[2**62])),
     Code.INVALID_ARGUMENT, "values must fit int32"),
    ("uint64 ids at their maximum", "Predict",
     predict("imdb", token_ids=tensor(types_pb2.DT_UINT64, [1, 500], uint64_val=[2**64 - 1])),
     Code.INVALID_ARGUMENT, "values must fit int32"),
    ("nan", "Predict", predict("cosine", window=tensor(F, [1, 10], float_val=[float("nan")])),
     Code.INVALID_ARGUMENT, "must not contain NaN or infinity"),
    ("double beyond float32", "Predict",
     predict("cosine", window=tensor(types_pb2.DT_DOUBLE, [1, 10], double_val=[1e300])),
     Code.INVALID_ARGUMENT, "must not contain NaN or infinity"),
    ("pixels below 0", "Predict",
     predict("cifar", pixels=to_tensor_proto(np.full((1, 32, 32, 3), -0.5, np.float32))),
     Code.INVALID_ARGUMENT, "pixels must be in [0, 1]"),
    ("pixels above 1", "Predict", predict("mnist", pixels=tensor(F, [1, 28, 28, 1], float_val=[255.0])),
     Code.INVALID_ARGUMENT, "pixels must be in [0, 1]"),
    ("pixels nan as float16", "Predict",
     predict("cifar", pixels=tensor(types_pb2.DT_HALF, [1, 32, 32, 3], half_val=[0x7E00])),
     Code.INVALID_ARGUMENT, "must not contain NaN or infinity"),
    ("text over the cap, packed", "Predict",
     predict("imdb", "predict_text",
             text=tensor(types_pb2.DT_STRING, [1], tensor_content=packed_strings(b"x" * 20_001))),
     Code.RESOURCE_EXHAUSTED, "20001 characters exceed the cap of 20000"),
    # issue 15: an endless varint length was read into a growing int (quadratic, 1.5 s of
    # blocked event loop for this one); now refused after 10 bytes
    ("packed string varint of 256k bytes", "Predict",
     predict("imdb", "predict_text",
             text=tensor(types_pb2.DT_STRING, [1], tensor_content=b"\xff" * 256_000 + b"\x01")),
     Code.INVALID_ARGUMENT, "varint longer than 10 bytes"),
    ("packed string length past the end", "Predict",
     predict("imdb", "predict_text",
             text=tensor(types_pb2.DT_STRING, [2], tensor_content=b"\x01\xff\xff\x03a")),
     Code.INVALID_ARGUMENT, "string 1 of 2 needs 65535 bytes"),
    # ---- too many items
    ("too many rows", "Predict", predict("cosine", window=tensor(F, [65, 10], float_val=[1.0])),
     Code.RESOURCE_EXHAUSTED, "65 rows exceed the cap of 64"),
    ("too many examples", "Classify", examples("imdb", "text", "bytes_list", [b"a"], count=65),
     Code.RESOURCE_EXHAUSTED, "65 examples exceed the cap of 64"),
    ("too many regression examples", "Regress", regress("window", "float_list", WINDOW, count=65),
     Code.RESOURCE_EXHAUSTED, "65 examples exceed the cap of 64"),
    # ---- Classify / Regress examples
    ("classify without input", "Classify",
     classification_pb2.ClassificationRequest(model_spec={"name": "imdb"}), Code.INVALID_ARGUMENT,
     "input: expected example_list or example_list_with_context"),
    ("classify unknown signature", "Classify",
     examples("imdb", "text", "bytes_list", [b"a"], "nope"), Code.NOT_FOUND, "no signature 'nope'"),
    ("classify text as integers", "Classify", examples("imdb", "text", "int64_list", [1]),
     Code.INVALID_ARGUMENT, "features['text']: expected a bytes_list with one value"),
    ("classify text not utf-8", "Classify", examples("imdb", "text", "bytes_list", [b"\xff"]),
     Code.INVALID_ARGUMENT, "not valid UTF-8 text"),
    ("classify pixels above 1", "Classify",
     examples("mnist", "pixels", "float_list", [2.0] * 784, "serving_default"),
     Code.INVALID_ARGUMENT, "pixels must be in [0, 1]"),
    ("classify image values over 255", "Classify",
     examples("mnist", "images", "int64_list", [300] * 784), Code.INVALID_ARGUMENT,
     "values must fit uint8 (0..255)"),
    ("classify wrong value count", "Classify", examples("mnist", "images", "int64_list", [1] * 10),
     Code.INVALID_ARGUMENT, "expected 784 values (shape [28, 28, 1]), got 10"),
    pytest.param(
        "classify token ids outside the vocabulary", "Classify",
        examples("imdb", "token_ids", "int64_list", [10**6] * 500, "serving_default"),
        Code.INVALID_ARGUMENT, "token ids must be in 0..9999",
        id="classify token ids outside the vocabulary",
    ),
    pytest.param(
        "classify negative token ids", "Classify",
        examples("reuters", "token_ids", "int64_list", [-5] * 200, "serving_default"),
        Code.INVALID_ARGUMENT, "token ids must be in 0..",
        id="classify negative token ids",
    ),
    ("regress nan", "Regress", regress("window", "float_list", [float("nan")] * 10),
     Code.INVALID_ARGUMENT, "must not contain NaN or infinity"),
    ("regress wrong value count", "Regress", regress("window", "float_list", [1.0] * 9),
     Code.INVALID_ARGUMENT, "expected 10 values (shape [10]), got 9"),
    ("regress strings", "Regress", regress("window", "bytes_list", [b"1"]),
     Code.INVALID_ARGUMENT, "expected float_list or int64_list, got bytes_list"),
    ("classify a forecaster", "Classify", examples("cosine", "window", "float_list", WINDOW),
     Code.UNIMPLEMENTED, "Classify: model 'cosine'"),
]  # fmt: skip


PARAMS = [row if hasattr(row, "marks") else pytest.param(*row, id=row[0]) for row in ROWS]


@pytest.mark.parametrize(("case", "method", "request_", "code", "fragment"), PARAMS)
def test_malformed_request_gets_its_status(channel, case, method, request_, code, fragment):
    with pytest.raises(grpc.RpcError) as caught:
        send(channel, method, request_)
    error = caught.value
    assert error.code() not in (Code.UNKNOWN, Code.INTERNAL), (error.code(), error.details())
    assert error.code() == code, error.details()
    assert fragment in (error.details() or ""), error.details()


# ---- property-based: whatever the bytes or the tensor, a client error or an answer

FUZZ = settings(
    max_examples=300,
    derandomize=True,  # the same cases on every run: a CI failure reproduces locally
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def _answered(channel: grpc.Channel, method: str, request: Message | bytes) -> Code:
    try:
        send(channel, method, request)
    except grpc.RpcError as error:
        assert error.code() in CLIENT_ERRORS, (error.code(), error.details())
        return error.code()
    return Code.OK


def test_random_bytes_to_every_method_are_a_client_error(channel):
    @FUZZ
    @given(method=st.sampled_from(sorted(PATHS)), payload=st.binary(max_size=64))
    def fuzz(method: str, payload: bytes) -> None:
        _answered(channel, method, payload)

    fuzz()


# (model, signature, input): every signature input of the exported models.
INPUTS = [
    ("reuters", "serving_default", "token_ids"),
    ("reuters", "predict_text", "text"),
    ("imdb", "serving_default", "token_ids"),
    ("imdb", "predict_text", "text"),
    ("cifar", "serving_default", "pixels"),
    ("cifar", "predict_images", "images"),
    ("mnist", "serving_default", "pixels"),
    ("mnist", "predict_images", "images"),
    ("cosine", "serving_default", "window"),
    ("cosine", "forecast", "window"),
    ("translator", "serving_default", "source_ids"),
    ("translator", "translate", "sentences"),
]
DIMS = st.one_of(
    st.integers(-2, 66),
    st.sampled_from([10, 11, 28, 32, 200, 500, 2**31, 2**62, -(2**63)]),
)
_FLOATS = st.floats(width=32)  # NaN and infinities included
TENSORS = st.builds(
    tensor,
    dtype=st.one_of(st.sampled_from(sorted(types_pb2.DataType.values())), st.integers(-1, 300)),
    shape=st.lists(DIMS, max_size=5),
    tensor_content=st.binary(max_size=96),
    float_val=st.lists(_FLOATS, max_size=12),
    double_val=st.lists(st.floats(), max_size=4),
    half_val=st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4),
    int_val=st.lists(st.integers(-(2**31), 2**31 - 1), max_size=12),
    int64_val=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4),
    string_val=st.lists(st.binary(max_size=12), max_size=4),
    bool_val=st.lists(st.booleans(), max_size=4),
    scomplex_val=st.lists(_FLOATS, max_size=3),
)


def test_random_tensors_to_every_signature_are_answered_or_refused(channel):
    @FUZZ
    @given(target=st.sampled_from(INPUTS), proto=TENSORS, rename=st.booleans())
    def fuzz(target: tuple[str, str, str], proto: tensor_pb2.TensorProto, rename: bool) -> None:
        model, signature, name = target
        inputs = {"other" if rename else name: proto}
        _answered(channel, "Predict", predict(model, signature, **inputs))

    fuzz()


def test_no_traceback_and_no_500_from_these_requests(server, log_start, channel):
    with server.log.open("rb") as log:
        log.seek(log_start)
        text = log.read().decode("utf-8", "replace")
    assert "Traceback" not in text, text[text.index("Traceback") - 2000 :][:6000]
    errors = [line for line in text.splitlines() if "[ERROR]" in line]
    assert not errors, errors[:10]
    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    failed = re.findall(
        r'keras_serving_requests_total\{code="500",door="grpc"[^}]*\} (\S+)', metrics
    )
    assert all(float(count) == 0 for count in failed), failed
