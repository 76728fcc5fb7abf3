"""gRPC targets naming many replicas: calls spread round-robin, a dead replica is routed
around by the retry, a single address works as before. Two real gRPC servers on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from conftest import FakeTFServing
from grpc_health.v1 import health, health_pb2
from grpc_health.v1 import health_pb2_grpc as real_health_pb2_grpc

from clients.grpc import ROUND_ROBIN, AsyncClient, Client, _channel_options, parse_target
from tfserving_api._proto.grpc_health.v1 import health_pb2_grpc
from tfserving_api._proto.tensorflow_serving.apis import (
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)


class Replica:
    """One fake TF Serving on 127.0.0.1:<free port>; with ``watched``, grpc.health.v1 is
    the real servicer (``Watch`` included, as the service's), starting NOT_SERVING."""

    def __init__(self, watched: bool = False) -> None:
        self.servicer = FakeTFServing()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            self.servicer, self.server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(self.servicer, self.server)
        if watched:
            self.health = health.HealthServicer()
            self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            real_health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        else:
            health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def predicts(self) -> int:
        return sum(1 for name, _ in self.servicer.calls if name == "Predict")


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started = [Replica(), Replica()]
    yield started
    for replica in started:
        replica.server.stop(grace=None)


def both(replicas: list[Replica]) -> str:
    return "ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in replicas)


@pytest.mark.parametrize(
    "target",
    [
        "dns:///keras-serving-grpc.default.svc.cluster.local:8500",
        "dns:keras-serving-grpc:8500",
        "ipv4:10.0.0.1:8500,10.0.0.2:8500",
        "ipv6:[::1]:8500",
        "unix:/run/keras-serving.sock",
    ],
)
def test_resolver_targets_go_to_the_channel_unchanged(target):
    assert parse_target(target) == (target, False)


def test_round_robin_is_the_default_and_can_be_replaced():
    assert ("grpc.service_config", ROUND_ROBIN) in _channel_options(1024, None, ())
    assert all(name != "grpc.service_config" for name, _ in _channel_options(1024, None, (), False))
    mine = ("grpc.service_config", '{"loadBalancingConfig": [{"pick_first": {}}]}')
    assert [o for o in _channel_options(1024, None, [mine]) if o[0] == "grpc.service_config"] == [
        mine
    ]


def test_calls_spread_over_every_address(replicas):
    with Client(both(replicas), timeout=10) as client:
        for _ in range(40):
            client.sentiment(["a fine film"])
    counts = [r.predicts for r in replicas]
    assert sum(counts) == 40 and min(counts) >= 12, counts  # >= 30 % each


def test_pick_first_stays_on_one_address(replicas):
    with Client(both(replicas), timeout=10, balance=False) as client:
        for _ in range(20):
            client.sentiment(["a fine film"])
    assert sorted(r.predicts for r in replicas) == [0, 20]


def test_a_dead_replica_is_routed_around(replicas):
    with Client(both(replicas), timeout=10) as client:
        for _ in range(10):
            client.sentiment(["warm up both connections"])
        assert all(r.predicts for r in replicas)
        replicas[0].server.stop(grace=None)
        before = replicas[1].predicts
        for _ in range(20):  # none fails: the retry (or the policy) picks the live one
            client.sentiment(["a fine film"])
    assert replicas[1].predicts - before == 20


def test_a_replica_not_serving_yet_gets_no_calls_until_it_is():
    """Client-side health checking: a replica whose health says NOT_SERVING (loading its
    models, or draining) is skipped by round_robin, and joins once SERVING."""
    ready, loading = Replica(), Replica(watched=True)
    try:
        with Client(both([ready, loading]), timeout=10) as client:
            for _ in range(20):
                client.sentiment(["a fine film"])
            assert (ready.predicts, loading.predicts) == (20, 0)
            loading.health.set("", health_pb2.HealthCheckResponse.SERVING)
            deadline = time.monotonic() + 10
            while loading.predicts == 0 and time.monotonic() < deadline:
                client.sentiment(["a fine film"])
            assert loading.predicts > 0, "the replica never got a call once SERVING"
            loading.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # draining
            time.sleep(0.5)  # the Watch stream delivers the change
            before = loading.predicts
            for _ in range(20):
                client.sentiment(["a fine film"])
            assert loading.predicts == before
    finally:
        for replica in (ready, loading):
            replica.server.stop(grace=None)


def test_async_client_balances_too(replicas):
    async def run() -> None:
        async with AsyncClient(both(replicas), timeout=10) as client:
            # round_robin picks among the connections already up: a burst sent before the
            # second one connects all goes to the first, so send ten rounds of four.
            for _ in range(10):
                await asyncio.gather(*(client.sentiment(["a fine film"]) for _ in range(4)))

    asyncio.run(run())
    assert min(r.predicts for r in replicas) >= 12, [r.predicts for r in replicas]


def test_a_single_address_works_as_before(replicas):
    for target in (f"127.0.0.1:{replicas[0].port}", f"dns:///127.0.0.1:{replicas[0].port}"):
        with Client(target, timeout=10) as client:
            assert client.sentiment(["a fine film"])[0].label
    assert (replicas[0].predicts, replicas[1].predicts) == (2, 0)
