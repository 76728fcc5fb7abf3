"""The load generators: closed-loop asyncio workers, and an open-loop flood.

:func:`closed_loop` is the one closed loop: ``concurrency`` workers each send one request,
wait for the answer, check it and send the next, and hand each result to a recorder. The
benchmark's :func:`measure` records a warm-up and then a measured window; the reliability
runs' :class:`loadtest.live_server.Load` and the rollout's clients record an
:class:`~loadtest.chaos_verdicts.Outcome` (or the answering version) per request. One
asyncio loop drives them all, in a process that never imports TensorFlow; the process's
own CPU time over the window (``resource.getrusage``) is recorded, so the report shows
whether the generator itself could have been the bottleneck. :func:`open_loop` (and
:func:`flood_from_processes`) send at a fixed rate whatever the answers.

What each request is and how its answer is checked is :mod:`loadtest.doors`: pre-encoded
requests for every door, gRPC through bare ``grpc.aio`` channels with pre-serialized
``PredictRequest`` bytes (~0.4 ms of CPU per request through ``clients.grpc`` before),
HTTP posts of pre-encoded JSON with ``aiohttp`` rather than ``httpx`` (measured on the
2-core benchmark machine: ~2.1 ms of CPU per request for httpx, ~0.3-0.5 ms for aiohttp).
On a small machine every generator CPU second is taken from the server under test, so
each run also records the generator's CPU per request.

Typical usage::

    async with load_client("grpc", "127.0.0.1:8500", concurrency=64) as client:
        run = await measure(door_call("grpc", "imdb"), client, concurrency=64, duration=10, warmup=2)
    print(run.throughput, run.percentiles["p99_ms"], run.errors, run.generator_ms_per_request)
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import aiohttp

from loadtest.chaos_verdicts import Outcome, classify
from loadtest.doors import GRPC_DOORS, Call, GrpcChannels, door_call, grpc_method
from loadtest.stats import percentiles

# What a closed loop hands over per request: (worker, sent, done, result, error), times
# from time.monotonic() (the event loop's clock).
Record = Callable[[int, float, float, Any, "BaseException | None"], None]

TIMEOUT_S = 30.0


@dataclass
class Run:
    """What one measured window produced."""

    requests: int  # answered inside the window, successfully or not
    errors: int
    error_kinds: dict[str, int]  # error class -> count, with one example message each
    error_examples: list[str]
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    generator_cpu: float  # CPU seconds of this process per wall second (1.0 = one core)

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    @property
    def generator_ms_per_request(self) -> float | None:
        """The generator's CPU milliseconds per answered request (sending, receiving, checking)."""
        if not self.requests:
            return None
        return self.generator_cpu * self.seconds * 1000.0 / self.requests

    @property
    def percentiles(self) -> dict[str, float | None]:
        """``p50_ms``, ``p95_ms``, ``p99_ms``, ``mean_ms`` of the successful requests."""
        return percentiles(self.latencies_ms)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread, incl. gRPC's C core
    return usage.ru_utime + usage.ru_stime


@contextlib.asynccontextmanager
async def load_client(door: str, target: str, concurrency: int) -> AsyncIterator[Any]:
    """What :func:`~loadtest.doors.door_call` calls send through:
    :class:`loadtest.doors.GrpcChannels` (one connection per 16 workers) for ``grpc``, else
    an ``aiohttp`` session with a connection per worker. No retries: every failure counts."""
    if door in GRPC_DOORS:
        method = grpc_method(door)
        async with GrpcChannels(target, concurrency, timeout=TIMEOUT_S, method=method) as channels:
            yield channels
        return
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(target, connector=connector, timeout=timeout) as session:
        yield session


async def closed_loop(
    call: Call,
    client: Any,
    concurrency: int,
    record: Record,
    running: Callable[[float], bool],
) -> None:
    """``concurrency`` workers, each sending ``call(client, n)`` (``n`` counts the requests)
    and awaiting it before the next, while ``running(sent)``; every request's
    ``(worker, sent, done, result, error)`` goes to ``record``. Every failure counts (status,
    transport, body): it is recorded, never raised."""
    loop = asyncio.get_running_loop()
    counter = iter(range(1 << 62))

    async def worker(index: int) -> None:
        while running(sent := loop.time()):
            result, error = None, None
            try:
                result = await call(client, next(counter))
            except Exception as exc:  # noqa: BLE001
                error = exc
            record(index, sent, loop.time(), result, error)

    await asyncio.gather(*(worker(index) for index in range(concurrency)))


def outcome(door: str, sent: float, done: float, error: BaseException | None) -> Outcome:
    """The :class:`Outcome` of one door call: ``OK`` (gRPC) or ``200`` (HTTP) when it
    returned (a door call raises on anything but a good answer), else what
    :func:`~loadtest.chaos_verdicts.classify` says."""
    ok = "OK" if door in GRPC_DOORS else "200"
    status, detail = (ok, "") if error is None else classify(error)
    return Outcome(door, sent, done, status, detail)


async def timed(door: str, request: Awaitable[Any]) -> Outcome:
    """Awaits one door call and records its :func:`outcome`."""
    sent = time.monotonic()
    try:
        await request
    except Exception as exc:  # noqa: BLE001 (every failure is recorded)
        return outcome(door, sent, time.monotonic(), exc)
    return outcome(door, sent, time.monotonic(), None)


async def answered(door: str, answer: Awaitable[tuple[str, str]]) -> Outcome:
    """Awaits one request whose ``answer`` is its ``(status, detail)``; a failure's are what
    :func:`~loadtest.chaos_verdicts.classify` says."""
    sent = time.monotonic()
    try:
        status, detail = await answer
    except Exception as exc:  # noqa: BLE001 (every failure is recorded)
        status, detail = classify(exc)
    return Outcome(door, sent, time.monotonic(), status, detail)


async def measure(
    call: Call,
    client: Any,
    concurrency: int,
    duration: float,
    warmup: float,
    on_window: Callable[[str], Awaitable[None]] | None = None,
) -> Run:
    """Runs ``concurrency`` closed-loop workers for ``warmup + duration`` seconds.

    Requests answered within the last ``duration`` seconds are counted. ``on_window`` is
    awaited with ``"start"`` and ``"end"`` at the window's edges (to scrape server metrics).
    """
    loop = asyncio.get_running_loop()
    window_start = loop.time() + warmup
    window_end = window_start + duration
    latencies: list[float] = []
    kinds: Counter[str] = Counter()
    examples: dict[str, str] = {}
    answered = 0

    def record(_: int, sent: float, done: float, __: Any, error: BaseException | None) -> None:
        nonlocal answered
        if window_start <= done <= window_end:
            answered += 1
            if error is None:
                latencies.append((done - sent) * 1000.0)
            else:
                kind = type(error).__name__
                kinds[kind] += 1
                examples.setdefault(kind, f"{kind}: {str(error)[:300]}")

    workers = asyncio.create_task(
        closed_loop(call, client, concurrency, record, lambda sent: sent < window_end)
    )
    await asyncio.sleep(max(0.0, window_start - loop.time()))
    if on_window is not None:
        await on_window("start")
    cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
    await asyncio.sleep(max(0.0, window_end - loop.time()))
    cpu_used, wall = _cpu_seconds() - cpu_start, time.perf_counter() - wall_start
    if on_window is not None:
        await on_window("end")
    await workers
    return Run(
        requests=answered,
        errors=sum(kinds.values()),
        error_kinds=dict(kinds),
        error_examples=list(examples.values()),
        seconds=duration,
        latencies_ms=latencies,
        generator_cpu=cpu_used / wall if wall else 0.0,
    )


class MetricsDelta:
    """Means over a window of the service's per-model histograms on ``/metrics`` (delta of
    ``_sum`` over delta of ``_count``; names in ``service/metrics.py``, summed over the
    workers by prometheus_client's multiprocess mode): rows per model call
    (``keras_serving_batch_size``), the wait from entering the queue to the batch starting
    (``keras_serving_queue_wait_seconds``), the model call (``keras_serving_execution_seconds``),
    and the requests refused over the window (``keras_serving_refused_total``).
    """

    FAMILIES: ClassVar[dict[str, str]] = {  # a counter's family is named without "_total"
        "batch_size": "keras_serving_batch_size",
        "queue_wait": "keras_serving_queue_wait_seconds",
        "execution": "keras_serving_execution_seconds",
        "refused": "keras_serving_refused",
    }

    def __init__(self, url: str, model: str) -> None:
        self.url = url.rstrip("/") + "/metrics"
        self.model = model
        self.samples: dict[str, dict[str, tuple[float, float]]] = {}

    async def scrape(self, edge: str) -> None:
        """Records each family's ``_sum`` and ``_count`` (a counter's ``_total``) at ``edge``
        (``"start"`` or ``"end"``)."""
        from prometheus_client.parser import text_string_to_metric_families

        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(self.url) as response:
            text = await response.text()
        keys = {name: key for key, name in self.FAMILIES.items()}
        totals = {key: [0.0, 0.0] for key in self.FAMILIES}
        for family in text_string_to_metric_families(text):
            key = keys.get(family.name.removesuffix("_total"))
            if key is None:
                continue
            for sample in family.samples:
                if sample.labels.get("model") != self.model:
                    continue
                if sample.name.endswith("_sum"):
                    totals[key][0] += sample.value
                elif sample.name.endswith(("_count", "_total")):
                    totals[key][1] += sample.value
        self.samples[edge] = {key: (total, count) for key, (total, count) in totals.items()}

    def _delta(self, key: str) -> tuple[float, float] | None:
        if "start" not in self.samples or "end" not in self.samples:
            return None
        (sum_start, count_start), (sum_end, count_end) = (
            self.samples["start"][key],
            self.samples["end"][key],
        )
        return sum_end - sum_start, count_end - count_start

    def mean(self, key: str) -> float | None:
        """Mean of histogram ``key`` over the window (None without observations)."""
        delta = self._delta(key)
        return delta[0] / delta[1] if delta is not None and delta[1] > 0 else None

    @property
    def mean_batch_size(self) -> float | None:
        return self.mean("batch_size")

    @property
    def refused(self) -> int | None:
        """Requests the service refused (queue full, deadline) over the window."""
        delta = self._delta("refused")
        return None if delta is None else int(delta[1])


async def open_loop(
    url: str,
    grpc_target: str,
    model: str,
    items: int,
    rate: float,
    seconds: float,
    doors: tuple[str, ...] = ("http", "grpc"),
) -> list[Outcome]:
    """Requests sent at ``rate`` per second for ``seconds`` whatever the answers (``doors``
    in turn): what arrives at a server, unlike a closed loop that slows down with it."""
    calls = {door: door_call(door, model, items) for door in doors}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    tasks: list[asyncio.Task[Outcome]] = []
    async with (
        aiohttp.ClientSession(url, connector=connector, timeout=timeout) as http,
        GrpcChannels(grpc_target, concurrency=64, timeout=60) as channels,
    ):
        clients = {"http": http, "grpc": channels}
        start = time.monotonic()
        n = 0
        while (due := start + n / rate) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            door = doors[n % len(doors)]
            tasks.append(asyncio.create_task(timed(door, calls[door](clients[door], n))))
            n += 1
        return list(await asyncio.gather(*tasks))


def _flood(
    url: str, target: str, items: int, rate: float, seconds: float, start_at: float, out: Any
) -> None:
    """One generator process of :func:`flood_from_processes` (module level: spawned)."""
    time.sleep(max(0.0, start_at - time.monotonic()))
    flood = asyncio.run(open_loop(url, target, "imdb", items, rate, seconds))
    out.put([asdict(o) for o in flood])


def flood_from_processes(
    url: str, grpc_target: str, items: int, rate: float, seconds: float, processes: int
) -> list[Outcome]:
    """:func:`open_loop` of imdb at ``rate`` split over ``processes`` generator processes: one
    asyncio process cannot send ~1,000 requests/s and read the answers on time on a small
    machine, and its lateness would count as the server's. Monotonic clocks are shared by
    the processes, so the outcomes stay comparable."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # grpc's threads do not survive fork
    out = context.Queue()
    start_at = time.monotonic() + 5.0  # after every process has imported its modules
    workers = [
        context.Process(
            target=_flood,
            args=(url, grpc_target, items, rate / processes, seconds, start_at, out),
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes = [Outcome(**fields) for _ in workers for fields in out.get(timeout=seconds + 120)]
    for worker in workers:
        worker.join(30)
    return outcomes
