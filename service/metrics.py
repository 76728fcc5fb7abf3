"""Per-model Prometheus metrics, next to BentoML's own on ``/metrics``.

``bentoml serve`` puts every worker process in prometheus_client's multiprocess mode with
one shared directory, so ``/metrics`` of any worker shows the sum over all workers.
(``bentoml.metrics`` is deprecated in 1.4 in favour of prometheus_client itself.)

* ``keras_serving_requests_total{model,door,code}``: requests answered, by HTTP status.
* ``keras_serving_errors_total{model,door,reason}``: requests that failed, by error class.
* ``keras_serving_batch_size{model,signature}``: rows per model call (before padding).
* ``keras_serving_padded_batch_size{model,signature}``: rows per model call after padding.
* ``keras_serving_queue_wait_seconds{model,signature}``: a request entering its model's
  queue to its batch starting.
* ``keras_serving_execution_seconds{model,signature}``: one model call (one batch).
* ``keras_serving_queue_depth{model,signature}``: rows waiting (summed over live workers).
* ``keras_serving_refused_total{model,reason}``: requests refused before the model ran:
  ``wait`` (their estimated queue wait exceeded its budget), ``overload`` (the row cap, a
  memory guard) or ``deadline`` (expired while queued).
* ``keras_serving_inflight_requests{model}``: model requests being answered now, every door
  (summed over live workers: per pod). With ``keras_serving_workers`` it gives the in-flight
  requests per worker, Ray Serve's ``ongoing requests per replica``.
* ``keras_serving_workers``: live worker processes (each sets 1).

The autoscaling signals in ``deploy/`` are built from these: the mean queue wait per pod
(``rate(..._queue_wait_seconds_sum) / rate(..._queue_wait_seconds_count)``, as Triton's chart
scales on ``avg_time_queue_us``) by default, or in-flight requests per pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import typing as t
from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram

_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
_TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUESTS = Counter(
    "keras_serving_requests_total",
    "Requests answered per model, door (rest, tfserving, grpc) and status code.",
    ["model", "door", "code"],
)
ERRORS = Counter(
    "keras_serving_errors_total",
    "Failed requests per model, door and reason (error class).",
    ["model", "door", "reason"],
)
BATCH_SIZE = Histogram(
    "keras_serving_batch_size",
    "Rows per model call, before padding to a bucket.",
    ["model", "signature"],
    buckets=_SIZE_BUCKETS,
)
PADDED_BATCH_SIZE = Histogram(
    "keras_serving_padded_batch_size",
    "Rows per model call after padding to a fixed bucket.",
    ["model", "signature"],
    buckets=_SIZE_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "keras_serving_queue_wait_seconds",
    "From a request entering its model's queue to its batch starting.",
    ["model", "signature"],
    buckets=_TIME_BUCKETS,
)
EXECUTION = Histogram(
    "keras_serving_execution_seconds",
    "Model call time per batch.",
    ["model", "signature"],
    buckets=_TIME_BUCKETS,
)
QUEUE_DEPTH = Gauge(
    "keras_serving_queue_depth",
    "Rows waiting in a model signature's queue.",
    ["model", "signature"],
    multiprocess_mode="livesum",
)
REFUSED = Counter(
    "keras_serving_refused_total",
    "Requests refused before the model ran: wait (estimated queue wait over its budget), "
    "overload (row cap) or deadline (expired while queued).",
    ["model", "reason"],
)

INFLIGHT = Gauge(
    "keras_serving_inflight_requests",
    "Model requests being answered now (every door), summed over the live workers.",
    ["model"],
    multiprocess_mode="livesum",
)
WORKERS = Gauge(
    "keras_serving_workers",
    "Live worker processes of this server (each worker sets 1).",
    multiprocess_mode="livesum",
)

LOAD_FAILURES = Counter(
    "keras_serving_model_load_failures_total",
    "Model versions that failed to load or warm up (the version before keeps serving).",
    ["model"],
)
CONFIG_ERRORS = Counter(
    "keras_serving_model_config_errors_total",
    "Model configs (SERVICE_MODEL_CONFIG) that could not be applied; the previous one stays.",
)


class Tally:
    """Counter increments and gauge moves of one event-loop turn, written once at its end.

    In multiprocess mode every ``inc``/``dec`` of a series is a locked write to its mmap file
    (plus a pid check): a batch of 30 answers was 90 such writes for ``track`` alone. Here
    they are summed in a dict and applied by one callback that the loop runs right after the
    callbacks of this turn, so ``/metrics`` (a later request) always sees them. Without a
    running loop (a thread, a test) they are applied at once.
    """

    def __init__(self) -> None:
        # (metric, its label values in labelnames order) -> amount since the last flush
        self.pending: dict[tuple[t.Any, tuple[str, ...]], float] = {}
        self.loop: asyncio.AbstractEventLoop | None = None  # the flush scheduled on it

    def add(self, metric: t.Any, labels: tuple[str, ...], amount: float = 1) -> None:
        """``metric.labels(*labels).inc(amount)``, soon (a gauge's amount may be negative)."""
        key = (metric, labels)
        self.pending[key] = self.pending.get(key, 0) + amount
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self.loop is None:
            self.loop = loop
            loop.call_soon(self.flush)
        elif self.loop is not loop:  # a second loop (a thread of its own): no sharing
            self.flush()

    def flush(self) -> None:
        self.loop = None
        pending, self.pending = self.pending, {}
        for (metric, labels), amount in pending.items():
            if amount:
                metric.labels(*labels).inc(amount)


TALLY = Tally()


@contextlib.contextmanager
def track(model: str, door: str) -> Iterator[None]:
    """Counts one request of ``door`` (rest, tfserving, grpc) to ``model``, by outcome."""
    from service.errors import ServingError

    TALLY.add(INFLIGHT, (model,))
    code = "200"
    try:
        yield
    except ServingError as exc:
        code = str(int(exc.error_code))
        TALLY.add(ERRORS, (model, door, type(exc).__name__))
        raise
    except BaseException as exc:
        if not isinstance(exc, Exception):  # cancelled or exiting: not an answer
            code = ""
            raise
        code = "500"
        TALLY.add(ERRORS, (model, door, type(exc).__name__))
        raise
    finally:
        if code:
            TALLY.add(REQUESTS, (model, door, code))
        TALLY.add(INFLIGHT, (model,), -1)
