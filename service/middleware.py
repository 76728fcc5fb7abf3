"""ASGI middleware of the gateway: a body-size cap and one error-body shape.

* :class:`BodyLimitMiddleware` answers 413 before a handler sees a body over the cap
  (``Content-Length`` or streamed), so an oversized upload never reaches JSON parsing.
* :class:`ErrorShapeMiddleware` makes every 4xx/5xx body ``{"error": "..."}``: BentoML 1.4
  wraps the message of a 4xx ``BentoMLException`` in a list (``[{"error": ...}]``) and
  Starlette answers unknown routes in plain text.
"""

from __future__ import annotations

import json
import typing as t

from service.client_text import clip

Scope = dict[str, t.Any]
Message = dict[str, t.Any]
Receive = t.Callable[[], t.Awaitable[Message]]
Send = t.Callable[[Message], t.Awaitable[None]]
ASGIApp = t.Callable[[Scope, Receive, Send], t.Awaitable[None]]

# Probe and metrics endpoints keep BentoML's own bodies.
PASSTHROUGH_PATHS = ("/readyz", "/livez", "/healthz", "/metrics")


async def _send_json(
    send: Send,
    status: int,
    payload: dict[str, t.Any],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Sends ``payload`` as JSON, with ``headers`` besides content type and length (e.g.
    ``Retry-After``)."""
    body = json.dumps(payload).encode()
    kept = [
        (k, v) for k, v in headers or [] if k.lower() not in (b"content-type", b"content-length")
    ]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *kept,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Rejects request bodies larger than ``max_bytes`` with 413 ``{"error": ...}``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        message = f"request body: exceeds the cap of {self.max_bytes} bytes"
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit():
            if int(length) > self.max_bytes:
                return await _send_json(send, 413, {"error": message})
            # The server never delivers more than a declared Content-Length: nothing to count.
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await _send_json(send, 413, {"error": message})
            chunks.append(chunk)
            if not event.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect as usual

        await self.app(scope, replay, send)


def http_exception_json(request: t.Any, exc: t.Any) -> t.Any:
    """Starlette ``HTTPException`` handler: the same ``{"error": ...}`` body as every other
    error, e.g. ``Method Not Allowed: GET /imdb/sentiment`` (for ``ExceptionMiddleware``)."""
    from starlette.responses import JSONResponse

    return JSONResponse(
        {"error": f"{exc.detail}: {request.method} {clip(request.url.path)}"},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


class ErrorShapeMiddleware:
    """Rewrites error bodies to ``{"error": message}`` (successful responses pass through)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(PASSTHROUGH_PATHS):
            return await self.app(scope, receive, send)
        start: Message | None = None
        parts: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                if message["status"] < 400:
                    start = None
                    await send(message)
                    return
                start = message
                return
            if start is None:  # a success (or an already rewritten error): stream through
                await send(message)
                return
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                body = b"".join(parts)
                message = _message(body, start["status"])
                if start["status"] in (404, 405) and not body.lstrip().startswith((b"{", b"[")):
                    message = (
                        f"{message}: {scope['method']} {clip(scope['path'])}"  # a route miss
                    )
                await _send_json(send, start["status"], {"error": message}, start.get("headers"))

        await self.app(scope, receive, capture)


def _message(body: bytes, status: int) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        return text or f"HTTP {status}"
    if isinstance(payload, list) and len(payload) == 1:
        payload = payload[0]
    if isinstance(payload, dict):
        for key in ("error", "detail", "message"):
            if key in payload:
                value = payload[key]
                return value if isinstance(value, str) else json.dumps(value)
    return text
