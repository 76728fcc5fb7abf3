"""The Open Inference Protocol's tensors: datatype table, BYTES, raw/contents/JSON decoding.

Cross-checked against tritonclient's own encoders (the client the V2 doors must serve).
"""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.utils as triton

from tfserving_api._proto.inference import grpc_predict_v2_pb2 as v2
from tfserving_api.open_inference import (
    BY_NAME,
    DATATYPES,
    TensorError,
    datatype,
    datatype_for,
    deserialize_bytes,
    element_count,
    from_contents,
    from_json,
    from_raw,
    serialize_bytes,
    to_json,
    to_raw,
)

SAMPLES = {
    "BOOL": np.array([[True, False, True]]),
    "UINT8": np.array([[0, 255], [7, 128]], np.uint8),
    "UINT16": np.array([0, 65535], np.uint16),
    "UINT32": np.array([0, 2**32 - 1], np.uint32),
    "UINT64": np.array([0, 2**64 - 1], np.uint64),
    "INT8": np.array([-128, 0, 127], np.int8),
    "INT16": np.array([-32768, 32767], np.int16),
    "INT32": np.array([[-(2**31), 0], [1, 2**31 - 1]], np.int32),
    "INT64": np.array([-(2**63), 2**63 - 1], np.int64),
    "FP16": np.array([1.5, -2.0, 65504.0], np.float16),
    "FP32": np.array([[0.5, -1.25], [3.0, 1e-30]], np.float32),
    "FP64": np.array([2.5e300, -3.0], np.float64),
    "BYTES": np.array([[b"caf\xc3\xa9", b""], [b"\x00\xff", b"x" * 300]], dtype=object),
}


def test_every_datatype_has_a_sample() -> None:
    assert set(SAMPLES) == {d.name for d in DATATYPES}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_table_agrees_with_tritonclient(name: str) -> None:
    row = datatype(name)
    assert triton.np_to_triton_dtype(SAMPLES[name].dtype) == name
    assert np.dtype(triton.triton_to_np_dtype(name)) == row.numpy
    assert datatype_for(row.numpy) is row


def test_tf_names_map_to_v2() -> None:
    assert datatype_for("float32").name == "FP32"
    assert datatype_for("string").name == "BYTES"
    assert datatype_for("int64").name == "INT64"
    assert datatype_for("uint8").name == "UINT8"
    with pytest.raises(TensorError, match="no V2 datatype"):
        datatype_for("complex64")


@pytest.mark.parametrize("bad", ["BF16", "FLOAT", "fp32", "", None, 3])
def test_unknown_datatypes_are_refused(bad: object) -> None:
    with pytest.raises(TensorError, match="datatype"):
        datatype(bad)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_raw_round_trip_matches_tritonclient(name: str) -> None:
    array, row = SAMPLES[name], BY_NAME[name]
    raw = to_raw(array, row)
    expected = (
        triton.serialize_byte_tensor(array).item() if row.is_bytes else array.tobytes()
    )
    assert raw == expected  # byte for byte what tritonclient sends
    back = from_raw(row, list(array.shape), raw)
    assert back.shape == array.shape and back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_bytes_decode_like_tritonclient() -> None:
    items = [b"a wonderful film", b"", "caf\u00e9"]
    raw = serialize_bytes(items)
    assert deserialize_bytes(raw, 3) == [b"a wonderful film", b"", "caf\u00e9".encode()]
    assert list(triton.deserialize_bytes_tensor(raw)) == deserialize_bytes(raw, 3)


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        (b"", 1, "cannot hold 1 BYTES"),
        (b"\x05\x00\x00\x00abc", 1, "5 bytes claimed, 3 left"),
        (b"\x01\x00\x00\x00ab", 1, "1 bytes left after 1"),
        (b"\xff\xff\xff\xff" + b"x" * 8, 1, "4294967295 bytes claimed"),
        (b"\x00\x00\x00\x00\x00\x00", 2, "cannot hold 2"),
        (b"\x02\x00\x00\x00ab\x01\x00", 2, "no length prefix"),
    ],
    ids=["empty", "short-element", "trailing", "huge-length", "short-buffer", "cut-prefix"],
)
def test_bad_bytes_are_refused(raw: bytes, count: int, message: str) -> None:
    with pytest.raises(TensorError, match=message):
        deserialize_bytes(raw, count)


def test_huge_claimed_shapes_fail_before_any_allocation() -> None:
    # A few bytes claiming 10^18 elements: refused by arithmetic, nothing built.
    with pytest.raises(TensorError, match="needs 4000000000000000000"):
        from_raw(BY_NAME["FP32"], [10**9, 10**9], b"\x00" * 8)
    with pytest.raises(TensorError, match="cannot hold 1000000000000000000 BYTES"):
        from_raw(BY_NAME["BYTES"], [10**9, 10**9], b"\x00" * 8)
    contents = v2.InferTensorContents(fp32_contents=[1.0])
    with pytest.raises(TensorError, match="needs 1000000000000000000"):
        from_contents(BY_NAME["FP32"], [10**9, 10**9], contents)
    with pytest.raises(TensorError, match="needs 1000000000000000000"):
        from_json(BY_NAME["FP32"], [10**9, 10**9], [1.0])


@pytest.mark.parametrize(
    "shape", [[-1, 10], [1, True], [1.0], "3", [None], [[2]]], ids=str
)
def test_shapes_must_be_non_negative_integers(shape: object) -> None:
    with pytest.raises(TensorError, match="shape"):
        element_count(shape)  # type: ignore[arg-type]


def test_raw_byte_count_must_match_the_shape() -> None:
    message = r"12 bytes of raw contents, shape \[1, 4\] of FP32 needs 16"
    with pytest.raises(TensorError, match=message):
        from_raw(BY_NAME["FP32"], [1, 4], b"\x00" * 12)


@pytest.mark.parametrize("name", sorted(set(SAMPLES) - {"FP16"}))
def test_contents_round_trip(name: str) -> None:
    array, row = SAMPLES[name], BY_NAME[name]
    contents = v2.InferTensorContents()
    getattr(contents, row.contents).extend(array.reshape(-1).tolist())
    wire = v2.InferTensorContents.FromString(contents.SerializeToString())
    back = from_contents(row, list(array.shape), wire)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_contents_errors_name_the_field() -> None:
    with pytest.raises(TensorError, match="fp32_contents has 0 values.*came in int_contents"):
        from_contents(BY_NAME["FP32"], [2], v2.InferTensorContents(int_contents=[1, 2]))
    with pytest.raises(TensorError, match="int_contents value 300 does not fit INT8"):
        from_contents(BY_NAME["INT8"], [1], v2.InferTensorContents(int_contents=[300]))
    with pytest.raises(TensorError, match="uint_contents value 256 does not fit UINT8"):
        from_contents(BY_NAME["UINT8"], [2], v2.InferTensorContents(uint_contents=[1, 256]))
    with pytest.raises(TensorError, match="FP16 has no contents field"):
        from_contents(BY_NAME["FP16"], [1], v2.InferTensorContents())


def test_json_nested_and_flat() -> None:
    row = BY_NAME["INT32"]
    flat = from_json(row, [2, 2], [1, 2, 3, 4])
    nested = from_json(row, [2, 2], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(flat, nested)
    assert flat.dtype == np.int32 and flat.shape == (2, 2)
    texts = from_json(BY_NAME["BYTES"], [2], ["a film", "caf\u00e9"])
    assert texts.tolist() == [b"a film", "caf\u00e9".encode()]
    assert from_json(BY_NAME["FP32"], [1, 2], [1, 2.5]).dtype == np.float32


@pytest.mark.parametrize(
    ("name", "shape", "data", "message"),
    [
        ("FP32", [2], [1.0], "1 values, shape \\[2\\] needs 2"),
        ("FP32", [1], [1.0, 2.0], "2 values"),
        ("FP32", [1], ["x"], "FP32 values are numbers, got str"),
        ("FP32", [1], [True], "numbers, got bool"),
        ("FP32", [1], [None], "got null"),
        ("INT32", [1], [1.5], "integers, got 1.5"),
        ("INT32", [1], [2**31], "does not fit INT32"),
        ("UINT8", [1], [-1], "does not fit UINT8"),
        ("BYTES", [1], [3], "BYTES values are strings, got int"),
        ("BYTES", [1], ["\ud800"], "not valid UTF-8"),
        ("BOOL", [1], [1], "true or false"),
        ("FP32", [1], {"a": 1}, "expected a list"),
    ],
)
def test_bad_json_data_is_refused(name: str, shape: list[int], data: object, message: str) -> None:
    with pytest.raises(TensorError, match=message):
        from_json(BY_NAME[name], shape, data)


def test_json_nested_deeply_does_not_recurse() -> None:
    data: list = [1.0]
    for _ in range(100_000):
        data = [data]
    assert from_json(BY_NAME["FP32"], [1], data).tolist() == [1.0]


def test_to_json_is_flat_and_text() -> None:
    assert to_json(SAMPLES["INT32"], BY_NAME["INT32"]) == [-(2**31), 0, 1, 2**31 - 1]
    assert to_json(np.array([b"caf\xc3\xa9", b"\xff"], dtype=object), BY_NAME["BYTES"]) == [
        "caf\u00e9",
        "\ufffd",
    ]
