"""A live ``bentoml serve``: the one launcher of the benchmark, the reliability runs
(``loadtest.chaos``, ``loadtest.soak``), the rollout and the test suite's fixtures.

:func:`serve` starts it on free loopback ports, in its own process group, with a
``BENTOML_HOME`` of its own (a ``models`` link to the store's models: BentoML clears the
Prometheus files under ``$BENTOML_HOME`` at start-up, which would wipe another server's, or
links to each stored version with ``private=True``), and on exit stops the whole group and
any orphaned worker. Around it: :class:`CpuMeter` (the CPU other processes use meanwhile:
the machine is shared), closed-loop :class:`Load` and single timed requests that record an
:class:`~loadtest.chaos_verdicts.Outcome` each.

Typical usage::

    with serve(models=("imdb",), workers=2, log=Path("reports/serve.log")) as server:
        async with Load(server, {"http": (door_call("http", "imdb"), 16)}) as load:
            ...
        outcomes = await load.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import aiohttp
import psutil

from loadtest.chaos_verdicts import Outcome
from loadtest.doors import GRPC_DOORS, Call, door_call
from loadtest.generator import answered, closed_loop, load_client, outcome, timed
from loadtest.procs import (
    LOOPBACK,
    ServerProcess,
    free_port,
    machine_busy_seconds,
    worker_processes,
)

ROOT = Path(__file__).resolve().parents[1]
PREDICT = "/tensorflow.serving.PredictionService/Predict"


class CpuMeter:
    """CPU used by other processes: the machine's busy time minus this process, everything
    it started (the server, a Locust run) and the server's tree, sampled every 0.5 s so that
    a worker that dies is still counted."""

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self.seen: dict[int, float] = {}
        self.machine = self.ours = 0.0
        self.started = self.last = 0.0
        self._task: asyncio.Task[None] | None = None

    def _ours(self) -> list[psutil.Process]:
        me = psutil.Process()
        found = {me.pid: me}
        for root in (me, self.root_pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                process = root if isinstance(root, psutil.Process) else psutil.Process(root)
                for child in [process, *process.children(recursive=True)]:
                    found.setdefault(child.pid, child)
        return list(found.values())

    def sample(self) -> None:
        busy = machine_busy_seconds()
        ours = 0.0
        for process in self._ours():
            try:
                cpu = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total = cpu.user + cpu.system
            ours += total - self.seen.get(process.pid, 0.0 if self.started else total)
            self.seen[process.pid] = total
        if self.started:
            self.machine += busy - self.last
            self.ours += ours
        else:
            self.started = time.monotonic()
        self.last = busy

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.5)

    def __enter__(self) -> Self:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self.sample()

    @property
    def other_cores(self) -> float | None:
        """Mean cores busy with other processes (1.0 = one core)."""
        wall = time.monotonic() - self.started if self.started else 0.0
        return max(0.0, self.machine - self.ours) / wall if wall > 0 else None


@dataclass
class Server:
    """A running ``bentoml serve`` and where to reach it."""

    process: ServerProcess
    url: str
    grpc_target: str
    workers: int  # SERVICE_WORKERS when given, else 0 (the service's default)
    grace_s: float
    home: Path  # its BENTOML_HOME (new versions registered here are served)

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    @property
    def grpc_port(self) -> int:
        return int(self.grpc_target.rsplit(":", 1)[1])

    def worker_processes(self) -> dict[int, psutil.Process]:
        """Live workers by BentoML worker index (``--worker-id``)."""
        return worker_processes(self.pid)


def private_home(store_home: Path, home: Path, models: tuple[str, ...]) -> Path:
    """A BENTOML_HOME whose store links to the versions of ``models`` that ``store_home``
    already holds: new versions registered there land only there."""
    for name in models:
        source = store_home / "models" / name
        target = home / "models" / name
        target.mkdir(parents=True, exist_ok=True)
        for entry in source.iterdir():
            if entry.is_dir():
                (target / entry.name).symlink_to(entry.resolve())
            elif entry.name == "latest":
                shutil.copy(entry, target / "latest")
    return home


@contextlib.contextmanager
def serve(
    models: tuple[str, ...] = (),
    workers: int | str | None = None,
    log: Path = ROOT / "reports" / "serve.log",
    buckets: str = "",
    store: Path | None = None,
    private: bool = False,
    wait: bool = True,
    ports: tuple[int, int] | None = None,
    source: Path | None = None,
    **settings: str,
) -> Iterator[Server]:
    """``bentoml serve`` (the repository's bentofile) on free loopback ports with a
    ``BENTOML_HOME`` of its own, ready (``/readyz`` 200), and on exit its whole process
    group stopped and any orphaned worker killed. The one launcher of the load tests and
    the test suite.

    The home's ``models`` links to the store's (BentoML clears the Prometheus files under
    ``$BENTOML_HOME`` at start-up, which would wipe another server's).

    Args:
        models: ``SERVICE_MODELS`` (empty: every model in the store).
        workers: ``SERVICE_WORKERS`` (None: the service's default).
        log: where the server's output goes.
        buckets: ``SERVICE_BATCH_BUCKETS`` ("" = the service's default).
        store: the model store's home (default ``$BENTOML_HOME``, else ``~/bentoml``).
        private: link each stored version of ``models`` instead (:func:`private_home`), so
            that new versions registered in :attr:`Server.home` stay out of ``store``.
        wait: wait until ``/readyz`` is 200 before yielding.
        ports: the HTTP and gRPC ports (default: free ones, chosen now).
        source: the service's code (default this checkout), e.g. a built Bento's ``src``.
        settings: more environment variables (``SERVICE_GRACE_S="5"``, ...).
    """
    home = Path(tempfile.mkdtemp(prefix="keras-serving-home-"))
    store = store or Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")
    if private:
        private_home(store, home, models)
    else:
        (home / "models").symlink_to(store.resolve() / "models")
    port, grpc_port = ports or (free_port(), free_port())
    url = f"http://{LOOPBACK}:{port}"
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "True",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "GRPC_PORT": str(grpc_port),
        "GRPC_HOST": LOOPBACK,
    }
    for name, value in (
        ("SERVICE_MODELS", ",".join(models)),
        ("SERVICE_WORKERS", "" if workers is None else str(workers)),
        ("SERVICE_BATCH_BUCKETS", buckets),
    ):
        if value:
            env[name] = value
    env.update(settings)
    command = [str(Path(sys.executable).parent / "bentoml"), "serve", "--host", LOOPBACK]
    if source is not None:
        command[2:2] = ["service.service:ModelServer", "--working-dir", str(source)]
    process = ServerProcess([*command, "--port", str(port)], f"{url}/readyz", log, env, ROOT)
    started = time.monotonic()
    try:
        process.start(wait=wait)
        if wait:
            print(f"bentoml serve ready in {time.monotonic() - started:.0f} s ({url})", flush=True)
        grace = float(env.get("SERVICE_GRACE_S") or 10)
        count = int(env["SERVICE_WORKERS"]) if env.get("SERVICE_WORKERS", "").isdigit() else 0
        yield Server(process, url, f"{LOOPBACK}:{grpc_port}", count, grace, home)
    finally:
        process.stop()
        shutil.rmtree(home, ignore_errors=True)


class Load:
    """Closed-loop clients through each door until :meth:`stop`, recording every outcome."""

    def __init__(self, server: Server, doors: dict[str, tuple[Call, int]]) -> None:
        self.server = server
        self.doors = doors
        self.outcomes: list[Outcome] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        for door, (call, concurrency) in self.doors.items():
            target = self.server.grpc_target if door in GRPC_DOORS else self.server.url
            client = await self._stack.enter_async_context(load_client(door, target, concurrency))

            def record(_: int, sent: float, done: float, __: Any, error: Any, door=door) -> None:
                self.outcomes.append(outcome(door, sent, done, error))

            running = closed_loop(
                call, client, concurrency, record, lambda _: not self._stop.is_set()
            )
            self._tasks.append(asyncio.create_task(running))
        return self

    async def stop(self) -> list[Outcome]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._stack.aclose()
        return self.outcomes

    async def __aexit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            await self.stop()


async def poll(
    url: str, running: Callable[[], bool], path: str = "/readyz", every_s: float = 0.05
) -> list[Outcome]:
    """``GET path`` on a new connection every ``every_s`` while ``running()``, as a kubelet
    probes (the door of each outcome is the path's name)."""
    probes = []
    timeout = aiohttp.ClientTimeout(total=5)
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        while running():
            probes.append(await http_get(http, f"{url}{path}", door=path.strip("/")))
            await asyncio.sleep(every_s)
    return probes


async def status_of(request: Any) -> tuple[str, str]:
    """The status of an aiohttp request (``http.get(...)``, ``http.post(...)``) and the start
    of its body."""
    async with request as response:
        return str(response.status), (await response.read())[:200].decode(errors="replace")


async def http_get(http: aiohttp.ClientSession, url: str, door: str = "http") -> Outcome:
    """``GET url``; the outcome is its status, recorded under ``door``."""
    return await answered(door, status_of(http.get(url)))


async def post(
    http: aiohttp.ClientSession, path: str, body: bytes, headers: dict[str, str] | None = None
) -> Outcome:
    headers = headers or {"Content-Type": "application/json"}
    return await answered("http", status_of(http.post(path, data=body, headers=headers)))


async def grpc_raw(
    target: str, request: bytes, timeout: float = 30.0, method: str = PREDICT
) -> Outcome:
    """One ``Predict`` (or ``method``) call with raw request bytes on a fresh channel."""
    import grpc

    options = [
        ("grpc.max_send_message_length", 64 << 20),
        ("grpc.max_receive_message_length", 64 << 20),
    ]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        await channel.channel_ready()
        call = channel.unary_unary(method, _registered_method=True)
        return await timed("grpc", call(request, timeout=timeout))


async def health_status(target: str) -> Outcome:
    """gRPC health ``Check`` of the whole server on a fresh channel (status as ``status``)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async def check() -> tuple[str, str]:
        async with grpc.aio.insecure_channel(target) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status), ""

    return await answered("grpc", check())


async def wait_serving(target: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (await health_status(target)).status != "SERVING":
        if time.monotonic() > deadline:
            raise RuntimeError(f"gRPC health at {target} not SERVING after {timeout:.0f} s")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def background(server: Server, model: str, concurrency: int) -> AsyncIterator[Load]:
    """Small closed-loop requests (one item) through HTTP and gRPC."""
    doors = {door: (door_call(door, model, 1), concurrency) for door in ("http", "grpc")}
    async with Load(server, doors) as load:
        yield load


async def sequential(
    server: Server, model: str, seconds: float = 0.0, count: int = 0
) -> list[Outcome]:
    """Single one-item HTTP requests, one after the other, for ``seconds`` or ``count`` requests."""
    call = door_call("http", model, 1)
    outcomes: list[Outcome] = []
    end = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(server.url, connector=connector) as http:
        while (count and len(outcomes) < count) or (not count and time.monotonic() < end):
            outcomes.append(await timed("http", call(http, len(outcomes))))
            await asyncio.sleep(0.02)
    return outcomes


async def slow_post(
    url: str, path: str, body: bytes, started: asyncio.Queue[None], release: asyncio.Event
) -> Outcome:
    """A POST whose headers and first half of body arrive at once and the rest after
    ``release``: a request the server has accepted and still handles."""
    host, port = url.removeprefix("http://").rsplit(":", 1)

    async def send() -> tuple[str, str]:
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            half = len(body) // 2
            writer.write(head + body[:half])
            await writer.drain()
        finally:
            started.put_nowait(None)
        await release.wait()
        writer.write(body[half:])
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 60)
        writer.close()
        status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "connection"
        return status, answer.partition(b"\r\n\r\n")[2][:200].decode(errors="replace")

    return await answered("http", send())


async def first_refusal(
    probe: Callable[[], Awaitable[Outcome]],
    refused: set[str],
    signalled: float,
    timeout: float = 5.0,
) -> Outcome | None:
    """Probes until the answer is a refusal; the outcome is timed from the signal."""
    deadline = signalled + timeout
    while time.monotonic() < deadline:
        outcome = await probe()
        if outcome.status in refused:
            return Outcome(outcome.door, signalled, outcome.done, outcome.status, outcome.detail)
        await asyncio.sleep(0.005)
    return None
