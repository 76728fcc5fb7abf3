"""Servers that answer without a model: what each layer of a door costs by itself.

The ``layers`` mode of the benchmark loads each of these with the same generator, payload
(one imdb review) and answer check as the service's doors, at 64 clients; the difference
in server CPU per request between two rows is the cost of the layer added:

* ``uvicorn``: one Starlette route under uvicorn (uvloop + httptools), reading the body
  and returning a fixed imdb answer;
* ``bentoml-asgi``: the same route mounted in a minimal BentoML service
  (``loadtest/bare_service.py``, same BentoML config as ours);
* ``bentoml-api``: a trivial ``@bentoml.api`` of that service (BentoML's request path:
  pydantic parsing, dispatch, serialization);
* ``grpc``: a ``grpc.aio`` server whose TF Serving ``Predict`` decodes the request and
  returns a fixed ``PredictResponse``;
* ``grpc-sync``: the same ``Predict`` on grpcio's synchronous server (a pool of 8 handler
  threads), the structural alternative to ``grpc.aio`` (``loadtest/RESULTS.md``).

Each server is one process (one worker), so its CPU per request is the layer's cost.

Typical usage::

    python -m loadtest.bare_servers uvicorn --port 3200     # POST /bare, GET /readyz
    python -m loadtest.bare_servers grpc --port 8600          # or grpc-sync
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

LOOPBACK = "127.0.0.1"
# A valid one-item imdb answer: the generator checks it as it checks the service's.
ANSWER = (
    b'{"results":[{"label":"positive","probability":0.9,"positive_probability":0.9}],'
    b'"model":{"name":"imdb","version":1,"variant":"bare"}}'
)


async def bare(request: Request) -> Response:
    """Reads the body (as any endpoint must) and returns the fixed answer."""
    await request.body()
    return Response(ANSWER, media_type="application/json")


async def ready(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def bare_app() -> Starlette:
    """``POST /bare`` (the fixed answer) and ``GET /readyz``."""
    return Starlette(routes=[Route("/bare", bare, methods=["POST"]), Route("/readyz", ready)])


def fixed_predict_response() -> bytes:
    """A serialized imdb ``PredictResponse``: probabilities ``[[0.1, 0.9]]``, label ``[1]``."""
    import numpy as np

    from tfserving_api._proto.tensorflow_serving.apis import predict_pb2
    from tfserving_api.tensors import to_tensor_proto

    response = predict_pb2.PredictResponse()
    response.model_spec.name = "imdb"
    response.model_spec.version.value = 1
    response.outputs["probabilities"].CopyFrom(to_tensor_proto(np.array([[0.1, 0.9]], np.float32)))
    response.outputs["label"].CopyFrom(to_tensor_proto(np.array([1], np.int64)))
    return response.SerializeToString()


def _serve_fixed_prediction(server: object, port: int, asynchronous: bool) -> None:
    """Adds to ``server`` (a ``grpc.aio`` or a synchronous one) a TF Serving ``Predict`` that
    answers every request with the fixed response, on ``port`` of the loopback."""
    from tfserving_api._proto.tensorflow_serving.apis import (
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    answer = predict_pb2.PredictResponse.FromString(fixed_predict_response())

    class SyncPrediction(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request: object, context: object) -> object:
            return answer

    class AsyncPrediction(prediction_service_pb2_grpc.PredictionServiceServicer):
        async def Predict(self, request: object, context: object) -> object:
            return answer

    servicer = AsyncPrediction() if asynchronous else SyncPrediction()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"{LOOPBACK}:{port}")  # type: ignore[attr-defined]


async def start_grpc(port: int) -> object:
    """A started ``grpc.aio`` server whose TF Serving ``Predict`` answers every request with
    the fixed response (stop it with ``await server.stop(None)``)."""
    import grpc

    server = grpc.aio.server()
    _serve_fixed_prediction(server, port, asynchronous=True)
    await server.start()
    return server


def serve_grpc_sync(port: int, threads: int = 8) -> None:
    """The fixed ``Predict`` of :func:`start_grpc` on grpcio's synchronous server (handlers
    on a pool of ``threads``), served until terminated."""
    from concurrent import futures

    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    _serve_fixed_prediction(server, port, asynchronous=False)
    server.start()
    server.wait_for_termination()


async def serve_grpc(port: int) -> None:
    """Serves :func:`start_grpc` until terminated."""
    server = await start_grpc(port)
    await server.wait_for_termination()  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Layer:
    """One row of the layers table: how to start the server and what to load it with."""

    name: str
    door: str  # "http" (POST the imdb JSON body to `path`) or "grpc" (Predict)
    path: str  # HTTP path; "" for gRPC

    def command(self, python: str, port: int) -> list[str]:
        """The command starting this layer's server on ``port`` (from the repository root)."""
        if self.name.startswith("bentoml"):
            bentoml = str(Path(python).parent / "bentoml")
            service = "loadtest.bare_service:BareService"
            return [bentoml, "serve", service, "--host", LOOPBACK, "--port", str(port)]
        kind = self.name if self.door == "grpc" else "uvicorn"
        return [python, "-m", "loadtest.bare_servers", kind, "--port", str(port)]

    def ready_url(self, port: int) -> str:
        """What tells the server is up: ``/readyz``, or a TCP connect for gRPC."""
        scheme = "tcp" if self.door == "grpc" else "http"
        return f"{scheme}://{LOOPBACK}:{port}" + ("" if self.door == "grpc" else "/readyz")


LAYERS = (
    Layer("uvicorn", "http", "/bare"),
    Layer("bentoml-asgi", "http", "/asgi/bare"),
    Layer("bentoml-api", "http", "/api"),
    Layer("grpc", "grpc", ""),
    Layer("grpc-sync", "grpc", ""),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("uvicorn", "grpc", "grpc-sync"))
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.kind == "grpc-sync":
        serve_grpc_sync(args.port)
        return 0
    if args.kind == "grpc":
        asyncio.run(serve_grpc(args.port))
        return 0
    import uvicorn

    uvicorn.run(
        bare_app(),
        host=LOOPBACK,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
