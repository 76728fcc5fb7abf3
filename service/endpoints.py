"""The friendly JSON endpoints: validate, call the model's batch queue, shape the answer.

Each function takes the :class:`~service.served_model.ServedModel` and the request's fields and
returns the response body (``docs/contracts.md``, "HTTP API"). Model outputs arrive as
numpy columns and become Python values only here.
"""

from __future__ import annotations

import typing as t

import numpy as np

from service.config import ServingSettings
from service.errors import InvalidInput
from service.inputs import images_array_off_loop, texts_array, window_array
from service.served_model import ServedModel
from tfserving_api.contract import (
    FORECAST_STEPS_SIGNATURE,
    PREDICT_TEXT_SIGNATURE,
    SENTIMENT_LABELS,
    TENSOR_SIGNATURE,
    TRANSLATE_SIGNATURE,
)


def _check_top_k(top_k: int, classes: int) -> None:
    if not 1 <= top_k <= classes:
        raise InvalidInput(f"top_k: must be between 1 and {classes}, got {top_k}")


def _label_names(client: ServedModel, classes: int) -> list[str]:
    labels = list(client.info.labels)
    return labels if len(labels) == classes else [str(i) for i in range(classes)]


def _ranked(probabilities: np.ndarray, names: list[str], k: int) -> list[dict[str, t.Any]]:
    order = np.argsort(-probabilities, kind="stable")[:k].tolist()
    values = probabilities.tolist()
    return [{"label": names[i], "index": i, "probability": values[i]} for i in order]


def _classes(client: ServedModel, signature: str) -> int:
    return int(client.info.signature(signature).outputs["probabilities"].shape[-1])


async def classify_topics(
    client: ServedModel, texts: list[str], top_k: int, settings: ServingSettings
) -> dict[str, t.Any]:
    """``POST /reuters/classify``: the ``top_k`` most likely topics of every text."""
    signature = client.info.user_signature or PREDICT_TEXT_SIGNATURE
    classes = _classes(client, signature)
    _check_top_k(top_k, classes)
    batch = texts_array(texts, "texts", settings.max_items, settings.max_text_chars)
    outputs = await client.run(signature, batch)
    names = _label_names(client, classes)
    results = [
        {
            "topics": [
                {"topic": r["label"], "index": r["index"], "probability": r["probability"]}
                for r in _ranked(row, names, top_k)
            ]
        }
        for row in outputs["probabilities"]
    ]
    return {"results": results, "model": client.info.describe()}


async def sentiment(
    client: ServedModel, texts: list[str], settings: ServingSettings
) -> dict[str, t.Any]:
    """``POST /imdb/sentiment``: positive or negative, with the probability of that label."""
    signature = client.info.user_signature or PREDICT_TEXT_SIGNATURE
    batch = texts_array(texts, "texts", settings.max_items, settings.max_text_chars)
    outputs = await client.run(signature, batch)
    results = []
    for negative, positive in outputs["probabilities"][:, :2].tolist():
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
    client: ServedModel, images: list[t.Any], top_k: int, settings: ServingSettings
) -> dict[str, t.Any]:
    """``POST /{cifar,mnist}/classify``: the class of every image, and the ``top_k`` best."""
    spec = client.info.signature(TENSOR_SIGNATURE)
    classes = _classes(client, TENSOR_SIGNATURE)
    _check_top_k(top_k, classes)
    # Pixels are scaled to [0, 1] here, exactly as predict_images does in the graph, so that
    # every image request shares the tensor signature's batch queue.
    # Decoding and resizing uploads is CPU work: on a thread pool, never the event loop.
    batch = await images_array_off_loop(
        images,
        spec.input,
        "images",
        settings.max_items,
        settings.max_image_side,
        settings.max_pixels,
    )
    outputs = await client.run(TENSOR_SIGNATURE, batch)
    names = _label_names(client, classes)
    results = []
    for row in outputs["probabilities"]:
        top = _ranked(row, names, max(top_k, 1))
        results.append({**top[0], "top": top})
    return {"results": results, "model": client.info.describe()}


async def forecast(
    client: ServedModel, window: list[float], horizon: int, settings: ServingSettings
) -> dict[str, t.Any]:
    """``POST /cosine/forecast``: the next ``horizon`` values, each fed back into the window.

    One step is one call of the tensor signature; more steps are one call of
    ``forecast_steps`` (the recursion inside the graph) per 100 steps, when the export has
    it, and one call per step otherwise (exports made before it existed).
    """
    spec = client.info.signature(TENSOR_SIGNATURE).input
    if not 1 <= horizon <= settings.max_horizon:
        raise InvalidInput(f"horizon: must be between 1 and {settings.max_horizon}, got {horizon}")
    current = window_array(window, spec)
    steps = client.info.signatures.get(FORECAST_STEPS_SIGNATURE)
    values: list[float] = []
    while len(values) < horizon:
        if steps is not None and horizon - len(values) > 1:
            outputs = await client.run(FORECAST_STEPS_SIGNATURE, current)
            new = outputs["forecast"][0, : horizon - len(values)].astype(np.float32)
        else:
            outputs = await client.run(TENSOR_SIGNATURE, current)
            new = outputs["forecast"].reshape(1).astype(np.float32)
        values.extend(new.tolist())
        current = np.concatenate([current[0], new])[-current.shape[1] :][None, :]
    return {"forecast": values, "model": client.info.describe()}


async def translate(
    client: ServedModel, sentences: list[str], settings: ServingSettings
) -> dict[str, t.Any]:
    """``POST /translate``: one translation per sentence."""
    signature = client.info.user_signature or TRANSLATE_SIGNATURE
    batch = texts_array(sentences, "sentences", settings.max_items, settings.max_text_chars)
    outputs = await client.run(signature, batch)
    translations = [text.decode("utf-8", "replace") for text in outputs["translation"].tolist()]
    return {"translations": translations, "model": client.info.describe()}
