"""Plain BentoML 1.4, as its docs show an adaptive-batching service: a batchable
``@bentoml.api`` (``max_batch_size=64``) and two workers. ``POST /predict`` with
``{"texts": [...]}`` answers a JSON list, one result per text.

Typical usage (from the peer's own venv, ``loadtest.peers``)::

    bentoml serve bentoml_peer:ImdbPeer --working-dir loadtest/peers --port 3300
"""

from __future__ import annotations

from typing import Any

import bentoml

with bentoml.importing():
    import peer_model


@bentoml.service(workers=2)
class ImdbPeer:
    def __init__(self) -> None:
        self.predict_texts = peer_model.load()

    @bentoml.api(batchable=True, max_batch_size=64)
    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        return self.predict_texts(texts)
