"""HTTP client for the model service (BentoML, default port 3000).

`Client` and `AsyncClient` have the same methods as their gRPC twins in `clients.grpc`
and return the same `clients.types` results. One `httpx` connection pool per client is
reused across calls; close it with `with` / `async with` or `close()`. Failed requests
raise `clients.errors.ClientError` subclasses; `Unavailable` and HTTP 429 are retried
with exponential backoff (`clients.retry.RetryPolicy`).

Typical usage::

    from clients.http import Client

    with Client("http://localhost:3000", timeout=10) as client:
        for result in client.sentiment(["A wonderful, moving film.", "Dull."]):
            print(result.label, round(result.probability, 3))
        outputs = client.predict("cosine", {"window": [[0.1] * 10]}, signature="forecast")
        print(outputs["forecast"])
        [pinned] = client.sentiment(["Dull."], version=2)  # or label="stable"
        print(pinned.model.version)

    # asyncio
    from clients.http import AsyncClient

    async with AsyncClient("http://localhost:3000") as client:
        forecast = await client.forecast([0.0] * 10, horizon=5)
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

from clients._api import AsyncAPI, Op, SyncAPI, run, run_async
from clients._rest import HttpRequest, RestProtocol
from clients.errors import ServerError, from_http, from_transport_error
from clients.retry import (
    RetryPolicy,
    call_with_retries,
    call_with_retries_async,
)

__all__ = ["DEFAULT_URL", "AsyncClient", "Client"]

DEFAULT_URL = "http://localhost:3000"
T = TypeVar("T")


def _verify(value: bool | str | Path | ssl.SSLContext) -> bool | ssl.SSLContext:
    # httpx 0.28 deprecates a CA-bundle path for `verify`; build the context ourselves.
    if isinstance(value, (str, Path)):
        return ssl.create_default_context(cafile=str(value))
    return value


def _decode(response: httpx.Response, expect_json: bool) -> Any:
    """The JSON body (or text) of a 2xx response; the typed error otherwise."""
    if response.is_success and not expect_json:
        return response.text
    try:
        payload = response.json() if response.content else None
    except ValueError:
        payload = response.text
    if response.is_success:
        if isinstance(payload, str):
            raise ServerError(f"expected JSON from {response.url.path}, got: {payload[:200]}")
        return payload
    raise from_http(response.status_code, payload)


def _client_options(
    url: str,
    timeout: float,
    headers: Mapping[str, str] | None,
    verify: bool | str | Path | ssl.SSLContext,
    token: str | None = None,
) -> dict[str, Any]:
    bearer = {"Authorization": f"Bearer {token}"} if token else {}
    return {
        "base_url": url.rstrip("/"),
        "timeout": timeout,
        "headers": {"Accept": "application/json", **bearer, **(headers or {})},
        "verify": _verify(verify),
    }


class Client(SyncAPI):
    """Blocking HTTP client. Methods: see `clients._api.SyncAPI`.

    Args:
        url: Service base URL; ``https://`` works, with `verify` for private CAs.
        timeout: Default seconds per request (connect + read), per call overridable.
        retry: A `RetryPolicy`, or an int of max attempts (1 disables retries).
        headers: Extra headers on every request (e.g. authorization).
        verify: TLS verification: True, False, a CA bundle path or an `ssl.SSLContext`.
        transport: An `httpx` transport, e.g. `httpx.MockTransport` in tests.
        token: Bearer token sent with every request (a server with ``SERVICE_AUTH_TOKENS``).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | int | None = None,
        headers: Mapping[str, str] | None = None,
        verify: bool | str | Path | ssl.SSLContext = True,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry = RetryPolicy.coerce(retry)
        self._ops = RestProtocol()
        self._http = httpx.Client(
            transport=transport, **_client_options(url, timeout, headers, verify, token)
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _send(self, request: HttpRequest, timeout: float | None) -> Any:
        def attempt() -> Any:
            try:
                response = self._http.request(
                    request.method,
                    request.path,
                    content=request.content,
                    headers={"Content-Type": "application/json"} if request.content else None,
                    timeout=self.timeout if timeout is None else timeout,
                )
            except httpx.TransportError as e:
                raise from_transport_error(e) from None
            return _decode(response, request.expect_json)

        policy = self.retry if request.retry else RetryPolicy(max_attempts=1)
        return call_with_retries(attempt, policy)

    def _run(self, op: Op[T], timeout: float | None) -> T:
        return run(op, lambda request: self._send(request, timeout))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()


class AsyncClient(AsyncAPI):
    """asyncio HTTP client; same arguments as `Client`, methods are coroutines.

    `transport` takes an `httpx.AsyncBaseTransport` (`httpx.MockTransport` works too).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | int | None = None,
        headers: Mapping[str, str] | None = None,
        verify: bool | str | Path | ssl.SSLContext = True,
        transport: httpx.AsyncBaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry = RetryPolicy.coerce(retry)
        self._ops = RestProtocol()
        self._http = httpx.AsyncClient(
            transport=transport, **_client_options(url, timeout, headers, verify, token)
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    async def _send(self, request: HttpRequest, timeout: float | None) -> Any:
        async def attempt() -> Any:
            try:
                response = await self._http.request(
                    request.method,
                    request.path,
                    content=request.content,
                    headers={"Content-Type": "application/json"} if request.content else None,
                    timeout=self.timeout if timeout is None else timeout,
                )
            except httpx.TransportError as e:
                raise from_transport_error(e) from None
            return _decode(response, request.expect_json)

        policy = self.retry if request.retry else RetryPolicy(max_attempts=1)
        return await call_with_retries_async(attempt, policy)

    async def _run(self, op: Op[T], timeout: float | None) -> T:
        return await run_async(op, lambda request: self._send(request, timeout))

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
