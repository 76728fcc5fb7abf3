"""The friendly JSON endpoints: validate, call the model's batch queue, shape the answer.

Each function takes the model's :class:`~service.dispatch.ModelClient` and the request's
fields and returns the response body (``docs/contracts.md``, "HTTP API").
"""

from __future__ import annotations

import typing as t

import numpy as np

from service.catalog import TENSOR_SIGNATURE
from service.config import ServingSettings
from service.dispatch import ModelClient
from service.errors import InvalidInput
from service.inputs import images_array, texts_array, window_array
from tfserving_api.contract import SENTIMENT_LABELS


def _check_top_k(top_k: int, classes: int) -> None:
    if not 1 <= top_k <= classes:
        raise InvalidInput(f"top_k: must be between 1 and {classes}, got {top_k}")


def _label_names(client: ModelClient, classes: int) -> list[str]:
    labels = list(client.info.labels)
    return labels if len(labels) == classes else [str(i) for i in range(classes)]


def _ranked(probabilities: list[float], names: list[str], k: int) -> list[dict[str, t.Any]]:
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:k]
    return [
        {"label": names[i], "index": int(i), "probability": float(probabilities[i])} for i in order
    ]


def _classes(client: ModelClient, signature: str) -> int:
    return int(client.info.signature(signature).outputs["probabilities"].shape[-1])


async def classify_topics(
    client: ModelClient, texts: list[str], top_k: int, settings: ServingSettings
) -> dict[str, t.Any]:
    """``POST /reuters/classify``: the ``top_k`` most likely topics of every text."""
    signature = client.info.user_signature or "predict_text"
    classes = _classes(client, signature)
    _check_top_k(top_k, classes)
    batch = texts_array(texts, "texts", settings.max_items, settings.max_text_chars)
    rows = await client.run(signature, batch)
    names = _label_names(client, classes)
    results = [
        {
            "topics": [
                {"topic": r["label"], "index": r["index"], "probability": r["probability"]}
                for r in _ranked(row["probabilities"], names, top_k)
            ]
        }
        for row in rows
    ]
    return {"results": results, "model": client.info.describe()}


async def sentiment(
    client: ModelClient, texts: list[str], settings: ServingSettings
) -> dict[str, t.Any]:
    """``POST /imdb/sentiment``: positive or negative, with the probability of that label."""
    signature = client.info.user_signature or "predict_text"
    batch = texts_array(texts, "texts", settings.max_items, settings.max_text_chars)
    rows = await client.run(signature, batch)
    results = []
    for row in rows:
        negative, positive = (float(p) for p in row["probabilities"][:2])
        label = 1 if positive >= negative else 0
        results.append(
            {
                "label": SENTIMENT_LABELS[label],
                "probability": positive if label else negative,
                "positive_probability": positive,
            }
        )
    return {"results": results, "model": client.info.describe()}


async def classify_images(
    client: ModelClient, images: list[t.Any], top_k: int, settings: ServingSettings
) -> dict[str, t.Any]:
    """``POST /{cifar,mnist}/classify``: the class of every image, and the ``top_k`` best."""
    spec = client.info.signature(TENSOR_SIGNATURE)
    classes = _classes(client, TENSOR_SIGNATURE)
    _check_top_k(top_k, classes)
    # Pixels are scaled to [0, 1] here, exactly as predict_images does in the graph, so that
    # every image request shares the tensor signature's batch queue.
    batch = images_array(images, spec.input, "images", settings.max_items, settings.max_image_side)
    rows = await client.run(TENSOR_SIGNATURE, batch)
    names = _label_names(client, classes)
    results = []
    for row in rows:
        top = _ranked(row["probabilities"], names, max(top_k, 1))
        results.append({**top[0], "top": top})
    return {"results": results, "model": client.info.describe()}


async def forecast(
    client: ModelClient, window: list[float], horizon: int, settings: ServingSettings
) -> dict[str, t.Any]:
    """``POST /cosine/forecast``: ``horizon`` recursive one-step forecasts."""
    # The tensor signature computes the same as "forecast" and is the XLA-compiled one.
    signature = TENSOR_SIGNATURE
    spec = client.info.signature(signature).input
    if not 1 <= horizon <= settings.max_horizon:
        raise InvalidInput(f"horizon: must be between 1 and {settings.max_horizon}, got {horizon}")
    current = window_array(window, spec)
    values: list[float] = []
    for _ in range(horizon):
        (row,) = await client.run(signature, current)
        value = float(row["forecast"])
        values.append(value)
        current = np.concatenate([current[:, 1:], np.float32([[value]])], axis=1)
    return {"forecast": values, "model": client.info.describe()}


async def translate(
    client: ModelClient, sentences: list[str], settings: ServingSettings
) -> dict[str, t.Any]:
    """``POST /translate``: one translation per sentence."""
    signature = client.info.user_signature or "translate"
    batch = texts_array(sentences, "sentences", settings.max_items, settings.max_text_chars)
    rows = await client.run(signature, batch)
    return {"translations": [row["translation"] for row in rows], "model": client.info.describe()}
