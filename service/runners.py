"""One BentoML model-runner service per served model, built by :func:`runner_service`.

A runner owns one SavedModel and exposes two ``batchable`` APIs, one per signature:
``predict`` (the tensor signature ``serving_default``) and ``predict_raw`` (the user-level
signature: ``predict_text``, ``predict_images``, ``forecast`` or ``translate``). Each takes a
numpy array whose first axis is the batch and returns one dict of outputs per row, so
BentoML's adaptive batcher can merge requests from every door of the gateway (friendly
JSON, TF Serving REST, gRPC) into one model call.

Readiness: the model loads and warms up (every signature x every batch bucket) in a
background thread, then a few requests go through this worker's own HTTP app to train
BentoML's batching optimizer (its first ~10 batches run one request at a time with guessed
timings, which under load would be answered 503); ``/readyz`` turns true only after both.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import typing as t

import bentoml
import numpy as np

from service.catalog import TENSOR_SIGNATURE, ModelInfo
from service.config import ServingSettings
from service.errors import ModelNotFound, NotReady
from service.metrics import BATCH_SIZE, EXECUTION, PADDED_BATCH_SIZE

logger = logging.getLogger("bentoml.keras_serving.runner")

# Concurrent bursts sent through the worker's own app once the model is warm: enough batches
# (>= 12) of sizes 1-4 for BentoML's CorkDispatcher to finish its optimizer training.
PRIMING_BURSTS = (1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 2, 1)

Row = dict[str, t.Any]


def _plain(value: np.ndarray) -> t.Any:
    if value.dtype == object:  # tf.string -> bytes; every string output here is UTF-8 text
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(value).tolist()
    return value.tolist()


def split_rows(outputs: dict[str, np.ndarray], rows: int) -> list[dict[str, t.Any]]:
    """``{"probabilities": [n, C], ...}`` -> ``n`` dicts of one row each, as plain Python
    values (so the rows serialize both as JSON and as pickle)."""
    plain = {key: _plain(value) for key, value in outputs.items()}
    return [{key: value[i] for key, value in plain.items()} for i in range(rows)]


class _UntilSet(logging.Filter):
    """Drops records until an event is set (the access log of the priming requests)."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self.event = event

    def filter(self, record: logging.LogRecord) -> bool:
        return self.event.is_set()


class RunnerCore:
    """The framework-light part of a runner: load, warm, run a batch, isolate failures."""

    def __init__(self, info: ModelInfo, path: str, settings: ServingSettings) -> None:
        self.info = info
        self.settings = settings
        self.model_ready = threading.Event()
        self.primed = threading.Event()
        self.failure: str | None = None
        self.record_metrics = False  # off while priming, so only real traffic is counted
        self.warm_up_seconds: dict[str, float] = {}
        self._predictor: t.Any = None
        self._path = path
        threading.Thread(target=self._load, name=f"load-{info.name}", daemon=True).start()

    def _load(self) -> None:
        try:
            from service.predictor import Predictor, configure_devices

            gpus = configure_devices()
            start = time.perf_counter()
            predictor = Predictor(self._path, self.info, self.settings.buckets, self.settings.xla)
            loaded = time.perf_counter() - start
            self.warm_up_seconds = predictor.warm_up()
            self._predictor = predictor
            logger.info(
                "%s v%d loaded in %.1fs, warmed up in %s (buckets %s, XLA on %s, GPUs %s)",
                self.info.name,
                self.info.version,
                loaded,
                {k: round(v, 2) for k, v in self.warm_up_seconds.items()},
                self.settings.buckets,
                sorted(predictor.xla_signatures) or "nothing",
                gpus or "none",
            )
        except Exception as exc:  # keep the worker alive; readiness reports the failure
            logger.exception("loading %s from %s failed", self.info.tag, self._path)
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.model_ready.set()

    def signature_for(self, method: str) -> str:
        if method == "predict":
            return TENSOR_SIGNATURE
        user = self.info.user_signature
        if user is None:
            raise ModelNotFound(f"model '{self.info.name}' has no user-level signature")
        return user

    def run_batch(self, signature: str, inputs: np.ndarray) -> list[Row]:
        """Runs one merged batch; a failing batch is retried row by row so that one bad row
        only fails its own request."""
        if not self.model_ready.is_set() or self._predictor is None:
            raise NotReady(
                f"model '{self.info.name}' is loading or failed: {self.failure or 'loading'}"
            )
        spec = self.info.signature(signature).input
        if spec.dtype != "string" and inputs.dtype != np.dtype(spec.dtype):
            inputs = inputs.astype(spec.dtype)
        started = time.time()
        begin = time.perf_counter()
        try:
            rows = split_rows(self._predictor.run(signature, inputs), len(inputs))
        except Exception:
            logger.exception(
                "%s/%s: batch of %d failed; retrying row by row",
                self.info.name,
                signature,
                len(inputs),
            )
            rows = [self._run_one(signature, inputs[i : i + 1]) for i in range(len(inputs))]
        elapsed = time.perf_counter() - begin
        if self.record_metrics:
            from service.predictor import bucket_for

            labels = {"model": self.info.name, "signature": signature}
            BATCH_SIZE.labels(**labels).observe(len(inputs))
            PADDED_BATCH_SIZE.labels(**labels).observe(
                bucket_for(min(len(inputs), self.settings.max_batch_size), self.settings.buckets)
            )
            EXECUTION.labels(**labels).observe(elapsed)
        return [{"outputs": row, "started": started} for row in rows]

    def _run_one(self, signature: str, row: np.ndarray) -> Row:
        try:
            return split_rows(self._predictor.run(signature, row), 1)[0]
        except Exception as exc:  # noqa: BLE001 - reported on this row's request only
            return {"__error__": f"{type(exc).__name__}: {exc}"}


def runner_service(info: ModelInfo, settings: ServingSettings) -> bentoml.Service[t.Any]:
    """Builds the BentoML service that runs model ``info`` (one class per model)."""
    batching = {
        "batchable": True,
        "max_batch_size": settings.max_batch_size,
        "max_latency_ms": settings.max_latency_ms,
    }

    class ModelRunner:
        # Class scope, so `bentoml build` packages the model with the Bento.
        model_ref = bentoml.models.BentoModel(info.tag)

        def __init__(self) -> None:
            self.core = RunnerCore(info, self.model_ref.path, settings)
            logging.getLogger("bentoml.access").addFilter(_UntilSet(self.core.primed))

        def __is_ready__(self) -> bool:
            # Without a server of its own (bentoml serve --development runs runners inside
            # the gateway, without batching) there is no batcher to prime.
            served = getattr(self, "_priming", None) is not None
            ready = self.core.primed if served else self.core.model_ready
            return ready.is_set() and self.core.failure is None

        @bentoml.on_startup
        async def _schedule_priming(self) -> None:
            self._priming = asyncio.get_running_loop().create_task(self._prime_batcher())

        async def _prime_batcher(self) -> None:
            core = self.core
            await asyncio.to_thread(core.model_ready.wait)
            if core.failure is not None:
                return
            while getattr(self, "__self_proxy__", None) is None:  # set right after start-up
                await asyncio.sleep(0.01)
            from service.predictor import dummy_input

            for method in ("predict", "predict_raw"):
                try:
                    spec = info.signature(core.signature_for(method))
                except ModelNotFound:
                    continue
                # JSON goes through the worker's own app: strings as str, numbers as lists.
                sample = dummy_input(spec, 1)
                if sample.dtype == object:
                    sample = sample.astype(str)
                call = getattr(self.to_async, method)
                for burst in PRIMING_BURSTS:
                    await asyncio.gather(*(call(sample) for _ in range(burst)))
            core.record_metrics = True
            core.primed.set()
            logger.info("%s: batcher primed, ready", info.name)

        @bentoml.api(**batching)
        def predict(self, inputs: np.ndarray) -> list[dict[str, t.Any]]:
            """Tensor signature ``serving_default``; ``inputs`` rows are merged across requests."""
            return self.core.run_batch(TENSOR_SIGNATURE, inputs)

        @bentoml.api(**batching)
        def predict_raw(self, inputs: np.ndarray) -> list[dict[str, t.Any]]:
            """User-level signature (raw text, uint8 images, a window or sentences)."""
            return self.core.run_batch(self.core.signature_for("predict_raw"), inputs)

    class_name = "".join(part.title() for part in info.name.split("_")) + "Runner"
    ModelRunner.__name__ = ModelRunner.__qualname__ = class_name
    config: dict[str, t.Any] = {
        "workers": settings.runner_workers,
        "traffic": {"timeout": settings.timeout_s},
        # The gateway's client to this runner would otherwise close its connection pool every
        # 100 requests, failing the requests in flight (bentoml/BentoML#5540).
        "runner_connection": {"max_requests": 1_000_000_000, "max_age": 86_400.0},
    }
    if settings.gpus > 0:
        config["resources"] = {"gpu": settings.gpus}
    return bentoml.service(name=f"{info.name}_runner", **config)(ModelRunner)
