"""Several replicas on loopback, as Kubernetes would run them: real ``bentoml serve``
processes on their own ports sharing one model store, and clients that balance over them.

``python -m loadtest.replicas`` (``make replicas``) runs three scenarios on ``imdb`` and
prints their figures (JSON under ``reports/replicas.json``):

* **spread**: a ``GrpcClient`` over both replicas' addresses (``ipv4:a,b``, gRPC's
  ``round_robin``) sends 200 calls; each replica's ``/metrics`` says how many it answered.
* **kill**: 16 closed-loop clients (8 HTTP, 8 gRPC) run while one replica's every process
  gets SIGKILL (the arbiter and its workers: circus gives each worker a session of its
  own, so a signal to the arbiter's group alone would orphan them); every call must land.
* **rolling update**: replica A serves version 1; version 2 is registered in the shared
  store (A loads it by hot reload); replica B starts on it and turns ready, takes traffic;
  then A gets SIGTERM and drains. 16 clients on both protocols throughout; zero failures.

The HTTP clients hold both addresses (no balancer process runs here: see ``deploy/README.md``)
and try the next replica when one is unreachable or draining (503): what a client-side
balancer or a Service's endpoints do. The gRPC clients are ``clients.grpc.AsyncClient``
on an ``ipv4:`` target, its retry and round-robin unchanged.

Typical usage::

    python -m loadtest.replicas --store ~/bentoml          # the figures, then reports/
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from clients.errors import ClientError, Unavailable
from clients.grpc import AsyncClient as AsyncGrpcClient
from clients.http import AsyncClient as AsyncHttpClient
from loadtest.live_server import serve
from loadtest.procs import LOOPBACK, ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
MODEL = "imdb"
TEXTS = ["a wonderful film, the actors were brilliant", "dull, long and badly acted"]
# A subchannel to a replica not started yet retries its connection after at most this long
# (gRPC's default grows to 120 s), so a new replica gets traffic within a second or two.
FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


@dataclass
class Replica:
    """One ``bentoml serve`` on its own ports, with a ``BENTOML_HOME`` whose ``models`` is
    the shared store's (its own Prometheus directory: BentoML clears it at start-up)."""

    name: str
    port: int
    grpc_port: int
    log: Path
    process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def grpc_address(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None and self.process.proc is not None
        return self.process.proc.pid


def replica(name: str, work: Path) -> Replica:
    """A replica's ports, chosen now so clients can be given its address before it starts."""
    return Replica(name, free_port(), free_port(), work / f"{name}.log")


@contextlib.contextmanager
def running(
    rep: Replica, store: Path, source: Path | None = None, **settings: str
) -> Iterator[Replica]:
    """Starts ``rep`` on ``store`` (a ``BENTOML_HOME``), waits for ``/readyz``, and stops its
    every process on exit, whatever state it is in.

    Args:
        source: the service's code (default this checkout), e.g. a built Bento's ``src``.
    """
    settings = {"SERVICE_POLL_S": "1", **settings}
    ports = (rep.port, rep.grpc_port)
    with serve(
        (MODEL,), 1, rep.log, "1,4", store, ports=ports, source=source, **settings
    ) as server:
        rep.process = server.process
        yield rep


def kill(rep: Replica) -> None:
    """SIGKILL to the replica's every process (a node lost, an OOM kill of the pod)."""
    root = psutil.Process(rep.pid)
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    assert rep.process is not None and rep.process.proc is not None
    rep.process.proc.wait(timeout=30)


def grpc_answered(rep: Replica) -> float:
    """Predict calls the replica answered on its gRPC door (``/metrics``, every worker)."""
    text = httpx.get(f"{rep.url}/metrics", timeout=10).text
    total = 0.0
    for labels, value in re.findall(r"^keras_serving_requests_total\{(.*)\} (\S+)$", text, re.M):
        if 'door="grpc"' in labels and f'model="{MODEL}"' in labels:
            total += float(value)
    return total


def versions(rep: Replica) -> dict[int, str]:
    """The replica's versions of the model and their states (TF Serving's REST status)."""
    body = httpx.get(f"{rep.url}/v1/models/{MODEL}", timeout=10).json()
    return {int(s["version"]): s["state"] for s in body["model_version_status"]}


def register_copy(store: Path) -> int:
    """Registers the store's latest version of the model again as the next version, the
    way the training toolkit registers (``training.registry.register_export``)."""
    models = store / "models" / MODEL
    latest = models / (models / "latest").read_text().strip()
    meta = json.loads((latest / "metadata.json").read_text())
    version = int(meta["version"]) + 1
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / MODEL / str(version)
        shutil.copytree(latest, export, ignore=shutil.ignore_patterns("model.yaml"))
        meta["version"] = version
        (export / "metadata.json").write_text(json.dumps(meta))
        code = (
            "import json, sys; from pathlib import Path; "
            "from training.registry import register_export; p = Path(sys.argv[1]); "
            "register_export(p, json.loads((p / 'metadata.json').read_text()))"
        )
        subprocess.run(
            [sys.executable, "-c", code, str(export)],
            cwd=ROOT,
            env={**os.environ, "BENTOML_HOME": str(store)},
            check=True,
            timeout=300,
            capture_output=True,
        )
    return version


@dataclass
class Call:
    door: str  # http | grpc
    at: float  # time.monotonic() when it ended
    version: int | None  # the version that answered; None = the call failed
    error: str = ""


class FailoverHttp:
    """HTTP clients of every replica; each call goes to the next one, and past a replica
    that is unreachable or draining (``Unavailable``: refused, reset, 503)."""

    def __init__(self, urls: list[str], offset: int = 0) -> None:
        self.clients = [AsyncHttpClient(url, timeout=30, retry=1) for url in urls]
        self.next = offset

    async def sentiment(self, texts: list[str]) -> Any:
        error: ClientError | None = None
        for _ in range(2 * len(self.clients)):
            client = self.clients[self.next % len(self.clients)]
            self.next += 1
            try:
                return await client.sentiment(texts)
            except Unavailable as exc:
                error = exc
                await asyncio.sleep(0.05)
        assert error is not None
        raise error

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


@dataclass
class Traffic:
    """Closed-loop clients (half HTTP, half gRPC) in a thread of their own until stopped."""

    urls: list[str]
    grpc_target: str
    clients: int = 16
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _client(self, n: int) -> None:
        door = "http" if n % 2 == 0 else "grpc"
        if door == "http":
            client: Any = FailoverHttp(self.urls, offset=n)
        else:  # its own connections (a separate client process would have its own too)
            options = (("grpc.use_local_subchannel_pool", 1), *FAST_RECONNECT)
            client = AsyncGrpcClient(self.grpc_target, timeout=30, options=options)
        try:
            while not self._stop.is_set():
                try:
                    [result] = await client.sentiment([TEXTS[n % 2]])
                    self.calls.append(Call(door, time.monotonic(), result.model.version))
                except Exception as exc:  # noqa: BLE001 -- every failure is counted
                    error = f"{type(exc).__name__}: {exc}"[:300]
                    self.calls.append(Call(door, time.monotonic(), None, error))
        finally:
            await client.close()

    async def _main(self) -> None:
        await asyncio.gather(*(self._client(n) for n in range(self.clients)))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stops every client (each finishes its call in progress)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)

    def failures(self, since: float = 0.0) -> list[Call]:
        return [c for c in self.calls if c.version is None and c.at >= since]

    def answered(self, since: float = 0.0) -> int:
        return sum(1 for c in self.calls if c.version is not None and c.at >= since)


def wait_for(condition: Any, timeout: float, what: str) -> float:
    """Polls ``condition()`` every 0.1 s; returns when it held (time.monotonic())."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def spread(a: Replica, b: Replica, calls: int = 200) -> dict[str, Any]:
    """``calls`` Predicts from one client over ``ipv4:a,b``: how many each replica answered."""

    async def send() -> dict[str, int]:
        async with AsyncGrpcClient(f"ipv4:{a.grpc_address},{b.grpc_address}") as client:
            # round_robin balances over the connections that are up: let both connect.
            await client.sentiment(["connect"])
            await asyncio.sleep(1.0)
            before = {r.name: grpc_answered(r) for r in (a, b)}
            for _ in range(calls // 4):
                await asyncio.gather(*(client.sentiment([TEXTS[0]]) for _ in range(4)))
            return {r.name: int(grpc_answered(r) - before[r.name]) for r in (a, b)}

    counts = asyncio.run(send())
    total = sum(counts.values())
    share = round(min(counts.values()) / total, 3)
    return {"calls": total, "per_replica": counts, "min_share": share}


def kill_under_load(a: Replica, b: Replica, seconds: float = 6.0) -> dict[str, Any]:
    """16 clients over both replicas; ``a`` is SIGKILLed; the clients keep going on ``b``."""
    target = f"ipv4:{a.grpc_address},{b.grpc_address}"
    with Traffic([a.url, b.url], target) as traffic:
        wait_for(lambda: traffic.answered() >= 50, 120, "traffic before the kill")
        killed_at = time.monotonic()
        kill(a)
        wait_for(lambda: traffic.answered(killed_at) >= 100, 120, "traffic after the kill")
        time.sleep(seconds)
        traffic.stop()
    return {
        "answered": traffic.answered(),
        "answered_after_kill": traffic.answered(killed_at),
        "failures": len(traffic.failures()),
        "errors": sorted({f"{c.door}: {c.error}" for c in traffic.failures()})[:5],
    }


class VersionWatch:
    """Polls each replica's model status every 0.2 s in a thread: when did each first
    serve ``version`` alone (seconds after ``since``)? A replica not up yet is skipped."""

    def __init__(self, replicas: list[Replica], version: int, since: float) -> None:
        self.replicas, self.version, self.since = replicas, version, since
        self.first: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.first) < len(self.replicas):
            for rep in self.replicas:
                if rep.name in self.first:
                    continue
                with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                    if set(versions(rep).items()) == {(self.version, "AVAILABLE")}:
                        self.first[rep.name] = round(time.monotonic() - self.since, 1)
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def rolling_update(store: Path, a: Replica, b: Replica, steady_s: float = 3.0) -> dict[str, Any]:
    """``a`` serves version 1; version 2 is registered in the shared store (``a`` loads it
    by hot reload); ``b`` starts on it and turns ready; once ``b`` takes traffic, ``a`` gets
    SIGTERM and drains. The caller started ``a``; ``b`` is started here."""
    [old] = [v for v, s in versions(a).items() if s == "AVAILABLE"]
    target = f"ipv4:{a.grpc_address},{b.grpc_address}"
    figures: dict[str, Any] = {"old_version": old}
    with Traffic([a.url, b.url], target) as traffic:
        wait_for(lambda: traffic.answered() >= 50, 120, "traffic on A")
        time.sleep(steady_s)
        started = time.monotonic()
        new = register_copy(store)
        registered = time.monotonic()  # the version is in the store
        figures.update(new_version=new, register_s=round(registered - started, 1))
        watch = VersionWatch([a, b], new, since=registered)
        try:
            with running(b, store):
                figures["b_ready_s"] = round(time.monotonic() - registered, 1)
                wait_for(lambda: len(watch.first) == 2, 120, f"every replica on version {new}")
                figures["replica_on_new_version_s"] = dict(watch.first)
                figures["every_replica_on_new_version_s"] = max(watch.first.values())
                before_b = grpc_answered(b)
                wait_for(lambda: grpc_answered(b) > before_b + 20, 60, "gRPC traffic on B")
                assert a.process is not None and a.process.proc is not None
                terminated = time.monotonic()
                os.kill(a.pid, signal.SIGTERM)  # what the kubelet sends after preStop
                a.process.proc.wait(timeout=60)
                figures["a_drained_s"] = round(time.monotonic() - terminated, 1)
                wait_for(lambda: traffic.answered(terminated) >= 100, 120, "traffic after SIGTERM")
                time.sleep(steady_s)
                traffic.stop()  # before B stops
        finally:
            watch.stop()
    after = [c for c in traffic.calls if c.at >= terminated and c.version]
    figures.update(
        versions_after_sigterm=sorted({c.version for c in after}),
        answered=traffic.answered(),
        answered_after_sigterm=traffic.answered(terminated),
        failures=len(traffic.failures()),
        errors=sorted({f"{c.door}: {c.error}" for c in traffic.failures()})[:5],
    )
    return figures


def private_store(source: Path, work: Path) -> Path:
    """A store of its own (new versions land only there) linking to ``source``'s versions."""
    from loadtest.live_server import private_home

    return private_home(source, work / "store", (MODEL,))


def run_all(source_store: Path, work: Path) -> dict[str, Any]:
    """Every scenario in turn on two, then three replicas of one shared store."""
    store = private_store(source_store, work)
    first, second, third = (replica(name, work) for name in ("r1", "r2", "r3"))
    result: dict[str, Any] = {}
    with running(first, store), running(second, store):
        result["spread"] = spread(first, second)
        result["kill"] = kill_under_load(first, second)
        result["rolling_update"] = rolling_update(store, second, third)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_store = os.environ.get("BENTOML_HOME") or str(Path.home() / "bentoml")
    parser.add_argument("--store", type=Path, default=Path(default_store))
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "replicas.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="keras-serving-replicas-") as tmp:
        result = run_all(args.store, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    spread_ok = result["spread"]["min_share"] >= 0.3
    failed = result["kill"]["failures"] + result["rolling_update"]["failures"]
    return 0 if spread_ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
