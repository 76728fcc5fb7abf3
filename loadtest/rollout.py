"""A new model version rolled out under load: what the clients see.

``python -m loadtest.rollout`` starts ``bentoml serve`` on a private copy of the store
(links to the versions already trained), sends closed-loop clients at one model (half over
the friendly JSON endpoint, half over gRPC ``Predict``, each on its own connection), trains
and registers a new version with ``python -m training`` while they run, and reports:

* failed requests (the target is zero);
* whether each client saw the answering version change exactly once, old to new;
* seconds from the registration to the first answer from the new version, and to the
  moment every client gets it;
* p99 latency in steady state and the worst one-second p99 during the switch;
* the workers' RSS before, at the peak and after the old version unloaded.

The same :func:`watch_rollout` drives ``tests/service/test_rollout.py``.

Typical usage::

    python -m loadtest.rollout --model imdb --clients 16     # prints a table, writes JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from loadtest.generator import Record, closed_loop
from loadtest.live_server import serve
from loadtest.procs import rss_by_process
from loadtest.stats import fmt, percentile, table
from tfserving_api._proto.tensorflow_serving.apis import predict_pb2
from tfserving_api.tensors import to_tensor_proto

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["a wonderful film, the actors were brilliant", "dull, long and badly acted"]


@dataclass
class Answer:
    client: int
    door: str  # http | grpc
    started: float  # time.monotonic()
    seconds: float
    version: int | None  # the version that answered (None: failed)
    error: str | None = None


@dataclass
class Rollout:
    """What the clients saw around one registration."""

    answers: list[Answer] = field(default_factory=list)
    register_started: float = 0.0  # training (or copying) began
    registered_at: float = 0.0  # the new version is in the store
    old: int | None = None
    new: int | None = None
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0

    @property
    def failures(self) -> list[Answer]:
        return [a for a in self.answers if a.version is None]

    def switched_once(self) -> dict[int, list[int]]:
        """Clients whose answering versions were not ``old...old, new...new``, with their
        sequence of versions (empty when every client switched exactly once)."""
        bad = {}
        for client in sorted({a.client for a in self.answers}):
            versions = [a.version for a in self.answers if a.client == client and a.version]
            changes = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
            if changes != [self.old, self.new]:
                bad[client] = changes
        return bad

    def first_new(self) -> float | None:
        """Seconds from the registration to the first answer from the new version."""
        times = [a.started + a.seconds for a in self.answers if a.version == self.new]
        return min(times) - self.registered_at if times else None

    def all_new(self) -> float | None:
        """Seconds from the registration until the last client's first new answer."""
        firsts = []
        for client in {a.client for a in self.answers}:
            times = [
                a.started + a.seconds
                for a in self.answers
                if a.client == client and a.version == self.new
            ]
            if not times:
                return None
            firsts.append(min(times))
        return max(firsts) - self.registered_at if firsts else None

    def p99_ms(self, start: float, end: float) -> float | None:
        latencies = [a.seconds for a in self.answers if start <= a.started < end and a.version]
        p99 = percentile(latencies, 99)
        return None if p99 is None else p99 * 1000

    def worst_window_p99_ms(self, start: float, end: float, width: float = 1.0) -> float | None:
        windows = [self.p99_ms(t, t + width) for t in np.arange(start, end, width)]
        windows = [w for w in windows if w is not None]
        return max(windows) if windows else None

    def summary(self) -> dict[str, Any]:
        switched = self.all_new()
        end = self.registered_at + (switched or 0) + 2.0
        return {
            "requests": len(self.answers),
            "failures": len(self.failures),
            "errors": sorted({a.error for a in self.failures if a.error})[:5],
            "old_version": self.old,
            "new_version": self.new,
            "clients_not_switching_once": self.switched_once(),
            "first_new_answer_s": self.first_new(),
            "every_client_new_s": switched,
            "steady_p99_ms": self.p99_ms(self.answers[0].started, self.register_started)
            if self.answers
            else None,
            "p99_while_registering_ms": self.p99_ms(self.register_started, self.registered_at),
            "worst_switch_p99_ms": self.worst_window_p99_ms(self.registered_at, end),
            "rss_before_mb": self.rss_before / 2**20,
            "rss_peak_mb": self.rss_peak / 2**20,
            "rss_after_mb": self.rss_after / 2**20,
        }


def _grpc_request(model: str, label: str | None = None) -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if label:
        request.model_spec.version_label = label
    request.model_spec.signature_name = "predict_text"
    request.inputs["text"].CopyFrom(to_tensor_proto(np.array([TEXTS[0].encode()], dtype=object)))
    return request.SerializeToString()


async def _http_client(
    url: str,
    model_path: str,
    n: int,
    stop: threading.Event,
    out: list[Answer],
    label: str | None = None,
):
    payload = {"texts": [TEXTS[n % 2]], **({"label": label} if label else {})}

    async def call(http: httpx.AsyncClient, _: int) -> int:
        response = await http.post(model_path, json=payload)
        body = response.json()
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {body}")
        return int(body["model"]["version"])

    async with httpx.AsyncClient(
        base_url=url, timeout=30, limits=httpx.Limits(max_connections=1)
    ) as http:
        await closed_loop(call, http, 1, _recorder(n, "http", out), lambda _: not stop.is_set())


async def _grpc_client(
    target: str,
    model: str,
    n: int,
    stop: threading.Event,
    out: list[Answer],
    label: str | None = None,
):
    import grpc

    request = _grpc_request(model, label)

    async def call(predict: Any, _: int) -> int:
        data = await predict(request, timeout=30)
        return predict_pb2.PredictResponse.FromString(data).model_spec.version.value

    options = [("grpc.use_local_subchannel_pool", 1)]  # its own connection
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        await closed_loop(call, predict, 1, _recorder(n, "grpc", out), lambda _: not stop.is_set())


def _recorder(client: int, door: str, out: list[Answer]) -> Record:
    """Records each request of one client as an :class:`Answer` (every failure counts)."""

    def record(_: int, sent: float, done: float, version: Any, error: Any) -> None:
        failed = None if error is None else f"{type(error).__name__}: {error}"[:200]
        out.append(Answer(client, door, sent, done - sent, None if failed else version, failed))

    return record


def _status(url: str, model: str) -> list[dict[str, Any]]:
    return httpx.get(f"{url}/v1/models/{model}", timeout=10).json()["model_version_status"]


def workers_rss(pid: int) -> int:
    """Resident bytes of the processes of the ``bentoml serve`` process ``pid`` but itself."""
    return sum(rss for name, rss in rss_by_process(pid).items() if name != "arbiter")


def watch_rollout(
    rss: Callable[[], int],
    url: str,
    grpc_target: str,
    model: str,
    register: Callable[[], None],
    clients: int = 16,
    steady_s: float = 5.0,
    timeout_s: float = 300.0,
    settle_s: float = 3.0,
    store_home: Path | None = None,
) -> Rollout:
    """Runs ``clients`` closed-loop clients (half HTTP, half gRPC) against ``model``, calls
    ``register()`` after ``steady_s`` seconds, and stops once every client answers with the
    new version and the old one is unloaded (or after ``timeout_s``). With ``store_home``,
    the registration time is when the store's ``latest`` pointer moved (the training
    process may take a while to exit after that)."""
    result = Rollout()
    stop = threading.Event()
    path = {"imdb": "/imdb/sentiment", "reuters": "/reuters/classify"}[model]
    [old] = [int(s["version"]) for s in _status(url, model) if s["state"] == "AVAILABLE"]
    result.old = old

    async def clients_main() -> None:
        tasks = [
            _http_client(url, path, n, stop, result.answers)
            if n % 2 == 0
            else _grpc_client(grpc_target, model, n, stop, result.answers)
            for n in range(clients)
        ]
        await asyncio.gather(*tasks)

    thread = threading.Thread(target=lambda: asyncio.run(clients_main()), daemon=True)
    thread.start()
    try:
        time.sleep(steady_s)
        result.rss_before = result.rss_peak = rss()
        result.register_started = time.monotonic()
        register()
        result.registered_at = time.monotonic()
        if store_home is not None:
            moved = (store_home / "models" / model / "latest").stat().st_mtime
            result.registered_at -= max(0.0, time.time() - moved)
        deadline = result.registered_at + timeout_s
        while time.monotonic() < deadline:
            result.rss_peak = max(result.rss_peak, rss())
            states = {int(s["version"]): s["state"] for s in _status(url, model)}
            newer = [v for v, s in states.items() if v > old and s == "AVAILABLE"]
            if newer and old not in states and result.all_new() is not None:
                result.new = newer[0]
                break
            if newer:
                result.new = newer[0]
            time.sleep(0.2)
        time.sleep(settle_s)  # after the unload: memory released, clients still answered
        result.rss_after = rss()
    finally:
        stop.set()
        thread.join(60)
    return result


def train_new_version(home: Path, model: str, exports: Path) -> None:
    """``python -m training <model> --synthetic --quick --epochs 1`` into ``home``'s store."""
    command = [sys.executable, "-m", "training", model, "--synthetic", "--quick", "--epochs", "1"]
    env = {**os.environ, "BENTOML_HOME": str(home), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [*command, "--out", str(exports)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"training failed:\n{proc.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="imdb", choices=("imdb", "reuters"))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", default="2")
    parser.add_argument("--poll", default="2", help="SERVICE_POLL_S of the server")
    parser.add_argument(
        "--store", default=os.environ.get("BENTOML_HOME", str(Path.home() / "bentoml"))
    )
    parser.add_argument("--work", default="reports/rollout", help="private store, logs, JSON")
    args = parser.parse_args(argv)

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    with serve(
        (args.model,),
        args.workers,
        work / "serve.log",
        store=Path(args.store),
        private=True,  # the new version lands only in the server's own store
        SERVICE_POLL_S=args.poll,
        # One connection per client, kept: one worker each, which switches exactly once.
        GRPC_MAX_CONNECTION_AGE_S="0",
    ) as server:
        result = watch_rollout(
            lambda: workers_rss(server.pid),
            server.url,
            server.grpc_target,
            args.model,
            lambda: train_new_version(server.home, args.model, work / "exports"),
            clients=args.clients,
            store_home=server.home,
        )
    summary = result.summary()
    (work / "rollout.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{args.model}: v{summary['old_version']} -> v{summary['new_version']}, "
        f"{args.clients} clients, {args.workers} workers, SERVICE_POLL_S={args.poll}"
    )
    rows = [
        ("requests", summary["requests"]),
        ("failed", summary["failures"]),
        ("clients not switching exactly once", len(summary["clients_not_switching_once"])),
        ("registered -> first new answer (s)", summary["first_new_answer_s"]),
        ("registered -> every client new (s)", summary["every_client_new_s"]),
        ("steady p99 (ms)", summary["steady_p99_ms"]),
        ("p99 while training runs beside the server (ms)", summary["p99_while_registering_ms"]),
        ("worst 1-s p99 during the switch (ms)", summary["worst_switch_p99_ms"]),
        (
            "workers' RSS before / peak / after (MB)",
            f"{summary['rss_before_mb']:.0f} / {summary['rss_peak_mb']:.0f} / {summary['rss_after_mb']:.0f}",
        ),
    ]
    print("\n".join(table(["", "figure"], ([name, fmt(value, 2)] for name, value in rows))))
    ok = summary["failures"] == 0 and not summary["clients_not_switching_once"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
