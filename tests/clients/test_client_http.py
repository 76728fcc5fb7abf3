"""HTTP-specific behaviour: request shapes on the wire, TF Serving REST details, TLS."""

from __future__ import annotations

import base64
import json
import ssl

import httpx
import numpy as np
import pytest

from clients.errors import InvalidInput, ModelNotFound, ServerError
from clients.http import Client


class Recorder:
    """A MockTransport handler that records requests and answers from a table."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.get(
            request.url.path, (404, {"error": f"no route {request.url.path}"})
        )
        status, body = answer
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    def body(self, i: int = -1) -> dict:
        return json.loads(self.requests[i].content)


def client_for(answers: dict[str, object], **kwargs) -> tuple[Client, Recorder]:
    recorder = Recorder(answers)
    return Client(transport=httpx.MockTransport(recorder), retry=1, **kwargs), recorder


TOPICS = {"results": [{"topics": [{"topic": "oil", "index": 2, "probability": 0.7}]}]}


def test_friendly_request_bodies() -> None:
    client, recorder = client_for({"/reuters/classify": (200, TOPICS)})
    [result] = client.classify_topic(["oil up"], top_k=1)
    assert recorder.requests[0].method == "POST"
    assert recorder.requests[0].headers["content-type"] == "application/json"
    assert recorder.body() == {"texts": ["oil up"], "top_k": 1}
    assert (result.label, result.probability, result.model.name) == ("oil", 0.7, "reuters")


def test_images_are_sent_as_nested_lists() -> None:
    answer = {"results": [{"label": "cat", "index": 3, "probability": 0.9}]}
    client, recorder = client_for({"/cifar/classify": (200, answer)})
    [result] = client.classify_image(np.full((1, 2, 2, 3), 7, np.uint8))
    assert recorder.body() == {"images": [[[[7] * 3] * 2] * 2], "top_k": 1}
    assert result.top[0].label == "cat"  # a response without "top" still fills it


def test_predict_uses_tf_serving_rest_with_b64_bytes_and_version() -> None:
    outputs = {"outputs": {"label": [1], "text": [{"b64": base64.b64encode(b"\xff").decode()}]}}
    client, recorder = client_for({"/v1/models/imdb/versions/2:predict": (200, outputs)})
    result = client.predict("imdb", {"text": [b"\xff", "ok"]}, signature="predict_text", version=2)
    assert recorder.body(0) == {
        "inputs": {"text": [{"b64": "/w=="}, "ok"]},
        "signature_name": "predict_text",
    }
    # No metadata endpoint here: outputs keep JSON's types, b64 decoded.
    assert result["label"].tolist() == [1] and result["text"].tolist() == [b"\xff"]


def test_predict_casts_outputs_to_signature_dtypes_via_metadata() -> None:
    strings = {"dtype": "DT_STRING", "tensor_shape": {"dim": [{"size": "-1"}]}}
    signature = {"inputs": {"sentences": strings}, "outputs": {"translation": strings}}
    metadata = {
        "model_spec": {"name": "translator", "version": "3"},
        "metadata": {"signature_def": {"signature_def": {"translate": signature}}},
    }
    client, recorder = client_for(
        {
            "/v1/models/translator:predict": (200, {"outputs": ["le chat"]}),
            "/v1/models/translator/metadata": (200, metadata),
        }
    )
    for _ in range(2):
        result = client.predict("translator", {"sentences": ["the cat"]}, signature="translate")
        assert result["translation"].tolist() == [b"le chat"]  # bytes, as over gRPC
    # metadata is looked up once
    assert [r.url.path for r in recorder.requests].count("/v1/models/translator/metadata") == 1


def test_nan_is_rejected_before_sending() -> None:
    client, recorder = client_for({})
    with pytest.raises(InvalidInput, match="NaN"):
        client.predict("cosine", {"window": np.full((1, 10), np.nan, np.float32)})
    assert recorder.requests == []


def test_values_json_cannot_carry_are_invalid_input() -> None:
    client, recorder = client_for({})
    with pytest.raises(InvalidInput, match="cannot be sent as JSON"):
        client.predict("m", {"x": np.array([1 + 2j], np.complex64)})
    assert recorder.requests == []


def test_server_message_is_carried() -> None:
    client, _ = client_for(
        {"/v1/models/x/metadata": (404, {"error": "Servable not found for request: Latest(x)"})}
    )
    with pytest.raises(ModelNotFound, match=r"Servable not found for request: Latest\(x\)"):
        client.metadata("x")


def test_non_json_success_is_a_server_error() -> None:
    client, _ = client_for({"/translate": (200, "<html>proxy page</html>")})
    with pytest.raises(ServerError, match="expected JSON"):
        client.translate(["hello"])


def test_timeouts_default_and_per_call() -> None:
    client, recorder = client_for({"/livez": (200, "")}, timeout=12.0)
    client.health()
    client.health(timeout=0.5)
    assert recorder.requests[0].extensions["timeout"]["read"] == 12.0
    assert recorder.requests[1].extensions["timeout"]["read"] == 0.5


def test_headers_and_base_url() -> None:
    recorder = Recorder({"/api/livez": (200, "")})
    transport = httpx.MockTransport(recorder)
    with Client(
        "https://models.example.com/api/",
        headers={"Authorization": "Bearer t"},
        transport=transport,
    ) as client:
        assert client.health()
    assert str(recorder.requests[0].url) == "https://models.example.com/api/livez"
    assert recorder.requests[0].headers["authorization"] == "Bearer t"


def test_model_names_are_url_quoted() -> None:
    client, recorder = client_for({})
    with pytest.raises(ModelNotFound):
        client.status("a/b c")
    assert recorder.requests[0].url.raw_path == b"/v1/models/a%2Fb%20c"


def test_ca_bundle_path_becomes_an_ssl_context(tmp_path, monkeypatch) -> None:
    seen = {}

    def fake_context(cafile: str | None = None) -> ssl.SSLContext:
        seen["cafile"] = cafile
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)

    monkeypatch.setattr(ssl, "create_default_context", fake_context)
    with Client("https://localhost:3443", verify=tmp_path / "ca.pem"):
        pass
    assert seen["cafile"] == str(tmp_path / "ca.pem")


def test_connection_pool_is_reused_and_closed() -> None:
    client, recorder = client_for({"/livez": (200, "")})
    pool = client._http
    with client:
        client.health()
        client.health()
        assert client._http is pool
    assert pool.is_closed and len(recorder.requests) == 2
