"""``service.grpc_server`` in-process, over a fake model: readiness (UNAVAILABLE and
health NOT_SERVING until the models are ready), the error table, TLS, graceful stop and
the ``GRPC_*`` settings. The live server is exercised in ``test_grpc.py``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_fakes import WINDOW, predict_request
from grpc_health.v1 import health_pb2

from clients.grpc import Client
from service import errors
from service import grpc_server as gs
from tfserving_api._proto.tensorflow_serving.apis import (
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)
from tfserving_api._proto.tensorflow_serving.apis.get_model_status_pb2 import GetModelStatusRequest
from tfserving_api.tensors import to_ndarray, to_tensor_proto

def test_unavailable_and_not_serving_until_the_model_is_ready(fake_grpc) -> None:
    served = fake_grpc()
    with served.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for service in ("", gs.PREDICTION_SERVICE, gs.MODEL_SERVICE):
            assert served.health(service) == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(predict_request(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "model 'cosine' is not available (loading)" in caught.value.details()
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            GetModelStatusRequest(model_spec={"name": "cosine"}), timeout=5
        )
        assert status.model_version_status[0].state == status.model_version_status[0].LOADING

        served.model.ready = True
        served.wait_serving()
        response = stub.Predict(predict_request(), timeout=5)
        assert to_ndarray(response.outputs["forecast"]).tolist() == [45.0]


@pytest.mark.parametrize(
    ("error", "code"),
    [(cls("injected"), getattr(grpc.StatusCode, name)) for cls, name in errors.GRPC_STATUS.items()]
    + [(RuntimeError("a bug"), grpc.StatusCode.INTERNAL)],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.name,
)
def test_every_service_error_maps_to_its_status(fake_grpc, error, code) -> None:
    served = fake_grpc()
    served.model.ready = True
    served.model.fail = error
    with served.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(predict_request(), timeout=5)
        assert caught.value.code() == code
        expected = (
            "internal error, see the server log"
            if code == grpc.StatusCode.INTERNAL and not isinstance(error, errors.ServingError)
            else "injected"
        )
        assert caught.value.details() == expected
        served.model.fail = None  # the server keeps serving
        assert stub.Predict(predict_request(), timeout=5).outputs["forecast"]


def test_health_follows_a_model_that_stops_being_available(fake_grpc) -> None:
    served = fake_grpc()
    served.model.ready = True
    served.wait_serving()
    served.model.ready = False  # e.g. unloading
    deadline = time.monotonic() + 5
    while served.health() != health_pb2.HealthCheckResponse.NOT_SERVING:
        assert time.monotonic() < deadline, "health still SERVING"
        time.sleep(0.1)
    with served.channel() as channel, pytest.raises(grpc.RpcError) as caught:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            predict_request(), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_request_over_the_size_cap_is_resource_exhausted(fake_grpc) -> None:
    served = fake_grpc()
    served.model.ready = True
    request = predict_request()
    request.inputs["padding"].CopyFrom(
        to_tensor_proto(np.zeros(20_000, np.float32))
    )  # 80 kB > 64 kB cap
    with served.channel() as channel, pytest.raises(grpc.RpcError) as caught:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "exceed the cap of 65536" in caught.value.details()


def test_graceful_stop_finishes_calls_in_flight_and_refuses_new_ones(fake_grpc) -> None:
    served = fake_grpc()
    served.model.ready = True
    served.model.delay = 0.5
    served.wait_serving()
    with served.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        in_flight = stub.Predict.future(predict_request(), timeout=10)
        time.sleep(0.2)
        stop = asyncio.run_coroutine_threadsafe(served.server.stop(), served.loop)
        assert to_ndarray(in_flight.result().outputs["forecast"]).tolist() == [45.0]
        stop.result(10)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(predict_request(), timeout=2)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_from_the_certificate_and_key_files(fake_grpc, pki) -> None:
    settings = gs.GrpcSettings(
        host="127.0.0.1", port=0, tls_cert=pki.server, tls_key=pki.server_key, grace_s=1
    )
    served = fake_grpc(settings, ready=True)
    with Client(
        f"grpcs://{served.target}", root_certificates=pki.ca, tls_server_name="localhost", retry=1
    ) as client:
        assert client.predict("cosine", {"window": WINDOW})["forecast"].tolist() == [45.0]
    with served.channel() as plaintext, pytest.raises(grpc.RpcError) as caught:
        prediction_service_pb2_grpc.PredictionServiceStub(plaintext).Predict(
            predict_request(), timeout=3
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


ENV_CASES = [
    ({}, gs.GrpcSettings()),
    ({"GRPC_PORT": "9001", "GRPC_HOST": "127.0.0.1"}, gs.GrpcSettings(host="127.0.0.1", port=9001)),
    ({"GRPC_ENABLED": "0"}, gs.GrpcSettings(enabled=False)),
    (
        {"GRPC_TLS_CERT": "c.pem", "GRPC_TLS_KEY": "k.pem"},
        gs.GrpcSettings(tls_cert=Path("c.pem"), tls_key=Path("k.pem")),
    ),
    ({"GRPC_TLS_CERT": "c.pem"}, "must be set together"),
    (
        {"GRPC_TLS_CERT": "c.pem", "GRPC_TLS_KEY": "k.pem", "GRPC_TLS_CA": "ca.pem"},
        gs.GrpcSettings(tls_cert=Path("c.pem"), tls_key=Path("k.pem"), tls_ca=Path("ca.pem")),
    ),
    ({"GRPC_TLS_CA": "ca.pem"}, "GRPC_TLS_CA needs GRPC_TLS_CERT"),
    ({"GRPC_PORT": "http"}, "GRPC_PORT='http' is not an integer"),
    ({"GRPC_PORT": "70000"}, "not a TCP port"),
    ({"GRPC_ENABLED": "maybe"}, "GRPC_ENABLED"),
]


@pytest.mark.parametrize(("env", "expected"), ENV_CASES)
def test_settings_from_the_environment(monkeypatch, env, expected) -> None:
    for name in (
        "GRPC_ENABLED",
        "GRPC_HOST",
        "GRPC_PORT",
        "GRPC_TLS_CERT",
        "GRPC_TLS_KEY",
        "GRPC_TLS_CA",
        "GRPC_GRACE_S",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            gs.GrpcSettings.from_env()
    else:
        assert gs.GrpcSettings.from_env() == expected


def test_addresses_and_unreadable_tls_files(tmp_path) -> None:
    assert gs.GrpcSettings().address == "0.0.0.0:8500"
    assert gs.GrpcSettings(host="::", port=1).address == "[::]:1"
    missing = gs.GrpcSettings(tls_cert=tmp_path / "no.pem", tls_key=tmp_path / "no.key")
    with pytest.raises(ValueError, match="cannot read"):
        missing.credentials()


@pytest.mark.parametrize(
    "method",
    ["PredictionService/Predict", "PredictionService/Classify", "ModelService/GetModelStatus"],
)
def test_undecodable_bytes_are_invalid_argument(fake_grpc, method) -> None:
    served = fake_grpc()
    served.model.ready = True
    with served.channel() as channel:
        call = channel.unary_unary(f"/tensorflow.serving.{method}")  # raw bytes in and out
        with pytest.raises(grpc.RpcError) as caught:
            call(b"\x0a\xff\xff\xff\xff\x0f", timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid" in caught.value.details()
    assert served.model.calls == 0
