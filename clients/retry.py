"""Retries with exponential backoff and full jitter, for retryable `ClientError`s only.

Which errors are retryable is decided where they are built (`clients.errors`):
`Unavailable` (503/502, UNAVAILABLE, connection refused, a CANCELLED from a server
shutting down) and the rate-limit flavour of
`ResourceExhausted` (HTTP 429). Bad input, missing models, server bugs and spent
deadlines fail at once. The delay before retry *n* is drawn uniformly from
``[0, min(initial_backoff * multiplier**(n-1), max_backoff)]`` — gRPC's own retry
policy (gRFC A6) — so a fleet of clients does not hammer a recovering server in step.

Typical usage::

    from clients.http import Client
    from clients.retry import RetryPolicy

    client = Client(retry=RetryPolicy(max_attempts=5, initial_backoff=0.2))
    client = Client(retry=1)  # an int is max_attempts; 1 disables retries
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from clients.errors import ClientError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to try a call and how long to wait in between."""

    max_attempts: int = 3  # total tries, including the first one
    initial_backoff: float = 0.1  # seconds; upper bound of the first delay
    max_backoff: float = 5.0  # seconds; cap on any single delay
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and multiplier >= 1")

    @classmethod
    def coerce(cls, value: RetryPolicy | int | None) -> RetryPolicy:
        """A policy from a policy, a max-attempts int, or None (the default policy)."""
        if value is None:
            return cls()
        if isinstance(value, int):
            return cls(max_attempts=value)
        return value

    def backoff(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to sleep before retry number `retry` (1 for the first retry)."""
        ceiling = min(self.initial_backoff * self.multiplier ** (retry - 1), self.max_backoff)
        return ceiling * rng()

    def should_retry(self, error: ClientError, attempt: int) -> bool:
        """Whether to try again after `error` ended try number `attempt` (1-based)."""
        return error.retryable and attempt < self.max_attempts


def call_with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `call`, retrying per `policy` when it raises a retryable `ClientError`."""
    attempt = 1
    while True:
        try:
            return call()
        except ClientError as error:
            if not policy.should_retry(error, attempt):
                raise
        sleep(policy.backoff(attempt))
        attempt += 1


async def call_with_retries_async(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Async twin of `call_with_retries`."""
    attempt = 1
    while True:
        try:
            return await call()
        except ClientError as error:
            if not policy.should_retry(error, attempt):
                raise
        await sleep(policy.backoff(attempt))
        attempt += 1
