"""32 concurrent clients through three doors (friendly JSON, TF Serving REST, gRPC) share one
batch queue: batches > 1, no errors."""

from __future__ import annotations

import asyncio
import re
import typing as t

import grpc
import httpx
import pytest

from tfserving_api._proto.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tfserving_api.tensors import to_tensor_proto

pytestmark = pytest.mark.integration

CLIENTS = 32
REQUESTS_PER_CLIENT = 8


def batch_histogram(metrics: str, model: str, signature: str) -> dict[float, float]:
    """``le -> cumulative count`` of ``keras_serving_batch_size`` for one model signature."""
    pattern = re.compile(
        rf'keras_serving_batch_size_bucket\{{le="([^"]+)",model="{model}",signature="{signature}"\}} (\S+)'
    )
    return {float(le): float(count) for le, count in pattern.findall(metrics)}


async def _client(
    http: httpx.AsyncClient, stub: t.Any, index: int, statuses: list[int]
) -> None:
    for i in range(REQUESTS_PER_CLIENT):
        if index % 3 == 2:  # gRPC door, same signature and so same queue
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "imdb"
            request.model_spec.signature_name = "predict_text"
            request.inputs["text"].CopyFrom(to_tensor_proto([f"client {index} grpc {i} fine"]))
            try:
                await stub.Predict(request, timeout=60)
                statuses.append(200)
            except grpc.aio.AioRpcError as exc:
                statuses.append(exc.code().value[0])
            continue
        if index % 3 == 1:  # TF Serving door, same signature (and so same queue) as the friendly one
            response = await http.post(
                "/v1/models/imdb:predict",
                json={
                    "signature_name": "predict_text",
                    "instances": [f"client {index} says {i} good"],
                },
            )
        else:
            response = await http.post(
                "/imdb/sentiment", json={"texts": [f"client {index} review {i}"]}
            )
        statuses.append(response.status_code)


def test_concurrent_requests_are_batched_without_errors(server):
    with httpx.Client(base_url=server.url) as http:
        before = batch_histogram(http.get("/metrics").text, "imdb", "predict_text")

    async def run() -> list[int]:
        statuses: list[int] = []
        limits = httpx.Limits(max_connections=CLIENTS)
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http,
            grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel,
        ):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            await asyncio.gather(*(_client(http, stub, i, statuses) for i in range(CLIENTS)))
        return statuses

    statuses = asyncio.run(run())
    assert len(statuses) == CLIENTS * REQUESTS_PER_CLIENT
    assert statuses.count(503) == 0
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}

    with httpx.Client(base_url=server.url) as http:
        after = batch_histogram(http.get("/metrics").text, "imdb", "predict_text")
    batches = after[float("inf")] - before.get(float("inf"), 0.0)
    single = after[1.0] - before.get(1.0, 0.0)
    rows = CLIENTS * REQUESTS_PER_CLIENT
    assert 0 < batches < rows, (batches, rows)
    assert batches - single > 0, "no batch held more than one request"
