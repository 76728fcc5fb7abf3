"""A real ``service.grpc_server.GrpcServer`` in-process, over a fake cosine model.

Shared by the in-process gRPC tests (``test_grpc_inprocess``, ``test_v2_grpc``,
``test_auth``, ``test_v2_repository``, ``test_connections``) through the ``fake_grpc``
fixture of ``tests/service/conftest.py``: the server, its servicers, interceptors and
options are the product's; only the model behind them is a stand-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_grpc_codec import COSINE

from service import errors
from service import grpc_server as gs
from service.auth import AuthSettings
from service.grpc_codec import Limits
from service.grpc_servicers import Models
from service.served_model import State
from service.versions import ServingConfig
from tfserving_api._proto.tensorflow_serving.apis import predict_pb2
from tfserving_api.tensors import to_tensor_proto

WINDOW = np.arange(10, dtype=np.float32)[None]


class FakeModel:
    """A ServedModel stand-in: ``forecast`` = the window's sum; knobs for readiness and faults."""

    def __init__(self) -> None:
        self.info = COSINE
        self.ready = False
        self.fail: Exception | None = None
        self.delay = 0.0
        self.calls = 0

    error: str | None = None

    @property
    def state(self) -> State:
        return State.AVAILABLE if self.ready else State.LOADING

    def status(self) -> list[tuple[int, str, str | None]]:  # as ModelVersions.status()
        return [(self.info.version, self.state.value, self.error)]

    async def run(self, signature: str, inputs: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        if not self.ready:
            raise errors.NotReady("model 'cosine' is not available (loading), retry later")
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return {"forecast": inputs.sum(axis=1)}


@dataclass
class Running:
    server: gs.GrpcServer
    model: FakeModel
    target: str  # 127.0.0.1:<port>
    loop: asyncio.AbstractEventLoop  # the server's
    reloads: list[ServingConfig] = field(default_factory=list)  # configs the reload door got

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def health(self, service: str = "") -> int:
        with self.channel() as channel:
            return (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                .status
            )

    def wait_serving(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.health() != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "never SERVING"
            time.sleep(0.02)


def predict_request(model: str = "cosine", **spec) -> predict_pb2.PredictRequest:
    """A TF Serving ``PredictRequest`` of :data:`WINDOW` (``model_spec`` fields from ``spec``)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        setattr(request.model_spec, key, value)
    request.inputs["window"].CopyFrom(to_tensor_proto(WINDOW))
    return request


Starter = Callable[..., Running]


@contextlib.contextmanager
def in_process_grpc() -> Iterator[Starter]:
    """``start(settings=None, *, auth=None, model=None, ready=False) -> Running``: a
    GrpcServer on 127.0.0.1:<free port> in a background event loop, over ``model`` (a new
    :class:`FakeModel` by default) as model ``cosine`` version 1, with request caps of 4 rows
    and 64 KiB and a reload door that records the configs it gets. Every server started is
    stopped on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers: list[gs.GrpcServer] = []

    def run(coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)

    def start(
        settings: gs.GrpcSettings | None = None,
        *,
        auth: AuthSettings | None = None,
        model: FakeModel | None = None,
        ready: bool = False,
    ) -> Running:
        model = model or FakeModel()
        model.ready = model.ready or ready
        reloads: list[ServingConfig] = []

        def resolve(name, version, label=None):
            if name != "cosine" or (version is not None and int(version) != COSINE.version):
                raise errors.ModelNotFound(f"model '{name}' version {version} is not served")
            return model

        async def reload(config: ServingConfig) -> None:
            reloads.append(config)

        async def build() -> gs.GrpcServer:
            models = Models(
                {"cosine": model},
                resolve,
                Limits(max_rows=4, max_bytes=64 * 1024),
                reload=reload,
                auth=auth,
            )
            server = gs.GrpcServer(
                models, settings or gs.GrpcSettings(host="127.0.0.1", port=0, grace_s=2)
            )
            await server.start()
            return server

        server = run(build())
        servers.append(server)
        return Running(server, model, f"127.0.0.1:{server.port}", loop, reloads)

    try:
        yield start
    finally:
        for server in servers:
            run(server.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
