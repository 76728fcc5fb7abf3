"""Fixtures of the service tests: a real gRPC server in-process over a fake model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from grpc_fakes import Starter, in_process_grpc


@pytest.fixture
def fake_grpc() -> Iterator[Starter]:
    """``fake_grpc(settings=None, *, auth=None, model=None, ready=False) -> Running``
    (:func:`grpc_fakes.in_process_grpc`); the servers stop when the test ends."""
    with in_process_grpc() as start:
        yield start
