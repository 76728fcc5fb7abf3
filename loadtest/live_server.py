"""A live ``bentoml serve`` for the reliability runs (``loadtest.chaos``, ``loadtest.soak``).

:func:`serve` starts it on free loopback ports, in its own process group, with a
``BENTOML_HOME`` of its own (a ``models`` link to the store's models: BentoML clears the
Prometheus files under ``$BENTOML_HOME`` at start-up, which would wipe another server's), and
stops the whole group on exit. Around it: :class:`CpuMeter` (the CPU other processes use
meanwhile: the machine is shared), closed-loop :class:`Load` and single timed requests that
record an :class:`~loadtest.chaos_verdicts.Outcome` each.

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

from loadtest.chaos_verdicts import Outcome, classify
from loadtest.doors import door_call
from loadtest.procs import LOOPBACK, ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
PREDICT = "/tensorflow.serving.PredictionService/Predict"
Call = Callable[[Any, int], Awaitable[None]]


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
        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
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
    workers: int
    grace_s: float

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    def worker_processes(self) -> dict[int, psutil.Process]:
        """Live workers by BentoML worker index (``--worker-id``)."""
        found = {}
        for child in psutil.Process(self.pid).children():
            try:
                command = child.cmdline()
                if "--worker-id" in command and child.status() != psutil.STATUS_ZOMBIE:
                    found[int(command[command.index("--worker-id") + 1])] = child
            except (psutil.NoSuchProcess, ValueError, IndexError):
                continue
        return found


@contextlib.contextmanager
def serve(
    models: tuple[str, ...],
    workers: int,
    log: Path,
    buckets: str = "",
    store: Path | None = None,
    **settings: str,
) -> Iterator[Server]:
    """``bentoml serve`` with a ``BENTOML_HOME`` of its own, ready (``/readyz`` 200), stopped
    (its whole process group) on exit.

    Args:
        models: ``SERVICE_MODELS``; the store is ``$BENTOML_HOME`` (default ``~/bentoml``).
        workers: ``SERVICE_WORKERS``.
        log: where the server's output goes.
        buckets: ``SERVICE_BATCH_BUCKETS`` ("" = the service's default).
        store: the model store (default ``$BENTOML_HOME``, else ``~/bentoml``).
        settings: more environment variables (``SERVICE_GRACE_S="5"``, ...).
    """
    home = Path(tempfile.mkdtemp(prefix="keras-serving-home-"))
    store = store or Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")
    (home / "models").symlink_to(store.resolve() / "models")
    port, grpc_port = free_port(), free_port()
    url = f"http://{LOOPBACK}:{port}"
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "True",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "SERVICE_MODELS": ",".join(models),
        "SERVICE_WORKERS": str(workers),
        "GRPC_PORT": str(grpc_port),
        "GRPC_HOST": LOOPBACK,
        **settings,
    }
    if buckets:
        env["SERVICE_BATCH_BUCKETS"] = buckets
    command = [
        str(Path(sys.executable).parent / "bentoml"),
        "serve",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    ]
    process = ServerProcess(command, f"{url}/readyz", log, env=env, cwd=ROOT)
    started = time.monotonic()
    try:
        process.start()
        print(f"bentoml serve ready in {time.monotonic() - started:.0f} s ({url})", flush=True)
        grace = float(env.get("SERVICE_GRACE_S") or 10)
        yield Server(process, url, f"{LOOPBACK}:{grpc_port}", workers, grace)
    finally:
        stop(process)
        shutil.rmtree(home, ignore_errors=True)


def stop(process: ServerProcess) -> None:
    """Stops the server's process group, then kills any worker left: circus starts each
    worker in a session of its own, so a SIGKILL to the group would orphan them."""
    workers: list[psutil.Process] = []
    if process.proc is not None:
        with contextlib.suppress(psutil.NoSuchProcess):
            workers = psutil.Process(process.proc.pid).children(recursive=True)
    process.stop()
    for worker in workers:
        with contextlib.suppress(psutil.NoSuchProcess):
            if worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE:
                worker.kill()


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
        from loadtest.doors import GrpcChannels

        clients: dict[str, Any] = {}
        for door, (_, concurrency) in self.doors.items():
            if door == "grpc":
                clients[door] = await self._stack.enter_async_context(
                    GrpcChannels(self.server.grpc_target, concurrency, timeout=30)
                )
            else:
                connector = aiohttp.TCPConnector(limit=concurrency + 4)
                clients[door] = await self._stack.enter_async_context(
                    aiohttp.ClientSession(
                        self.server.url,
                        connector=connector,
                        timeout=aiohttp.ClientTimeout(total=30),
                    )
                )
        for door, (call, concurrency) in self.doors.items():
            for worker in range(concurrency):
                self._tasks.append(
                    asyncio.create_task(self._run(door, call, clients[door], worker))
                )
        return self

    async def _run(self, door: str, call: Call, client: Any, worker: int) -> None:
        n = worker * 1_000_000
        while not self._stop.is_set():
            self.outcomes.append(await timed(door, call(client, n)))
            n += 1

    async def stop(self) -> list[Outcome]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._stack.aclose()
        return self.outcomes

    async def __aexit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            await self.stop()


async def timed(door: str, request: Awaitable[Any]) -> Outcome:
    """Awaits one request (a door call: it raises on anything but a good answer) and
    records its outcome: ``OK`` (gRPC) or ``200`` (HTTP), else what :func:`classify` says."""
    sent = time.monotonic()
    try:
        await request
        status, detail = ("OK" if door == "grpc" else "200"), ""
    except Exception as exc:  # noqa: BLE001 (every failure is recorded)
        status, detail = classify(exc)
    return Outcome(door, sent, time.monotonic(), status, detail)


async def poll_readyz(url: str, stop: asyncio.Event, every_s: float = 0.05) -> list[Outcome]:
    """``GET /readyz`` on a new connection every ``every_s`` (as a kubelet probes)."""
    probes = []
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)
    ) as http:
        while not stop.is_set():
            probes.append(await http_get(http, f"{url}/readyz", door="readyz"))
            await asyncio.sleep(every_s)
    return probes


async def http_get(http: aiohttp.ClientSession, url: str, door: str = "http") -> Outcome:
    """``GET url``; the outcome is its status, recorded under ``door``."""
    sent = time.monotonic()
    try:
        async with http.get(url) as response:
            await response.read()
            status, detail = str(response.status), ""
    except Exception as exc:  # noqa: BLE001
        status, detail = classify(exc)
    return Outcome(door, sent, time.monotonic(), status, detail)


async def post(http: aiohttp.ClientSession, path: str, body: bytes) -> Outcome:
    sent = time.monotonic()
    try:
        headers = {"Content-Type": "application/json"}
        async with http.post(path, data=body, headers=headers) as response:
            detail = (await response.read())[:200].decode(errors="replace")
            status = str(response.status)
    except Exception as exc:  # noqa: BLE001
        status, detail = classify(exc)
    return Outcome("http", sent, time.monotonic(), status, detail)


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

    sent = time.monotonic()
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        status, detail = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status), ""
    except Exception as exc:  # noqa: BLE001
        status, detail = classify(exc)
    return Outcome("grpc", sent, time.monotonic(), status, detail)


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
