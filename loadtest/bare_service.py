"""A minimal BentoML service without a model, for the benchmark's ``layers`` rows.

Same BentoML options as ``service.service`` (access log off, tracing excluded for every
URL, BentoML's own HTTP metrics middleware off; one worker here, so that its CPU per
request is one process's), with the bare Starlette route of :mod:`loadtest.bare_servers`
mounted at ``/asgi`` and a trivial ``@bentoml.api`` taking the friendly imdb body and
returning the same fixed answer.

Typical usage::

    bentoml serve loadtest.bare_service:BareService --port 3300    # from the repository root
    curl -X POST 127.0.0.1:3300/api -H 'content-type: application/json' -d '{"texts": ["x"]}'
"""

from __future__ import annotations

import json
from typing import Any

import bentoml

from loadtest.bare_servers import ANSWER, bare_app

_ANSWER: dict[str, Any] = json.loads(ANSWER)


@bentoml.service(
    name="bare",
    workers=1,
    logging={"access": {"enabled": False}},
    metrics={"enabled": False},  # as service.service: its route-labelled metrics replace them
    tracing={"excluded_urls": [".*"]},
)
@bentoml.asgi_app(bare_app(), path="/asgi")
class BareService:
    """No model: BentoML's own per-request cost."""

    @bentoml.api(route="/api")
    async def api(self, texts: list[str]) -> dict[str, Any]:
        """The fixed imdb answer, whatever the texts."""
        return _ANSWER
