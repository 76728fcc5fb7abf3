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


def _names(raw: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in raw.split(",") if n.strip())


@dataclass(frozen=True)
class ServingSettings:
    """Everything the gateway and the model runners are configured with."""

    # Models to serve; empty = every model of the store that has a metadata.json.
    models: tuple[str, ...] = ()
    # Worker processes per model runner (each holds its own copy of the model).
    runner_workers: int = 1
    # Worker processes of the HTTP gateway (JSON parsing, validation, formatting).
    gateway_workers: int = 1
    # GPUs asked of BentoML per model runner (fractions share a card); 0 = CPU.
    gpus: float = 0.0
    # "auto": compile the tensor signature with XLA unless the export already is;
    # "1": always wrap it in tf.function(jit_compile=True); "0": never.
    xla: str = "auto"
    # Batch sizes every model call is padded to; the largest is the max batch size.
    buckets: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    # BentoML's batcher answers 503 when it predicts a request would wait longer.
    max_latency_ms: int = 10_000
    # Caps on what one request may carry.
    max_items: int = 64
    max_body_bytes: int = 8 * 1024 * 1024
    max_text_chars: int = 20_000
    max_image_side: int = 4096
    max_horizon: int = 100
    # Seconds a request may take end to end before BentoML cancels it.
    timeout_s: int = 60

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
        settings = cls(
            models=_names(os.environ.get("SERVICE_MODELS", "")),
            runner_workers=_int("SERVICE_WORKERS", 1, minimum=1),
            gateway_workers=_int("SERVICE_API_WORKERS", 1, minimum=1),
            gpus=_float("SERVICE_GPUS", 0.0),
            xla=xla,
            buckets=buckets,
            max_latency_ms=_int("SERVICE_MAX_LATENCY_MS", 10_000, minimum=10),
            max_items=_int("SERVICE_MAX_ITEMS", buckets[-1], minimum=1),
            max_body_bytes=_int("SERVICE_MAX_BODY_BYTES", 8 * 1024 * 1024, minimum=1024),
            max_text_chars=_int("SERVICE_MAX_TEXT_CHARS", 20_000, minimum=1),
            max_horizon=_int("SERVICE_MAX_HORIZON", 100, minimum=1),
            timeout_s=_int("SERVICE_TIMEOUT_S", 60, minimum=1),
        )
        if settings.max_items > settings.max_batch_size:
            raise ValueError(
                f"SERVICE_MAX_ITEMS={settings.max_items} exceeds the largest batch bucket "
                f"{settings.max_batch_size} (SERVICE_BATCH_BUCKETS)"
            )
        return settings
