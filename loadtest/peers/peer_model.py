"""The imdb SavedModel as each peer loads it: numpy and TensorFlow only (no project code),
since it runs inside the peers' own virtual environments.

``PEER_SAVED_MODEL`` is the SavedModel's directory (the BentoML store's ``imdb:latest``,
as the naive server loads it); the answer per review is the service's friendly one.

The exports are XLA-compiled, once per input shape: a batch size's first call takes ~1 s
(then 2-12 ms), so every size a peer can form (1 to its ``max_batch_size``, 64) is called
once before it serves, as the service warms its batch buckets. Without that, a short run
measures mostly compilation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

SIGNATURE = "predict_text"  # tfserving_api.contract.PREDICT_TEXT_SIGNATURE
MAX_BATCH_SIZE = 64  # every peer's max_batch_size


def load(path: str | None = None, warm_up: int = MAX_BATCH_SIZE) -> Callable[[list[str]], list[dict[str, Any]]]:
    """``predict(texts)``: one ``{label, probability, positive_probability}`` per review,
    from one call of the SavedModel's ``predict_text`` signature, called here once at each
    batch size up to ``warm_up`` (XLA compiles each on its first call)."""
    import tensorflow as tf

    signature = tf.saved_model.load(path or os.environ["PEER_SAVED_MODEL"]).signatures[SIGNATURE]
    (input_name,) = signature.structured_input_signature[1]

    def predict(texts: list[str]) -> list[dict[str, Any]]:
        rows = signature(**{input_name: tf.constant(texts)})["probabilities"].numpy()[:, :2]
        return [
            {
                "label": "positive" if positive >= negative else "negative",
                "probability": max(positive, negative),
                "positive_probability": positive,
            }
            for negative, positive in rows.tolist()
        ]

    for size in range(1, warm_up + 1):
        predict(["a warm-up review"] * size)
    return predict


def split(results: list[Any], batch: list[list[str]]) -> list[list[Any]]:
    """``results`` of the flattened ``batch`` of requests, back into one list per request."""
    answers = iter(results)
    return [[next(answers) for _ in texts] for texts in batch]
