"""Client-side checks shared by both transports, so bad input fails the same way
(`InvalidInput`, before any network traffic) whichever client is used."""

from __future__ import annotations

from typing import Any

import numpy as np

from clients.errors import InvalidInput

IMAGE_MODELS = ("cifar", "mnist")


def texts(value: Any, name: str = "texts") -> list[str]:
    """A non-empty list of str."""
    if isinstance(value, (str, bytes)):
        raise InvalidInput(f"{name} must be a list of strings, not a single {type(value).__name__}")
    try:
        items = list(value)
    except TypeError:
        raise InvalidInput(f"{name} must be a list of strings") from None
    if not items:
        raise InvalidInput(f"{name} is empty")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidInput(f"{name}[{i}] must be a str, got {type(item).__name__}")
    return items


def positive_int(value: Any, name: str) -> int:
    """An int >= 1 (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def image_model(value: str) -> str:
    """One of IMAGE_MODELS."""
    if value not in IMAGE_MODELS:
        raise InvalidInput(f"model must be one of {', '.join(IMAGE_MODELS)}, got {value!r}")
    return value


def images(value: Any) -> np.ndarray:
    """A batch as `[N, H, W, C]`: uint8 pixels in 0..255, or float32 in [0, 1].

    Accepts an array `[N, H, W]` / `[N, H, W, C]` or a sequence of `[H, W]` / `[H, W, C]`
    images; a missing channel axis is added. Integer input must fit in 0..255.
    """
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            items = [np.asarray(image) for image in value]
            array = np.stack(items) if items else np.empty((0,))
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"images must be arrays of one shape: {e}") from None
    if array.size == 0:
        raise InvalidInput("images is empty")
    if array.ndim == 3:
        array = array[..., np.newaxis]
    if array.ndim != 4:
        raise InvalidInput(f"images must be [N, H, W] or [N, H, W, C], got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind in "iu":
        if array.min() < 0 or array.max() > 255:
            raise InvalidInput("integer pixels must be in 0..255")
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    raise InvalidInput(f"images must hold integers or floats, got {array.dtype}")


def window(value: Any) -> np.ndarray:
    """A 1-D float32 array of finite values."""
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInput("window must be a list of numbers") from None
    if array.ndim != 1 or array.size == 0:
        raise InvalidInput(
            f"window must be a non-empty 1-D list of numbers, got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise InvalidInput("window contains NaN or infinity")
    return array


def inputs(value: Any) -> dict[str, Any]:
    """A non-empty mapping of input name to array-like."""
    if not isinstance(value, dict) and not hasattr(value, "items"):
        raise InvalidInput("inputs must be a mapping of input name to array")
    items = dict(value.items())
    if not items:
        raise InvalidInput("inputs is empty")
    for key in items:
        if not isinstance(key, str):
            raise InvalidInput(f"input names must be str, got {key!r}")
    return items


def version(value: Any) -> int | None:
    """None, or a positive model version."""
    return None if value is None else positive_int(value, "version")


def label(value: Any) -> str | None:
    """None, or a non-empty version label."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"label must be a non-empty string, got {value!r}")
    return value


def version_or_label(version_: Any, label_: Any) -> tuple[int | None, str | None]:
    """Which version of a model to ask: a number, a label or neither (the server's
    default, the latest). `InvalidInput` (a `ValueError`) when given both."""
    if version_ is not None and label_ is not None:
        raise InvalidInput(
            f"give a version or a label, not both (version={version_!r}, label={label_!r})"
        )
    return version(version_), label(label_)
