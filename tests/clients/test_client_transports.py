"""Every method on all four clients (HTTP/gRPC x sync/async) against the fakes in
conftest.py: same names, same results, same errors."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import (
    LABELS,
    toy_forecast,
    toy_image_probabilities,
    toy_text_probabilities,
    toy_translate,
)

from clients import _api
from clients import grpc as grpc_client
from clients import http as http_client
from clients._rest import RestProtocol
from clients._tfs import TFServingProtocol
from clients.errors import InvalidInput, ModelNotFound
from clients.types import (
    Forecast,
    ImageClassification,
    LabelScore,
    ModelInfo,
    ModelRef,
    ModelStatus,
    SentimentResult,
    SignatureInfo,
    TensorSpec,
    TopicPrediction,
    Translation,
    VersionStatus,
)

TRANSPORTS = ["http", "http-async", "grpc", "grpc-async"]
PUBLIC = [
    "classify_topic", "sentiment", "classify_image", "forecast", "translate",
    "predict", "metadata", "status", "reload_config", "health", "ready",
]  # fmt: skip


@pytest.fixture(params=TRANSPORTS)
def call(request, fake_tfs, fake_http) -> Callable[..., Any]:
    """`call(method, *args, **kwargs)` on a fresh client of the parametrized kind."""
    _, target = fake_tfs
    kind = request.param

    def make() -> Any:
        if kind == "http":
            return http_client.Client(transport=fake_http, retry=1)
        if kind == "http-async":
            return http_client.AsyncClient(transport=fake_http, retry=1)
        if kind == "grpc":
            return grpc_client.Client(target, retry=1)
        return grpc_client.AsyncClient(target, retry=1)

    def invoke(method: str, *args: Any, **kwargs: Any) -> Any:
        client = make()
        if not kind.endswith("async"):
            with client:
                return getattr(client, method)(*args, **kwargs)

        async def once() -> Any:
            async with client:
                return await getattr(client, method)(*args, **kwargs)

        return asyncio.run(once())

    return invoke


def _scores(probabilities: np.ndarray, labels: list[str], k: int) -> tuple[LabelScore, ...]:
    order = np.argsort(-probabilities.astype(np.float64), kind="stable")[:k]
    return tuple(LabelScore(labels[i], int(i), float(probabilities[i])) for i in order)


@pytest.mark.parametrize(
    "pair",
    [
        (http_client.Client, grpc_client.Client),
        (http_client.AsyncClient, grpc_client.AsyncClient),
        (http_client.Client, http_client.AsyncClient),
    ],
    ids=["sync", "async", "http"],
)
def test_same_public_methods(pair) -> None:
    a, b = pair
    for name in PUBLIC:
        method_a, method_b = getattr(a, name), getattr(b, name)
        assert inspect.signature(method_a) == inspect.signature(method_b), name
        assert method_a.__doc__ == method_b.__doc__ and method_a.__doc__, name


def test_the_method_set_is_declared_once_and_both_surfaces_derive_from_it() -> None:
    assert list(_api.OPERATIONS) == PUBLIC
    for name in PUBLIC:
        sync, asynchronous = getattr(_api.SyncAPI, name), getattr(_api.AsyncAPI, name)
        assert not inspect.iscoroutinefunction(sync), name
        assert inspect.iscoroutinefunction(asynchronous), name
        assert inspect.signature(sync) == inspect.signature(asynchronous), name
        assert sync.__doc__ == asynchronous.__doc__, name
        assert list(inspect.signature(sync).parameters)[-1] == "timeout", name


@pytest.mark.parametrize("protocol", [RestProtocol, TFServingProtocol])
def test_each_protocol_takes_every_operation_s_arguments_in_order(protocol) -> None:
    for name, declaration in _api.OPERATIONS.items():
        declared = [p for p in inspect.signature(declaration).parameters if p != "timeout"]
        assert list(inspect.signature(getattr(protocol, name)).parameters) == declared, name


class _Recording:
    """A protocol that records the call, and a `_run` that records the timeout."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return lambda *args: (name, args)


def test_derived_methods_forward_arguments_positionally_and_the_timeout_to_run() -> None:
    class Sync(_api.SyncAPI):
        _ops = _Recording()

        def _run(self, op, timeout):
            return op, timeout

    class Async(_api.AsyncAPI):
        _ops = _Recording()

        async def _run(self, op, timeout):
            return op, timeout

    expected = (("classify_image", ("x", "mnist", 1, None, "stable")), 2.5)
    assert Sync().classify_image("x", model="mnist", label="stable", timeout=2.5) == expected
    got = asyncio.run(Async().classify_image("x", "mnist", label="stable", timeout=2.5))
    assert got == expected
    assert Sync().health() == (("health", ()), None)
    with pytest.raises(TypeError, match="texts"):
        Sync().sentiment()


def test_classify_topic(call) -> None:
    texts = ["oil prices rose", "wheat"]
    expected = [
        TopicPrediction(_scores(p, LABELS["reuters"], 2), ModelRef("reuters", 1))
        for p in toy_text_probabilities(texts, 4)
    ]
    assert call("classify_topic", texts, top_k=2) == expected


def test_sentiment(call) -> None:
    texts = ["a fine film", "dull"]
    expected = []
    for p in toy_text_probabilities(texts, 2):
        i = int(p.argmax())
        label = ["negative", "positive"][i]
        expected.append(SentimentResult(label, float(p[i]), float(p[1]), ModelRef("imdb", 1)))
    assert call("sentiment", texts) == expected


@pytest.mark.parametrize(
    ("model", "images"),
    [
        ("cifar", np.arange(2 * 32 * 32 * 3, dtype=np.int64).reshape(2, 32, 32, 3) % 256),
        ("cifar", np.linspace(0, 1, 32 * 32 * 3, dtype=np.float32).reshape(1, 32, 32, 3)),
        ("mnist", [np.full((28, 28), 200, np.uint8), np.zeros((28, 28), np.uint8)]),
    ],
    ids=["cifar-int", "cifar-float", "mnist-list-no-channel"],
)
def test_classify_image(call, model: str, images: Any) -> None:
    batch = np.asarray(images)
    scaled = batch / 255.0 if batch.dtype.kind in "iu" else batch
    expected = []
    for p in toy_image_probabilities(scaled):
        top = _scores(p, LABELS[model], 2)
        expected.append(
            ImageClassification(
                top[0].label, top[0].index, top[0].probability, top, ModelRef(model, 1)
            )
        )
    assert call("classify_image", images, model=model, top_k=2) == expected


def test_forecast_is_recursive(call) -> None:
    window = np.linspace(-1, 1, 10, dtype=np.float32)
    values, history = [], window.copy()
    for _ in range(3):
        values.append(float(toy_forecast(history[None])[0]))
        history = np.append(history[1:], np.float32(values[-1]))
    assert call("forecast", window.tolist(), horizon=3) == Forecast(
        tuple(values), ModelRef("cosine", 1)
    )


def test_translate(call) -> None:
    sentences = ["the cat sleeps", "héllo wörld"]
    expected = [Translation(s, toy_translate(s), ModelRef("translator", 1)) for s in sentences]
    assert call("translate", sentences) == expected


def test_predict_returns_signature_dtypes(call) -> None:
    window = np.random.default_rng(0).normal(size=(2, 10)).astype(np.float32)
    outputs = call("predict", "cosine", {"window": window}, signature="forecast")
    assert list(outputs) == ["forecast"]
    assert outputs["forecast"].dtype == np.float32
    np.testing.assert_array_equal(outputs["forecast"], toy_forecast(window))


def test_metadata(call) -> None:
    spec_in = {"window": TensorSpec("float32", (None, 10))}
    spec_out = {"forecast": TensorSpec("float32", (None,))}
    method = "tensorflow/serving/predict"
    expected = ModelInfo(
        name="cosine",
        version=1,
        signatures={
            name: SignatureInfo(name, spec_in, spec_out, method)
            for name in ("serving_default", "forecast")
        },
        labels=None,
    )
    assert call("metadata", "cosine") == expected


def test_status(call) -> None:
    status = call("status", "cosine")
    assert status == ModelStatus("cosine", (VersionStatus(1, "AVAILABLE", "OK", ""),))
    assert status.available


def test_health_and_ready(call) -> None:
    assert call("health") is True
    assert call("ready") is True


@pytest.mark.parametrize(
    ("kwargs", "answered"),
    [({}, 1), ({"version": 3}, 3), ({"label": "stable"}, 1), ({"label": "canary"}, 2)],
    ids=["latest", "version", "stable", "canary"],
)
def test_results_name_the_version_that_answered(call, kwargs, answered) -> None:
    [sentiment] = call("sentiment", ["a fine film"], **kwargs)
    [image] = call("classify_image", np.zeros((1, 28, 28), np.uint8), model="mnist", **kwargs)
    forecast = call("forecast", [0.0] * 10, horizon=2, **kwargs)
    assert sentiment.model == ModelRef("imdb", answered)
    assert image.model == ModelRef("mnist", answered)
    assert forecast.model == ModelRef("cosine", answered)


def test_unknown_label_is_model_not_found(call) -> None:
    with pytest.raises(ModelNotFound, match="label"):
        call("translate", ["the cat"], label="nightly")


def test_unknown_model_is_model_not_found(call) -> None:
    with pytest.raises(ModelNotFound):
        call("predict", "no-such-model", {"x": np.zeros((1,), np.float32)})


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "message"),
    [
        ("sentiment", ("just one string",), {}, "not a single str"),
        ("sentiment", ([],), {}, "texts is empty"),
        ("classify_topic", (["x", 3],), {}, r"texts\[1\] must be a str"),
        ("classify_topic", (["x"],), {"top_k": 0}, "top_k must be a positive integer"),
        ("classify_image", (np.zeros((1, 28, 28)),), {"model": "imagenet"}, "model must be one of"),
        ("classify_image", (np.zeros((28, 28)),), {"model": "mnist"}, r"\[N, H, W\]"),
        ("classify_image", (np.full((1, 28, 28), 300),), {"model": "mnist"}, "0..255"),
        ("forecast", ([0.0, float("nan")],), {}, "NaN"),
        ("forecast", ([[0.0] * 10],), {}, "1-D"),
        ("forecast", ([0.0] * 10,), {"horizon": 0}, "horizon"),
        ("translate", ("hello",), {}, "sentences must be a list"),
        ("predict", ("cosine", {}), {}, "inputs is empty"),
        # The shared codec's TensorError reaches the caller as the client's InvalidInput.
        ("predict", ("cosine", {"x": np.zeros(2, "datetime64[s]")}), {}, "unsupported dtype"),
        ("metadata", ("cosine",), {"version": -1}, "version"),
        ("sentiment", (["x"],), {"version": 1, "label": "stable"}, "not both"),
    ],
)
def test_bad_input_fails_before_sending(call, fake_tfs, method, args, kwargs, message) -> None:
    servicer, _ = fake_tfs
    with pytest.raises(InvalidInput, match=message):
        call(method, *args, **kwargs)
    assert servicer.calls == []
