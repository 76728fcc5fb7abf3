"""The autoscaling gauge: in-flight requests go up inside ``track`` and down on every exit."""

from __future__ import annotations

import contextlib

import pytest
from prometheus_client import REGISTRY

from service.errors import InvalidInput
from service.metrics import track


def inflight(model: str) -> float:
    return REGISTRY.get_sample_value("keras_serving_inflight_requests", {"model": model}) or 0.0


@pytest.mark.parametrize("error", [None, InvalidInput("bad 'texts'"), RuntimeError("boom")])
def test_inflight_counts_the_requests_inside_track(error):
    model = f"m-{type(error).__name__}"
    before = inflight(model)
    with pytest.raises(type(error)) if error else contextlib.nullcontext():
        with track(model, "rest"):
            assert inflight(model) == before + 1
            with track(model, "grpc"):
                assert inflight(model) == before + 2
            if error:
                raise error
    assert inflight(model) == before
