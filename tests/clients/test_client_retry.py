"""Retries: only retryable failures, at most `max_attempts` tries, backoff with jitter."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest

from clients import grpc as grpc_client
from clients import http as http_client
from clients.errors import (
    ClientError,
    DeadlineExceeded,
    InvalidInput,
    ResourceExhausted,
    ServerError,
    Unavailable,
)
from clients.retry import RetryPolicy, call_with_retries

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.0)


# ---- policy --------------------------------------------------------------------------


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_backoff=0.1, multiplier=2.0, max_backoff=0.3)
    assert [policy.backoff(n, rng=lambda: 1.0) for n in (1, 2, 3, 4)] == pytest.approx(
        [0.1, 0.2, 0.3, 0.3]
    )


def test_backoff_is_full_jitter() -> None:
    policy = RetryPolicy(initial_backoff=1.0)
    assert policy.backoff(1, rng=lambda: 0.0) == 0.0
    assert policy.backoff(1, rng=lambda: 0.5) == 0.5
    assert all(0.0 <= policy.backoff(3) <= 4.0 for _ in range(100))


def test_sleeps_between_attempts_only() -> None:
    calls, sleeps = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Unavailable("down")
        return "ok"

    policy = RetryPolicy(max_attempts=5, initial_backoff=1.0, multiplier=10.0, max_backoff=100)
    assert call_with_retries(flaky, policy, sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2
    assert 0 <= sleeps[0] <= 1.0 and 0 <= sleeps[1] <= 10.0


@pytest.mark.parametrize("value", [0, -1])
def test_max_attempts_must_be_positive(value: int) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=value)


def test_coerce() -> None:
    assert RetryPolicy.coerce(None) == RetryPolicy()
    assert RetryPolicy.coerce(5).max_attempts == 5
    assert RetryPolicy.coerce(FAST) is FAST


# ---- HTTP ----------------------------------------------------------------------------


def _http_client(
    responses: list[object], retry: RetryPolicy = FAST
) -> tuple[http_client.Client, list]:
    """A client whose successive requests get `responses` (the last one repeats)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = responses[min(len(seen), len(responses)) - 1]
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        return httpx.Response(status, json=body)

    return http_client.Client(transport=httpx.MockTransport(handler), retry=retry), seen


OK_FORECAST = (200, {"forecast": [0.5], "model": {"name": "cosine", "version": 1}})


@pytest.mark.parametrize(
    ("first", "expected_calls"),
    [
        ((503, {"error": "not ready"}), 2),
        ((502, {"error": "bad gateway"}), 2),
        ((429, {"error": "slow down"}), 2),
        (httpx.ConnectError("refused"), 2),
    ],
)
def test_http_retries_retryable_failures(first: object, expected_calls: int) -> None:
    client, seen = _http_client([first, OK_FORECAST])
    assert client.forecast([0.0] * 10).values == (0.5,)
    assert len(seen) == expected_calls


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, InvalidInput),
        (422, InvalidInput),
        (413, ResourceExhausted),
        (500, ServerError),
        (504, DeadlineExceeded),
    ],
)
def test_http_does_not_retry_the_rest(status: int, error: type) -> None:
    client, seen = _http_client([(status, {"error": "no"}), OK_FORECAST])
    with pytest.raises(error, match="no"):
        client.forecast([0.0] * 10)
    assert len(seen) == 1


def test_http_timeouts_are_not_retried() -> None:
    client, seen = _http_client([httpx.ReadTimeout("slow"), OK_FORECAST])
    with pytest.raises(DeadlineExceeded):
        client.forecast([0.0] * 10)
    assert len(seen) == 1


@pytest.mark.parametrize("max_attempts", [1, 2, 4])
def test_http_honours_max_attempts(max_attempts: int) -> None:
    policy = RetryPolicy(max_attempts=max_attempts, initial_backoff=0.0)
    client, seen = _http_client([(503, {"error": "still down"})], retry=policy)
    with pytest.raises(Unavailable, match="still down"):
        client.forecast([0.0] * 10)
    assert len(seen) == max_attempts


def test_http_probes_do_not_retry() -> None:
    client, seen = _http_client([(503, {"error": "not ready"})])
    assert client.ready() is False
    assert len(seen) == 1


def test_http_async_retries() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) < 3:
            return httpx.Response(503, json={"error": "warming up"})
        return httpx.Response(*OK_FORECAST[:1], json=OK_FORECAST[1])

    async def main() -> None:
        transport = httpx.MockTransport(handler)
        async with http_client.AsyncClient(transport=transport, retry=FAST) as client:
            assert (await client.forecast([0.0] * 10)).values == (0.5,)

    asyncio.run(main())
    assert len(seen) == 3


# ---- gRPC (real in-process server) ---------------------------------------------------


def _predicts(servicer) -> int:
    return sum(1 for method, _ in servicer.calls if method == "Predict")


def test_grpc_retries_unavailable(fake_tfs) -> None:
    servicer, target = fake_tfs
    servicer.fail_with[:] = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    with grpc_client.Client(target, retry=FAST) as client:
        assert len(client.forecast([0.0] * 10).values) == 1
    assert _predicts(servicer) == 3


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidInput),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.INTERNAL, ServerError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
        (grpc.StatusCode.PERMISSION_DENIED, ClientError),
    ],
)
def test_grpc_does_not_retry_the_rest(fake_tfs, code: grpc.StatusCode, error: type) -> None:
    servicer, target = fake_tfs
    servicer.fail_with[:] = [code]
    with grpc_client.Client(target, retry=FAST) as client, pytest.raises(error, match="injected"):
        client.forecast([0.0] * 10)
    assert _predicts(servicer) == 1


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_grpc_honours_max_attempts(fake_tfs, max_attempts: int) -> None:
    servicer, target = fake_tfs
    servicer.fail_with[:] = [grpc.StatusCode.UNAVAILABLE] * 10
    policy = RetryPolicy(max_attempts=max_attempts, initial_backoff=0.0)
    with grpc_client.Client(target, retry=policy) as client, pytest.raises(Unavailable):
        client.forecast([0.0] * 10)
    assert _predicts(servicer) == max_attempts


def test_grpc_async_retries(fake_tfs) -> None:
    servicer, target = fake_tfs
    servicer.fail_with[:] = [grpc.StatusCode.UNAVAILABLE]

    async def main() -> None:
        async with grpc_client.AsyncClient(target, retry=FAST) as client:
            assert len((await client.forecast([0.0] * 10)).values) == 1

    asyncio.run(main())
    assert _predicts(servicer) == 2


def test_grpc_connection_refused_is_unavailable_after_retries() -> None:
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.0)
    with grpc_client.Client("127.0.0.1:1", retry=policy, timeout=5) as client:
        with pytest.raises(Unavailable, match="cannot reach"):
            client.forecast([0.0] * 10)
        assert client.health() is False
