"""Realistic request payloads for the load tests, built once from a fixed seed.

What real traffic carries, so that parsing, tokenizing and transfer cost what they would in
production: movie reviews and newswires of real length (IMDB reviews average ~230 words,
Reuters newswires ~150), 32x32x3 and 28x28 uint8 images, 10-value windows of the cosine
series, short sentences for the translator. Generating them costs nothing during a run:
every pool is built once, and the JSON bodies are encoded once.

Typical usage::

    from loadtest import payloads

    texts = payloads.reviews(4)                      # 4 reviews of ~200+ words
    body = payloads.json_body("imdb", items=1)      # pre-encoded bytes for POST /imdb/sentiment
"""

from __future__ import annotations

import functools
import json
import random
from typing import Any

import numpy as np

SEED = 20240611
POOL_SIZE = 64  # distinct payloads per kind; requests pick from the pool at random
REVIEW_WORDS = 200  # minimum words per review / newswire
NEWSWIRE_WORDS = 150
TOP_K = {"reuters": 3, "cifar": 10, "mnist": 10}  # all classes for images: probabilities sum to 1
HORIZON = 5
BIG_TEXT_CHARS = 7_000_000  # the reliability runs' text-cap probe (issue 10)
# The endpoint each model is reached on (docs/contracts.md, "HTTP API").
PATHS = {
    "imdb": "/imdb/sentiment",
    "reuters": "/reuters/classify",
    "cifar": "/cifar/classify",
    "mnist": "/mnist/classify",
    "cosine": "/cosine/forecast",
    "translator": "/translate",
}

# fmt: off
_FILMS = ["this film", "the movie", "this picture", "the sequel", "the remake", "this thriller",
          "the new comedy", "this war drama", "the documentary", "this western"]
_PEOPLE = ["the lead actress", "the director", "the supporting cast", "the villain",
           "the young actor", "the screenwriter", "the composer", "the cinematographer"]
_GOOD = ["wonderful", "brilliant", "moving", "gripping", "beautifully shot", "clever",
         "touching", "hilarious", "superb", "unforgettable", "charming", "powerful"]
_BAD = ["dull", "boring", "predictable", "badly acted", "far too long", "pointless",
        "awful", "clumsy", "forgettable", "painful to watch", "silly", "lazy"]
_REVIEW_SENTENCES = [
    "I went to see {film} last weekend with a couple of friends and I have to say it was {adj}.",
    "{Person} gives a {adj} performance that carries most of the second half.",
    "The plot, about a family that loses everything during the war, is {adj} from the start.",
    "Honestly I expected much more after all the hype, but the story felt {adj} to me.",
    "The dialogue is {adj}, and some of the jokes land better than you would expect.",
    "{Person} clearly knows what they are doing, and every scene looks {adj}.",
    "There is a long sequence in the middle that is {adj}, and it goes on for twenty minutes.",
    "My wife thought it was {adj}, while I kept checking my watch.",
    "The ending is {adj}; I will not spoil it, but you will see it coming a mile away.",
    "If you liked the first one you will probably find this one {adj} as well.",
    "The music by {person} is {adj} and fits the mood of the small town perfectly.",
    "Compared with the book, the adaptation is {adj} in almost every respect.",
    "It is rare to see a {adj} character study like this on the big screen these days.",
    "Some of the special effects look {adj}, especially the storm at sea.",
    "I would give it four out of ten, mostly because the last act is {adj}.",
    "All in all, {film} is {adj}, and I would recommend it to anyone who loves cinema.",
]
_COMPANIES = ["Allied Corp", "Texaco Inc", "Union Carbide", "General Motors", "Chrysler Corp",
              "Amoco Corp", "Citicorp", "First Chicago", "Pacific Telesis", "Nortek Inc"]
_COMMODITIES = ["crude oil", "wheat", "coffee", "sugar", "copper", "gold", "cocoa", "soybeans"]
_COUNTRIES = ["Japan", "Brazil", "West Germany", "Canada", "Saudi Arabia", "Indonesia", "France"]
_NEWS_SENTENCES = [
    "{company} said it expects first quarter net profit of {n} mln dlrs, up from {m} mln dlrs a year ago.",
    "The company said revenues rose to {n} mln dlrs from {m} mln dlrs in the same period last year.",
    "{country} will cut its {commodity} exports by {n} pct next month, trade officials said.",
    "Prices of {commodity} rose sharply on the New York exchange after the report was released.",
    "Analysts said the move was expected and would have little effect on world {commodity} supplies.",
    "The central bank of {country} said money supply grew {n} pct in the year to February.",
    "{company} said its board approved a two for one stock split and raised the quarterly dividend.",
    "Shareholders of record on April {n} will receive the dividend, payable on May {m}.",
    "The agriculture department said stocks of {commodity} stood at {n} mln tonnes on March 1.",
    "Dealers said the dollar opened lower against the yen in quiet trading in Tokyo.",
    "{company} said it agreed to acquire a {n} pct stake in a unit of {company2} for {m} mln dlrs.",
    "The transaction is subject to approval by regulators and is expected to close in June.",
    "Officials from {country} and {country2} will meet in Geneva next week to discuss {commodity} tariffs.",
    "The government said the trade surplus narrowed to {n} billion dlrs in January from {m} billion.",
]
_SENTENCES = [
    "i like green apples .", "tom is here .", "we are very tired .", "she reads a book slowly .",
    "the cat sleeps on the chair .", "i do not understand you .", "where is the station ?",
    "he drinks coffee every morning .", "they bought a new car .", "my brother plays the piano .",
    "it is cold today .", "you eat the red apple quickly .", "we see the big house .",
    "the children are playing outside .", "can you help me ?", "i have two sisters .",
    "she opened the window .", "this book is very interesting .", "i want to go home .",
    "the dog drinks water .", "he writes a long letter .", "we need more time .",
    "the weather is nice .", "i lost my keys again .",
]
# fmt: on


def _fill(template: str, rng: random.Random, adjectives: list[str]) -> str:
    person = rng.choice(_PEOPLE)
    companies = rng.sample(_COMPANIES, 2)
    countries = rng.sample(_COUNTRIES, 2)
    return template.format(
        film=rng.choice(_FILMS),
        adj=rng.choice(adjectives),
        person=person,
        Person=person[0].upper() + person[1:],
        company=companies[0],
        company2=companies[1],
        country=countries[0],
        country2=countries[1],
        commodity=rng.choice(_COMMODITIES),
        n=rng.randint(2, 95),
        m=rng.randint(2, 95),
    )


def _document(rng: random.Random, sentences: list[str], adjectives: list[str], words: int) -> str:
    parts: list[str] = []
    count = 0
    order: list[str] = []
    while count < words:
        if not order:  # every template once before any repeats
            order = rng.sample(sentences, len(sentences))
        sentence = _fill(order.pop(), rng, adjectives)
        parts.append(sentence)
        count += len(sentence.split())
    return " ".join(parts)


@functools.cache
def _reviews() -> tuple[str, ...]:
    rng = random.Random(SEED)
    pool = []
    for i in range(POOL_SIZE):
        # Mostly one-sided reviews, as on IMDB, with IMDB's <br /> paragraph breaks.
        adjectives = _GOOD if i % 2 else _BAD
        text = _document(
            rng, _REVIEW_SENTENCES, adjectives + rng.sample(_GOOD + _BAD, 2), REVIEW_WORDS
        )
        middle = len(text) // 2
        cut = text.find(". ", middle) + 1 or middle
        pool.append(text[:cut] + " <br /><br />" + text[cut:])
    return tuple(pool)


@functools.cache
def _newswires() -> tuple[str, ...]:
    rng = random.Random(SEED + 1)
    return tuple(
        _document(rng, _NEWS_SENTENCES, [""], NEWSWIRE_WORDS) + " Reuter" for _ in range(POOL_SIZE)
    )


@functools.cache
def _images(height: int, width: int, channels: int) -> np.ndarray:
    """Smooth colour gradients plus noise: compress like photos, not like pure noise."""
    rng = np.random.default_rng(SEED + channels)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    images = []
    for _ in range(POOL_SIZE):
        base = rng.uniform(0, 255, channels)
        slope = rng.uniform(-4, 4, (2, channels))
        image = base + y[..., None] * slope[0] + x[..., None] * slope[1]
        image += rng.normal(0, 12, (height, width, channels))
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    stacked = np.stack(images)
    return stacked if channels > 1 else stacked[..., 0]


@functools.cache
def _windows() -> np.ndarray:
    """Windows of the served series, ``20 cos(2 pi t / 30)`` with noise, at random phases."""
    rng = np.random.default_rng(SEED + 2)
    starts = rng.integers(0, 30, POOL_SIZE)
    steps = starts[:, None] + np.arange(10)[None, :]
    return (20.0 * np.cos(2 * np.pi * steps / 30) + rng.normal(0, 2.0, steps.shape)).astype(
        np.float32
    )


def _pick(pool: Any, n: int, rng: random.Random | None) -> list[Any]:
    rng = rng or random
    return [pool[rng.randrange(len(pool))] for _ in range(n)]


def reviews(n: int = 1, rng: random.Random | None = None) -> list[str]:
    """``n`` movie reviews of at least ``REVIEW_WORDS`` words."""
    return _pick(_reviews(), n, rng)


def newswires(n: int = 1, rng: random.Random | None = None) -> list[str]:
    """``n`` Reuters-style newswires of at least ``NEWSWIRE_WORDS`` words."""
    return _pick(_newswires(), n, rng)


def cifar_images(n: int = 1, rng: random.Random | None = None) -> np.ndarray:
    """``[n, 32, 32, 3]`` uint8 images."""
    return np.stack(_pick(_images(32, 32, 3), n, rng))


def mnist_images(n: int = 1, rng: random.Random | None = None) -> np.ndarray:
    """``[n, 28, 28]`` uint8 images."""
    return np.stack(_pick(_images(28, 28, 1), n, rng))


def window(rng: random.Random | None = None) -> list[float]:
    """Ten consecutive values of the cosine series."""
    return [float(v) for v in _pick(_windows(), 1, rng)[0]]


def sentences(n: int = 1, rng: random.Random | None = None) -> list[str]:
    """``n`` short English sentences for the translator."""
    return _pick(_SENTENCES, n, rng)


def http_body(model: str, items: int = 1, rng: random.Random | None = None) -> dict[str, Any]:
    """The JSON body of ``PATHS[model]`` with ``items`` items (the window for cosine)."""
    if model == "imdb":
        return {"texts": reviews(items, rng)}
    if model == "reuters":
        return {"texts": newswires(items, rng), "top_k": TOP_K["reuters"]}
    if model == "cifar":
        return {"images": cifar_images(items, rng).tolist(), "top_k": TOP_K["cifar"]}
    if model == "mnist":
        return {"images": mnist_images(items, rng).tolist(), "top_k": TOP_K["mnist"]}
    if model == "cosine":
        return {"window": window(rng), "horizon": HORIZON}
    if model == "translator":
        return {"sentences": sentences(items, rng)}
    raise ValueError(f"unknown model {model!r}; known: {', '.join(PATHS)}")


@functools.cache
def json_bodies(model: str, items: int = 1) -> tuple[bytes, ...]:
    """``POOL_SIZE`` pre-encoded bodies for ``PATHS[model]``: no JSON encoding during a run."""
    rng = random.Random(SEED + items)
    return tuple(
        json.dumps(http_body(model, items, rng), separators=(",", ":")).encode()
        for _ in range(POOL_SIZE)
    )


def items_in(body: dict[str, Any]) -> int:
    """How many items a body of :func:`http_body` carries (what the response must match)."""
    for key in ("texts", "images", "sentences"):
        if key in body:
            return len(body[key])
    return 1


# ------------------------------------------------------------------ hostile requests


def big_text_requests(model: str) -> tuple[str, bytes, str, bytes, bytes]:
    """A 7,000,000-character text for ``model``: (TF Serving REST path, body, friendly path,
    body, serialized gRPC ``PredictRequest``)."""
    from tfserving_api._proto.tensorflow_serving.apis import predict_pb2
    from tfserving_api.contract import PREDICT_TEXT_SIGNATURE, TRANSLATE_SIGNATURE
    from tfserving_api.tensors import to_tensor_proto

    words = "a long and winding sentence about nothing in particular "
    text = (words * (BIG_TEXT_CHARS // len(words) + 1))[:BIG_TEXT_CHARS]
    signature, field_name, input_name = (
        (TRANSLATE_SIGNATURE, "sentences", "sentences")
        if model == "translator"
        else (PREDICT_TEXT_SIGNATURE, "texts", "text")
    )
    rest = json.dumps({"signature_name": signature, "instances": [text]}).encode()
    friendly = json.dumps({field_name: [text]}).encode()
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    request.inputs[input_name].CopyFrom(to_tensor_proto(np.array([text.encode()], dtype=object)))
    return (
        f"/v1/models/{model}:predict",
        rest,
        PATHS[model],
        friendly,
        request.SerializeToString(),
    )


def malformed_requests() -> list[tuple[str, set[str], bytes]]:
    """One malformed ``Predict`` message per kind, with the codes it may get."""
    from tfserving_api._proto.tensorflow.core.framework import tensor_pb2, types_pb2
    from tfserving_api._proto.tensorflow_serving.apis import predict_pb2
    from tfserving_api.contract import PREDICT_TEXT_SIGNATURE, TENSOR_SIGNATURE

    def request(
        model: str = "imdb",
        signature: str = PREDICT_TEXT_SIGNATURE,
        name: str = "text",
        tensor: Any = None,
    ) -> bytes:
        message = predict_pb2.PredictRequest()
        message.model_spec.name, message.model_spec.signature_name = model, signature
        if tensor is None:
            tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"a good film"])
            tensor.tensor_shape.dim.add(size=1)
        message.inputs[name].CopyFrom(tensor)
        return message.SerializeToString()

    huge = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"x"])
    huge.tensor_shape.dim.add(size=1_000_000_000)
    short = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32, tensor_content=b"\x01\x02\x03")
    short.tensor_shape.dim.add(size=1)
    short.tensor_shape.dim.add(size=4)
    floats = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])
    floats.tensor_shape.dim.add(size=1)
    valid = request()
    bad = {"INVALID_ARGUMENT"}
    return [
        ("undecodable bytes (issue 10)", bad, b"\x0a\xff\xff\xff\xff\x0f"),
        ("64 bytes of 0xff", bad, b"\xff" * 64),
        ("truncated request", bad, valid[: len(valid) // 2]),
        ("unknown model", {"NOT_FOUND"}, request(model="no_such_model")),
        ("unknown signature", {"NOT_FOUND", "INVALID_ARGUMENT"}, request(signature="nope")),
        ("unknown input name", bad, request(name="texts")),
        ("claimed shape [1e9], one value", bad | {"RESOURCE_EXHAUSTED"}, request(tensor=huge)),
        (
            "tensor_content of the wrong length",
            bad,
            request(signature=TENSOR_SIGNATURE, name="token_ids", tensor=short),
        ),
        ("float where text is expected", bad, request(tensor=floats)),
    ]
