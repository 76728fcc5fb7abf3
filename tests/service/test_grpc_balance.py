"""Both workers of a real two-worker ``bentoml serve`` answer gRPC, whatever the client does:
one channel of TF Serving's own stub, or four.

Each worker owns its ``SO_REUSEPORT`` listener (grpcio cannot serve an inherited socket),
so the kernel pins a connection to one worker; the server's connection age
(``GRPC_MAX_CONNECTION_AGE_S``) makes every client reconnect now and then, and each new
connection is hashed to a worker afresh. Which worker holds a client connection is read
from the workers' own sockets (psutil), not inferred from timing.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import numpy as np
import psutil
import pytest

from loadtest.procs import worker_processes

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

pytestmark = pytest.mark.integration

LOAD_S = 12.0  # generous: each connection lives ~1 s, so this is a dozen reconnects or more
CLIENTS = 8


@pytest.fixture(scope="module")
def two_workers(trained_store, server_factory, tmp_path_factory):
    log = tmp_path_factory.mktemp("balance") / "serve.log"
    settings = {
        "SERVICE_MODELS": "imdb",
        "SERVICE_WORKERS": "2",
        "SERVICE_BATCH_BUCKETS": "1,4",
        "GRPC_MAX_CONNECTION_AGE_S": "1",
        "GRPC_MAX_CONNECTION_AGE_GRACE_S": "5",
    }
    with server_factory(trained_store, log, **settings) as (running, _):
        yield running


def _request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "imdb"
    request.model_spec.signature_name = "predict_text"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(np.array([b"a fine film"])))
    return request


def _owners(workers: dict[int, psutil.Process], port: int, client_ports: set[int]) -> set[int]:
    """The workers holding one of this client's connections now (by its local ports)."""
    held = set()
    for index, process in workers.items():
        try:
            connections = process.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        for connection in connections:
            if (
                connection.status == psutil.CONN_ESTABLISHED
                and connection.laddr.port == port
                and connection.raddr
                and connection.raddr.port in client_ports
            ):
                held.add(index)
    return held


def _client_ports(port: int) -> set[int]:
    """This process's local ports of its connections to the gRPC port."""
    return {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    }


@pytest.mark.parametrize("channels", [1, 4])
def test_every_worker_answers_one_or_four_channels(two_workers, channels):
    port = two_workers.grpc_port
    workers = worker_processes(two_workers.pid)
    assert sorted(workers) == [1, 2], f"expected two workers, got {sorted(workers)}"
    opened = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(channels)]
    stubs = [prediction_service_pb2_grpc.PredictionServiceStub(channel) for channel in opened]
    request = _request()
    stop = threading.Event()
    answered: list[int] = []
    failures: list[str] = []

    def client(number: int) -> None:
        stub = stubs[number % channels]
        while not stop.is_set():
            try:
                response = stub.Predict(request, timeout=30)
            except grpc.RpcError as exc:
                failures.append(f"{exc.code()}: {exc.details()}")
                continue
            assert response.outputs["probabilities"].tensor_shape.dim[0].size == 1
            answered.append(1)

    seen: set[int] = set()
    cpu_before = {i: sum(p.cpu_times()[:2]) for i, p in workers.items()}
    try:
        with futures.ThreadPoolExecutor(CLIENTS) as pool:
            running = [pool.submit(client, n) for n in range(CLIENTS)]
            deadline = time.monotonic() + LOAD_S
            while time.monotonic() < deadline and seen != {1, 2}:
                seen |= _owners(workers, port, _client_ports(port))
                time.sleep(0.1)
            stop.set()
            for future in running:
                future.result(timeout=60)
    finally:
        stop.set()
        for channel in opened:
            channel.close()
    cpu_used = {i: sum(p.cpu_times()[:2]) - cpu_before[i] for i, p in workers.items()}
    assert not failures, f"{len(failures)} failed calls, e.g. {failures[:3]}"
    assert answered, "no call was answered"
    assert seen == {1, 2}, (
        f"{channels} channel(s): only worker(s) {sorted(seen)} held a client connection "
        f"in {LOAD_S:.0f} s (CPU used per worker: {cpu_used})"
    )
