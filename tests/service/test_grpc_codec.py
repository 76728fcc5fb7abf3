"""``service.grpc_codec``: request tensors and examples -> validated batches, rows -> protos.

Table-driven bad inputs: one row per case, the expected error class and message fragment.
"""

from __future__ import annotations

import numpy as np
import pytest

from service import grpc_codec as codec
from service.catalog import ModelInfo, SignatureSpec, TensorSpec
from service.errors import InvalidInput, ModelNotFound, PayloadTooLarge, Unsupported
from tfserving_api._proto.tensorflow.core.example import example_pb2, feature_pb2
from tfserving_api._proto.tensorflow.core.framework import tensor_pb2, types_pb2
from tfserving_api._proto.tensorflow_serving.apis import input_pb2
from tfserving_api.tensors import to_ndarray, to_tensor_proto

LIMITS = codec.Limits(max_rows=4, max_bytes=1 << 20)
WINDOW = TensorSpec("window", "float32", (None, 10))
IDS = TensorSpec("token_ids", "int32", (None, 5))
IMAGES = TensorSpec("images", "uint8", (None, 2, 2, 1))
TEXT = TensorSpec("text", "string", (None,))
PROBABILITIES = TensorSpec("probabilities", "float32", (None, 2))
LABEL = TensorSpec("label", "int64", (None,))


def _signature(name: str, tensor: TensorSpec, **outputs: TensorSpec) -> SignatureSpec:
    return SignatureSpec(name, {tensor.name: tensor}, outputs)


IMDB = ModelInfo(
    name="imdb",
    version=3,
    variant="lstm",
    tag="imdb:abc",
    labels=("negative", "positive"),
    signatures={
        "serving_default": _signature(
            "serving_default", IDS, probabilities=PROBABILITIES, label=LABEL
        ),
        "predict_text": _signature("predict_text", TEXT, probabilities=PROBABILITIES, label=LABEL),
    },
    vocab_size=100,
)
COSINE = ModelInfo(
    name="cosine",
    version=1,
    variant="dense",
    tag="cosine:abc",
    labels=(),
    signatures={
        "serving_default": _signature(
            "serving_default", WINDOW, forecast=TensorSpec("forecast", "float32", (None,))
        ),
        "forecast": _signature(
            "forecast", WINDOW, forecast=TensorSpec("forecast", "float32", (None,))
        ),
    },
)


def _raw(dtype: int, shape: list[int], **fields) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


BAD_TENSORS = [
    (
        "nan",
        WINDOW,
        to_tensor_proto(np.full((1, 10), np.nan, np.float32)),
        InvalidInput,
        "NaN or infinity",
    ),
    (
        "inf",
        WINDOW,
        to_tensor_proto(np.full((1, 10), np.inf, np.float32)),
        InvalidInput,
        "NaN or infinity",
    ),
    (
        "float64 overflow",
        WINDOW,
        to_tensor_proto(np.full((1, 10), 1e300)),
        InvalidInput,
        "NaN or infinity",
    ),
    (
        "row shape",
        WINDOW,
        to_tensor_proto(np.zeros((1, 9), np.float32)),
        InvalidInput,
        "expected shape DT_FLOAT [-1, 10], got [1, 9]",
    ),
    ("rank", WINDOW, to_tensor_proto(np.zeros(10, np.float32)), InvalidInput, "got [10]"),
    (
        "empty",
        WINDOW,
        to_tensor_proto(np.zeros((0, 10), np.float32)),
        InvalidInput,
        "must not be empty",
    ),
    (
        "too many rows",
        WINDOW,
        to_tensor_proto(np.zeros((5, 10), np.float32)),
        PayloadTooLarge,
        "5 rows exceed the cap of 4",
    ),
    (
        "string for floats",
        WINDOW,
        to_tensor_proto([["a"] * 10]),
        InvalidInput,
        "dtype DT_STRING does not match",
    ),
    ("bool", WINDOW, to_tensor_proto(np.zeros((1, 10), bool)), InvalidInput, "dtype DT_BOOL"),
    (
        "floats for ids",
        IDS,
        to_tensor_proto(np.zeros((1, 5), np.float32)),
        InvalidInput,
        "expected integers",
    ),
    (
        "id over vocab",
        IDS,
        to_tensor_proto(np.full((1, 5), 100, np.int32)),
        InvalidInput,
        "token ids must be in 0..99",
    ),
    (
        "int32 overflow",
        IDS,
        to_tensor_proto(np.full((1, 5), 2**40, np.int64)),
        InvalidInput,
        "must fit int32",
    ),
    (
        "pixel over 255",
        IMAGES,
        to_tensor_proto(np.full((1, 2, 2, 1), 256, np.int32)),
        InvalidInput,
        "must fit uint8",
    ),
    (
        "numbers for text",
        TEXT,
        to_tensor_proto(np.zeros(2, np.int32)),
        InvalidInput,
        "dtype DT_INT32",
    ),
    (
        "invalid utf-8",
        TEXT,
        to_tensor_proto([b"ok", b"\xff\xfe"]),
        InvalidInput,
        "[1]: not valid UTF-8",
    ),
    (
        "blank text",
        TEXT,
        to_tensor_proto(["ok", "  "]),
        InvalidInput,
        "[1]: must not be empty",
    ),
    (
        "unknown dtype",
        WINDOW,
        _raw(types_pb2.DT_BFLOAT16, [1, 10]),
        InvalidInput,
        "dtype DT_BFLOAT16",
    ),
    ("unknown dim", WINDOW, _raw(types_pb2.DT_FLOAT, [-1, 10]), InvalidInput, "fully defined"),
    (
        "content size",
        WINDOW,
        _raw(types_pb2.DT_FLOAT, [1, 10], tensor_content=b"\0" * 8),
        InvalidInput,
        "tensor_content has 8 bytes",
    ),
    (
        "huge claimed shape",
        TensorSpec("x", "float32", (None, None)),
        _raw(types_pb2.DT_FLOAT, [1, 10**9], float_val=[1.0]),
        PayloadTooLarge,
        "elements exceed",
    ),
]


@pytest.mark.parametrize(
    ("case", "spec", "proto", "error", "message"), BAD_TENSORS, ids=[c[0] for c in BAD_TENSORS]
)
def test_bad_tensors_are_rejected_with_the_input_named(case, spec, proto, error, message) -> None:
    field = f"inputs['{spec.name}']"
    with pytest.raises(error) as caught:
        codec.decode_input(proto, spec, field, LIMITS, vocab_size=100 if spec is IDS else None)
    assert caught.value.message.startswith(field) and message in caught.value.message, (
        caught.value.message
    )


CLAIMED_SHAPES = [  # (shape, error, message): the one check of the gRPC and V2 doors
    ([1, 9], InvalidInput, "x: expected shape FP32 [-1, 10], got [1, 9]"),
    ([10], InvalidInput, "x: expected shape FP32 [-1, 10], got [10]"),
    ([], InvalidInput, "x: expected shape FP32 [-1, 10], got []"),
    ([0, 10], InvalidInput, "x: must not be empty"),
    ([5, 10], PayloadTooLarge, "x: 5 rows exceed the cap of 4 per request"),
    ([4, 10], PayloadTooLarge, "x: 40 elements exceed the request cap"),
]


@pytest.mark.parametrize(("shape", "error", "message"), CLAIMED_SHAPES)
def test_the_claimed_shape_is_checked_once_for_both_protocols(shape, error, message) -> None:
    from service import v2_codec

    limits = codec.Limits(max_rows=4, max_bytes=39)
    with pytest.raises(error) as caught:
        codec.check_claimed_shape(shape, WINDOW, "x", "FP32 [-1, 10]", limits)
    assert caught.value.message == message
    # Each door spells the expected tensor its own way and names the tensor it got.
    tensor = to_tensor_proto(np.zeros(shape, np.float32))
    with pytest.raises(error) as caught:
        codec.decode_input(tensor, WINDOW, "inputs['window']", limits)
    assert caught.value.message == message.replace("x:", "inputs['window']:").replace(
        "FP32", "DT_FLOAT"
    )
    v2 = v2_codec.InputTensor("inputs[0]", "window", "FP32", shape, raw=b"")
    with pytest.raises(error) as caught:
        v2_codec.decode_input(v2, WINDOW, limits)
    assert caught.value.message == message.replace("x:", "inputs[0]:")


def test_a_huge_claimed_shape_is_cut_in_the_message() -> None:
    with pytest.raises(InvalidInput) as caught:
        codec.check_claimed_shape([1] * 10_000, WINDOW, "x", "FP32 [-1, 10]", LIMITS)
    assert len(caught.value.message) < 300 and "got [1, 1, 1" in caught.value.message


@pytest.mark.parametrize(
    ("spec", "value", "dtype"),
    [
        (
            WINDOW,
            np.ones((2, 10), np.float64),
            np.float32,
        ),  # float64 narrowed, as the REST door does
        (WINDOW, np.ones((1, 10), np.int64), np.float32),
        (IDS, np.ones((1, 5), np.int64), np.int32),  # numpy's default ints
        (IMAGES, np.full((1, 2, 2, 1), 255, np.int32), np.uint8),
        (TEXT, ["héllo", "a film"], object),
    ],
)
def test_compatible_tensors_are_cast_to_the_signature_dtype(spec, value, dtype) -> None:
    array = codec.decode_input(to_tensor_proto(value), spec, "x", LIMITS)
    assert array.dtype == dtype and len(array) == len(value)


def test_decode_inputs_names_missing_and_unknown_inputs() -> None:
    signature = IMDB.signatures["serving_default"]
    ids = to_tensor_proto(np.ones((1, 5), np.int32))
    with pytest.raises(InvalidInput, match=r"inputs\['token_ids'\]: required input is missing"):
        codec.decode_inputs({}, signature, LIMITS)
    with pytest.raises(InvalidInput, match=r"inputs\['text'\]: unknown input .* takes 'token_ids'"):
        codec.decode_inputs({"token_ids": ids, "text": ids}, signature, LIMITS)
    with pytest.raises(InvalidInput, match="0..99"):  # vocab only checked on the tensor signature
        codec.decode_inputs(
            {"token_ids": to_tensor_proto(np.full((1, 5), 500))}, signature, LIMITS, 100
        )


def test_outputs_are_encoded_batch_first_and_filtered() -> None:
    signature = IMDB.signatures["predict_text"]
    columns = {
        "probabilities": np.array([[0.25, 0.75], [0.5, 0.5]], np.float32),
        "label": np.array([1, 0], np.int64),
    }
    outputs = codec.encode_outputs(columns, signature, codec.select_outputs(signature, []))
    assert to_ndarray(outputs["probabilities"]).dtype == np.float32
    np.testing.assert_array_equal(to_ndarray(outputs["probabilities"]), [[0.25, 0.75], [0.5, 0.5]])
    assert (
        to_ndarray(outputs["label"]).tolist() == [1, 0]
        and outputs["label"].dtype == types_pb2.DT_INT64
    )
    assert codec.select_outputs(signature, ["label", "label"]) == ["label"]
    with pytest.raises(InvalidInput, match="output_filter: .* no output 'scores'"):
        codec.select_outputs(signature, ["scores"])
    translate = SignatureSpec(
        "translate", {}, {"translation": TensorSpec("translation", "string", (None,))}
    )
    strings = codec.encode_outputs(
        {"translation": np.array([b"gut", b"ja"], dtype=object)}, translate, ["translation"]
    )
    assert to_ndarray(strings["translation"]).tolist() == [b"gut", b"ja"]


def test_signature_def_map_and_labels() -> None:
    signatures = codec.signature_def_map(IMDB).signature_def
    assert set(signatures) == {"serving_default", "predict_text"}
    ids = signatures["serving_default"].inputs["token_ids"]
    assert ids.dtype == types_pb2.DT_INT32 and [d.size for d in ids.tensor_shape.dim] == [-1, 5]
    assert signatures["predict_text"].method_name == "tensorflow/serving/predict"
    assert to_ndarray(codec.labels_tensor(IMDB)).tolist() == [b"negative", b"positive"]
    assert codec.labels_tensor(COSINE) is None
    assert codec.check_metadata_fields(["labels", "signature_def", "labels"]) == [
        "labels",
        "signature_def",
    ]
    for fields, message in (([], "at least one"), (["foo"], "'foo' is not supported")):
        with pytest.raises(InvalidInput, match=message):
            codec.check_metadata_fields(fields)


def _examples(
    *features: dict[str, feature_pb2.Feature], context: dict | None = None
) -> input_pb2.Input:
    examples = [example_pb2.Example(features=feature_pb2.Features(feature=f)) for f in features]
    if context is None:
        return input_pb2.Input(example_list=input_pb2.ExampleList(examples=examples))
    return input_pb2.Input(
        example_list_with_context=input_pb2.ExampleListWithContext(
            examples=examples,
            context=example_pb2.Example(features=feature_pb2.Features(feature=context)),
        )
    )


def _floats(*values: float) -> feature_pb2.Feature:
    return feature_pb2.Feature(float_list=feature_pb2.FloatList(value=values))


def _bytes(*values: bytes) -> feature_pb2.Feature:
    return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=values))


def test_examples_become_batches() -> None:
    window = codec.examples_batch(
        _examples({"window": _floats(*range(10))}, {"window": _floats(*[1.0] * 10)}), WINDOW, LIMITS
    )
    assert window.dtype == np.float32 and window.shape == (2, 10) and window[0, 9] == 9
    text = codec.examples_batch(
        _examples({"text": _bytes(b"a film"), "other": _floats(1.0)}), TEXT, LIMITS
    )
    assert text.tolist() == [b"a film"]
    shared = codec.examples_batch(
        _examples({}, {}, context={"text": _bytes(b"same")}), TEXT, LIMITS
    )
    assert shared.tolist() == [b"same", b"same"]
    ints = feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[0, 255, 3, 4]))
    assert codec.examples_batch(_examples({"images": ints}), IMAGES, LIMITS).shape == (1, 2, 2, 1)


BAD_EXAMPLES = [
    ("no input", input_pb2.Input(), WINDOW, InvalidInput, "expected example_list"),
    ("no examples", _examples(), WINDOW, InvalidInput, "must not be empty"),
    (
        "too many",
        _examples(*[{"window": _floats(*[0.0] * 10)}] * 5),
        WINDOW,
        PayloadTooLarge,
        "5 examples",
    ),
    (
        "missing feature",
        _examples({"x": _floats(1.0)}),
        WINDOW,
        InvalidInput,
        "examples[0].features['window']: required feature is missing",
    ),
    (
        "value count",
        _examples({"window": _floats(1.0)}),
        WINDOW,
        InvalidInput,
        "expected 10 values",
    ),
    (
        "bytes for floats",
        _examples({"window": _bytes(b"x")}),
        WINDOW,
        InvalidInput,
        "expected float_list or int64_list",
    ),
    ("nan", _examples({"window": _floats(*[float("nan")] * 10)}), WINDOW, InvalidInput, "NaN"),
    ("two texts", _examples({"text": _bytes(b"a", b"b")}), TEXT, InvalidInput, "one value"),
    (
        "floats for pixels",
        _examples({"images": _floats(*[0.5] * 4)}),
        IMAGES,
        InvalidInput,
        "expected int64_list",
    ),
]


@pytest.mark.parametrize(
    ("case", "request_input", "spec", "error", "message"),
    BAD_EXAMPLES,
    ids=[c[0] for c in BAD_EXAMPLES],
)
def test_bad_examples_are_rejected(case, request_input, spec, error, message) -> None:
    with pytest.raises(error, match=None) as caught:
        codec.examples_batch(request_input, spec, LIMITS)
    assert message in caught.value.message, caught.value.message


def test_classify_and_regress_fit_only_their_models() -> None:
    assert codec.classify_signature(IMDB, "").name == "predict_text"
    assert codec.classify_signature(IMDB, "serving_default").name == "serving_default"
    assert codec.regress_signature(COSINE, "").name == "forecast"
    with pytest.raises(Unsupported, match="Classify: model 'cosine'"):
        codec.classify_signature(COSINE, "")
    with pytest.raises(Unsupported, match="Regress: model 'imdb'"):
        codec.regress_signature(IMDB, "")
    with pytest.raises(ModelNotFound, match="no signature 'nope'"):
        codec.classify_signature(IMDB, "nope")
    result = codec.classification_result(
        {"probabilities": np.array([[0.2, 0.8]], np.float32)}, IMDB
    )
    assert [(c.label, round(c.score, 3)) for c in result.classifications[0].classes] == [
        ("negative", 0.2),
        ("positive", 0.8),
    ]
    regression = codec.regression_result(
        {"forecast": np.array([1.5, -2.0], np.float32)}, COSINE.signatures["forecast"]
    )
    assert [r.value for r in regression.regressions] == [1.5, -2.0]
