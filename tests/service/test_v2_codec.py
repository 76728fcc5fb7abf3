"""``service.v2_codec`` and the REST door's body codec: V2 requests -> validated batches.

Requests are built by tritonclient's own encoder (``_get_inference_request``, what
``InferenceServerClient.infer`` sends), so the parsing is checked against the real client
without a server. Bad inputs are table rows: the request, the error class, a fragment.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.http._infer_result import InferResult
from tritonclient.http._utils import _get_inference_request

from service import v2_codec as v2
from service.catalog import ModelInfo, SignatureSpec, TensorSpec
from service.errors import InvalidInput, ModelNotFound, PayloadTooLarge
from service.grpc_codec import Limits
from service.v2_rest import infer_response, parse_infer_request, split_body
from tfserving_api.open_inference import serialize_bytes

LIMITS = Limits(max_rows=4, max_bytes=1 << 20, max_text_chars=50)
TEXT = TensorSpec("text", "string", (None,))
IDS = TensorSpec("token_ids", "int32", (None, 5))
IMAGES = TensorSpec("images", "uint8", (None, 2, 2, 1))
PIXELS = TensorSpec("pixels", "float32", (None, 2, 2, 1))
WINDOW = TensorSpec("window", "float32", (None, 10))
PROBABILITIES = TensorSpec("probabilities", "float32", (None, 2))
LABEL = TensorSpec("label", "int64", (None,))
FORECAST = TensorSpec("forecast", "float32", (None,))


def _signature(name: str, tensor: TensorSpec, **outputs: TensorSpec) -> SignatureSpec:
    return SignatureSpec(name, {tensor.name: tensor}, outputs)


def _info(name: str, *signatures: SignatureSpec, vocab: int | None = None) -> ModelInfo:
    return ModelInfo(
        name=name, version=3, variant="v", tag=f"{name}:abc", labels=(),
        signatures={s.name: s for s in signatures}, vocab_size=vocab,
    )  # fmt: skip


IMDB = _info(
    "imdb",
    _signature("serving_default", IDS, probabilities=PROBABILITIES, label=LABEL),
    _signature("predict_text", TEXT, probabilities=PROBABILITIES, label=LABEL),
    vocab=100,
)
MNIST = _info(
    "mnist",
    _signature("serving_default", PIXELS, probabilities=PROBABILITIES, label=LABEL),
    _signature("predict_images", IMAGES, probabilities=PROBABILITIES, label=LABEL),
)
COSINE = _info(
    "cosine",
    _signature("serving_default", WINDOW, forecast=FORECAST),
    _signature("forecast", WINDOW, forecast=FORECAST),
)


def triton_body(
    array: np.ndarray,
    name: str,
    datatype: str,
    binary: bool = True,
    outputs: list[httpclient.InferRequestedOutput] | None = None,
    **parameters,
) -> tuple[bytes, str | None]:
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    body, json_size = _get_inference_request(
        [tensor], "7", outputs, 0, False, False, 0, None, parameters or None
    )
    return (body.encode() if isinstance(body, str) else body), (
        None if json_size is None else str(json_size)
    )


def decode(body: bytes, header: str | None, info: ModelInfo) -> tuple[str, np.ndarray]:
    request, _, _ = parse_infer_request(body, header)
    signature = v2.choose_signature(info, request.signature_name, request.input_names)
    return signature.name, v2.decode_inputs(request.inputs, signature, LIMITS, info.vocab_size)


# ---------------------------------------------------------------- what tritonclient sends


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_text_as_bytes(binary: bool) -> None:
    texts = np.array([b"a wonderful film", "caf\u00e9".encode()], dtype=object)
    body, header = triton_body(texts, "text", "BYTES", binary)
    assert (header is not None) == binary
    signature, batch = decode(body, header, IMDB)
    assert signature == "predict_text"
    assert batch.tolist() == [b"a wonderful film", "caf\u00e9".encode()]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_images_pixels_and_windows(binary: bool) -> None:
    images = np.arange(8, dtype=np.uint8).reshape(2, 2, 2, 1)
    signature, batch = decode(*triton_body(images, "images", "UINT8", binary), MNIST)
    assert signature == "predict_images" and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch, images)
    pixels = np.full((1, 2, 2, 1), 0.5, np.float32)
    signature, batch = decode(*triton_body(pixels, "pixels", "FP32", binary), MNIST)
    assert signature == "serving_default"  # chosen by the input's name
    np.testing.assert_array_equal(batch, pixels)
    window = np.linspace(0, 1, 10, dtype=np.float32)[None]
    signature, batch = decode(*triton_body(window, "window", "FP32", binary), COSINE)
    assert signature == "forecast"
    np.testing.assert_array_equal(batch, window)


def test_integers_are_accepted_for_float_and_int_inputs() -> None:
    ids = np.array([[1, 2, 3, 4, 5]], np.int64)
    signature, batch = decode(*triton_body(ids, "token_ids", "INT64"), IMDB)
    assert signature == "serving_default" and batch.dtype == np.int32
    window = np.arange(10, dtype=np.int32)[None]
    _, batch = decode(*triton_body(window, "window", "INT32"), COSINE)
    assert batch.dtype == np.float32


def test_signature_name_parameter() -> None:
    window = np.zeros((1, 10), np.float32)
    body, header = triton_body(window, "window", "FP32", signature_name="serving_default")
    assert decode(body, header, COSINE)[0] == "serving_default"
    body, header = triton_body(window, "window", "FP32", signature_name="nope")
    with pytest.raises(ModelNotFound, match="model 'cosine' has no signature 'nope'"):
        decode(body, header, COSINE)


def test_requested_outputs_and_binary_flags() -> None:
    texts = np.array([b"a film"], dtype=object)
    outputs = [httpclient.InferRequestedOutput("label", binary_data=False)]
    body, header = triton_body(texts, "text", "BYTES", outputs=outputs)
    request, binary, default = parse_infer_request(body, header)
    assert v2.select_outputs(IMDB.signatures["predict_text"], request.outputs) == ["label"]
    assert binary == {"label": False} and default is False and request.id == "7"
    body, header = triton_body(texts, "text", "BYTES")  # no outputs: binary_data_output
    request, binary, default = parse_infer_request(body, header)
    assert request.outputs == [] and default is True


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_reads_our_answer(binary: bool) -> None:
    signature = IMDB.signatures["predict_text"]
    probabilities = np.array([[0.25, 0.75]], np.float32)
    outputs = {"probabilities": probabilities, "label": np.array([1], np.int64)}

    class Model:
        info = IMDB

    response = infer_response(
        Model, signature, outputs, ["probabilities", "label"], {}, binary, "42"
    )
    header = response.headers.get("inference-header-content-length")
    assert (header is not None) == binary
    result = InferResult.from_response_body(response.body, False, header and int(header))
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)
    assert result.as_numpy("label").tolist() == [1]
    answer = result.get_response()
    assert answer["id"] == "42" and answer["model_name"] == "imdb"
    assert answer["model_version"] == "3"
    assert answer["parameters"] == {"signature_name": "predict_text"}


def test_bytes_outputs_round_trip_through_tritonclient() -> None:
    translation = TensorSpec("translation", "string", (None,))
    translate = _signature("translate", TEXT, translation=translation)
    info = _info("translator", translate)

    class Model:
        pass

    Model.info = info
    outputs = {"translation": np.array([b"ein Film", "\u00fcber".encode()], dtype=object)}
    for binary in (True, False):
        response = infer_response(Model, translate, outputs, ["translation"], {}, binary, "")
        header = response.headers.get("inference-header-content-length")
        result = InferResult.from_response_body(response.body, False, header and int(header))
        got = [x if isinstance(x, bytes) else x.encode() for x in result.as_numpy("translation")]
        assert got == [b"ein Film", "\u00fcber".encode()]
        assert "id" not in result.get_response()


# ---------------------------------------------------------------- bad requests


def _json(payload: object) -> bytes:
    return json.dumps(payload).encode()


def _text_input(**overrides: object) -> dict:
    return {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a film"], **overrides}


def _binary(header: dict, data: bytes) -> tuple[bytes, str]:
    head = _json(header)
    return head + data, str(len(head))


ONE_FLOAT = np.float32(0.5).tobytes()
# (case, (body, Inference-Header-Content-Length), model, error class, message fragment)
BAD = [
    ("not json", (b"{", None), IMDB, InvalidInput, "request body: not valid JSON"),
    ("not an object", (_json([1]), None), IMDB, InvalidInput, "expected a JSON object"),
    ("no inputs", (_json({}), None), IMDB, InvalidInput, "inputs: required"),
    ("empty inputs", (_json({"inputs": []}), None), IMDB, InvalidInput, "inputs: must not be empty"),
    ("unknown field", (_json({"inputs": [], "model": 1}), None), IMDB, InvalidInput,
     "request body.model: unknown field"),
    ("id not a string", (_json({"id": 3, "inputs": []}), None), IMDB, InvalidInput,
     "id: expected a string"),
    ("unknown input", (_json({"inputs": [_text_input(name="texts")]}), None), IMDB, InvalidInput,
     "inputs[0].name: unknown input 'texts' (signature 'predict_text' takes 'text': BYTES [-1])"),
    ("input twice", (_json({"inputs": [_text_input(), _text_input()]}), None), IMDB, InvalidInput,
     "inputs[1].name: input 'text' is given twice"),
    ("wrong datatype", (_json({"inputs": [_text_input(datatype="FP32")]}), None), IMDB,
     InvalidInput, "inputs[0].datatype: FP32 does not match the signature's BYTES [-1]"),
    ("unknown datatype", (_json({"inputs": [_text_input(datatype="STRING")]}), None), IMDB,
     InvalidInput, "inputs[0].datatype: datatype 'STRING' is not a V2 datatype"),
    ("bf16", (_json({"inputs": [{"name": "window", "datatype": "BF16", "shape": [1, 10]}]}), None),
     COSINE, InvalidInput, "BF16 is not supported"),
    ("floats for ids", (_json({"inputs": [
        {"name": "token_ids", "datatype": "FP32", "shape": [1, 5], "data": [1.0] * 5}]}), None),
     IMDB, InvalidInput, "inputs[0].datatype: FP32 does not match the signature's INT32 [-1, 5]"),
    ("bool", (_json({"inputs": [
        {"name": "window", "datatype": "BOOL", "shape": [1, 10], "data": [True] * 10}]}), None),
     COSINE, InvalidInput, "BOOL does not match"),
    ("negative dim", (_json({"inputs": [_text_input(shape=[-1])]}), None), IMDB, InvalidInput,
     "inputs[0].shape [-1]: dimensions must be integers >= 0"),
    ("shape not a list", (_json({"inputs": [_text_input(shape=1)]}), None), IMDB, InvalidInput,
     "inputs[0].shape: expected a list"),
    ("wrong rank", (_json({"inputs": [_text_input(shape=[1, 1])]}), None), IMDB, InvalidInput,
     "inputs[0]: expected shape BYTES [-1], got [1, 1]"),
    ("wrong row", (_json({"inputs": [{"name": "window", "datatype": "FP32", "shape": [1, 9],
                                      "data": [0.0] * 9}]}), None),
     COSINE, InvalidInput, "expected shape FP32 [-1, 10], got [1, 9]"),
    ("zero rows", (_json({"inputs": [_text_input(shape=[0], data=[])]}), None), IMDB,
     InvalidInput, "inputs[0]: must not be empty"),
    ("too many rows", (_json({"inputs": [_text_input(shape=[5], data=["a"] * 5)]}), None), IMDB,
     PayloadTooLarge, "inputs[0]: 5 rows exceed the cap of 4"),
    ("data count", (_json({"inputs": [_text_input(shape=[2])]}), None), IMDB, InvalidInput,
     "inputs[0]: data has 1 values, shape [2] needs 2"),
    ("no data", (_json({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1]}]}), None),
     IMDB, InvalidInput, "inputs[0]: no data"),
    ("blank text", (_json({"inputs": [_text_input(data=["  "])]}), None), IMDB, InvalidInput,
     "inputs[0][0]: must not be empty"),
    ("long text", (_json({"inputs": [_text_input(data=["a" * 51])]}), None), IMDB,
     PayloadTooLarge, "51 characters exceed the cap of 50"),
    ("token id range", (_json({"inputs": [{"name": "token_ids", "datatype": "INT32",
                                           "shape": [1, 5], "data": [1, 2, 3, 4, 100]}]}), None),
     IMDB, InvalidInput, "token ids must be in 0..99"),
    ("pixel range", (_json({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 2, 2, 1],
                                        "data": [2.0] * 4}]}), None),
     MNIST, InvalidInput, "pixels must be in [0, 1]"),
    ("image range", (_json({"inputs": [{"name": "images", "datatype": "INT32",
                                        "shape": [1, 2, 2, 1], "data": [300] * 4}]}), None),
     MNIST, InvalidInput, "values must fit uint8"),
    ("nan", (b'{"inputs": [{"name": "window", "datatype": "FP32", "shape": [1, 10], '
             b'"data": [NaN, 0, 0, 0, 0, 0, 0, 0, 0, 0]}]}', None),
     COSINE, InvalidInput, "must not contain NaN"),
    ("fp64 overflow", (_json({"inputs": [{"name": "window", "datatype": "FP64", "shape": [1, 10],
                                          "data": [1e300] * 10}]}), None),
     COSINE, InvalidInput, "must not contain NaN or infinity"),
    ("header not a number", (_json({"inputs": []}), "ten"), IMDB, InvalidInput,
     "Inference-Header-Content-Length: expected a byte count"),
    # "²".isdigit() is True and int("²") raises: a header decoded as latin-1 can carry it.
    ("header a superscript digit", (_json({"inputs": []}), "\u00b2"), IMDB, InvalidInput,
     "Inference-Header-Content-Length: expected a byte count"),
    ("header past the body", (_json({"inputs": []}), "9999"), IMDB, InvalidInput,
     "9999 exceeds the body's"),
    ("binary size past the body", _binary({"inputs": [{"name": "window", "datatype": "FP32",
        "shape": [1, 10], "parameters": {"binary_data_size": 40}}]}, b"\x00" * 8),
     COSINE, InvalidInput, "binary_data_size: 40 bytes claimed, 8 left"),
    ("shape vs byte count", _binary({"inputs": [{"name": "window", "datatype": "FP32",
        "shape": [1, 10], "parameters": {"binary_data_size": 4}}]}, ONE_FLOAT),
     COSINE, InvalidInput, "inputs[0]: 4 bytes of raw contents, shape [1, 10] of FP32 needs 40"),
    ("huge claimed shape", _binary({"inputs": [{"name": "text", "datatype": "BYTES",
        "shape": [10**15], "parameters": {"binary_data_size": 4}}]}, b"\x00" * 4),
     IMDB, PayloadTooLarge, "1000000000000000 rows exceed the cap of 4"),
    ("bytes run past", _binary({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
        "parameters": {"binary_data_size": 6}}]}, b"\x09\x00\x00\x00ab"),
     IMDB, InvalidInput, "BYTES element 0: 9 bytes claimed, 2 left"),
    ("trailing binary", _binary({"inputs": [_text_input()]}, b"xyz"), IMDB, InvalidInput,
     "3 bytes after the JSON header belong to no input"),
    ("data and binary", _binary({"inputs": [_text_input(parameters={"binary_data_size": 3})]},
                                b"xyz"),
     IMDB, InvalidInput, "inputs[0]: both 'data' and parameters.binary_data_size"),
    ("binary size not a count", _binary({"inputs": [{"name": "text", "datatype": "BYTES",
        "shape": [1], "parameters": {"binary_data_size": "3"}}]}, b"xyz"),
     IMDB, InvalidInput, "binary_data_size: expected a byte count"),
    ("invalid utf-8", _binary({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
        "parameters": {"binary_data_size": 6}}]}, serialize_bytes([b"\xff\xfe"])),
     IMDB, InvalidInput, "inputs[0][0]: not valid UTF-8"),
    ("unknown output", (_json({"inputs": [_text_input()], "outputs": [{"name": "logits"}]}), None),
     IMDB, InvalidInput, "outputs[0].name: signature 'predict_text' has no output 'logits'"),
    ("binary_data not a bool", (_json({"inputs": [_text_input()], "outputs": [
        {"name": "label", "parameters": {"binary_data": 1}}]}), None),
     IMDB, InvalidInput, "outputs[0].parameters.binary_data: expected true or false"),
    ("signature not a string", (_json({"inputs": [_text_input()],
                                       "parameters": {"signature_name": 1}}), None),
     IMDB, InvalidInput, "parameters.signature_name: expected a string"),
    ("long name is cut", (_json({"inputs": [_text_input(name="x" * 5000)]}), None), IMDB,
     InvalidInput, "x" * 150),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_", "info", "error", "fragment"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_bad_requests_name_the_field(request_, info, error, fragment) -> None:
    body, header = request_
    with pytest.raises(error) as caught:
        request, _, _ = parse_infer_request(body, header)
        signature = v2.choose_signature(info, request.signature_name, request.input_names)
        v2.select_outputs(signature, request.outputs)
        v2.decode_inputs(request.inputs, signature, LIMITS, info.vocab_size)
    assert fragment in caught.value.message
    assert len(caught.value.message) < 600  # echoed client strings are cut


def test_unknown_parameters_are_ignored() -> None:
    body = _json({"inputs": [_text_input(parameters={"x": 1})], "parameters": {"priority": 2}})
    assert decode(body, None, IMDB)[1].tolist() == [b"a film"]


def test_split_body() -> None:
    header, binary = split_body(b"{}abc", "2")
    assert header == b"{}" and bytes(binary) == b"abc"
    header, binary = split_body(b"{}", None)
    assert header == b"{}" and len(binary) == 0


def test_metadata_describes_the_default_signature() -> None:
    meta = v2.model_metadata(IMDB, [2, 3])
    assert meta == {
        "name": "imdb",
        "versions": ["2", "3"],
        "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ],
    }
    assert v2.model_metadata(COSINE, [1])["inputs"] == [
        {"name": "window", "datatype": "FP32", "shape": [-1, 10]}
    ]


def test_classification_extension_as_tritonclient_asks_it() -> None:
    texts = np.array([b"a film"], dtype=object)
    outputs = [httpclient.InferRequestedOutput("probabilities", class_count=5)]
    request, _, _ = parse_infer_request(*triton_body(texts, "text", "BYTES", outputs=outputs))
    signature = IMDB.signatures["predict_text"]
    assert v2.class_counts(signature, request.classification) == {"probabilities": 2}  # capped
    scores = np.array([[0.25, 0.75], [0.9, 0.1]], np.float32)
    assert v2.classify(scores, 2, ("negative", "positive")).tolist() == [
        [b"0.750000:1:positive", b"0.250000:0:negative"],
        [b"0.900000:0:negative", b"0.100000:1:positive"],
    ]
    assert v2.classify(scores, 1).tolist() == [[b"0.750000:1"], [b"0.900000:0"]]

    class Model:
        info = IMDB

    response = infer_response(
        Model, signature, {"probabilities": scores}, ["probabilities"], {}, True, "",
        {"probabilities": 1},
    )  # fmt: skip
    header = response.headers.get("inference-header-content-length")
    result = InferResult.from_response_body(response.body, False, int(header))
    assert result.get_output("probabilities")["datatype"] == "BYTES"
    assert result.as_numpy("probabilities").tolist() == [[b"0.750000:1"], [b"0.900000:0"]]


@pytest.mark.parametrize(
    ("name", "count", "fragment"),
    [
        ("label", 1, "output 'label' has no classes"),
        ("probabilities", 0, "expected a positive integer"),
        ("probabilities", True, "expected a positive integer"),
        ("probabilities", "3", "expected a positive integer"),
    ],
)
def test_bad_classification_requests(name, count, fragment) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        v2.class_counts(IMDB.signatures["predict_text"], {name: ("outputs[0]", count)})
