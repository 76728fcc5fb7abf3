"""A worker's life (issue 10): readiness shared by the workers, graceful shutdown, JSON logs.

Unit tests first (marker files, the drain, the HTTP gate, the signal hand-over, the JSON
formatter), then two real ``bentoml serve`` runs with two workers (imdb only, buckets 1,4):
``kill -9`` of one worker under load, and SIGTERM with requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.doors import GrpcChannels, door_call
from loadtest.live_server import Server, health_status, serve, slow_post, wait_serving
from loadtest.procs import listeners, wait_closed, wait_replacement
from service.lifecycle import Drain, PeerReadiness, RefuseWhileDraining
from service.logs import JsonFormatter, configure_logging

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"SERVICE_MODELS": "imdb", "SERVICE_BATCH_BUCKETS": "1,4"}


# ------------------------------------------------------------------ readiness markers


@pytest.fixture
def markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SERVICE_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _peer(readiness: PeerReadiness, index: int, pid: int) -> None:
    (readiness.directory / f"worker-{index}").write_text(str(pid))


def test_one_worker_is_ready_once_marked(markers: Path) -> None:
    alone = PeerReadiness(1, None, os.getppid())
    assert not alone.all_ready()
    alone.mark_ready()
    assert alone.all_ready()


def test_every_worker_must_have_been_warm_and_a_crashed_one_does_not_unready_the_rest(
    markers: Path,
) -> None:
    me = PeerReadiness(2, 1, os.getppid())
    me.mark_ready()
    assert not me.all_ready()  # worker 2 is still loading
    assert me.serving_peers() == []
    _peer(me, 2, os.getppid())  # a live peer
    assert me.all_ready()
    assert me.serving_peers() == [os.getppid()]
    _peer(me, 2, _dead_pid())  # it crashed: its replacement warms up, worker 1 serves
    assert me.all_ready()
    assert me.serving_peers() == []


def test_a_worker_shutting_down_unreadies_the_server(markers: Path) -> None:
    first, second = PeerReadiness(2, 1, os.getppid()), PeerReadiness(2, 2, os.getppid())
    first.mark_ready()
    _peer(second, 2, os.getppid())
    assert first.all_ready()
    first.withdraw()
    assert not first.all_ready() and not second.all_ready()
    assert not (first.directory / "worker-1").exists()


def test_markers_of_an_earlier_server_with_the_same_parent_pid_are_ignored(markers: Path) -> None:
    readiness = PeerReadiness(2, 1, os.getpid())
    started = (Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split())[19]
    assert readiness.directory.name == f"server-{os.getpid()}-{started}"
    assert readiness.directory.parent == markers / "run"


# ------------------------------------------------------------------ drain and HTTP gate


def test_drain_waits_for_requests_in_flight_and_cancels_them_after_the_grace() -> None:
    async def scenario() -> tuple[int, int, bool]:
        drain = Drain()

        async def request(seconds: float) -> None:
            task = asyncio.current_task()
            drain.in_flight.add(task)
            try:
                await asyncio.sleep(seconds)
            finally:
                drain.in_flight.discard(task)

        quick = asyncio.create_task(request(0.05))
        await asyncio.sleep(0)
        left_quick = await drain.finish(1.0)
        slow = asyncio.create_task(request(10))
        await asyncio.sleep(0)
        left_slow = await drain.finish(0.1)
        await asyncio.sleep(0)
        return left_quick, left_slow, quick.done() and slow.cancelled()

    assert asyncio.run(scenario()) == (0, 1, True)


async def _call(app: RefuseWhileDraining, path: str) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app({"type": "http", "path": path, "method": "GET", "headers": []}, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, body


def test_the_http_gate_counts_requests_then_refuses_new_ones_but_not_the_probes() -> None:
    drain = Drain()
    seen: list[int] = []

    async def inner(scope, receive, send) -> None:
        seen.append(len(drain.in_flight))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    gate = RefuseWhileDraining(inner, drain=drain)
    assert asyncio.run(_call(gate, "/imdb/sentiment"))[0] == 200
    assert seen == [1] and not drain.in_flight
    drain.close()
    status, headers, body = asyncio.run(_call(gate, "/imdb/sentiment"))
    assert status == 503 and headers["connection"] == "close"
    assert "shutting down" in json.loads(body)["error"]
    assert asyncio.run(_call(gate, "/readyz"))[0] == 200  # the probe answers for itself


def test_the_stop_signal_runs_the_shutdown_then_hands_over_to_the_previous_handler() -> None:
    script = textwrap.dedent(
        """
        import asyncio, os, signal
        from service.lifecycle import on_stop_signal

        events = []
        signal.signal(signal.SIGTERM, lambda signum, frame: events.append("previous"))

        async def main():
            async def begin():
                events.append("shutdown")
                await asyncio.sleep(0.05)
            on_stop_signal(begin)
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # a second one is ignored meanwhile
            await asyncio.sleep(0.5)

        asyncio.run(main())
        print(",".join(events))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "shutdown,previous"


# ------------------------------------------------------------------ JSON logs


def test_json_log_lines_carry_time_level_logger_message_worker_and_the_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("bentoml.keras_serving.test_lifecycle")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("queue %s is %d rows deep", "imdb", 3)
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("model failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "queue imdb is 3 rows deep"
    assert first["level"] == "WARNING" and first["logger"] == logger.name
    assert first["time"].endswith("Z") and "worker" in first and first["pid"] == os.getpid()
    assert "exc_info" not in first
    assert "ValueError: boom" in second["exc_info"] and second["level"] == "ERROR"


def test_configure_logging_formats_every_handler_and_rejects_unknown_formats() -> None:
    handler = logging.StreamHandler(io.StringIO())
    logger = logging.getLogger("test_lifecycle.configured")
    logger.addHandler(handler)
    try:
        configure_logging("text")
        assert not isinstance(handler.formatter, JsonFormatter)
        root_formatters = {h: h.formatter for h in logging.getLogger().handlers}
        configure_logging("json")
        assert isinstance(handler.formatter, JsonFormatter)
    finally:
        logger.removeHandler(handler)
        for root_handler, formatter in root_formatters.items():
            root_handler.setFormatter(formatter)
    with pytest.raises(ValueError, match="SERVICE_LOG_FORMAT"):
        configure_logging("xml")


# ------------------------------------------------------------------ live: kill -9, SIGTERM

integration = pytest.mark.integration


@contextlib.contextmanager
def _server(trained_store, tmp_path: Path, **settings: str) -> Iterator[Server]:
    settings = {**SMALL, **settings}
    models = tuple(settings.pop("SERVICE_MODELS").split(","))
    buckets = settings.pop("SERVICE_BATCH_BUCKETS")
    with serve(
        models, 2, tmp_path / "serve.log", buckets, store=trained_store.home, **settings
    ) as server:
        asyncio.run(wait_serving(server.grpc_target))
        yield server


def _readyz_ms(url: str) -> tuple[int, float]:
    started = time.perf_counter()
    status = httpx.get(f"{url}/readyz", timeout=5).status_code
    return status, (time.perf_counter() - started) * 1000


@integration
def test_kill_9_of_a_worker_the_other_keeps_answering_and_a_warm_replacement_comes_back(
    trained_store, tmp_path: Path
) -> None:
    with _server(trained_store, tmp_path, SERVICE_LOG_FORMAT="json") as server:
        port = int(server.grpc_target.rsplit(":", 1)[1])
        index, victim = min(server.worker_processes().items())
        results: list[tuple[float, int]] = []
        stop = threading.Event()

        def load() -> None:  # one request at a time: a client that keeps going
            body = {"texts": ["a wonderful film"]}
            with httpx.Client(base_url=server.url, timeout=10) as http:
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        status = http.post("/imdb/sentiment", json=body).status_code
                    except httpx.TransportError:
                        status = 0
                    results.append((sent, status))

        thread = threading.Thread(target=load)
        thread.start()
        try:
            time.sleep(0.5)
            before = listeners(port)
            victim.kill()
            dead_at = asyncio.run(wait_closed(port, before))
            probes = [_readyz_ms(server.url) for _ in range(10)]
            replaced = asyncio.run(wait_replacement(server, index, victim.pid, timeout=180))
            assert replaced is not None, server.process.tail()
            time.sleep(0.5)
        finally:
            stop.set()
            thread.join(30)
        after = [status for sent, status in results if sent > dead_at]
        assert after and set(after) == {200}, sorted(set(after))
        assert {status for status, _ in probes} == {200}  # the pod still serves: ready
        assert max(ms for _, ms in probes) < 1000  # chaos checks the 100 ms target
        assert asyncio.run(health_status(server.grpc_target)).status == "SERVING"

        async def over_grpc() -> None:
            async with GrpcChannels(server.grpc_target, concurrency=16) as channels:
                call = door_call("grpc", "imdb")
                await asyncio.gather(*(call(channels, n) for n in range(8)))

        asyncio.run(over_grpc())
        log = (tmp_path / "serve.log").read_text().splitlines()
        ours = [json.loads(line) for line in log if line.startswith("{")]
        assert any("a replacement" in entry["message"] for entry in ours)
        assert {"time", "level", "logger", "message", "worker"} <= set(ours[-1])
        tensorflow_native = ("I0000", "W0000", "E0000", "WARNING: All log messages before absl")
        assert all(line.startswith(("{", *tensorflow_native)) for line in log if line.strip())


@integration
def test_sigterm_answers_every_request_in_flight_then_exits_0(
    trained_store, tmp_path: Path
) -> None:
    with _server(trained_store, tmp_path, SERVICE_GRACE_S="5") as server:
        proc = server.process.proc

        async def scenario() -> tuple[list, list, int | None]:
            body = b'{"texts": ["a wonderful film", "a dull one"]}'
            started: asyncio.Queue[None] = asyncio.Queue()
            release = asyncio.Event()
            accepted = [
                asyncio.create_task(
                    slow_post(server.url, "/imdb/sentiment", body, started, release)
                )
                for _ in range(8)
            ]
            for _ in accepted:
                await started.get()
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
                probes = [(await http.get("/readyz")).status_code]
                probes.append((await http.post("/imdb/sentiment", content=body)).status_code)
            release.set()
            outcomes = await asyncio.gather(*accepted)
            return outcomes, probes, await asyncio.to_thread(proc.wait, 60)

        outcomes, probes, exit_code = asyncio.run(scenario())
    assert [o.status for o in outcomes] == ["200"] * 8, [o.detail for o in outcomes]
    assert probes == [503, 503]  # unready, and new requests refused, while draining
    assert exit_code == 0
