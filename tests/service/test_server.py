"""Every endpoint of a real ``bentoml serve``, compared with in-process SavedModel outputs."""

from __future__ import annotations

import base64
import io
import json
import re

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.integration

TEXTS = ["the oil prices rose sharply", "a wonderful film <br /> with brilliant actors", "bad"]
SENTENCES = ["i like green apples .", "tom is here ."]
WINDOW = [20.0, 16.2, 6.2, -6.2, -16.2, -20.0, -16.2, -6.2, 6.2, 16.2]


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def metadata(server, model: str) -> dict:
    return json.loads((server.store.export_path(model) / "metadata.json").read_text())


def post(http, path: str, body: dict) -> dict:
    response = http.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_probes_docs_and_metrics(http):
    assert http.get("/readyz").status_code == 200
    assert http.get("/livez").status_code == 200
    spec = http.get("/docs.json").json()
    for path in (
        "/reuters/classify",
        "/imdb/sentiment",
        "/cifar/classify",
        "/mnist/classify",
        "/cosine/forecast",
        "/translate",
    ):
        assert path in spec["paths"], path
        assert (
            "example"
            in spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        )
    assert "swagger" in http.get("/docs").text.lower()


def test_reuters_topics_match_the_savedmodel(server, http, reference):
    body = post(http, "/reuters/classify", {"texts": TEXTS, "top_k": 3})
    expected = reference("reuters", "predict_text", np.array(TEXTS, dtype=object))["probabilities"]
    labels = metadata(server, "reuters")["labels"]
    assert body["model"]["name"] == "reuters" and body["model"]["version"] == 1
    for result, probabilities in zip(body["results"], expected, strict=True):
        assert len(result["topics"]) == 3
        best = result["topics"][0]
        assert best["index"] == int(np.argmax(probabilities))
        assert best["topic"] == labels[best["index"]]
        got = [t["probability"] for t in result["topics"]]
        assert np.allclose(got, np.sort(probabilities)[::-1][:3], atol=1e-5)


def test_imdb_sentiment_matches_the_savedmodel(http, reference):
    body = post(http, "/imdb/sentiment", {"texts": TEXTS})
    expected = reference("imdb", "predict_text", np.array(TEXTS, dtype=object))["probabilities"]
    for result, (negative, positive) in zip(body["results"], expected, strict=True):
        assert result["label"] == ("positive" if positive >= negative else "negative")
        assert result["positive_probability"] == pytest.approx(positive, abs=1e-5)
        assert result["probability"] == pytest.approx(max(positive, negative), abs=1e-5)


@pytest.mark.parametrize("model, shape", [("mnist", (28, 28)), ("cifar", (32, 32, 3))])
def test_images_match_the_savedmodel(server, http, reference, model, shape):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, *shape), dtype=np.uint8)
    body = post(http, f"/{model}/classify", {"images": images.tolist(), "top_k": 2})
    batch = images if len(shape) == 3 else images[..., None]
    expected = reference(model, "predict_images", batch)["probabilities"]
    labels = metadata(server, model)["labels"]
    for result, probabilities in zip(body["results"], expected, strict=True):
        assert result["index"] == int(np.argmax(probabilities))
        assert result["label"] == labels[result["index"]]
        assert result["probability"] == pytest.approx(float(probabilities.max()), abs=1e-5)
        assert [t["index"] for t in result["top"]] == list(np.argsort(-probabilities)[:2])

    # The same first image as floats in [0, 1], as a PNG upload and as base64 agree.
    floats = (images[0] / 255.0).tolist()
    buffer = io.BytesIO()
    Image.fromarray(images[0]).save(buffer, format="PNG")
    as_floats = post(http, f"/{model}/classify", {"images": [floats]})["results"][0]
    as_b64 = post(
        http,
        f"/{model}/classify",
        {"images": [{"b64": base64.b64encode(buffer.getvalue()).decode()}]},
    )
    upload = http.post(
        f"/{model}/classify",
        files=[("images", ("a.png", buffer.getvalue(), "image/png"))],
        data={"top_k": "2"},
    )
    assert upload.status_code == 200, upload.text
    for result in (as_floats, as_b64["results"][0], upload.json()["results"][0]):
        assert result["index"] == body["results"][0]["index"]
        assert result["probability"] == pytest.approx(body["results"][0]["probability"], abs=1e-5)


def test_uploaded_images_of_any_size_are_resized(http):
    buffer = io.BytesIO()
    Image.new("RGB", (97, 61), (10, 200, 30)).save(buffer, format="JPEG")
    response = http.post(
        "/mnist/classify", files=[("images", ("a.jpg", buffer.getvalue(), "image/jpeg"))] * 2
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 2


def test_cosine_forecast_is_recursive(http, reference):
    body = post(http, "/cosine/forecast", {"window": WINDOW, "horizon": 3})
    window = np.array([WINDOW], np.float32)
    expected = []
    for _ in range(3):
        value = float(reference("cosine", "forecast", window)["forecast"][0])
        expected.append(value)
        window = np.concatenate([window[:, 1:], [[value]]], axis=1).astype(np.float32)
    assert body["forecast"] == pytest.approx(expected, abs=1e-4)


def test_translate_matches_the_savedmodel(http, reference):
    body = post(http, "/translate", {"sentences": SENTENCES})
    expected = reference("translator", "translate", np.array(SENTENCES, dtype=object))[
        "translation"
    ]
    assert body["translations"] == [t.decode() for t in expected]
    assert body["model"]["name"] == "translator"


def test_tfserving_status_and_metadata(server, http):
    for path in ("/v1/models/imdb", "/v1/models/imdb/versions/1"):
        status = http.get(path).json()["model_version_status"]
        assert status == [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    meta = http.get("/v1/models/cifar/versions/1/metadata").json()
    signatures = meta["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "predict_images"}
    pixels = signatures["serving_default"]["inputs"]["pixels"]
    assert pixels["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in pixels["tensor_shape"]["dim"]] == ["-1", "32", "32", "3"]
    assert http.get("/v1/models/translator/metadata").json()["model_spec"]["version"] == "1"


def test_tfserving_row_and_columnar_predict(http, reference):
    ids = np.random.default_rng(1).integers(0, 9999, size=(3, 500), dtype=np.int32)
    expected = reference("imdb", "serving_default", ids)
    rows = post(http, "/v1/models/imdb:predict", {"instances": ids.tolist()})["predictions"]
    columns = post(
        http, "/v1/models/imdb/versions/1:predict", {"inputs": {"token_ids": ids.tolist()}}
    )["outputs"]
    assert [r["label"] for r in rows] == expected["label"].tolist() == columns["label"]
    assert np.allclose([r["probabilities"] for r in rows], expected["probabilities"], atol=1e-5)
    assert np.allclose(columns["probabilities"], expected["probabilities"], atol=1e-5)

    text = post(
        http,
        "/v1/models/reuters:predict",
        {
            "signature_name": "predict_text",
            "instances": [TEXTS[0], {"b64": base64.b64encode(TEXTS[1].encode()).decode()}],
        },
    )
    expected_text = reference("reuters", "predict_text", np.array(TEXTS[:2], dtype=object))
    assert np.allclose(
        [r["probabilities"] for r in text["predictions"]], expected_text["probabilities"], atol=1e-5
    )

    window = np.array([WINDOW], np.float32)
    forecast = post(
        http, "/v1/models/cosine:predict", {"signature_name": "forecast", "inputs": window.tolist()}
    )
    assert forecast["outputs"] == pytest.approx(
        reference("cosine", "forecast", window)["forecast"].tolist(), abs=1e-4
    )

    translation = post(
        http,
        "/v1/models/translator:predict",
        {"signature_name": "translate", "instances": SENTENCES},
    )
    expected_translation = reference("translator", "translate", np.array(SENTENCES, dtype=object))[
        "translation"
    ]
    assert translation["predictions"] == [t.decode() for t in expected_translation]


def test_metrics_expose_per_model_series(http):
    post(http, "/imdb/sentiment", {"texts": ["fine"]})
    http.post("/imdb/sentiment", json={"texts": []})
    text = http.get("/metrics").text
    for series in (
        'keras_serving_requests_total{code="200",door="rest",model="imdb"}',
        'keras_serving_errors_total{door="rest",model="imdb",reason="InvalidInput"}',
        'keras_serving_batch_size_bucket{le="1.0",model="imdb",signature="predict_text"}',
        'keras_serving_queue_wait_seconds_count{model="imdb",signature="predict_text"}',
        'keras_serving_execution_seconds_count{model="imdb",signature="predict_text"}',
        'keras_serving_inflight_requests{model="imdb"}',
        "bentoml_service_request_total",
    ):
        assert series in text, series
    # The autoscaling gauges (deploy/k8s): every live worker counted once, nothing in flight.
    from service.cpus import usable_cpus

    assert re.search(r"^keras_serving_workers (\S+)$", text, re.M)[1] == f"{usable_cpus().count}.0"
    assert re.search(r'^keras_serving_inflight_requests\{model="imdb"\} (\S+)$', text, re.M)[1] in (
        "0.0",
        "1.0",  # a request of another test still being answered
    )
    failures = re.findall(
        r'keras_serving_requests_total\{code="500",door="(rest|tfserving)"[^}]*\} (\S+)', text
    )
    assert all(float(count) == 0 for _, count in failures), failures


def test_one_worker_per_core_each_with_every_model(server, http):
    import psutil

    from service.cpus import usable_cpus

    workers = [
        child
        for child in psutil.Process(server.pid).children(recursive=True)
        if "_bentoml_impl.worker.service" in " ".join(child.cmdline())
    ]
    assert len(workers) == usable_cpus().count  # SERVICE_WORKERS=auto: the CPU quota
    # Each worker loaded every model in-process: no runner processes, no internal hop.
    log = server.log.read_text()
    for model in ("reuters", "imdb", "cifar", "cosine", "mnist", "translator"):
        assert log.count(f"{model} v") >= len(workers), model
    assert "runner" not in " ".join(" ".join(w.cmdline()) for w in workers)
    # The start-up line says where the count came from (once per server).
    assert f" from {usable_cpus().source}; " in log
