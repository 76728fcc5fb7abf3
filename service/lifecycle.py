"""A worker's life around its engine: readiness shared by the workers, and graceful shutdown.

Readiness (:class:`PeerReadiness`) is the whole server's, not one worker's: each worker of one
``bentoml serve`` leaves a marker (its pid) once its models are warm, and the server is ready
once every worker has done so. A worker that crashed leaves its marker behind, naming a dead
pid: the server stays ready on the workers left while BentoML's supervisor (circus) starts a
replacement, which opens its doors only once warm (:meth:`PeerReadiness.serving_peers` tells it
to wait). A worker shutting down removes its marker, so the whole server turns unready at once.

Shutdown (:class:`Drain`, :class:`RefuseWhileDraining`, :func:`on_stop_signal`): on SIGTERM
(or SIGINT) a worker stops taking requests (HTTP 503, gRPC UNAVAILABLE; probes still answer),
lets the requests it accepted finish for up to ``SERVICE_GRACE_S``, and only then hands the
signal to uvicorn, which closes the connections and runs the shutdown hooks (the models
unload there).

Typical usage::

    peers = PeerReadiness(workers, bentoml.server_context.worker_index, os.getppid())
    peers.mark_ready()            # once this worker's models are warm
    peers.all_ready()             # /readyz and gRPC health
    on_stop_signal(begin_shutdown)  # in the startup hook: SIGTERM -> begin_shutdown()
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import typing as t
from pathlib import Path

from service.errors import NotReady, error_response
from service.runtime_files import (
    private_directory,
    read_private,
    server_directory,
    write_private,
)

logger = logging.getLogger("bentoml.keras_serving.lifecycle")

# Paths a draining worker still answers: the probes must say what is happening.
PROBE_PATHS = frozenset({"/readyz", "/livez", "/healthz", "/metrics"})
SHUTTING_DOWN = "the server is shutting down: retry on another replica"


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed worker stays a zombie until the
    supervisor reaps it, up to 10 s later with BentoML's circus settings)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


class PeerReadiness:
    """Readiness of the whole server, shared by its workers through marker files.

    Each worker writes ``worker-<index>`` (its pid) into the server's private runtime
    directory (:func:`service.runtime_files.server_directory`: named after the common parent's
    pid and start time, so a later server reusing the pid starts clean) once its models are
    warm. The server is ready when every worker index has a marker: a marker
    naming a dead pid is a crashed worker being replaced, and the workers still up keep the
    pod ready. A worker shutting down removes its marker: the server turns unready at once.
    """

    def __init__(
        self,
        workers: int,
        worker_index: int | None,
        parent_pid: int,
        directory: Path | None = None,
    ) -> None:
        self.workers = workers if worker_index is not None else 1
        self.worker_index = worker_index or 1
        # Raises UnsafeRuntimePath (naming the path) when the directory is not private.
        self.directory = directory or server_directory(parent_pid)
        self.marked = False

    def _marker(self, index: int) -> Path:
        return self.directory / f"worker-{index}"

    def _pid(self, index: int) -> int | None:
        try:
            return int(read_private(self._marker(index), max_bytes=32))
        except (OSError, ValueError):  # absent, or not a marker of ours
            return None

    def mark_ready(self) -> None:
        """Records that this worker's models are warm (once)."""
        if self.marked:
            return
        private_directory(self.directory)  # again: the last worker out removed it
        # Atomic: a reader never sees a half-written pid.
        write_private(self._marker(self.worker_index), str(os.getpid()))
        self.marked = True

    def withdraw(self) -> None:
        """This worker is shutting down: removes its marker (and the directory, once empty)."""
        self.marked = False
        self._marker(self.worker_index).unlink(missing_ok=True)
        try:
            self.directory.rmdir()
        except OSError:  # other workers' markers are still there
            pass

    def all_ready(self) -> bool:
        """Every worker has been warm since the server started and none is shutting down.

        A marker naming a dead pid counts: that worker crashed and its replacement warms up
        without taking traffic, while the caller (a live, warm worker) keeps answering.
        """
        if self.workers == 1:
            return self.marked
        return all(self._pid(index) is not None for index in range(1, self.workers + 1))

    def serving_peers(self) -> list[int]:
        """Pids of the other workers that are warm and alive: when there is one, this worker
        is a replacement and must not take traffic before its own models are warm."""
        me = os.getpid()
        pids = (self._pid(index) for index in range(1, self.workers + 1))
        return [pid for pid in pids if pid is not None and pid != me and _alive(pid)]


class Drain:
    """The requests this worker accepted and has not answered yet, and whether it still
    accepts new ones. Both doors register their requests (HTTP through
    :class:`RefuseWhileDraining`, gRPC through ``service.grpc_server``)."""

    def __init__(self) -> None:
        self.accepting = True
        self.in_flight: set[asyncio.Task[t.Any]] = set()

    def close(self) -> None:
        """Refuse every request from now on."""
        self.accepting = False

    async def wait(self, timeout_s: float, poll_s: float = 0.02) -> int:
        """Waits until no accepted request is left, for at most ``timeout_s`` seconds.

        Returns:
            How many requests are still in flight (0: all answered).
        """
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(poll_s)
        return len(self.in_flight)

    def cancel(self) -> None:
        """Cancels the requests still in flight (the grace period is over)."""
        for task in list(self.in_flight):
            task.cancel()

    async def finish(self, grace_s: float) -> int:
        """Refuses new requests, gives the accepted ones ``grace_s`` seconds, cancels the rest.

        Returns:
            How many requests had to be cancelled.
        """
        self.close()
        logger.info(
            "shutting down: %d requests in flight get up to %.1f s (SERVICE_GRACE_S)",
            len(self.in_flight),
            grace_s,
        )
        left = await self.wait(grace_s)
        if left:
            logger.warning("%d requests still in flight after %.1f s: cancelled", left, grace_s)
            self.cancel()
        return left


# One worker is one process: its doors share one drain.
DRAIN = Drain()


class RefuseWhileDraining:
    """ASGI middleware: registers each HTTP request in a :class:`Drain` and, once the drain
    is closed, answers new requests 503 with ``Connection: close`` at once (the probes still
    answer, so ``/readyz`` says 503 for itself)."""

    def __init__(self, app: t.Any, drain: Drain = DRAIN) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: t.Any, receive: t.Any, send: t.Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        drain = self.drain
        if not drain.accepting and scope["path"] not in PROBE_PATHS:
            response = error_response(NotReady(SHUTTING_DOWN))
            response.headers["connection"] = "close"
            await response(scope, receive, send)
            return
        task = asyncio.current_task()
        if task is None:
            await self.app(scope, receive, send)
            return
        drain.in_flight.add(task)
        try:
            await self.app(scope, receive, send)
        finally:
            drain.in_flight.discard(task)


async def open_when_warm(
    peers: PeerReadiness, warm: t.Callable[[], bool], stopping: t.Callable[[], bool]
) -> None:
    """Returns at once when no other worker serves yet (a first start: the probes must
    answer while the models load), else once ``warm()`` (a replacement for a crashed
    worker: it must take no connection before its models are warm).

    Call it in the startup hook, before the gRPC server binds: uvicorn only starts
    accepting HTTP connections once the startup hooks have returned.
    """
    serving = peers.serving_peers()
    if not serving:
        return
    logger.info(
        "workers %s already serve: this worker (a replacement) takes traffic once its "
        "models are warm",
        ", ".join(map(str, serving)),
    )
    started = time.monotonic()
    while not warm() and not stopping():
        await asyncio.sleep(0.1)
    logger.info("warm after %.1f s: taking traffic", time.monotonic() - started)


StopCallback = t.Callable[[], t.Awaitable[None]]


def on_stop_signal(begin_shutdown: StopCallback) -> None:
    """Routes SIGTERM and SIGINT to ``begin_shutdown`` (awaited in the running loop), then
    to whoever handled them before (uvicorn, which then stops accepting and runs the
    shutdown hooks). Further signals are ignored meanwhile, except a second SIGINT, which
    goes straight through (uvicorn's forced exit). Call from the running event loop's
    thread (the startup hook)."""
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    received: list[int] = []
    tasks: set[asyncio.Task[None]] = set()  # a reference, so the shutdown is not collected

    def hand_over(signum: int) -> None:
        handler = previous[signum]
        if callable(handler):
            handler(signum, None)
        elif handler != signal.SIG_IGN:  # SIG_DFL or unknown: die of it as usual
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    async def shut_down(signum: int) -> None:
        try:
            await begin_shutdown()
        except Exception:  # the server must stop anyway
            logger.exception("graceful shutdown failed; stopping now")
        hand_over(signum)

    def handle(signum: int, _frame: t.Any) -> None:
        if received:
            if signum == signal.SIGINT and received[-1] == signal.SIGINT:
                hand_over(signum)
            received.append(signum)
            return
        received.append(signum)

        def start() -> None:
            task = loop.create_task(shut_down(signum))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        loop.call_soon_threadsafe(start)

    for sig in previous:
        signal.signal(sig, handle)
