"""numpy <-> TensorProto through the dtype table, without TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest

from tfserving_api._proto.tensorflow.core.framework import tensor_pb2, types_pb2
from tfserving_api.tensors import (
    DT_NAMES,
    DTYPES,
    MAX_VARINT_BYTES,
    TensorError,
    decode_packed_strings,
    dtype_for,
    read_varint,
    to_ndarray,
    to_tensor_proto,
)

SAMPLES = {
    "float32": np.array([[0.5, -1.25, 3.0], [np.inf, -0.0, 1e-30]], np.float32),
    "float64": np.array([1.0, 2.5e300, -3.0], np.float64),
    "float16": np.array([[1.5, -2.0], [65504.0, 0.0]], np.float16),
    "int8": np.array([-128, 0, 127], np.int8),
    "int16": np.array([-32768, 7, 32767], np.int16),
    "int32": np.array([[-(2**31), 0], [1, 2**31 - 1]], np.int32),
    "int64": np.array([-(2**63), 0, 2**63 - 1], np.int64),
    "uint8": np.arange(0, 256, 51, dtype=np.uint8).reshape(2, 3),
    "uint16": np.array([0, 65535], np.uint16),
    "uint32": np.array([0, 2**32 - 1], np.uint32),
    "uint64": np.array([0, 2**64 - 1], np.uint64),
    "bool": np.array([[True, False, True]]),
    "complex64": np.array([1 + 2j, -3.5j], np.complex64),
    "complex128": np.array([1e200 + 2j], np.complex128),
    "string": np.array([[b"caf\xc3\xa9", b""], [b"\x00\xff", b"x"]], dtype=object),
}


def test_every_dtype_has_a_sample() -> None:
    assert set(SAMPLES) == {d.name for d in DTYPES}


@pytest.mark.parametrize("use_tensor_content", [True, False], ids=["tensor_content", "typed_val"])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name: str, use_tensor_content: bool) -> None:
    array = SAMPLES[name]
    proto = to_tensor_proto(array, use_tensor_content=use_tensor_content)
    assert proto.dtype == dtype_for(name).enum
    assert [d.size for d in proto.tensor_shape.dim] == list(array.shape)
    wire = tensor_pb2.TensorProto.FromString(proto.SerializeToString())
    back = to_ndarray(wire)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_scalar_and_empty() -> None:
    assert to_ndarray(to_tensor_proto(np.float32(2.5))).shape == ()
    empty = to_ndarray(to_tensor_proto(np.zeros((0, 10), np.float32)))
    assert empty.shape == (0, 10) and empty.dtype == np.float32


def test_python_strings_become_utf8_bytes() -> None:
    proto = to_tensor_proto(["café", "a film"])
    assert proto.dtype == types_pb2.DT_STRING and list(proto.string_val) == [
        b"caf\xc3\xa9",
        b"a film",
    ]
    assert to_ndarray(proto).tolist() == [b"caf\xc3\xa9", b"a film"]


def test_cast_to_requested_dtype() -> None:
    proto = to_tensor_proto([[1, 2], [3, 4]], dtype="float32")
    assert proto.dtype == types_pb2.DT_FLOAT and to_ndarray(proto).dtype == np.float32


def test_big_endian_input_is_sent_little_endian() -> None:
    array = np.array([1.0, 2.0], dtype=">f4")
    proto = to_tensor_proto(array)
    assert proto.tensor_content == np.array([1.0, 2.0], "<f4").tobytes()


def test_repeated_last_value_shorthand() -> None:
    # TF writes tf.make_tensor_proto(7, shape=[2, 3]) as one int_val and a shape.
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32, int_val=[1, 7])
    proto.tensor_shape.dim.add(size=2)
    proto.tensor_shape.dim.add(size=3)
    np.testing.assert_array_equal(to_ndarray(proto), [[1, 7, 7], [7, 7, 7]])


def test_no_values_means_zeros() -> None:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add(size=3)
    np.testing.assert_array_equal(to_ndarray(proto), [0.0, 0.0, 0.0])


def test_packed_string_tensor_content() -> None:
    # TF C++ AsProtoTensorContent: varint lengths, then the bytes.
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_content=b"\x02\x00\x03hiabc")
    proto.tensor_shape.dim.add(size=3)
    assert to_ndarray(proto).tolist() == [b"hi", b"", b"abc"]


def _string_tensor(content: bytes, size: int) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_content=content)
    proto.tensor_shape.dim.add(size=size)
    return proto


@pytest.mark.parametrize(
    ("data", "value", "end"),
    [
        (b"\x00", 0, 1),
        (b"\x7f", 127, 1),
        (b"\xac\x02", 300, 2),
        (b"\xff" * 9 + b"\x01", 2**64 - 1, 10),  # the longest varint protobuf writes
        (b"\x05rest", 5, 1),
    ],
    ids=["zero", "one-byte", "two-bytes", "ten-bytes", "stops-at-end"],
)
def test_read_varint(data: bytes, value: int, end: int) -> None:
    assert read_varint(data, 0) == (value, end)


# Bad packed strings: one row per probe, (id, content, declared size, message fragment).
BAD_PACKED_STRINGS = [
    # issue 15: a varint of 256,000 continuation bytes was read into a growing int (quadratic)
    ("varint-256k", b"\xff" * 256_000 + b"\x01", 1, "varint longer than 10 bytes"),
    ("varint-11", b"\xff" * MAX_VARINT_BYTES + b"\x01", 1, "varint longer than 10 bytes"),
    ("varint-truncated", b"\x80\x80", 1, "truncated"),
    ("length-past-end", b"\x02\x00\x03hi", 3, "string 2 of 3 needs 3 bytes"),
    ("length-past-end-first", b"\x05ab", 1, "string 0 of 1 needs 5 bytes"),
    ("huge-length", b"\xff\xff\xff\xff\x0fab", 1, "needs 4294967295 bytes"),
    ("trailing-bytes", b"\x01a" + b"extra", 1, "5 bytes after the last string"),
    # more elements than bytes: each needs at least one length byte (refused before reading)
    ("count-over-bytes", b"\x00" * 10, 1_000_000, "1000000 strings cannot fit in 10 bytes"),
]


@pytest.mark.parametrize(
    ("content", "size", "message"),
    [pytest.param(*row[1:], id=row[0]) for row in BAD_PACKED_STRINGS],
)
def test_bad_packed_strings(content: bytes, size: int, message: str) -> None:
    with pytest.raises(TensorError, match=message):
        to_ndarray(_string_tensor(content, size))


def test_packed_strings_are_read_in_linear_time() -> None:
    # 4 MB of one-byte strings: quadratic work (or a Python int per continuation byte) would
    # take minutes; linear work takes well under a second. A generous bound, not a benchmark.
    import time

    count = 2_000_000
    content = b"\x01" * count + b"x" * count
    start = time.monotonic()
    assert len(decode_packed_strings(content, count)) == count
    with pytest.raises(TensorError, match="varint longer"):
        decode_packed_strings(b"\xff" * 8_000_000, 1)
    assert time.monotonic() - start < 30


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: to_tensor_proto(np.array(["2020-01-01"], dtype="datetime64[D]")),
            "unsupported dtype",
        ),
        (lambda: to_tensor_proto([object()]), "str or bytes"),
        (lambda: to_tensor_proto(["x"], dtype="float32"), "cannot convert"),
        (lambda: to_ndarray(tensor_pb2.TensorProto(dtype=types_pb2.DT_BFLOAT16)), "DT_BFLOAT16"),
        (
            lambda: to_ndarray(_float_tensor(content=b"\x00" * 5, size=2)),
            "tensor_content has 5 bytes",
        ),
        (lambda: to_ndarray(_float_tensor(size=-1)), "fully defined shape"),
    ],
)
def test_bad_tensors(make, message: str) -> None:
    with pytest.raises(TensorError, match=message):
        make()


def _float_tensor(size: int, content: bytes = b"") -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=content)
    proto.tensor_shape.dim.add(size=size)
    return proto


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("DT_FLOAT", "float32"),
        ("string", "string"),
        (np.int64, "int64"),
        ("<U3", "string"),
        ("half", "float16"),
        ("bfloat16", None),
    ],
)
def test_dtype_lookup(value, name) -> None:
    if name is None:
        with pytest.raises(TensorError):
            dtype_for(value)
    else:
        assert dtype_for(value).name == name


def test_mixed_and_nul_terminated_byte_strings_survive() -> None:
    values = [b"a\x00", "b", b"\xff"]
    assert to_ndarray(to_tensor_proto(values)).tolist() == [b"a\x00", b"b", b"\xff"]


def test_tensor_error_is_a_value_error_not_a_client_error() -> None:
    assert issubclass(TensorError, ValueError)
    assert TensorError.__module__ == "tfserving_api.tensors"


def test_dt_names_cover_the_table_in_tf_servings_spelling() -> None:
    assert set(DT_NAMES) == {d.name for d in DTYPES}
    assert DT_NAMES["float32"] == "DT_FLOAT"
    assert DT_NAMES["float64"] == "DT_DOUBLE"
    assert DT_NAMES["string"] == "DT_STRING"
    assert all(dtype_for(tf_name).name == name for name, tf_name in DT_NAMES.items())
