"""Response checks and payloads of the load tests: a 200 with a wrong body must fail."""

from __future__ import annotations

import json

import pytest

from clients.types import LabelScore, ModelRef, SentimentResult, TopicPrediction
from loadtest import checks, payloads
from training.data import CIFAR10_LABELS, REUTERS_LABELS


def _images_body(probabilities: list[float], labels: list[str]) -> dict:
    top = sorted(
        ({"label": labels[i], "index": i, "probability": p} for i, p in enumerate(probabilities)),
        key=lambda item: -item["probability"],
    )
    return {"results": [{**top[0], "top": top}]}


UNIFORM = [0.1] * 10
GOOD = {
    "imdb": ({"results": [{"label": "positive", "probability": 0.8, "positive_probability": 0.8}]}, 1),
    "reuters": (
        {"results": [{"topics": [
            {"topic": "earn", "index": 3, "probability": 0.5},
            {"topic": "acq", "index": 4, "probability": 0.3},
            {"topic": "grain", "index": 1, "probability": 0.1},
        ]}]},
        1,
    ),
    "cifar": (_images_body(UNIFORM, CIFAR10_LABELS), 1),
    "mnist": (_images_body(UNIFORM, [str(d) for d in range(10)]), 1),
    "cosine": ({"forecast": [1.0, 2.0, 3.0, 4.0, 5.0]}, 1),
    "translator": ({"translations": ["ich mag äpfel", ""]}, 2),
}  # fmt: skip


@pytest.mark.parametrize("model", sorted(GOOD))
def test_a_valid_body_passes(model):
    body, items = GOOD[model]
    checks.check(model, checks.from_json(model, body), items)


BAD = [  # (model, body, items, message fragment)
    ("imdb", {"results": []}, 1, "0 results for 1 items"),
    ("imdb", {"results": [{"label": "great", "probability": 0.8, "positive_probability": 0.8}]}, 1, "not in"),
    ("imdb", {"results": [{"label": "negative", "probability": 0.8, "positive_probability": 0.8}]}, 1, "negative with"),
    ("imdb", {"results": [{"label": "positive", "probability": 1.7, "positive_probability": 1.7}]}, 1, "not a probability"),
    ("imdb", {"answers": []}, 1, "malformed body"),
    ("reuters", {"results": [{"topics": [{"topic": "earn", "index": 3, "probability": 0.9}]}]}, 1, "asked for top_k=3"),
    ("reuters", {"results": [{"topics": [
        {"topic": "earn", "index": 3, "probability": 0.5},
        {"topic": "earn", "index": 4, "probability": 0.3},
        {"topic": "grain", "index": 1, "probability": 0.1},
    ]}]}, 1, "is not class 4"),
    ("reuters", {"results": [{"topics": [
        {"topic": "earn", "index": 3, "probability": 0.1},
        {"topic": "acq", "index": 4, "probability": 0.3},
        {"topic": "grain", "index": 1, "probability": 0.1},
    ]}]}, 1, "not sorted"),
    ("reuters", {"results": [{"topics": [
        {"topic": "earn", "index": 3, "probability": 0.6},
        {"topic": "acq", "index": 4, "probability": 0.5},
        {"topic": "grain", "index": 1, "probability": 0.4},
    ]}]}, 1, "sum to 1.5"),
    ("reuters", {"results": [{"topics": [
        {"topic": "x", "index": 99, "probability": 0.5},
        {"topic": "acq", "index": 4, "probability": 0.3},
        {"topic": "grain", "index": 1, "probability": 0.1},
    ]}]}, 1, "out of range"),
    ("cifar", _images_body([0.05] * 10, CIFAR10_LABELS), 1, "sum to 0.5"),
    ("cifar", {"results": [{**_images_body(UNIFORM, CIFAR10_LABELS)["results"][0], "label": "cat"}]}, 1, "not the first"),
    ("cosine", {"forecast": [1.0, 2.0]}, 1, "horizon=5"),
    ("cosine", {"forecast": [1.0, 2.0, 3.0, 4.0, float("nan")]}, 1, "non-finite"),
    ("translator", {"translations": ["eins"]}, 2, "1 results for 2 items"),
    ("translator", {"translations": ["eins", 2]}, 2, "not all strings"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "body", "items", "message"), BAD, ids=[f"{b[0]}-{b[3]}" for b in BAD]
)
def test_a_wrong_body_is_a_bad_response(model, body, items, message):
    with pytest.raises(checks.BadResponse, match=message):
        checks.check(model, checks.from_json(model, body), items)


def test_results_of_the_typed_clients_are_checked_too():
    ref = ModelRef("imdb", 1)
    checks.check(
        "imdb", checks.from_results("imdb", [SentimentResult("negative", 0.9, 0.1, ref)]), 1
    )
    with pytest.raises(checks.BadResponse, match="negative with"):
        checks.check(
            "imdb", checks.from_results("imdb", [SentimentResult("negative", 0.9, 0.9, ref)]), 1
        )
    scores = tuple(LabelScore(REUTERS_LABELS[i], i, p) for i, p in ((3, 0.5), (4, 0.2), (1, 0.1)))
    prediction = TopicPrediction(scores, ModelRef("reuters", 1))
    checks.check("reuters", checks.from_results("reuters", [prediction]), 1)
    # Label names the server reported take precedence over the project's defaults.
    with pytest.raises(checks.BadResponse, match="is not class 3"):
        checks.check("reuters", checks.from_results("reuters", [prediction]), 1, labels=["x"] * 46)


def test_payloads_have_realistic_sizes():
    assert all(len(text.split()) >= payloads.REVIEW_WORDS for text in payloads.reviews(16))
    assert all(len(text.split()) >= payloads.NEWSWIRE_WORDS for text in payloads.newswires(16))
    assert payloads.cifar_images(3).shape == (3, 32, 32, 3)
    assert payloads.mnist_images(2).shape == (2, 28, 28)
    assert len(payloads.window()) == 10
    for model, path in payloads.PATHS.items():
        body = json.loads(payloads.json_bodies(model, 2)[0])
        assert payloads.items_in(body) == (1 if model == "cosine" else 2), path
