"""Serving settings read once from environment variables.

Every knob an operator turns lives here, with its default; ``service/ARCHITECTURE.md``
documents them. Nothing in this module imports TensorFlow or BentoML.

Typical usage::

    settings = ServingSettings.from_env()
    settings.buckets        # (1, 2, 4, 8, 16, 32, 64)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from service.cpus import usable_cpus


def _int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be >= {minimum}")
    return value


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ValueError(f"{name}={value} must be >= 0")
    return value


def _buckets(raw: str) -> tuple[int, ...]:
    try:
        values = sorted({int(v) for v in raw.split(",") if v.strip()})
    except ValueError:
        raise ValueError(
            f"SERVICE_BATCH_BUCKETS={raw!r}: expected comma-separated integers"
        ) from None
    if not values or values[0] < 1:
        raise ValueError(f"SERVICE_BATCH_BUCKETS={raw!r}: expected positive sizes")
    return tuple(values)


def _flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw not in ("", "0", "1", "false", "true"):
        raise ValueError(f"{name}={raw!r}: expected 1 or 0")
    return raw in ("1", "true")


# One worker per core measured best on 2 cores (service/ARCHITECTURE.md, "Workers").
DEFAULT_WORKERS = "auto"


def _workers(raw: str, gpus: int) -> tuple[int, str]:
    """``SERVICE_WORKERS``: a number, or ``auto`` (one per GPU, else one per CPU the
    container's quota allows: :func:`service.cpus.usable_cpus`), and where it came from."""
    raw = raw.strip().lower() or DEFAULT_WORKERS
    if raw == "auto":
        if gpus > 0:
            return gpus, f"SERVICE_GPUS={gpus}"
        cpus = usable_cpus()
        return cpus.count, cpus.source
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"SERVICE_WORKERS={raw!r}: expected a number or auto") from None
    if value < 1:
        raise ValueError(f"SERVICE_WORKERS={value} must be >= 1")
    return value, f"SERVICE_WORKERS={value}"


def bucket_for(n: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket holding ``n`` rows (``n`` must not exceed the largest)."""
    for size in buckets:
        if n <= size:
            return size
    raise ValueError(f"batch of {n} rows exceeds the largest bucket {buckets[-1]}")


def _names(raw: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in raw.split(",") if n.strip())


@dataclass(frozen=True)
class ServingSettings:
    """Everything a worker is configured with."""

    # Models to serve; empty = every model of the store that has a metadata.json.
    models: tuple[str, ...] = ()
    # Worker processes; each loads every model and serves every door (HTTP and gRPC).
    workers: int = 1
    # Where ``workers`` came from, for the start-up log ("cgroup v2 cpu.max 200000/100000").
    workers_source: str = ""
    # GPUs to use (0 = CPU): with GPUs, one worker per card, each on its own card.
    gpus: int = 0
    # TensorFlow intra-/inter-op threads per worker (0 = cores / workers).
    tf_threads: int = 0
    # "auto": compile the tensor signature with XLA unless the export already is;
    # "1": always wrap it in tf.function(jit_compile=True); "0": never.
    xla: str = "auto"
    # Batch sizes every model call is padded to; the largest is the max batch size
    # (TF Serving's allowed_batch_sizes / max_batch_size).
    buckets: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    # Admission by time: a request whose estimated wait in its model's queue (rows ahead /
    # the rows per second the model achieves) exceeds this, or its own remaining deadline, is
    # refused at once with 503 + Retry-After / RESOURCE_EXHAUSTED; 0 = only the deadline.
    max_queue_wait_ms: float = 1000.0
    # Rows that may wait per model signature, a memory guard on top of the time budget
    # (TF Serving's max_enqueued_batches x max_batch_size).
    max_queue: int = 16384
    # How long an idle model waits for a batch to fill (Triton's max_queue_delay_microseconds,
    # TF Serving's batch_timeout_micros); 0 = a batch leaves as soon as the model is free.
    max_queue_delay_ms: float = 0.0
    # With no fixed delay: how long a free model may wait for its padded batch to fill with
    # real rows, as a fraction of that bucket's model time (0 = never; service.batcher).
    batch_fill: float = 0.5
    # Caps on what one request may carry.
    max_items: int = 64
    max_body_bytes: int = 8 * 1024 * 1024
    max_text_chars: int = 20_000
    max_image_side: int = 4096
    # Total pixels of the uploaded images of one request, from their headers, before any
    # is decoded (413 / RESOURCE_EXHAUSTED above).
    max_pixels: int = 64 * 1024 * 1024
    max_horizon: int = 100
    # Seconds a request may take end to end: its deadline in the queue, and BentoML's timeout.
    timeout_s: int = 60
    # BentoML's per-request access log and OpenTelemetry tracing of the model endpoints
    # (measured costs in service/ARCHITECTURE.md); off by default.
    access_log: bool = False
    tracing: bool = False
    # Seconds between two looks at the model store and SERVICE_MODEL_CONFIG for new or
    # removed versions (TF Serving's file_system_poll_wait_seconds); 0 = never look again.
    poll_s: float = 10.0
    # The model config file (YAML or TOML): version policy and labels per model; "" = none
    # (every model serves its latest version, no labels). Schema in the README.
    model_config: str = ""
    # On SIGTERM: seconds the requests already accepted get to finish before models unload.
    grace_s: float = 10.0
    # "text" (BentoML's log lines) or "json" (one JSON object per line).
    log_format: str = "text"
    # Versions of one model a config may load at once (a reload asking for more is refused).
    max_versions: int = 4
    # "auto": inside a built Bento the versions it packaged, else the store at BENTOML_HOME;
    # "store": always the store (a shared volume every replica watches; deploy/README.md).
    model_source: str = "auto"

    @property
    def max_batch_size(self) -> int:
        return self.buckets[-1]

    @classmethod
    def from_env(cls) -> ServingSettings:
        """Reads the ``SERVICE_*`` variables.

        Raises:
            ValueError: a variable is set to something unusable (the message names it).
        """
        xla = os.environ.get("SERVICE_XLA", "auto").strip().lower() or "auto"
        if xla not in ("auto", "0", "1"):
            raise ValueError(f"SERVICE_XLA={xla!r}: expected auto, 0 or 1")
        buckets = _buckets(os.environ.get("SERVICE_BATCH_BUCKETS", "") or "1,2,4,8,16,32,64")
        gpus = _int("SERVICE_GPUS", 0)
        log_format = os.environ.get("SERVICE_LOG_FORMAT", "text").strip().lower() or "text"
        if log_format not in ("text", "json"):
            raise ValueError(f"SERVICE_LOG_FORMAT={log_format!r}: expected text or json")
        workers, workers_source = _workers(os.environ.get("SERVICE_WORKERS", ""), gpus)
        source = os.environ.get("SERVICE_MODEL_SOURCE", "auto").strip().lower() or "auto"
        if source not in ("auto", "store"):
            raise ValueError(f"SERVICE_MODEL_SOURCE={source!r}: expected auto or store")
        settings = cls(
            models=_names(os.environ.get("SERVICE_MODELS", "")),
            workers=workers,
            workers_source=workers_source,
            gpus=gpus,
            tf_threads=_int("SERVICE_TF_THREADS", 0),
            xla=xla,
            buckets=buckets,
            max_queue=_int("SERVICE_MAX_QUEUE", 16384, minimum=1),
            max_queue_wait_ms=_float("SERVICE_MAX_QUEUE_WAIT_MS", 1000.0),
            max_queue_delay_ms=_float("SERVICE_MAX_QUEUE_DELAY_MS", 0.0),
            batch_fill=_float("SERVICE_BATCH_FILL", 0.5),
            max_items=_int("SERVICE_MAX_ITEMS", buckets[-1], minimum=1),
            max_body_bytes=_int("SERVICE_MAX_BODY_BYTES", 8 * 1024 * 1024, minimum=1024),
            max_text_chars=_int("SERVICE_MAX_TEXT_CHARS", 20_000, minimum=1),
            max_horizon=_int("SERVICE_MAX_HORIZON", 100, minimum=1),
            max_pixels=_int("SERVICE_MAX_PIXELS", 64 * 1024 * 1024, minimum=1),
            timeout_s=_int("SERVICE_TIMEOUT_S", 60, minimum=1),
            access_log=_flag("SERVICE_ACCESS_LOG"),
            tracing=_flag("SERVICE_TRACING"),
            poll_s=_float("SERVICE_POLL_S", 10.0),
            model_config=os.environ.get("SERVICE_MODEL_CONFIG", "").strip(),
            grace_s=_float("SERVICE_GRACE_S", 10.0),
            log_format=log_format,
            max_versions=_int("SERVICE_MAX_VERSIONS", 4, minimum=1),
            model_source=source,
        )
        if settings.max_items > settings.max_batch_size:
            raise ValueError(
                f"SERVICE_MAX_ITEMS={settings.max_items} exceeds the largest batch bucket "
                f"{settings.max_batch_size} (SERVICE_BATCH_BUCKETS)"
            )
        return settings


def cuda_device_for_worker(worker_index: int | None, gpus: int, visible: str | None) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` value of one worker: one card per worker.

    Args:
        worker_index: BentoML's 1-based worker index (``bentoml.server_context.worker_index``).
        gpus: ``SERVICE_GPUS`` (0 = CPU: nothing to assign).
        visible: ``CUDA_VISIBLE_DEVICES`` as the worker inherited it (BentoML may have
            given every worker the same list), or None when unset.

    Returns:
        The one card this worker should see, or None to leave the environment alone.
    """
    if gpus <= 0 or worker_index is None:
        return None
    if visible is None:
        cards = [str(i) for i in range(gpus)]
    else:  # an explicit list (an empty one hides every card: stay on the CPU)
        cards = [c.strip() for c in visible.split(",") if c.strip()]
    if not cards:
        return None
    return cards[(worker_index - 1) % len(cards)]
