"""Validation at the door: client values -> the numpy batch a model runner accepts.

Every check happens in the gateway, before the batch queue, so that a bad request fails
alone with a 4xx naming its field and never reaches a batch shared with other clients.

Image conventions (documented in ``service/ARCHITECTURE.md``): nested arrays are ``HxWxC``
(or ``HxW`` for one-channel models) at exactly the model's size, either integers 0-255 or
floats 0-1 (any float in the array means the 0-1 scale); uploaded PNG/JPEG files (multipart,
or ``{"b64": ...}`` in JSON) of any size are converted to the model's channels (``L`` or
``RGB``) and resized to its size with bilinear filtering (aspect ratio not kept).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import io
import math
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.catalog import TensorSpec
from service.errors import InvalidInput, PayloadTooLarge

IMAGE_FORMATS = ("PNG", "JPEG")
_INT_KINDS = "iu"


def check_count(items: Sequence[Any], field: str, max_items: int) -> None:
    """A non-empty list of at most ``max_items``."""
    if not isinstance(items, list | tuple):
        raise InvalidInput(f"{field}: expected a list, got {type(items).__name__}")
    if not items:
        raise InvalidInput(f"{field}: must not be empty")
    if len(items) > max_items:
        raise PayloadTooLarge(
            f"{field}: {len(items)} items exceed the cap of {max_items} per request"
        )


def texts_array(texts: Sequence[Any], field: str, max_items: int, max_chars: int) -> np.ndarray:
    """Non-blank strings of at most ``max_chars`` -> an object array of UTF-8 bytes."""
    check_count(texts, field, max_items)
    encoded = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInput(f"{field}[{i}]: expected a string, got {type(text).__name__}")
        if not text.strip():
            raise InvalidInput(f"{field}[{i}]: must not be empty")
        if len(text) > max_chars:
            raise PayloadTooLarge(
                f"{field}[{i}]: {len(text)} characters exceed the cap of {max_chars}"
            )
        encoded.append(_utf8(text, f"{field}[{i}]"))
    return np.array(encoded, dtype=object)


def _utf8(text: str, field: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # e.g. a lone surrogate escape in the JSON
        raise InvalidInput(f"{field}: not valid UTF-8 text") from None


def window_array(window: Sequence[Any], spec: TensorSpec, field: str = "window") -> np.ndarray:
    """Exactly ``W`` finite numbers -> a ``[1, W]`` float32 array."""
    width = spec.row_shape[0]
    if not isinstance(window, list | tuple):
        raise InvalidInput(f"{field}: expected a list of {width} numbers")
    if len(window) != width:
        raise InvalidInput(f"{field}: expected {width} numbers, got {len(window)}")
    for i, value in enumerate(window):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{field}[{i}]: expected a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise InvalidInput(f"{field}[{i}]: must be a finite number, got {value}")
    return np.asarray([window], dtype=np.float32)


# Total pixels the encoded images of one request may hold (SERVICE_MAX_PIXELS): checked
# from their headers before any of them is decoded.
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
# Where uploaded images are decoded and resized: never the event loop (a 4096 x 4096 PNG
# takes a CPU-second there). Two threads: Pillow releases the GIL while it decodes.
IMAGE_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="image-decode")


def images_array(
    images: Sequence[Any],
    spec: TensorSpec,
    field: str,
    max_items: int,
    max_side: int = 4096,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Nested arrays and/or encoded PNG/JPEG bytes -> float32 pixels in [0, 1], ``[n, H, W, C]``.

    Every encoded image's header is read first: their total pixels must stay within
    ``max_pixels`` before any of them is decoded. CPU-heavy for encoded images: call it
    through :func:`images_array_off_loop` from the event loop.

    Raises:
        InvalidInput: a bad image, naming its field (``images[3]``).
        PayloadTooLarge: too many images, one too large, or too many pixels in all.
    """
    check_count(images, field, max_items)
    height, width, channels = spec.row_shape
    items = [_b64(image, f"{field}[{i}]") if isinstance(image, dict) else image
             for i, image in enumerate(images)]  # fmt: skip
    headers: dict[int, Any] = {}
    total = 0
    for i, image in enumerate(items):
        if isinstance(image, bytes | bytearray):
            headers[i] = open_image(bytes(image), f"{field}[{i}]", max_side)
            total += headers[i].size[0] * headers[i].size[1]
            if total > max_pixels:
                raise PayloadTooLarge(
                    f"{field}[{i}]: the images up to this one hold {total} pixels, over the cap "
                    f"of {max_pixels} per request (SERVICE_MAX_PIXELS)"
                )
    pixels = np.empty((len(items), height, width, channels), dtype=np.float32)
    for i, image in enumerate(items):
        name = f"{field}[{i}]"
        if i in headers:
            pixels[i] = _decode(headers[i], (height, width, channels), name)
        else:
            pixels[i] = _array_image(image, (height, width, channels), name)
    return pixels


def has_encoded_images(images: Any) -> bool:
    """Whether ``images`` holds an uploaded file or a ``{"b64": ...}`` item (decoding work)."""
    return isinstance(images, list | tuple) and any(
        isinstance(image, bytes | bytearray | dict) for image in images
    )


async def images_array_off_loop(images: Sequence[Any], *args: Any, **kwargs: Any) -> np.ndarray:
    """:func:`images_array` on :data:`IMAGE_POOL` when there is anything to decode (nested
    arrays alone stay on the event loop: they are bounded by the body cap and cheap)."""
    if not has_encoded_images(images):
        return images_array(images, *args, **kwargs)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        IMAGE_POOL, functools.partial(images_array, images, *args, **kwargs)
    )


def _b64(value: dict, field: str, content: str = "PNG/JPEG") -> bytes:
    if set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise InvalidInput(f'{field}: an object must be {{"b64": "<base64 {content}>"}}')
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{field}.b64: not valid base64") from None


def open_image(data: bytes, field: str, max_side: int = 4096) -> Any:
    """PNG/JPEG bytes -> a Pillow image of which only the header has been read.

    Raises:
        InvalidInput: empty, not PNG/JPEG, or no readable header.
        PayloadTooLarge: a side over ``max_side``, or more pixels than Pillow's own guard
            (``Image.MAX_IMAGE_PIXELS``).
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InvalidInput(f"{field}: empty file")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InvalidInput(f"{field}: not a decodable PNG or JPEG image") from None
    if image.format not in IMAGE_FORMATS:
        raise InvalidInput(
            f"{field}: {image.format or 'unknown'} images are not accepted (PNG or JPEG)"
        )
    image_width, image_height = image.size
    if max(image.size) > max_side:
        raise PayloadTooLarge(
            f"{field}: {image_width}x{image_height} pixels exceed the cap of {max_side} per side"
        )
    if Image.MAX_IMAGE_PIXELS and image_width * image_height > Image.MAX_IMAGE_PIXELS:
        raise PayloadTooLarge(
            f"{field}: {image_width}x{image_height} pixels exceed the cap of "
            f"{Image.MAX_IMAGE_PIXELS} per image"
        )
    return image


def _decode(image: Any, shape: tuple[int, int, int], field: str) -> np.ndarray:
    """An opened image -> float32 ``[H, W, C]`` in [0, 1], converted and resized to ``shape``."""
    from PIL import Image

    height, width, channels = shape
    mode = "L" if channels == 1 else "RGB"
    try:
        if image.format == "JPEG":
            image.draft(mode, (width, height))  # libjpeg decodes at 1/2..1/8 scale: less work
        image = image.convert(mode)
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InvalidInput(f"{field}: not a decodable PNG or JPEG image") from None
    array = array.reshape(height, width, channels)
    return array.astype(np.float32) / np.float32(255.0)


def decode_image(
    data: bytes, shape: tuple[int, int, int], field: str, max_side: int = 4096
) -> np.ndarray:
    """PNG/JPEG bytes -> float32 ``[H, W, C]`` in [0, 1], converted and resized to ``shape``."""
    return _decode(open_image(data, field, max_side), shape, field)


def _array_image(value: Any, shape: tuple[int, int, int], field: str) -> np.ndarray:
    height, width, channels = shape
    array = _numeric(value, field, max_depth=3, max_elements=4 * height * width * channels)
    if array.ndim == 2 and channels == 1:
        array = array[..., None]
    if array.shape != shape:
        accepted = f"{height}x{width}x{channels}" + (
            f" or {height}x{width}" if channels == 1 else ""
        )
        got = "x".join(map(str, array.shape)) or "a scalar"
        raise InvalidInput(
            f"{field}: expected {accepted} pixels, got {got} "
            "(upload a PNG/JPEG file to have it resized)"
        )
    if array.dtype.kind in _INT_KINDS:
        if array.min() < 0 or array.max() > 255:
            raise InvalidInput(f"{field}: integer pixels must be in 0-255")
        return array.astype(np.float32) / np.float32(255.0)
    if array.min() < 0.0 or array.max() > 1.0:
        raise InvalidInput(f"{field}: float pixels must be in [0, 1] (or send integers 0-255)")
    return array.astype(np.float32)


# The most numbers one nested JSON array may hold when the caller has no tighter bound
# (the 8 MiB body cap allows about 4 million), and how deep it may nest.
DEFAULT_MAX_ELEMENTS = 4 * 1024 * 1024
MAX_JSON_DEPTH = 32


def nested_shape(value: Any, field: str, max_depth: int, max_elements: int) -> tuple[int, ...]:
    """The shape of nested lists, checked level by level before numpy sees them: every list
    of a level the same length (rectangular), at most ``max_depth`` levels, at most
    ``max_elements`` leaves. Linear in the number of lists; no recursion.

    Raises:
        InvalidInput: ragged, or nested deeper than ``max_depth``.
        PayloadTooLarge: more than ``max_elements`` values.
    """
    shape: list[int] = []
    level = [value]
    while level and isinstance(level[0], list | tuple):
        length = len(level[0])
        for item in level:
            if not isinstance(item, list | tuple) or len(item) != length:
                raise InvalidInput(
                    f"{field}: nested lists must be rectangular (every row the same length)"
                )
        shape.append(length)
        if len(shape) > max_depth:
            raise InvalidInput(f"{field}: nested deeper than {max_depth} levels")
        count = len(level) * length
        if count > max_elements:
            raise PayloadTooLarge(
                f"{field}: {count} values exceed the cap of {max_elements} per request"
            )
        level = [child for item in level for child in item]
    if any(isinstance(item, list | tuple) for item in level):
        raise InvalidInput(
            f"{field}: nested lists must be rectangular (every row the same length)"
        )
    return tuple(shape)


def _numeric(
    value: Any,
    field: str,
    max_depth: int = MAX_JSON_DEPTH,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> np.ndarray:
    """A nested list of numbers -> a numpy array (ints stay ints), rejecting everything else.
    Its shape is checked (:func:`nested_shape`) before numpy converts anything."""
    nested_shape(value, field, max_depth, max_elements)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, RecursionError):
        raise InvalidInput(
            f"{field}: nested lists must be rectangular (every row the same length)"
        ) from None
    if array.dtype.kind not in "iuf" or array.dtype == np.bool_:
        raise InvalidInput(f"{field}: expected numbers only")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInput(f"{field}: must not contain NaN or infinity")
    if array.size == 0:
        raise InvalidInput(f"{field}: must not be empty")
    return array


def tensor_from_json(
    value: Any, spec: TensorSpec, field: str, max_rows: int | None = None
) -> np.ndarray:
    """A JSON tensor (rows first; strings as str or ``{"b64": ...}``) -> numpy, type-checked.

    Numbers: the nesting's shape is read first (:func:`nested_shape`) and, with
    ``max_rows``, checked against the signature (:func:`check_shape`) before numpy
    converts anything, so only a batch the model could take is ever converted.
    """
    if spec.dtype == "string":
        if not isinstance(value, list):
            raise InvalidInput(f"{field}: expected a list of strings")
        rows = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                rows.append(_b64(item, f"{field}[{i}]", "UTF-8 text"))
            elif isinstance(item, str):
                rows.append(_utf8(item, f"{field}[{i}]"))
            else:
                raise InvalidInput(
                    f'{field}[{i}]: expected a string or {{"b64": ...}}, got {type(item).__name__}'
                )
        return np.array(rows, dtype=object)
    if not isinstance(value, list):
        raise InvalidInput(f"{field}: expected a list of rows")
    if max_rows is not None:
        shape = nested_shape(value, field, MAX_JSON_DEPTH, DEFAULT_MAX_ELEMENTS)
        check_shape(shape, spec, field, max_rows)
    return _numeric(value, field, MAX_JSON_DEPTH)


def _text_rows(array: np.ndarray, field: str, max_chars: int) -> np.ndarray:
    """Every string input of the exported models is text: UTF-8, not blank, capped."""
    rows = np.empty(len(array), dtype=object)
    for i, value in enumerate(array.reshape(-1)):
        data = _utf8(value, f"{field}[{i}]") if isinstance(value, str) else bytes(value)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{field}[{i}]: not valid UTF-8 text") from None
        if not text.strip():
            raise InvalidInput(f"{field}[{i}]: must not be empty")
        if len(text) > max_chars:
            raise PayloadTooLarge(
                f"{field}[{i}]: {len(text)} characters exceed the cap of {max_chars}"
            )
        rows[i] = data
    return rows


# Pixels of the tensor signatures (cifar, mnist `serving_default`) are scaled to [0, 1].
PIXEL_INPUT = "pixels"


def check_shape(shape: Sequence[int], spec: TensorSpec, field: str, max_rows: int) -> None:
    """A batch's shape against a signature input: rank, rows (1 to ``max_rows``), dims.

    Raises:
        InvalidInput: wrong rank or dimension, or no rows.
        PayloadTooLarge: more than ``max_rows`` rows.
    """
    expected = "[" + ", ".join("n" if d is None else str(d) for d in spec.shape) + "]"
    if not shape or shape[0] == 0:
        if not shape:
            raise InvalidInput(f"{field}: expected shape {expected} ({spec.dtype}), got []")
        raise InvalidInput(f"{field}: must not be empty")
    if len(shape) != len(spec.shape):
        raise InvalidInput(f"{field}: expected shape {expected} ({spec.dtype}), got {list(shape)}")
    rows = shape[0]
    if rows > max_rows:
        raise PayloadTooLarge(f"{field}: {rows} rows exceed the cap of {max_rows} per request")
    for got, want in zip(shape[1:], spec.row_shape):
        if want is not None and got != want:
            raise InvalidInput(
                f"{field}: expected shape {expected} ({spec.dtype}), got {list(shape)}"
            )


def check_batch(
    array: np.ndarray,
    spec: TensorSpec,
    field: str,
    max_rows: int,
    vocab_size: int | None = None,
    max_text_chars: int = 20_000,
) -> np.ndarray:
    """Checks a batch against a signature input; returns it in the signature's dtype.

    Shared by every door (TF Serving REST, gRPC): shape, dtype family, finiteness, ranges
    (token ids within the vocabulary, pixels in [0, 1]), text length.

    Raises:
        InvalidInput: wrong shape, type or value (the message names ``field``).
        PayloadTooLarge: more than ``max_rows`` rows.
    """
    check_shape(array.shape, spec, field, max_rows)
    if spec.dtype == "string":
        if array.dtype.kind not in "OSU":
            raise InvalidInput(f"{field}: expected strings")
        return _text_rows(array, field, max_text_chars)
    kind = array.dtype.kind
    if kind not in "iuf" or array.dtype == np.bool_:
        raise InvalidInput(f"{field}: expected {spec.dtype} numbers")
    if np.dtype(spec.dtype).kind in _INT_KINDS:
        if kind == "f":
            raise InvalidInput(f"{field}: expected integers ({spec.dtype}), got floats")
        info = np.iinfo(spec.dtype)
        low, high = int(array.min()), int(array.max())
        if low < info.min or high > info.max:
            raise InvalidInput(f"{field}: values must fit {spec.dtype} ({info.min}..{info.max})")
        if vocab_size is not None and (low < 0 or high >= vocab_size):
            raise InvalidInput(f"{field}: token ids must be in 0..{vocab_size - 1}")
    elif not np.isfinite(array).all():
        raise InvalidInput(f"{field}: must not contain NaN or infinity")
    if spec.name == PIXEL_INPUT and (array.min() < 0 or array.max() > 1):
        raise InvalidInput(f"{field}: pixels must be in [0, 1] (scale 0-255 values by 1/255)")
    return array.astype(spec.dtype, copy=False)
