"""Slow and idle connections (``service.connections``, the gRPC server's options) and the
token doors against a real ``bentoml serve``: a connection that trickles its headers is
closed after ``SERVICE_HEADER_TIMEOUT_S``, connections past ``SERVICE_MAX_CONNECTIONS`` get
503 at once, ``SERVICE_AUTH_TOKENS`` closes every inference door but the probes, and HTTPS
through BentoML's ``--ssl-*`` options."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
import uvicorn.config
from grpc_fakes import FakeModel, predict_request

from clients import errors as client_errors
from clients.grpc import Client as GrpcClient
from clients.http import Client as HttpClient
from loadtest.procs import free_port
from service import connections
from service import grpc_server as gs
from tfserving_api._proto.tensorflow_serving.apis import prediction_service_pb2_grpc

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "conn-test-token"
ADMIN = "conn-test-admin"
HEADER_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 3
MAX_CONNECTIONS = 3
WINDOW_BODY = {"window": [0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "horizon": 1}


# ---------------------------------------------------------------- settings, no server


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, connections.ConnectionSettings(10.0, 1024)),
        (
            {"SERVICE_HEADER_TIMEOUT_S": "2.5", "SERVICE_MAX_CONNECTIONS": "0"},
            connections.ConnectionSettings(2.5, 0),
        ),
        ({"SERVICE_HEADER_TIMEOUT_S": "soon"}, "SERVICE_HEADER_TIMEOUT_S"),
        ({"SERVICE_MAX_CONNECTIONS": "-1"}, "SERVICE_MAX_CONNECTIONS"),
    ],
)
def test_connection_settings(monkeypatch, env, expected) -> None:
    for name in ("SERVICE_HEADER_TIMEOUT_S", "SERVICE_MAX_CONNECTIONS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            connections.ConnectionSettings.from_env()
    else:
        assert connections.ConnectionSettings.from_env() == expected


def test_install_points_uvicorn_at_the_guarded_protocol(monkeypatch) -> None:
    monkeypatch.setattr(uvicorn.config, "HTTP_PROTOCOLS", dict(uvicorn.config.HTTP_PROTOCOLS))
    assert connections.install(connections.ConnectionSettings(1.0, 5))
    config = uvicorn.config.Config(app=lambda *a: None)
    config.load()
    assert config.http_protocol_class is connections.GuardedHttpToolsProtocol
    assert connections.GuardedHttpToolsProtocol.settings.max_connections == 5


def test_the_cap_warning_is_logged_once_per_interval() -> None:
    import logging

    now = [0.0]
    once = connections.OncePer(10.0, clock=lambda: now[0])

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.WARNING, "", 0, message, (), None)

    assert once.filter(record(connections.CAP_MESSAGE))
    assert [once.filter(record(connections.CAP_MESSAGE)) for _ in range(500)] == [False] * 500
    assert once.filter(record("another warning"))
    now[0] = 11.0
    passed = record(connections.CAP_MESSAGE)
    assert once.filter(passed) and "500 more in the last 10 s" in passed.getMessage()


@pytest.mark.parametrize(
    ("env", "options"),
    [
        (
            {},
            {
                "grpc.max_concurrent_streams": 256,
                "grpc.max_connection_idle_ms": 300_000,
                "grpc.max_connection_age_ms": 1_000,
                "grpc.max_connection_age_grace_ms": 60_000,
            },
        ),
        (
            {"GRPC_MAX_CONNECTION_AGE_S": "0", "GRPC_MAX_CONNECTION_IDLE_S": "0.5"},
            {
                "grpc.max_concurrent_streams": 256,
                "grpc.max_connection_idle_ms": 500,
                "grpc.max_connection_age_grace_ms": 60_000,
            },
        ),
    ],
)
def test_grpc_connection_options_from_the_environment(monkeypatch, env, options) -> None:
    for name in (
        "GRPC_MAX_CONCURRENT_STREAMS",
        "GRPC_MAX_CONNECTION_IDLE_S",
        "GRPC_MAX_CONNECTION_AGE_S",
        "GRPC_MAX_CONNECTION_AGE_GRACE_S",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert dict(gs.GrpcSettings.from_env().channel_options()) == options


# ---------------------------------------------------------------- gRPC options, in-process


class CountingModel(FakeModel):
    """Records the most calls it had in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.ready, self.delay = True, 0.3
        self.now = self.most = 0

    async def run(self, signature, inputs):
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            return await super().run(signature, inputs)
        finally:
            self.now -= 1


def test_max_concurrent_streams_queues_the_calls_of_one_connection(fake_grpc) -> None:
    settings = gs.GrpcSettings(host="127.0.0.1", port=0, grace_s=0, max_concurrent_streams=1)
    model = CountingModel()
    target = fake_grpc(settings, model=model).target
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        calls = [stub.Predict.future(predict_request(), timeout=30) for _ in range(3)]
        assert all(call.result().outputs["forecast"] for call in calls)
    assert model.most == 1


def test_an_idle_connection_is_closed_and_an_aged_one_replaced_without_failures(
    fake_grpc,
) -> None:
    model = CountingModel()
    target = fake_grpc(
        gs.GrpcSettings(
            host="127.0.0.1",
            port=0,
            grace_s=0,
            max_connection_idle_s=0.5,
            max_connection_age_s=0.7,
            max_connection_age_grace_s=2.0,
        ),
        model=model,
    ).target
    model.delay = 0.05
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        stub.Predict(predict_request(), timeout=10)
        # Idle: the server sends GOAWAY and the channel goes back to IDLE by itself.
        deadline = time.monotonic() + 20
        while channel._channel.check_connectivity_state(False) != 0:  # 0 = IDLE
            assert time.monotonic() < deadline, "the idle connection was never closed"
            time.sleep(0.1)
        # Age: connections are replaced under traffic; no call fails meanwhile.
        until = time.monotonic() + 3
        answered = 0
        while time.monotonic() < until:
            assert stub.Predict(predict_request(), timeout=10).outputs["forecast"]
            answered += 1
    assert answered > 3


# ---------------------------------------------------------------- against a real server


@pytest.fixture(scope="module")
def guarded(trained_store, server_factory, tmp_path_factory):
    """cosine, one worker, a 2 s header timeout, a 3 s request timeout, 3 connections,
    inference and admin tokens."""
    log = tmp_path_factory.mktemp("guarded") / "serve.log"
    with server_factory(
        trained_store,
        log,
        SERVICE_MODELS="cosine",
        SERVICE_WORKERS="1",
        SERVICE_BATCH_BUCKETS="1",  # one window at a time: one bucket to compile
        SERVICE_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        SERVICE_TIMEOUT_S=str(REQUEST_TIMEOUT_S),
        SERVICE_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        SERVICE_AUTH_TOKENS=f"other-token,{TOKEN}",
        SERVICE_ADMIN_TOKEN=ADMIN,
    ) as (running, _):
        yield running


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _get(url: str, path: str, token: str | None = None) -> int:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(timeout=30) as client:  # a connection of its own, closed after
        return client.get(f"{url}{path}", headers=headers).status_code


def _wait_for_a_slot(url: str) -> None:
    deadline = time.monotonic() + 60
    while _get(url, "/livez") != 200:
        assert time.monotonic() < deadline, "the server never had a free connection again"
        time.sleep(0.5)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closed ``sock`` (EOF or reset) within ``seconds``; the client keeps
    trickling one header line every 0.3 s meanwhile."""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.3)
    line = 0
    while time.monotonic() < deadline:
        try:
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            return True
        try:
            sock.sendall(f"x-trickle-{line}: y\r\n".encode())
            line += 1
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def test_a_connection_trickling_its_headers_is_closed_after_the_timeout(guarded) -> None:
    _wait_for_a_slot(guarded.url)
    with socket.create_connection(_address(guarded.url), timeout=10) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nhost: x\r\n")
        # Closed soon after 2 s, though it sends a line every 0.3 s (a generous bound: the
        # machine is shared; without the timeout it stays open for as long as it trickles).
        assert _closed_within(sock, 30)
    with socket.create_connection(_address(guarded.url), timeout=10) as silent:
        assert _closed_within(silent, 30) if False else _silent_closed(silent, 30)
    assert _get(guarded.url, "/livez") == 200  # complete requests are untouched


@pytest.mark.parametrize("path", ["/cosine/forecast", "/v1/models/cosine:predict"])
def test_a_body_trickled_past_the_request_timeout_gets_504(guarded, path) -> None:
    """The hot routes run outside BentoML's middleware (service.http_router.outside_bentoml),
    and still keep its ``SERVICE_TIMEOUT_S``: a body that never completes is answered."""
    _wait_for_a_slot(guarded.url)
    head = (
        f"POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n"
        "content-type: application/json\r\ncontent-length: 1000\r\n\r\n{"
    )
    answer = b""
    with socket.create_connection(_address(guarded.url), timeout=10) as sock:
        sock.sendall(head.encode())
        sock.settimeout(0.3)
        deadline = time.monotonic() + 30  # generous: the machine is shared
        while time.monotonic() < deadline and b"\r\n\r\n" not in answer:
            try:
                answer += sock.recv(4096)
            except TimeoutError:
                sock.sendall(b" ")  # one byte every 0.3 s: the body never completes
    assert answer.startswith(b"HTTP/1.1 504"), answer[:200]
    assert _get(guarded.url, "/livez") == 200


def _silent_closed(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return False


def test_connections_past_the_cap_get_503_at_once(guarded) -> None:
    _wait_for_a_slot(guarded.url)
    held = [socket.create_connection(_address(guarded.url), timeout=10) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # the worker has accepted them
        with socket.create_connection(_address(guarded.url), timeout=10) as extra:
            extra.sendall(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n")
            answer = extra.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
    finally:
        for sock in held:
            sock.close()
    _wait_for_a_slot(guarded.url)  # the cap frees once they are gone


@pytest.mark.parametrize(
    ("path", "token", "status"),
    [
        ("/livez", None, 200),
        ("/readyz", None, 200),
        ("/metrics", None, 200),
        ("/v1/models/cosine", None, 401),
        ("/v1/models/cosine", "wrong", 401),
        ("/v1/models/cosine", TOKEN, 200),
        ("/v1/models/cosine", ADMIN, 200),
        ("/no/such/door", None, 401),
        ("/no/such/door", TOKEN, 404),
    ],
)
def test_http_doors_need_a_token_on_the_real_server(guarded, path, token, status) -> None:
    _wait_for_a_slot(guarded.url)
    assert _get(guarded.url, path, token) == status


def test_friendly_json_and_grpc_need_a_token_on_the_real_server(guarded) -> None:
    _wait_for_a_slot(guarded.url)
    with HttpClient(guarded.url, retry=1) as anonymous, pytest.raises(client_errors.Unauthenticated):
        anonymous.forecast(WINDOW_BODY["window"])
    with HttpClient(guarded.url, retry=1, token=TOKEN) as http:
        assert len(http.forecast(WINDOW_BODY["window"]).values) == 1
    target = f"127.0.0.1:{guarded.grpc_port}"
    with grpc.insecure_channel(target) as channel:  # a stock TF Serving stub
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(predict_request(), timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        bearer = (("authorization", f"Bearer {TOKEN}"),)
        assert stub.Predict(predict_request(), timeout=30, metadata=bearer).outputs
    with GrpcClient(target, retry=1, token=TOKEN) as client:
        assert client.ready()
        with pytest.raises(client_errors.PermissionDenied):
            client.reload_config({"cosine": {}})
    with GrpcClient(target, retry=1, token=TOKEN, admin_token=ADMIN) as client:
        client.reload_config({"cosine": {}})


# ---------------------------------------------------------------- HTTPS, once


def test_https_through_bentomls_ssl_options(trained_store, pki, tmp_path) -> None:
    import os

    from loadtest.procs import ServerProcess

    port = free_port()
    command = [
        str(Path(sys.executable).parent / "bentoml"), "serve", "--host", "127.0.0.1",
        "--port", str(port), "--ssl-certfile", str(pki.server),
        "--ssl-keyfile", str(pki.server_key),
    ]  # fmt: skip
    env = {
        **os.environ,
        "BENTOML_HOME": str(trained_store.home),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        "BENTOML_DO_NOT_TRACK": "True",
        "SERVICE_MODELS": "cosine",
        "SERVICE_WORKERS": "1",
        "SERVICE_BATCH_BUCKETS": "1",
        "GRPC_ENABLED": "0",
    }
    process = ServerProcess(command, f"tcp://127.0.0.1:{port}", tmp_path / "serve.log", env, ROOT)
    with process:
        url = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 600
        with HttpClient(url, verify=str(pki.ca), retry=1, timeout=30) as client:
            while not client.ready():
                assert time.monotonic() < deadline, process.tail()
                time.sleep(1)
            assert len(client.forecast(WINDOW_BODY["window"]).values) == 1
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/livez", timeout=10)
