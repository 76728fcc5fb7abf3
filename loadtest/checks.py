"""Checks on every response body: a 200 with a wrong body is a failed request.

Each check takes the answer of one model in a transport-neutral form (built by
:func:`from_json` from the HTTP body, or by :func:`from_results` from the ``clients`` result
types that the gRPC client returns) and raises :class:`BadResponse` naming what is wrong.

Typical usage::

    answer = from_json("imdb", response.json())
    check("imdb", answer, items=4)                   # raises BadResponse
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loadtest.payloads import HORIZON, TOP_K
from tfserving_api.contract import SENTIMENT_LABELS
from training.data import LABELS  # numpy-only module: the label names every export carries

# Probabilities are float32 computed by a softmax: a sum within this of 1 is fine.
TOLERANCE = 1e-3


class BadResponse(Exception):
    """A successful status with a body that does not answer the request."""


@dataclass(frozen=True)
class Answer:
    """What a model answered, whatever the transport.

    ``rows`` holds one entry per request item: for classifiers a list of
    ``(label, index, probability)`` best first; for imdb ``(label, probability,
    positive_probability)``; for the translator the translated text; for cosine the
    forecast values (a single row).
    """

    rows: list[Any]


def _ranked(items: Sequence[Mapping[str, Any]], label_key: str) -> list[tuple[Any, Any, Any]]:
    return [(item.get(label_key), item.get("index"), item.get("probability")) for item in items]


def from_json(model: str, body: Any) -> Answer:
    """The :class:`Answer` in an HTTP response body (``docs/contracts.md``, "HTTP API").

    Raises:
        BadResponse: the body lacks the fields of that endpoint.
    """
    try:
        if model == "imdb":
            return Answer(
                [(r["label"], r["probability"], r["positive_probability"]) for r in body["results"]]
            )
        if model == "reuters":
            return Answer([_ranked(r["topics"], "topic") for r in body["results"]])
        if model in ("cifar", "mnist"):
            rows = []
            for r in body["results"]:
                if (r["label"], r["index"]) != (r["top"][0]["label"], r["top"][0]["index"]):
                    raise BadResponse(
                        f"label {r['label']!r} is not the first of top {r['top'][:1]}"
                    )
                rows.append(_ranked(r["top"], "label"))
            return Answer(rows)
        if model == "cosine":
            return Answer([list(body["forecast"])])
        if model == "translator":
            return Answer(list(body["translations"]))
    except (KeyError, TypeError, IndexError) as exc:
        raise BadResponse(
            f"{model}: malformed body ({type(exc).__name__}: {exc}): {str(body)[:200]}"
        ) from None
    raise ValueError(f"unknown model {model!r}")


def from_results(model: str, results: Any) -> Answer:
    """The :class:`Answer` in what a ``clients`` method returned (``clients.types``)."""
    if model == "imdb":
        return Answer([(r.label, r.probability, r.positive_probability) for r in results])
    if model == "reuters":
        return Answer([[(s.label, s.index, s.probability) for s in r.topics] for r in results])
    if model in ("cifar", "mnist"):
        rows = []
        for r in results:
            if r.index != r.top[0].index:
                raise BadResponse(f"index {r.index} is not the first of top {r.top[:1]}")
            rows.append([(s.label, s.index, s.probability) for s in r.top])
        return Answer(rows)
    if model == "cosine":
        return Answer([list(results.values)])
    if model == "translator":
        return Answer([r.text for r in results])
    raise ValueError(f"unknown model {model!r}")


def _probability(value: Any, what: str) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0 + TOLERANCE:
        raise BadResponse(f"{what}: {value!r} is not a probability")
    return float(value)


def _check_ranked(rows: list[Any], model: str, top_k: int, labels: Sequence[str] | None) -> None:
    names = list(labels) if labels else LABELS.get(model) or None
    classes = len(names) if names else None
    for i, ranked in enumerate(rows):
        if len(ranked) != top_k:
            raise BadResponse(f"item {i}: {len(ranked)} classes, asked for top_k={top_k}")
        probabilities = [_probability(p, f"item {i}") for _, _, p in ranked]
        if any(a < b - 1e-6 for a, b in itertools.pairwise(probabilities)):
            raise BadResponse(f"item {i}: classes not sorted by probability: {probabilities}")
        total = sum(probabilities)
        if total > 1.0 + TOLERANCE or (top_k == classes and abs(total - 1.0) > TOLERANCE):
            raise BadResponse(f"item {i}: probabilities sum to {total:.4f}")
        indices = [index for _, index, _ in ranked]
        if len(set(indices)) != len(indices):
            raise BadResponse(f"item {i}: repeated classes {indices}")
        for label, index, _ in ranked:
            if not isinstance(index, int) or index < 0 or (classes and index >= classes):
                raise BadResponse(f"item {i}: class index {index!r} out of range")
            if names and label is not None and label != names[index]:
                raise BadResponse(
                    f"item {i}: label {label!r} is not class {index} ({names[index]!r})"
                )


def check(model: str, answer: Answer, items: int, labels: Sequence[str] | None = None) -> None:
    """Raises :class:`BadResponse` unless ``answer`` is a valid answer to ``items`` items.

    Args:
        model: imdb, reuters, cifar, mnist, cosine or translator.
        answer: From :func:`from_json` or :func:`from_results`.
        items: Items in the request (ignored for cosine: one window, ``HORIZON`` values).
        labels: The model's label names, when the server told them; defaults to the names
            every export of this project carries (``training.data.LABELS``).
    """
    rows = answer.rows
    if model == "cosine":
        (values,) = rows
        if len(values) != HORIZON:
            raise BadResponse(f"forecast has {len(values)} values, asked for horizon={HORIZON}")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise BadResponse(f"forecast has non-finite values: {values}")
        return
    if len(rows) != items:
        raise BadResponse(f"{len(rows)} results for {items} items")
    if model == "imdb":
        for i, (label, probability, positive) in enumerate(rows):
            if label not in SENTIMENT_LABELS:
                raise BadResponse(f"item {i}: label {label!r} not in {SENTIMENT_LABELS}")
            positive = _probability(positive, f"item {i} positive_probability")
            expected = positive if label == "positive" else 1.0 - positive
            if (
                abs(_probability(probability, f"item {i}") - expected) > TOLERANCE
                or expected < 0.5 - TOLERANCE
            ):
                raise BadResponse(
                    f"item {i}: {label} with probability {probability} (positive: {positive})"
                )
    elif model in ("reuters", "cifar", "mnist"):
        _check_ranked(rows, model, TOP_K[model], labels)
    elif model == "translator":
        if not all(isinstance(text, str) for text in rows):
            raise BadResponse(f"translations are not all strings: {rows[:3]}")
    else:
        raise ValueError(f"unknown model {model!r}")


def check_outputs(model: str, outputs: Mapping[str, Any], items: int) -> None:
    """Raises :class:`BadResponse` unless the raw output tensor answers ``items`` items.

    The cheap check of the TF Serving doors, on the one output the load generator decodes:
    ``probabilities`` (one row per item, a distribution over the model's classes),
    ``translation`` (one string per item) or ``forecast`` (one finite value per window).

    Args:
        model: imdb, reuters, cifar, mnist, cosine or translator.
        outputs: Output name -> array (``to_ndarray`` of the TensorProto, or the JSON rows).
        items: Rows in the request.
    """
    import numpy as np

    if model in ("imdb", "reuters", "cifar", "mnist"):
        probabilities = np.asarray(outputs.get("probabilities"))
        classes = len(SENTIMENT_LABELS) if model == "imdb" else len(LABELS.get(model) or ())
        if probabilities.ndim != 2 or probabilities.shape[0] != items:
            raise BadResponse(f"probabilities of shape {probabilities.shape} for {items} items")
        if classes and probabilities.shape[1] != classes:
            raise BadResponse(f"{probabilities.shape[1]} classes, expected {classes}")
        if probabilities.dtype.kind != "f" or not (
            (probabilities >= 0).all() and (probabilities <= 1 + TOLERANCE).all()
        ):
            raise BadResponse(f"probabilities outside [0, 1]: {probabilities[:2]}")
        if (np.abs(probabilities.sum(axis=1) - 1.0) > TOLERANCE).any():
            raise BadResponse(f"probabilities do not sum to 1: {probabilities.sum(axis=1)[:4]}")
    elif model == "translator":
        texts = np.asarray(outputs.get("translation"))
        if texts.shape != (items,) or not all(isinstance(t, (bytes, str)) for t in texts):
            raise BadResponse(f"translation of shape {texts.shape} for {items} sentences")
    elif model == "cosine":
        values = np.asarray(outputs.get("forecast"))
        if values.shape != (items,) or values.dtype.kind != "f" or not np.isfinite(values).all():
            raise BadResponse(f"forecast {values[:4]} for {items} windows")
    else:
        raise ValueError(f"unknown model {model!r}")
