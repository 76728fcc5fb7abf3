"""Unit tests of the door checks, the TF Serving codec and the settings (no server, no TF)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from service.catalog import ModelInfo, SignatureSpec, TensorSpec
from service.config import ServingSettings
from service.errors import GRPC_STATUS, InvalidInput, ModelNotFound, PayloadTooLarge
from service.inputs import check_batch, decode_image, images_array, texts_array, window_array
from service.tfserving_rest import format_predict_response, model_metadata, parse_predict_request

IDS = TensorSpec("token_ids", "int32", (None, 4))
TEXT = TensorSpec("text", "string", (None,))
PIXELS = TensorSpec("pixels", "float32", (None, 4, 4, 1))
RGB = TensorSpec("pixels", "float32", (None, 4, 4, 3))
OUTPUTS = {
    "probabilities": TensorSpec("probabilities", "float32", (None, 2)),
    "label": TensorSpec("label", "int64", (None,)),
}
INFO = ModelInfo(
    name="toy",
    version=3,
    variant="v",
    tag="toy:abc",
    labels=("negative", "positive"),
    signatures={
        "serving_default": SignatureSpec("serving_default", {"token_ids": IDS}, OUTPUTS),
        "predict_text": SignatureSpec("predict_text", {"text": TEXT}, OUTPUTS),
    },
    vocab_size=10,
)


def png(size: tuple[int, int], mode: str = "RGB", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128 if mode == "L" else (255, 0, 0)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "array, error, fragment",
    [
        (np.zeros((2, 3), np.int64), InvalidInput, "expected shape [n, 4]"),
        (np.zeros((0, 4), np.int64), InvalidInput, "must not be empty"),
        (np.zeros((9, 4), np.int64), PayloadTooLarge, "9 rows exceed the cap of 8"),
        (np.full((1, 4), 0.5), InvalidInput, "expected integers"),
        (np.full((1, 4), 10), InvalidInput, "token ids must be in 0..9"),
        (np.full((1, 4), -1), InvalidInput, "token ids must be in 0..9"),
        (np.array([["a"] * 4]), InvalidInput, "expected int32 numbers"),
    ],
)
def test_check_batch_rejects(array, error, fragment):
    with pytest.raises(error, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        check_batch(array, IDS, "instances", max_rows=8, vocab_size=10)


def test_check_batch_casts_and_rejects_nan():
    assert check_batch(np.ones((2, 4), np.int64), IDS, "x", 8, 10).dtype == np.int32
    with pytest.raises(InvalidInput, match="NaN"):
        check_batch(np.array([[np.nan]]), TensorSpec("w", "float32", (None, 1)), "x", 8)


def test_texts_array():
    assert texts_array(["héllo"], "texts", 4, 10).tolist() == ["héllo".encode()]
    for texts, fragment in [
        ([], "must not be empty"),
        ([" "], r"texts\[0\]: must not be empty"),
        (["a", 1], r"texts\[1\]: expected a string"),
    ]:
        with pytest.raises(InvalidInput, match=fragment):
            texts_array(texts, "texts", 4, 10)
    with pytest.raises(PayloadTooLarge):
        texts_array(["a"] * 5, "texts", 4, 10)
    with pytest.raises(PayloadTooLarge, match="11 characters"):
        texts_array(["a" * 11], "texts", 4, 10)


def test_window_array():
    spec = TensorSpec("window", "float32", (None, 3))
    assert window_array([1, 2.5, 3], spec).tolist() == [[1.0, 2.5, 3.0]]
    for window, fragment in [
        ([1, 2], "expected 3 numbers"),
        ([1, float("inf"), 2], "finite"),
        ([1, True, 2], "expected a number"),
    ]:
        with pytest.raises(InvalidInput, match=fragment):
            window_array(window, spec)


def test_images_from_arrays_ints_floats_and_files():
    ints = [[255] * 4] * 4
    floats = [[[0.5]] * 4] * 4
    pixels = images_array(
        [ints, floats, png((9, 7)), {"b64": base64.b64encode(png((4, 4), "L")).decode()}],
        PIXELS,
        "images",
        8,
    )
    assert pixels.shape == (4, 4, 4, 1) and pixels.dtype == np.float32
    assert np.all(pixels[0] == 1.0) and np.all(pixels[1] == 0.5)
    assert np.allclose(pixels[3], 128 / 255)
    rgb = decode_image(png((40, 30), "L"), (4, 4, 3), "images[0]")
    assert rgb.shape == (4, 4, 3)


@pytest.mark.parametrize(
    "image, fragment",
    [
        ([[0] * 3] * 3, "expected 4x4x1 or 4x4 pixels, got 3x3"),
        ([[300] * 4] * 4, "integer pixels must be in 0-255"),
        ([[1.5] * 4] * 4, r"float pixels must be in \[0, 1\]"),
        ([[float("nan")] * 4] * 4, "NaN"),
        ([[0, 1], [0]], "rectangular"),
        (b"not an image", "not a decodable PNG or JPEG"),
        (png((4, 4), fmt="GIF"), "GIF images are not accepted"),
        ({"b64": "%%%"}, "not valid base64"),
        ({"png": "x"}, "an object must be"),
    ],
)
def test_images_rejects(image, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        images_array([image], PIXELS, "images", 8)


def test_rgb_model_rejects_grayscale_arrays():
    with pytest.raises(InvalidInput, match="expected 4x4x3 pixels, got 4x4"):
        images_array([[[0] * 4] * 4], RGB, "images", 8)


def test_tfserving_row_and_columnar_requests():
    sig, batch, fmt = parse_predict_request(
        b'{"instances": [[1, 2, 3, 4], {"token_ids": [0, 0, 0, 0]}]}', INFO, 8
    )
    assert (sig.name, fmt, batch.dtype, batch.shape) == ("serving_default", "row", np.int32, (2, 4))
    sig, batch, fmt = parse_predict_request(
        b'{"signature_name": "predict_text", "inputs": {"text": ["hi", {"b64": "aG8="}]}}', INFO, 8
    )
    assert (sig.name, fmt, batch.tolist()) == ("predict_text", "columnar", [b"hi", b"ho"])


@pytest.mark.parametrize(
    "body, error, fragment",
    [
        (b"{", InvalidInput, "not valid JSON"),
        (b"[]", InvalidInput, "expected a JSON object"),
        (b'{"instances": [[1,2,3,4]], "inputs": [[1,2,3,4]]}', InvalidInput, "exactly one of"),
        (b'{"foo": 1, "instances": []}', InvalidInput, "foo: unknown field"),
        (
            b'{"signature_name": "nope", "instances": [[1,2,3,4]]}',
            ModelNotFound,
            "no signature 'nope'",
        ),
        (
            b'{"instances": [{"ids": [1,2,3,4]}]}',
            InvalidInput,
            r"instances\[0\].ids: unknown input",
        ),
        (b'{"inputs": {"token_ids": [[1,2]]}}', InvalidInput, "expected shape"),
        (
            b'{"signature_name": "predict_text", "instances": [3]}',
            InvalidInput,
            r"instances\[0\]: expected a string",
        ),
        (
            b'{"signature_name": "predict_text", "instances": ["a\\ud800"]}',
            InvalidInput,
            r"instances\[0\]: not valid UTF-8",
        ),
        (
            b'{"signature_name": "predict_text", "inputs": [{"b64": "/w=="}]}',
            InvalidInput,
            r"inputs\[0\]: not valid UTF-8",
        ),
        (
            b'{"signature_name": "predict_text", "inputs": [" "]}',
            InvalidInput,
            r"inputs\[0\]: must not be empty",
        ),
        (b"[" * 100_000, InvalidInput, "nested too deeply|not valid JSON"),
    ],
)
def test_tfserving_rejects(body, error, fragment):
    with pytest.raises(error, match=fragment):
        parse_predict_request(body, INFO, 8)


def test_tfserving_responses_collapse_single_outputs():
    rows = [{"probabilities": [0.1, 0.9], "label": 1}]
    columns = {"probabilities": np.array([[0.1, 0.9]]), "label": np.array([1])}
    sig = INFO.signature("serving_default")
    assert format_predict_response(columns, sig, "row") == {"predictions": rows}
    assert format_predict_response(columns, sig, "columnar") == {
        "outputs": {"probabilities": [[0.1, 0.9]], "label": [1]}
    }
    single = SignatureSpec(
        "s", {"w": IDS}, {"forecast": TensorSpec("forecast", "float32", (None,))}
    )
    assert format_predict_response({"forecast": np.array([1.5])}, single, "row") == {
        "predictions": [1.5]
    }
    meta = model_metadata(INFO)
    assert meta["model_spec"] == {"name": "toy", "signature_name": "", "version": "3"}
    inputs = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["token_ids"]["dtype"] == "DT_INT32"
    assert inputs["token_ids"]["tensor_shape"]["dim"] == [
        {"size": "-1", "name": ""},
        {"size": "4", "name": ""},
    ]


def test_settings_from_env(monkeypatch):
    monkeypatch.setenv("SERVICE_BATCH_BUCKETS", "8,1,2")
    monkeypatch.setenv("SERVICE_GPUS", "1")
    monkeypatch.setenv("SERVICE_WORKERS", "2")
    monkeypatch.setenv("SERVICE_MAX_QUEUE", "100")
    monkeypatch.setenv("SERVICE_MAX_QUEUE_DELAY_MS", "2.5")
    monkeypatch.setenv("SERVICE_MAX_QUEUE_WAIT_MS", "250")
    settings = ServingSettings.from_env()
    assert (settings.buckets, settings.max_batch_size, settings.max_items) == ((1, 2, 8), 8, 8)
    assert (settings.gpus, settings.workers) == (1, 2)
    assert (settings.max_queue, settings.max_queue_delay_ms) == (100, 2.5)
    assert settings.max_queue_wait_ms == 250
    assert not settings.access_log and not settings.tracing
    for name, value in [
        ("SERVICE_XLA", "maybe"),
        ("SERVICE_WORKERS", "0"),
        ("SERVICE_MAX_ITEMS", "9"),
        ("SERVICE_MAX_QUEUE", "0"),
        ("SERVICE_MAX_QUEUE_WAIT_MS", "-1"),
        ("SERVICE_GPUS", "0.5"),
        ("SERVICE_ACCESS_LOG", "maybe"),
    ]:
        monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match=name):
            ServingSettings.from_env()
        monkeypatch.delenv(name)


def test_every_error_has_a_grpc_code():
    assert GRPC_STATUS[InvalidInput] == "INVALID_ARGUMENT"
    assert GRPC_STATUS[ModelNotFound] == "NOT_FOUND"
    assert GRPC_STATUS[PayloadTooLarge] == "RESOURCE_EXHAUSTED"
