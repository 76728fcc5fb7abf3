"""LitServe, as its batching docs show: ``max_batch_size=64``, ``batch_timeout=0.001`` on
the ``LitAPI``, two workers (``workers_per_device=2`` on the CPU). ``POST /predict`` with
``{"texts": [...]}`` answers ``{"results": [...]}``.

Typical usage (from the peer's own venv, ``loadtest.peers``)::

    python loadtest/peers/litserve_peer.py --port 3300
"""

from __future__ import annotations

import argparse
from typing import Any

import litserve as ls
import peer_model


class ImdbAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.predict_texts = peer_model.load()

    def decode_request(self, request):  # noqa: ANN001 (LitServe reads the request's type here)
        return request["texts"]

    def predict(self, batch: list[list[str]]) -> list[list[dict[str, Any]]]:
        return peer_model.split(self.predict_texts([t for texts in batch for t in texts]), batch)

    def encode_response(self, output: list[dict[str, Any]]) -> dict[str, Any]:
        return {"results": output}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=3300)
    args = parser.parse_args()
    api = ImdbAPI(max_batch_size=64, batch_timeout=0.001)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=2)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False)
