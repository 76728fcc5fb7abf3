"""Nested JSON arrays: shape, depth and size checked before numpy converts anything."""

from __future__ import annotations

import numpy as np
import pytest

from service.catalog import TensorSpec
from service.errors import InvalidInput, PayloadTooLarge
from service.inputs import nested_shape, tensor_from_json

WINDOW = TensorSpec("window", "float32", (None, 10))


def deep(levels: int) -> list:
    value: list = [1]
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "shape"),
    [([1, 2], (2,)), ([[1, 2], [3, 4], [5, 6]], (3, 2)), ([], (0,)), ([[]], (1, 0)), (3, ())],
)
def test_shapes(value, shape):
    assert nested_shape(value, "x", max_depth=8, max_elements=100) == shape


# (case, value, max depth, max elements, error, fragment): one row per probe
BAD = [
    ("ragged rows", [[1, 2], [3]], 8, 100, InvalidInput, "x: nested lists must be rectangular"),
    ("list beside a number", [[1, 2], 3], 8, 100, InvalidInput, "rectangular"),
    ("number beside a list, deeper", [[[1], 2]], 8, 100, InvalidInput, "rectangular"),
    ("too deep", deep(50), 32, 100, InvalidInput, "x: nested deeper than 32 levels"),
    ("ten thousand levels", deep(10_000), 32, 100, InvalidInput, "nested deeper than 32"),
    ("too many values", [[0] * 1000] * 1000, 8, 100_000, PayloadTooLarge,
     "x: 1000000 values exceed the cap of 100000"),
]  # fmt: skip


@pytest.mark.parametrize(
    "value, depth, elements, error, fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_nesting_is_refused_naming_the_field(value, depth, elements, error, fragment):
    with pytest.raises(error, match=fragment):
        nested_shape(value, "x", max_depth=depth, max_elements=elements)


def test_a_batch_the_model_cannot_take_is_refused_before_conversion(monkeypatch):
    converted = []
    real = np.asarray
    monkeypatch.setattr(np, "asarray", lambda *a, **k: converted.append(1) or real(*a, **k))
    for value, error, fragment in [
        ([[0.0] * 10] * 100_000, PayloadTooLarge, "instances: 100000 rows exceed the cap of 64"),
        ([[0.0] * 100_000], InvalidInput, "expected shape [n, 10] (float32), got [1, 100000]"),
        ([[[0.0] * 10]], InvalidInput, "got [1, 1, 10]"),
        ([], InvalidInput, "instances: must not be empty"),
    ]:
        with pytest.raises(error) as caught:
            tensor_from_json(value, WINDOW, "instances", max_rows=64)
        assert fragment in caught.value.message
    assert not converted
    assert tensor_from_json([[0.5] * 10] * 2, WINDOW, "instances", max_rows=64).shape == (2, 10)
