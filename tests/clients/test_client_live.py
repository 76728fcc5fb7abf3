"""``clients.http`` and ``clients.grpc`` against a real ``bentoml serve``: every typed method
returns what the exported SavedModels compute in this process, on both transports, sync
and asyncio; every server error arrives as the right exception class."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from clients import errors
from clients import grpc as grpc_client
from clients import http as http_client
from loadtest.procs import free_port

pytest.importorskip("tensorflow")  # the `reference` answers come from the SavedModels

pytestmark = pytest.mark.integration

TEXTS = ["the oil prices rose sharply", "a wonderful film <br /> with brilliant actors", "bad"]
SENTENCES = ["i like green apples .", "tom is here ."]
WINDOW = [20.0, 16.2, 6.2, -6.2, -16.2, -20.0, -16.2, -6.2, 6.2, 16.2]
TRANSPORTS = ("http", "grpc")


def make_client(server, transport: str, asynchronous: bool = False, **options):
    module = http_client if transport == "http" else grpc_client
    cls = module.AsyncClient if asynchronous else module.Client
    target = server.url if transport == "http" else f"127.0.0.1:{server.grpc_port}"
    return cls(target, **{"timeout": 60, **options})


@pytest.fixture(scope="module", params=TRANSPORTS)
def client(request, server):
    with make_client(server, request.param) as client:
        yield client


def labels(server, model: str) -> list[str]:
    return json.loads((server.store.export_path(model) / "metadata.json").read_text())["labels"]


def test_classify_topic(server, client, reference) -> None:
    results = client.classify_topic(TEXTS, top_k=3)
    expected = reference("reuters", "predict_text", np.array(TEXTS, dtype=object))["probabilities"]
    names = labels(server, "reuters")
    for result, probabilities in zip(results, expected, strict=True):
        order = np.argsort(-probabilities, kind="stable")[:3]
        assert [t.index for t in result.topics] == order.tolist()
        assert [t.label for t in result.topics] == [names[i] for i in order]
        np.testing.assert_allclose(
            [t.probability for t in result.topics], probabilities[order], atol=1e-5
        )
        assert (result.model.name, result.model.version) == ("reuters", 1)


def test_sentiment(client, reference) -> None:
    results = client.sentiment(TEXTS)
    expected = reference("imdb", "predict_text", np.array(TEXTS, dtype=object))
    for result, probabilities, label in zip(
        results, expected["probabilities"], expected["label"], strict=True
    ):
        assert result.label == ("negative", "positive")[int(label)]
        assert result.positive_probability == pytest.approx(float(probabilities[1]), abs=1e-5)
        assert result.probability == pytest.approx(float(probabilities[int(label)]), abs=1e-5)


@pytest.mark.parametrize(("model", "shape"), [("mnist", (28, 28)), ("cifar", (32, 32, 3))])
@pytest.mark.parametrize("scale", ["uint8", "float"])
def test_classify_image(server, client, reference, model, shape, scale) -> None:
    images = np.random.default_rng(3).integers(0, 256, size=(2, *shape), dtype=np.uint8)
    batch = images if len(shape) == 3 else images[..., None]
    if scale == "uint8":
        results = client.classify_image(images, model=model, top_k=2)
        expected = reference(model, "predict_images", batch)["probabilities"]
    else:
        pixels = (batch / 255.0).astype(np.float32)
        results = client.classify_image(pixels, model=model, top_k=2)
        expected = reference(model, "serving_default", pixels)["probabilities"]
    names = labels(server, model)
    for result, probabilities in zip(results, expected, strict=True):
        assert result.index == int(np.argmax(probabilities)) and result.label == names[result.index]
        assert result.probability == pytest.approx(float(probabilities.max()), abs=1e-5)
        assert [t.index for t in result.top] == np.argsort(-probabilities, kind="stable")[
            :2
        ].tolist()


def test_forecast_is_recursive(client, reference) -> None:
    forecast = client.forecast(WINDOW, horizon=3)
    window = np.array([WINDOW], np.float32)
    expected = []
    for _ in range(3):
        value = float(reference("cosine", "forecast", window)["forecast"][0])
        expected.append(value)
        window = np.concatenate([window[:, 1:], [[value]]], axis=1).astype(np.float32)
    assert forecast.values == pytest.approx(expected, abs=1e-4)
    assert forecast.model.name == "cosine"


def test_translate(client, reference) -> None:
    results = client.translate(SENTENCES)
    expected = reference("translator", "translate", np.array(SENTENCES, dtype=object))[
        "translation"
    ]
    assert [r.text for r in results] == [t.decode() for t in expected]
    assert [r.source for r in results] == SENTENCES


def test_generic_predict_keeps_dtypes(client, reference) -> None:
    ids = np.random.default_rng(5).integers(0, 20, size=(2, 500)).astype(np.int32)
    outputs = client.predict("imdb", {"token_ids": ids})
    expected = reference("imdb", "serving_default", ids)
    assert (
        outputs["label"].dtype == np.int64
        and outputs["label"].tolist() == expected["label"].tolist()
    )
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], atol=1e-5)

    window = np.array([WINDOW], np.float32)
    forecast = client.predict("cosine", {"window": window}, signature="forecast", version=1)
    np.testing.assert_allclose(
        forecast["forecast"], reference("cosine", "forecast", window)["forecast"], atol=1e-4
    )


def test_metadata_status_and_probes(server, client) -> None:
    info = client.metadata("cifar")
    assert (info.name, info.version) == ("cifar", 1)
    assert set(info.signatures) == {"serving_default", "predict_images"}
    images = info.signatures["predict_images"].inputs["images"]
    assert (images.dtype, images.shape) == ("uint8", (None, 32, 32, 3))
    assert list(info.labels) == labels(server, "cifar")
    assert client.metadata("cosine").labels in (None, ())
    status = client.status("imdb")
    assert status.available and [v.version for v in status.versions] == [1]
    assert client.health() and client.ready()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_async_clients_answer_like_the_sync_ones(server, transport) -> None:
    async def run():
        async with make_client(server, transport, asynchronous=True) as client:
            return await asyncio.gather(
                client.sentiment(TEXTS),
                client.forecast(WINDOW, horizon=2),
                client.translate(SENTENCES),
                client.ready(),
            )

    sentiments, forecast, translations, ready = asyncio.run(run())
    with make_client(server, transport) as client:
        assert [s.label for s in sentiments] == [s.label for s in client.sentiment(TEXTS)]
        assert forecast.values == pytest.approx(client.forecast(WINDOW, horizon=2).values, abs=1e-5)
        assert [t.text for t in translations] == [t.text for t in client.translate(SENTENCES)]
    assert ready


def _huge_texts(client) -> None:
    client.predict("imdb", {"text": ["x" * 4_400_000] * 2}, signature="predict_text")


# One row per error: (id, call, exception, server-side status per transport or None when
# the client itself refuses the request).
ERRORS = [
    ("wrong shape", lambda c: c.predict("imdb", {"token_ids": np.ones((1, 3), np.int32)}), errors.InvalidInput, {"http": 400, "grpc": "INVALID_ARGUMENT"}),
    ("floats for ids", lambda c: c.predict("imdb", {"token_ids": np.ones((1, 500), np.float32)}), errors.InvalidInput, {"http": 400, "grpc": "INVALID_ARGUMENT"}),
    ("missing input", lambda c: c.predict("imdb", {"tokens": np.ones((1, 500), np.int32)}), errors.InvalidInput, {"http": 400, "grpc": "INVALID_ARGUMENT"}),
    ("nan", lambda c: c.predict("cosine", {"window": np.full((1, 10), np.nan, np.float32)}), errors.InvalidInput, {"http": None, "grpc": "INVALID_ARGUMENT"}),
    ("unknown model", lambda c: c.predict("nope", {"x": np.ones((1, 1), np.float32)}), errors.ModelNotFound, {"http": 404, "grpc": "NOT_FOUND"}),
    ("unknown version", lambda c: c.predict("cosine", {"window": np.zeros((1, 10), np.float32)}, version=99), errors.ModelNotFound, {"http": 404, "grpc": "NOT_FOUND"}),
    ("unknown signature", lambda c: c.predict("cosine", {"window": np.zeros((1, 10), np.float32)}, signature="nope"), errors.ModelNotFound, {"http": 404, "grpc": "NOT_FOUND"}),
    ("batch over the cap", lambda c: c.predict("imdb", {"token_ids": np.ones((65, 500), np.int32)}), errors.ResourceExhausted, {"http": 413, "grpc": "RESOURCE_EXHAUSTED"}),
    ("message over the cap", _huge_texts, errors.ResourceExhausted, {"http": 413, "grpc": "RESOURCE_EXHAUSTED"}),
    ("deadline", lambda c: c.translate(SENTENCES * 32, timeout=0.001), errors.DeadlineExceeded, {"http": None, "grpc": "DEADLINE_EXCEEDED"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "call", "error", "status"), ERRORS, ids=[row[0] for row in ERRORS]
)
def test_server_errors_map_to_exception_classes(client, case, call, error, status) -> None:
    transport = "http" if isinstance(client, http_client.Client) else "grpc"
    with pytest.raises(error) as caught:
        call(client)
    origin = caught.value.http_status if transport == "http" else caught.value.grpc_code
    assert origin == status[transport], caught.value
    assert caught.value.message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unreachable_server_is_unavailable(server, transport) -> None:
    closed = {"http": f"http://127.0.0.1:{free_port()}", "grpc": f"127.0.0.1:{free_port()}"}[
        transport
    ]
    module = http_client if transport == "http" else grpc_client
    with module.Client(closed, timeout=5, retry=1) as client:
        with pytest.raises(errors.Unavailable):
            client.sentiment(["fine"])
        assert client.health() is False
