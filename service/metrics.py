"""Per-model Prometheus metrics, next to BentoML's own on ``/metrics``.

``bentoml serve`` puts every worker process (gateway and model runners) in prometheus_client's
multiprocess mode with one shared directory, so metrics observed in a runner process show up
on the gateway's ``/metrics``. (``bentoml.metrics`` is deprecated in 1.4 in favour of
prometheus_client itself.)

* ``keras_serving_requests_total{model,door,code}``: requests answered, by HTTP status.
* ``keras_serving_errors_total{model,door,reason}``: requests that failed, by error class.
* ``keras_serving_batch_size{model,signature}``: rows per model call (before padding).
* ``keras_serving_padded_batch_size{model,signature}``: rows per model call after padding.
* ``keras_serving_queue_wait_seconds{model,signature}``: gateway sending a request to its
  batch starting on the runner (batcher queue + transport).
* ``keras_serving_execution_seconds{model,signature}``: one model call (one batch).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
    "From the gateway sending a request to its batch starting on the model runner.",
    ["model", "signature"],
    buckets=_TIME_BUCKETS,
)
EXECUTION = Histogram(
    "keras_serving_execution_seconds",
    "Model call time per batch.",
    ["model", "signature"],
    buckets=_TIME_BUCKETS,
)
