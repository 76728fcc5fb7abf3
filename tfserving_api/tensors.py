"""numpy <-> `tensorflow.TensorProto` without TensorFlow, through one dtype table.

`to_tensor_proto` is `tf.make_tensor_proto` and `to_ndarray` is `tf.make_ndarray` for
processes that must not import TensorFlow (the clients and the gateway): numeric arrays
travel as little-endian `tensor_content` bytes (what TensorFlow itself sends); decoding also
accepts the typed ``*_val`` fields, including TensorFlow's "repeat the last value"
shorthand. Strings are `DT_STRING` and come back as an object array of `bytes`, as in
TensorFlow. Anything the table cannot carry raises `TensorError` (a `ValueError`); callers
translate it into their own error types.

`DTYPES` is the one dtype table of the project: TensorFlow / numpy name (``"float32"``),
``DataType`` enum and name (``DT_FLOAT``), numpy dtype and ``TensorProto`` field.

Typical usage::

    import numpy as np
    from tfserving_api.tensors import DT_NAMES, TensorError, to_ndarray, to_tensor_proto

    proto = to_tensor_proto(np.zeros((2, 10), np.float32))
    array = to_ndarray(proto)
    texts = to_tensor_proto(["a film", "another one"])   # DT_STRING, utf-8
    DT_NAMES["float32"]                                   # "DT_FLOAT"
    try:
        to_tensor_proto(np.zeros(2, "datetime64[s]"))
    except TensorError as e:
        print(e)                                          # unsupported dtype ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfserving_api._proto.tensorflow.core.framework import (
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)

TensorProto = tensor_pb2.TensorProto


class TensorError(ValueError):
    """A value or a ``TensorProto`` this module cannot convert: a dtype outside `DTYPES`, a
    shape that is not fully defined, content that does not match its shape."""


@dataclass(frozen=True)
class DType:
    """One row of the dtype table."""

    name: str  # TensorFlow's name, as in tf.float32.name
    enum: int  # tensorflow.DataType value
    numpy: np.dtype
    field: str  # TensorProto's typed repeated field
    wire: np.dtype | None = None  # element type of `field` when it differs from `numpy`


DTYPES: tuple[DType, ...] = (
    DType("float32", types_pb2.DT_FLOAT, np.dtype(np.float32), "float_val"),
    DType("float64", types_pb2.DT_DOUBLE, np.dtype(np.float64), "double_val"),
    # half travels as its raw 16 bits in an int32 field.
    DType("float16", types_pb2.DT_HALF, np.dtype(np.float16), "half_val", np.dtype(np.uint16)),
    DType("int8", types_pb2.DT_INT8, np.dtype(np.int8), "int_val"),
    DType("int16", types_pb2.DT_INT16, np.dtype(np.int16), "int_val"),
    DType("int32", types_pb2.DT_INT32, np.dtype(np.int32), "int_val"),
    DType("int64", types_pb2.DT_INT64, np.dtype(np.int64), "int64_val"),
    DType("uint8", types_pb2.DT_UINT8, np.dtype(np.uint8), "int_val"),
    DType("uint16", types_pb2.DT_UINT16, np.dtype(np.uint16), "int_val"),
    DType("uint32", types_pb2.DT_UINT32, np.dtype(np.uint32), "uint32_val"),
    DType("uint64", types_pb2.DT_UINT64, np.dtype(np.uint64), "uint64_val"),
    DType("bool", types_pb2.DT_BOOL, np.dtype(np.bool_), "bool_val"),
    # complex values are interleaved (real, imag) pairs of their component type.
    DType("complex64", types_pb2.DT_COMPLEX64, np.dtype(np.complex64), "scomplex_val",
          np.dtype(np.float32)),
    DType("complex128", types_pb2.DT_COMPLEX128, np.dtype(np.complex128), "dcomplex_val",
          np.dtype(np.float64)),
    DType("string", types_pb2.DT_STRING, np.dtype(object), "string_val"),
)  # fmt: skip

BY_ENUM: dict[int, DType] = {d.enum: d for d in DTYPES}
BY_NAME: dict[str, DType] = {d.name: d for d in DTYPES}
_BY_NUMPY: dict[np.dtype, DType] = {d.numpy: d for d in DTYPES if d.name != "string"}
STRING = BY_NAME["string"]
# TF name -> DataType name ("float32" -> "DT_FLOAT"), as TF Serving's REST metadata spells it.
DT_NAMES: dict[str, str] = {d.name: types_pb2.DataType.Name(d.enum) for d in DTYPES}


def dtype_for(value: np.dtype | str | type) -> DType:
    """The table row for a numpy dtype, a TF name (``"float32"``, ``"string"``) or a DataType
    name (``"DT_FLOAT"``).

    Raises:
        TensorError: for dtypes TensorProto cannot carry here (bfloat16, datetimes...).
    """
    if isinstance(value, str):
        if value in BY_NAME:
            return BY_NAME[value]
        if value.startswith("DT_") and value in types_pb2.DataType.keys():
            enum = types_pb2.DataType.Value(value)
            if enum in BY_ENUM:
                return BY_ENUM[enum]
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise TensorError(f"unsupported dtype {value!r}") from None
    if dtype.kind in "OSU":
        return STRING
    row = _BY_NUMPY.get(dtype.newbyteorder("="))
    if row is None:
        raise TensorError(f"unsupported dtype {dtype} for a TensorProto")
    return row


def as_array(value: Any) -> np.ndarray:
    """An array-like as an array; str/bytes stay Python objects (no fixed-width 'U'/'S'
    arrays, which would mangle mixed or NUL-terminated byte strings)."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (str, bytes)):
        return np.array(value, dtype=object)
    try:
        array = np.asarray(value)
    except UnicodeDecodeError:  # bytes mixed with str
        return np.array(value, dtype=object)
    return np.array(value, dtype=object) if array.dtype.kind in "SU" else array


def _encode_string(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, np.bytes_):
        return bytes(item)
    raise TensorError(f"a string tensor holds str or bytes, got {type(item).__name__}")


def to_tensor_proto(
    value: Any, dtype: np.dtype | str | None = None, *, use_tensor_content: bool = True
) -> TensorProto:
    """A TensorProto for an array-like (numpy array, nested lists, scalar, str, bytes).

    Args:
        value: The tensor. Strings (str is utf-8 encoded) and bytes become `DT_STRING`.
        dtype: Cast to this dtype first (numpy dtype or TF name); default: `value`'s own.
        use_tensor_content: Pack numeric data as raw bytes (fast, what TF does); False
            writes the typed ``*_val`` fields instead.

    Returns:
        The proto, with a fully defined shape.

    Raises:
        TensorError: if the dtype is unsupported or the values do not fit it.
    """
    proto = TensorProto()
    fill_tensor_proto(proto, value, dtype, use_tensor_content=use_tensor_content)
    return proto


def fill_tensor_proto(
    proto: TensorProto,
    value: Any,
    dtype: np.dtype | str | None = None,
    *,
    use_tensor_content: bool = True,
) -> None:
    """:func:`to_tensor_proto` into an empty ``proto`` already in place, e.g. a response's
    ``outputs[name]``: no second message to build and copy over.

    Raises:
        TensorError: if the dtype is unsupported or the values do not fit it.
    """
    array = as_array(value)
    row = dtype_for(dtype if dtype is not None else array.dtype)
    proto.dtype = row.enum
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add(size=size)
    if row is STRING:
        proto.string_val.extend([_encode_string(item) for item in array.reshape(-1).tolist()])
        return
    try:
        array = array.astype(row.numpy, copy=False)
    except (TypeError, ValueError) as e:
        raise TensorError(f"cannot convert to {row.name}: {e}") from None
    if use_tensor_content:
        # One copy, numpy buffer -> bytes (little-endian, as TF writes tensor_content).
        proto.tensor_content = array.astype(row.numpy.newbyteorder("<"), copy=False).tobytes()
    else:
        flat = array.reshape(-1)
        if row.wire is not None:  # float16 bits, complex (real, imag) pairs
            flat = flat.view(row.wire)
        getattr(proto, row.field).extend(flat.tolist())


def shape_proto(shape: tuple[int | None, ...]) -> tensor_shape_pb2.TensorShapeProto:
    """A TensorShapeProto; None dimensions become -1 (unknown), as in TF."""
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=-1 if d is None else d) for d in shape]
    )


def shape_of(proto: tensor_shape_pb2.TensorShapeProto) -> tuple[int | None, ...] | None:
    """The shape as a tuple (None for unknown dimensions), or None for unknown rank."""
    if proto.unknown_rank:
        return None
    return tuple(None if d.size < 0 else d.size for d in proto.dim)


def to_ndarray(proto: TensorProto) -> np.ndarray:
    """The numpy array a TensorProto holds (strings as an object array of bytes).

    Raises:
        TensorError: for dtypes outside the table, unknown shapes, or a content size
            that does not match the shape.
    """
    row = BY_ENUM.get(proto.dtype)
    if row is None:
        name = (
            types_pb2.DataType.Name(proto.dtype)
            if proto.dtype in types_pb2.DataType.values()
            else proto.dtype
        )
        raise TensorError(f"unsupported tensor dtype {name}")
    shape = shape_of(proto.tensor_shape)
    if shape is None or None in shape:
        raise TensorError(f"tensor has no fully defined shape: {proto.tensor_shape}")
    size = math.prod(shape)  # Python ints: no overflow, and cheaper than np.prod here
    if not proto.tensor_content:
        # Counted before anything is converted: more values than the shape holds is an error
        # (fewer is TF's "repeat the last value" shorthand).
        values_per_element = 2 if row.numpy.kind == "c" else 1
        count = len(getattr(proto, row.field))
        if count > size * values_per_element:
            raise TensorError(f"{row.field} has {count} values for {size} elements")
    if row is STRING:
        items = (
            decode_packed_strings(proto.tensor_content, size)
            if proto.tensor_content
            else proto.string_val
        )
        values = np.empty(len(items), dtype=object)
        values[:] = list(items)
    elif proto.tensor_content:
        wire = row.numpy.newbyteorder("<")
        if len(proto.tensor_content) != size * wire.itemsize:
            raise TensorError(
                f"tensor_content has {len(proto.tensor_content)} bytes, "
                f"shape {list(shape)} of {row.name} needs {size * wire.itemsize}"
            )
        return np.frombuffer(proto.tensor_content, dtype=wire).astype(row.numpy).reshape(shape)
    else:
        values = _typed_values(proto, row)
    return _fill(values, size, row).reshape(shape)


def _typed_values(proto: TensorProto, row: DType) -> np.ndarray:
    """The typed ``*_val`` field as ``row``'s dtype. Narrow types travel in wider fields
    (uint8 in ``int_val``, float16 bits in ``half_val``): a value that does not fit is an
    error here, where numpy would silently wrap it (300 as uint8 is 44)."""
    raw = np.asarray(getattr(proto, row.field))
    wire = row.wire or row.numpy
    if wire.kind in "iu" and raw.size:
        info = np.iinfo(wire)
        low, high = int(raw.min()), int(raw.max())
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            kind = row.name if row.wire is None else f"{wire} ({row.name} bits)"
            raise TensorError(
                f"{row.field} value {bad} does not fit {kind} ({info.min}..{info.max})"
            )
    raw = raw.astype(wire, copy=False)
    if row.name == "float16":
        return raw.view(np.float16)
    if row.wire is not None:  # complex: interleaved (real, imag) pairs
        if len(raw) % 2:
            raise TensorError(f"{row.field} has {len(raw)} values, not (real, imag) pairs")
        return raw.view(row.numpy)
    return raw


# Protobuf's own reader stops there: 10 bytes carry 64 bits.
MAX_VARINT_BYTES = 10


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """One base-128 varint of ``data`` at ``pos``: ``(value, position after it)``.

    At most `MAX_VARINT_BYTES` bytes are read, so the cost is bounded whatever the input
    (an unbounded reader would grow a Python int across any run of continuation bytes).

    Raises:
        TensorError: the varint is longer than 10 bytes, or the data ends inside it.
    """
    value = shift = 0
    end = min(pos + MAX_VARINT_BYTES, len(data))
    for index in range(pos, end):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, index + 1
        shift += 7
    if end - pos == MAX_VARINT_BYTES:
        raise TensorError(f"varint longer than {MAX_VARINT_BYTES} bytes at offset {pos}")
    raise TensorError(f"truncated varint at offset {pos}")


def decode_packed_strings(content: bytes, count: int) -> list[bytes]:
    """TF C++'s packed string form (`AsProtoTensorContent`): `count` varint lengths, then
    the bytes. Linear in ``len(content)``: every length is checked against the bytes left
    before anything is sliced.

    Raises:
        TensorError: a count or a length the content cannot hold, a bad varint, or bytes
            left over after the last string.
    """
    if count > len(content):  # every string takes at least its one length byte
        raise TensorError(f"{count} strings cannot fit in {len(content)} bytes of tensor_content")
    lengths, pos = [], 0
    for _ in range(count):
        length, pos = read_varint(content, pos)
        lengths.append(length)
    items, left = [], len(content) - pos
    for index, length in enumerate(lengths):
        if length > left:
            raise TensorError(
                f"string {index} of {count} needs {length} bytes, tensor_content has {left} left"
            )
        items.append(content[pos : pos + length])
        pos += length
        left -= length
    if left:
        raise TensorError(
            f"{left} bytes after the last string: tensor_content does not match its shape"
        )
    return items


def _fill(values: np.ndarray, size: int, row: DType) -> np.ndarray:
    """TF's shorthand: fewer values than elements means "repeat the last one"."""
    if len(values) == size:
        return values
    if len(values) > size:
        raise TensorError(f"{row.field} has {len(values)} values for {size} elements")
    if len(values) == 0:
        filled = np.empty(size, dtype=row.numpy)
        filled[:] = b"" if row is STRING else 0
        return filled
    filled = np.empty(size, dtype=row.numpy)
    filled[: len(values)] = values
    filled[len(values) :] = values[-1]
    return filled
