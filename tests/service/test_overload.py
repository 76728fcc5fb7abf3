"""A second real ``bentoml serve`` with a tiny queue: readiness gating while it warms up, and
overload answered at once (HTTP 503 + Retry-After, gRPC RESOURCE_EXHAUSTED), never a timeout."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tfserving_api._proto.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tfserving_api.contract import PREDICT_TEXT_SIGNATURE
from tfserving_api.tensors import to_tensor_proto

pytestmark = pytest.mark.integration

ROWS = 4  # every request fills the whole queue (SERVICE_MAX_QUEUE) on its own
TEXTS = [f"review {i}: " + "a long and winding film " * 40 for i in range(ROWS)]


@dataclass(frozen=True)
class Small:
    url: str
    grpc_target: str
    not_ready_seen: dict[str, bool]


def _readyz(url: str, path: str = "/readyz") -> int:
    try:
        with urllib.request.urlopen(f"{url}{path}", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _health(target: str) -> int | None:
    try:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
    except grpc.RpcError:
        return None


@pytest.fixture(scope="module")
def small(trained_store, tmp_path_factory, server_factory) -> Iterator[Small]:
    """imdb only, one worker, a queue of ``ROWS`` rows."""
    # A home of its own (the same models): BentoML keeps its Prometheus multiprocess files in
    # $BENTOML_HOME and clears them at start-up, which would wipe the session server's.
    home = tmp_path_factory.mktemp("small_home")
    (home / "models").symlink_to(trained_store.home / "models")
    store = dataclasses.replace(trained_store, home=home)
    log = tmp_path_factory.mktemp("small") / "serve.log"
    settings = {
        "SERVICE_MODELS": "imdb",
        "SERVICE_WORKERS": "1",
        "SERVICE_MAX_QUEUE": str(ROWS),
        "SERVICE_BATCH_BUCKETS": "1,4",
    }
    with server_factory(store, log, wait=False, **settings) as (running, proc):
        url, target = running.url, f"127.0.0.1:{running.grpc_port}"
        # Watch the warm-up: the probes must say "not ready" before they say "ready".
        seen = {"readyz_503": False, "health_not_serving": False, "v2_ready_503": False}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            status = _readyz(url)
            if status == 503:
                seen["readyz_503"] = True
            if _health(target) == health_pb2.HealthCheckResponse.NOT_SERVING:
                seen["health_not_serving"] = True
            if status != 200 and _readyz(url, "/v2/health/ready") == 503:
                seen["v2_ready_503"] = True  # the Open Inference Protocol's probe too
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, running.log.read_text()[-4000:]
        yield Small(url=url, grpc_target=target, not_ready_seen=seen)


def test_probes_say_not_ready_until_the_models_are_warm(small):
    assert small.not_ready_seen == {
        "readyz_503": True, "health_not_serving": True, "v2_ready_503": True
    }  # fmt: skip
    assert _readyz(small.url) == 200
    deadline = time.monotonic() + 5  # health follows the models' state every 0.5 s
    while _health(small.grpc_target) != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "gRPC health never turned SERVING"
        time.sleep(0.1)


def test_http_overload_is_refused_at_once_with_retry_after(small):
    async def one(http: httpx.AsyncClient) -> tuple[int, float, httpx.Response]:
        started = time.perf_counter()
        response = await http.post("/imdb/sentiment", json={"texts": TEXTS})
        return response.status_code, time.perf_counter() - started, response

    async def flood() -> list[tuple[int, float, httpx.Response]]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=small.url, timeout=60, limits=limits) as http:
            return await asyncio.gather(*(one(http) for _ in range(64)))

    results = asyncio.run(flood())
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 503}, statuses
    refused = [(seconds, response) for status, seconds, response in results if status == 503]
    assert refused, "a queue of 4 rows must refuse some of 64 concurrent 4-row requests"
    assert statuses.count(200) >= 1
    for _, response in refused:
        assert response.headers["retry-after"] == "1"
        assert "already queued" in response.json()["error"]
    # Refusals come straight from the door: far faster than the 60 s timeout (generous bound
    # for a loaded 2-core machine; the benchmark measures the real figure).
    assert max(seconds for seconds, _ in refused) < 10
    metrics = httpx.get(f"{small.url}/metrics").text
    assert 'keras_serving_refused_total{model="imdb",reason="overload"}' in metrics


def test_grpc_overload_is_resource_exhausted(small):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "imdb"
    request.model_spec.signature_name = PREDICT_TEXT_SIGNATURE
    request.inputs["text"].CopyFrom(to_tensor_proto(TEXTS))

    async def flood() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(small.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            async def one() -> grpc.StatusCode:
                try:
                    await stub.Predict(request, timeout=60)
                    return grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or (
                        "already queued" in exc.details()
                    )
                    return exc.code()

            return await asyncio.gather(*(one() for _ in range(64)))

    codes = asyncio.run(flood())
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and grpc.StatusCode.OK in codes


V2_BODY = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [ROWS], "data": TEXTS}]}


def test_v2_overload_is_refused_at_once_on_both_v2_doors(small):
    """The Open Inference Protocol's doors share the queue and its refusals: HTTP 503 with
    ``Retry-After``, gRPC RESOURCE_EXHAUSTED."""
    import numpy as np
    import tritonclient.grpc.aio as triton_grpc_aio
    from tritonclient.grpc import InferInput
    from tritonclient.utils import InferenceServerException

    async def http_flood() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=small.url, timeout=60, limits=limits) as http:
            return await asyncio.gather(
                *(http.post("/v2/models/imdb/infer", json=V2_BODY) for _ in range(64))
            )

    responses = asyncio.run(http_flood())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"
            assert "already queued" in response.json()["error"]

    async def grpc_flood() -> list[str]:
        client = triton_grpc_aio.InferenceServerClient(small.grpc_target)
        text = InferInput("text", [ROWS], "BYTES")
        text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))

        async def one() -> str:
            try:
                await client.infer("imdb", [text], client_timeout=60)
                return "OK"
            except InferenceServerException as exc:
                return str(exc.status())

        try:
            return await asyncio.gather(*(one() for _ in range(64)))
        finally:
            await client.close()

    codes = asyncio.run(grpc_flood())
    assert set(codes) <= {"OK", "StatusCode.RESOURCE_EXHAUSTED"}, codes
    assert "OK" in codes and "StatusCode.RESOURCE_EXHAUSTED" in codes
    metrics = httpx.get(f"{small.url}/metrics").text
    assert 'code="503",door="v2",model="imdb"' in metrics
