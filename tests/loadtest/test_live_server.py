"""The reliability runs' load against the session's server: the closed loop behind
``live_server.Load`` and the open-loop flood record one outcome per request, through both
doors, with the statuses the verdicts read."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from loadtest.doors import door_call
from loadtest.generator import open_loop
from loadtest.live_server import Load, sequential

pytestmark = pytest.mark.integration


def test_closed_and_open_loops_record_every_request(server):
    target = SimpleNamespace(url=server.url, grpc_target=f"127.0.0.1:{server.grpc_port}")

    async def main():
        doors = {door: (door_call(door, "imdb", 1), 2) for door in ("http", "grpc")}
        async with Load(target, doors) as load:
            await asyncio.sleep(1.0)
            closed = await load.stop()
        flood = await open_loop(target.url, target.grpc_target, "imdb", 1, rate=20, seconds=1)
        return closed, flood, await sequential(target, "imdb", count=3)

    closed, flood, single = asyncio.run(main())
    assert {o.door for o in closed} == {"http", "grpc"}
    assert all(o.ok for o in closed + flood + single), [o for o in closed + flood if not o.ok]
    assert {o.status for o in closed} == {"200", "OK"}
    assert len(flood) == 20 and [o.door for o in flood[:2]] == ["http", "grpc"]
    assert len(single) == 3 and all(o.done > o.sent for o in closed + flood + single)
