"""Ray Serve, as its batching guide shows: ``@serve.batch(max_batch_size=64)`` on a
deployment of two replicas (``max_ongoing_requests`` raised to the batch size, as the
guide advises: the default of 5 would cap every batch at 5), on a local Ray head bound to
loopback with its own temp dir. ``POST /predict`` with ``{"texts": [...]}`` answers
``{"results": [...]}``; ``GET /predict`` answers once a replica serves. Serve's HTTP proxy
binds loopback; Ray's own gRPC servers (GCS, raylet, workers) listen on every interface,
which Ray does not let a local head change (its token authentication is on by default).

Typical usage (from the peer's own venv, ``loadtest.peers``)::

    python loadtest/peers/rayserve_peer.py --port 3300 --temp-dir /tmp/ray-peer
"""

from __future__ import annotations

import argparse
import threading
from typing import Any

import peer_model
import ray
from ray import serve
from starlette.requests import Request


@serve.deployment(num_replicas=2, max_ongoing_requests=64)
class ImdbPeer:
    def __init__(self) -> None:
        self.predict_texts = peer_model.load()

    @serve.batch(max_batch_size=64)
    async def predict(self, batch: list[list[str]]) -> list[list[dict[str, Any]]]:
        return peer_model.split(self.predict_texts([t for texts in batch for t in texts]), batch)

    async def __call__(self, request: Request) -> Any:
        if request.method == "GET":
            return "ok"
        return {"results": await self.predict((await request.json())["texts"])}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=3300)
    parser.add_argument("--temp-dir", required=True)
    args = parser.parse_args()
    ray.init(
        address="local", include_dashboard=False, _temp_dir=args.temp_dir,
        _node_ip_address="127.0.0.1",
    )  # fmt: skip
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(ImdbPeer.bind(), route_prefix="/predict")
    threading.Event().wait()  # the driver holds the local cluster: stopped by process group
