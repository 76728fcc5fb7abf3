"""The Open Inference Protocol ("KServe V2") tensors without TensorFlow: datatypes and bytes.

The protocol spoken by Triton, KServe, Seldon MLServer and OpenVINO Model Server, in both
its forms: JSON (``data``, row-major, nested or flat) and binary (``raw_input_contents`` /
``raw_output_contents`` in gRPC; the HTTP binary tensor data extension). Shared by the
service's V2 doors and by any client that must not need TensorFlow; the protos are
``tfserving_api._proto.inference`` (compiled from the vendored spec by
``tools/compile_protos.py``).

* `DATATYPES`: the V2 datatype table (``"FP32"`` <-> numpy float32 <-> the
  ``InferTensorContents`` field that carries it). BF16 has no numpy type and is refused.
* BYTES travel as, per element, a 4-byte little-endian length and the bytes
  (`serialize_bytes`, `deserialize_bytes`), as tritonclient's ``serialize_byte_tensor``.
* Every decoder checks the claimed shape against what arrived *before* it builds anything:
  a 20-byte message claiming ``[1000000000]`` elements fails at once, allocating nothing,
  and BYTES decoding is one bounded pass over the buffer. Errors are `TensorError`
  (a ``ValueError``) naming what did not match; callers add the field.

Typical usage::

    import numpy as np
    from tfserving_api.open_inference import datatype, from_raw, serialize_bytes, to_raw

    raw = serialize_bytes([b"a wonderful film"])   # b"\\x10\\x00\\x00\\x00a wonderful film"
    texts = from_raw(datatype("BYTES"), [1], raw)    # array([b'a wonderful film'], dtype=object)
    pixels = from_raw(datatype("FP32"), [1, 2], to_raw(np.ones((1, 2), np.float32)))
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfserving_api.tensors import TensorError

BYTES_LENGTH = struct.Struct("<I")  # the length prefix of each BYTES element


@dataclass(frozen=True)
class Datatype:
    """One row of the V2 datatype table."""

    name: str  # the protocol's name: "FP32", "BYTES", ...
    numpy: np.dtype  # object for BYTES
    contents: str | None  # the InferTensorContents field; None: raw contents only (FP16)
    wire: np.dtype | None = None  # element type of `contents` when wider than `numpy`

    @property
    def is_bytes(self) -> bool:
        return self.name == "BYTES"

    @property
    def itemsize(self) -> int:
        """Bytes per element in raw contents (0 for BYTES: variable)."""
        return 0 if self.is_bytes else self.numpy.itemsize


DATATYPES: tuple[Datatype, ...] = (
    Datatype("BOOL", np.dtype(np.bool_), "bool_contents"),
    Datatype("UINT8", np.dtype(np.uint8), "uint_contents", np.dtype(np.uint32)),
    Datatype("UINT16", np.dtype(np.uint16), "uint_contents", np.dtype(np.uint32)),
    Datatype("UINT32", np.dtype(np.uint32), "uint_contents"),
    Datatype("UINT64", np.dtype(np.uint64), "uint64_contents"),
    Datatype("INT8", np.dtype(np.int8), "int_contents", np.dtype(np.int32)),
    Datatype("INT16", np.dtype(np.int16), "int_contents", np.dtype(np.int32)),
    Datatype("INT32", np.dtype(np.int32), "int_contents"),
    Datatype("INT64", np.dtype(np.int64), "int64_contents"),
    # The protocol has no 16-bit float field: FP16 travels in raw contents only.
    Datatype("FP16", np.dtype(np.float16), None),
    Datatype("FP32", np.dtype(np.float32), "fp32_contents"),
    Datatype("FP64", np.dtype(np.float64), "fp64_contents"),
    Datatype("BYTES", np.dtype(object), "bytes_contents"),
)
BY_NAME: dict[str, Datatype] = {d.name: d for d in DATATYPES}
_BY_NUMPY: dict[np.dtype, Datatype] = {d.numpy: d for d in DATATYPES if not d.is_bytes}
BYTES = BY_NAME["BYTES"]


def datatype(name: Any) -> Datatype:
    """The table row of a V2 datatype name (``"FP32"``).

    Raises:
        TensorError: not a datatype of the protocol, or one without a numpy type (BF16).
    """
    row = BY_NAME.get(name) if isinstance(name, str) else None
    if row is None:
        if name == "BF16":
            raise TensorError("datatype BF16 is not supported (no numpy type); send FP32")
        known = ", ".join(BY_NAME)
        raise TensorError(f"datatype {str(name)[:40]!r} is not a V2 datatype ({known})")
    return row


def datatype_for(dtype: np.dtype | str | type) -> Datatype:
    """The V2 datatype of a numpy dtype or a TF dtype name (``"float32"``, ``"string"``).

    Raises:
        TensorError: a dtype the protocol cannot carry (complex, datetimes...).
    """
    if dtype == "string":
        return BYTES
    try:
        numpy = np.dtype(dtype)
    except TypeError:
        raise TensorError(f"unsupported dtype {dtype!r}") from None
    if numpy.kind in "OSU":
        return BYTES
    row = _BY_NUMPY.get(numpy.newbyteorder("="))
    if row is None:
        raise TensorError(f"dtype {numpy} has no V2 datatype")
    return row


def element_count(shape: Sequence[Any]) -> int:
    """The number of elements of a fully defined shape (a list of non-negative integers).

    Raises:
        TensorError: a dimension that is not a non-negative integer.
    """
    if not isinstance(shape, list | tuple):
        raise TensorError("shape: expected a list of integers")
    for dim in shape:
        # bool is an int in Python (and JSON true would pass as 1): refused.
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise TensorError(f"shape {_show(shape)}: dimensions must be integers >= 0")
    return math.prod(shape)


def serialize_bytes(items: Iterable[bytes | str]) -> bytes:
    """BYTES elements (str is UTF-8 encoded) -> length-prefixed raw contents."""
    parts = []
    for item in items:
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(BYTES_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(data: bytes | memoryview, count: int) -> list[bytes]:
    """Length-prefixed raw contents -> exactly ``count`` BYTES elements, in one pass.

    Raises:
        TensorError: the buffer is too short for ``count`` elements, an element runs past
            its end, or bytes are left over.
    """
    size = len(data)
    if count * BYTES_LENGTH.size > size:  # each element needs at least its length prefix
        raise TensorError(
            f"{size} bytes cannot hold {count} BYTES elements (4-byte length each at least)"
        )
    view = memoryview(data)
    items: list[bytes] = []
    pos = 0
    for index in range(count):
        if pos + BYTES_LENGTH.size > size:
            raise TensorError(f"BYTES element {index}: no length prefix at byte {pos} of {size}")
        (length,) = BYTES_LENGTH.unpack_from(view, pos)
        pos += BYTES_LENGTH.size
        if pos + length > size:
            raise TensorError(
                f"BYTES element {index}: {length} bytes claimed, {size - pos} left in the buffer"
            )
        items.append(bytes(view[pos : pos + length]))
        pos += length
    if pos != size:
        raise TensorError(f"{size - pos} bytes left after {count} BYTES elements")
    return items


def from_raw(row: Datatype, shape: Sequence[Any], data: bytes | memoryview) -> np.ndarray:
    """Raw contents (``raw_input_contents``, or a tensor's part of an HTTP binary body) ->
    the array. The byte count is checked against the shape first.

    Raises:
        TensorError: a bad shape, or contents that do not match it.
    """
    count = element_count(shape)
    if row.is_bytes:
        items = deserialize_bytes(data, count)  # checks the sizes before building anything
        values = np.empty(count, dtype=object)
        values[:] = items
        return values.reshape(shape)
    expected = count * row.itemsize
    if len(data) != expected:
        raise TensorError(
            f"{len(data)} bytes of raw contents, shape {_show(shape)} of {row.name} "
            f"needs {expected}"
        )
    return np.frombuffer(data, dtype=row.numpy.newbyteorder("<")).reshape(shape)


def from_contents(row: Datatype, shape: Sequence[Any], contents: Any) -> np.ndarray:
    """``InferTensorContents`` -> the array, from the field of ``row``'s datatype. The value
    count is checked against the shape first, and narrow integers (INT8 in ``int_contents``)
    must fit their type, where numpy would silently wrap them.

    Raises:
        TensorError: a bad shape, the wrong field, a count or a value that does not fit.
    """
    count = element_count(shape)
    if row.contents is None:
        raise TensorError(f"{row.name} has no contents field: send it in raw contents")
    values = getattr(contents, row.contents)
    if len(values) != count:
        others = [
            d.contents
            for d in DATATYPES
            if d.contents and d.contents != row.contents and len(getattr(contents, d.contents))
        ]
        hint = f" (values came in {others[0]})" if others and not len(values) else ""
        raise TensorError(
            f"{row.contents} has {len(values)} values, shape {_show(shape)} needs {count}{hint}"
        )
    if row.is_bytes:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    raw = np.asarray(values, dtype=row.wire or row.numpy)
    if row.wire is not None and raw.size:
        _check_range(raw, row)
    return raw.astype(row.numpy, copy=False).reshape(shape)


def from_json(row: Datatype, shape: Sequence[Any], data: Any) -> np.ndarray:
    """A JSON ``data`` value (row-major, nested or flat; BYTES as strings) -> the array.

    Raises:
        TensorError: a bad shape, a count that does not match it, a value of the wrong type.
    """
    count = element_count(shape)
    if not isinstance(data, list):
        raise TensorError("data: expected a list (row-major, nested or flat)")
    flat = _flatten(data, count)
    if len(flat) != count:
        raise TensorError(f"data has {len(flat)} values, shape {_show(shape)} needs {count}")
    if row.is_bytes:
        array = np.empty(count, dtype=object)
        for i, item in enumerate(flat):
            if not isinstance(item, str):
                raise TensorError(f"data[{i}]: BYTES values are strings, got {_kind(item)}")
            try:
                array[i] = item.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate escape in the JSON
                raise TensorError(f"data[{i}]: not valid UTF-8 text") from None
        return array.reshape(shape)
    for i, item in enumerate(flat):
        if row.name == "BOOL":
            if not isinstance(item, bool):
                raise TensorError(f"data[{i}]: BOOL values are true or false, got {_kind(item)}")
        elif isinstance(item, bool) or not isinstance(item, int | float):
            raise TensorError(f"data[{i}]: {row.name} values are numbers, got {_kind(item)}")
        elif row.numpy.kind in "iu" and not isinstance(item, int):
            raise TensorError(f"data[{i}]: {row.name} values are integers, got {item!r}")
    if row.numpy.kind in "iu":
        info = np.iinfo(row.numpy)
        for i, item in enumerate(flat):
            if not info.min <= item <= info.max:
                raise TensorError(
                    f"data[{i}]: {item} does not fit {row.name} ({info.min}..{info.max})"
                )
        return np.array(flat, dtype=row.numpy).reshape(shape)
    if row.numpy.kind == "f":
        with np.errstate(over="ignore"):  # beyond the type's range: inf, refused by callers
            return np.array(flat, dtype=np.float64).astype(row.numpy).reshape(shape)
    return np.array(flat, dtype=row.numpy).reshape(shape)


def to_raw(array: np.ndarray, row: Datatype) -> bytes:
    """An array -> raw contents of ``row``'s datatype (little-endian, row-major)."""
    if row.is_bytes:
        return serialize_bytes(array.reshape(-1).tolist())
    return np.ascontiguousarray(array, dtype=row.numpy.newbyteorder("<")).tobytes()


def to_json(array: np.ndarray, row: Datatype) -> list[Any]:
    """An array -> a flat JSON ``data`` list (BYTES as UTF-8 text)."""
    flat = array.reshape(-1)
    if row.is_bytes:
        return [
            item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            for item in flat.tolist()
        ]
    return flat.astype(row.numpy, copy=False).tolist()


def _flatten(data: list[Any], limit: int) -> list[Any]:
    """Nested lists -> their leaves in row-major order; stops past ``limit`` leaves (the
    caller reports the count). Iterative: deep nesting cannot exhaust the stack."""
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            flat.append(item)
            if len(flat) > limit:
                break
    return flat


_END = object()


def _check_range(raw: np.ndarray, row: Datatype) -> None:
    info = np.iinfo(row.numpy)
    low, high = int(raw.min()), int(raw.max())
    if low < info.min or high > info.max:
        bad = low if low < info.min else high
        raise TensorError(
            f"{row.contents} value {bad} does not fit {row.name} ({info.min}..{info.max})"
        )


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _show(shape: Sequence[Any]) -> str:
    text = "[" + ", ".join(str(d) for d in list(shape)[:8]) + (", ...]" if len(shape) > 8 else "]")
    return text[:120]
