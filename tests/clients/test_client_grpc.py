"""gRPC-specific behaviour: requests on the wire, label names, deadlines, targets."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import FakeTFServing

from clients.errors import DeadlineExceeded, Unavailable
from clients.grpc import Client, parse_target
from tfserving_api._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    prediction_service_pb2_grpc,
)
from tfserving_api.tensors import to_ndarray


def _calls(servicer, method: str) -> list:
    return [request for name, request in servicer.calls if name == method]


@pytest.mark.parametrize(
    ("images", "signature", "input_name", "dtype"),
    [
        (np.zeros((2, 32, 32, 3), np.uint8), "predict_images", "images", np.uint8),
        (np.zeros((2, 32, 32, 3), np.float64), "serving_default", "pixels", np.float32),
    ],
)
def test_images_pick_the_signature_by_dtype(fake_tfs, images, signature, input_name, dtype) -> None:
    servicer, target = fake_tfs
    with Client(target) as client:
        client.classify_image(images, model="cifar")
    [request] = _calls(servicer, "Predict")
    assert request.model_spec.signature_name == signature
    assert to_ndarray(request.inputs[input_name]).dtype == dtype


def test_text_models_use_predict_text(fake_tfs) -> None:
    servicer, target = fake_tfs
    with Client(target) as client:
        client.sentiment(["x"])
    [request] = _calls(servicer, "Predict")
    assert (request.model_spec.name, request.model_spec.signature_name) == ("imdb", "predict_text")
    assert to_ndarray(request.inputs["text"]).tolist() == [b"x"]


def test_predict_sends_version_and_signature(fake_tfs) -> None:
    servicer, target = fake_tfs
    with Client(target) as client:
        client.predict("cosine", {"window": np.zeros((1, 10), np.float32)}, "forecast", version=7)
        client.predict("cosine", {"window": np.zeros((1, 10), np.float32)})
    versioned, latest = _calls(servicer, "Predict")
    assert (
        versioned.model_spec.version.value == 7
        and versioned.model_spec.signature_name == "forecast"
    )
    assert not latest.model_spec.HasField("version") and latest.model_spec.signature_name == ""


def test_labels_are_fetched_once_per_model(fake_tfs) -> None:
    servicer, target = fake_tfs
    with Client(target) as client:
        first = client.classify_topic(["a"], top_k=1)
        second = client.classify_topic(["b"], top_k=1)
    assert first[0].label is not None and second[0].label is not None
    [request] = _calls(servicer, "GetModelMetadata")
    assert list(request.metadata_field) == ["labels"]


def test_labels_given_to_the_constructor_win(fake_tfs) -> None:
    servicer, target = fake_tfs
    names = ["w", "x", "y", "z"]
    with Client(target, labels={"reuters": names}) as client:
        [result] = client.classify_topic(["a"], top_k=4)
    assert sorted(s.label for s in result.topics) == names
    assert _calls(servicer, "GetModelMetadata") == []


def test_without_label_metadata_results_carry_indices(fake_tfs) -> None:
    servicer, target = fake_tfs
    servicer.serve_labels = False  # answers INVALID_ARGUMENT, like stock TF Serving
    with Client(target) as client:
        [result] = client.classify_image(np.zeros((1, 28, 28), np.uint8), model="mnist", top_k=3)
        assert client.metadata("cosine").labels is None
    assert result.label is None and [s.index for s in result.top] == [0, 1, 2]
    assert all(s.label is None for s in result.top)


def test_metadata_asks_for_signature_defs(fake_tfs) -> None:
    servicer, target = fake_tfs
    with Client(target) as client:
        info = client.metadata("imdb")
    assert info.signatures["predict_text"].outputs["label"].dtype == "int64"
    requests = _calls(servicer, "GetModelMetadata")
    assert list(requests[0].metadata_field) == ["signature_def"]
    assert isinstance(requests[0], get_model_metadata_pb2.GetModelMetadataRequest)


def test_per_call_timeout_overrides_the_default(fake_tfs) -> None:
    servicer, target = fake_tfs
    servicer.delay = 0.5
    with Client(target, timeout=30) as client, pytest.raises(DeadlineExceeded):
        client.forecast([0.0] * 10, timeout=0.05)


def test_default_timeout_applies(fake_tfs) -> None:
    servicer, target = fake_tfs
    servicer.delay = 0.5
    with Client(target, timeout=0.05) as client, pytest.raises(DeadlineExceeded):
        client.forecast([0.0] * 10)


def test_not_serving_is_not_ready(fake_tfs) -> None:
    servicer, target = fake_tfs
    servicer.serving = False
    with Client(target) as client:
        assert client.ready() is False
        assert client.health() is False


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("localhost:8500", ("localhost:8500", False)),
        ("grpc://10.0.0.1:8500", ("10.0.0.1:8500", False)),
        ("grpcs://models.example.com:443/", ("models.example.com:443", True)),
    ],
)
def test_parse_target(target: str, expected: tuple) -> None:
    assert parse_target(target) == expected


def test_parse_target_rejects_http() -> None:
    with pytest.raises(ValueError, match="unsupported scheme"):
        parse_target("http://localhost:3000")


@pytest.fixture(scope="module")
def tls_target(pki) -> Iterator[tuple[str, Path]]:
    """A TLS gRPC server with a certificate for localhost, and the CA that signed it."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = FakeTFServing()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    pair = (pki.server_key.read_bytes(), pki.server.read_bytes())
    credentials = grpc.ssl_server_credentials([pair])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield f"127.0.0.1:{port}", pki.ca
    server.stop(grace=None)


def test_tls_with_root_certificates(tls_target) -> None:
    target, cert = tls_target
    with Client(target, root_certificates=cert, retry=1) as client:
        assert len(client.forecast([0.0] * 10).values) == 1
    with Client(
        f"grpcs://{target}", root_certificates=cert.read_bytes(), tls_server_name="localhost"
    ) as client:
        assert len(client.forecast([0.0] * 10).values) == 1


def test_tls_with_an_untrusted_certificate_is_unavailable(tls_target) -> None:
    target, _ = tls_target
    with Client(f"grpcs://{target}", retry=1, timeout=5) as client, pytest.raises(Unavailable):
        client.forecast([0.0] * 10)


def test_plaintext_client_against_tls_server_is_unavailable(tls_target) -> None:
    target, _ = tls_target
    with Client(target, retry=1, timeout=5) as client, pytest.raises(Unavailable):
        client.forecast([0.0] * 10)
