"""One served model version of a worker: its SavedModel, its thread and its batch queues.

A :class:`ServedModel` owns one SavedModel, a thread of its own that loads, warms up and
runs it (so the event loop never blocks), and one :class:`~service.batcher.Batcher` per
signature. Every door (friendly JSON, TF Serving REST, gRPC) calls :meth:`ServedModel.run`
with a validated numpy batch and gets numpy outputs back. No web framework here.

States follow TF Serving's ``ServableState``: ``START`` -> ``LOADING`` (load + XLA warm-up
of every signature and bucket) -> ``AVAILABLE`` -> ``UNLOADING`` -> ``END``; a version that
fails to load is ``END`` with its error.

Typical usage::

    model = ServedModel(stored.info, stored.path, settings)
    await asyncio.wrap_future(model.start())        # loads on its own thread
    outputs = await model.run("serving_default", token_ids)
"""

from __future__ import annotations

import contextvars
import enum
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from service.admission import REFUSED_ROWS, REFUSED_WAIT
from service.batcher import Batcher, BatchObserver
from service.catalog import ModelInfo
from service.client_text import public_error
from service.config import ServingSettings, bucket_for
from service.cpus import usable_cpus
from service.errors import NotReady
from service.metrics import (
    BATCH_SIZE,
    EXECUTION,
    LOAD_FAILURES,
    PADDED_BATCH_SIZE,
    QUEUE_DEPTH,
    QUEUE_WAIT,
    REFUSED,
)

logger = logging.getLogger("bentoml.keras_serving.engine")

# The deadline (time.monotonic()) of the request being handled, set by each door: the HTTP
# doors from SERVICE_TIMEOUT_S, gRPC from the call's deadline. Read by ServedModel.run.
request_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "request_deadline", default=None
)


# Niceness of the thread that loads and warms up a version: serving comes first.
LOAD_NICENESS = 10


class State(enum.Enum):
    """TF Serving's ``ServableState`` names."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


class _Metrics(BatchObserver):
    """Prometheus series of one model signature."""

    def __init__(self, model: str, signature: str, buckets: tuple[int, ...]) -> None:
        labels = {"model": model, "signature": signature}
        self.buckets = buckets
        self.depth = QUEUE_DEPTH.labels(**labels)
        self.refusals = {
            reason: REFUSED.labels(model=model, reason=reason)
            for reason in (REFUSED_ROWS, REFUSED_WAIT)
        }
        self.expirations = REFUSED.labels(model=model, reason="deadline")
        self.size = BATCH_SIZE.labels(**labels)
        self.padded = PADDED_BATCH_SIZE.labels(**labels)
        self.wait = QUEUE_WAIT.labels(**labels)
        self.execution = EXECUTION.labels(**labels)

    def queued(self, depth_rows: int) -> None:
        self.depth.set(depth_rows)

    def refused(self, reason: str) -> None:
        self.refusals[reason].inc()

    def expired(self) -> None:
        self.expirations.inc()

    def batch(self, rows: int, waits: list[float], seconds: float) -> None:
        self.size.observe(rows)
        largest = self.buckets[-1]
        full, rest = divmod(rows, largest)
        self.padded.observe(full * largest + (bucket_for(rest, self.buckets) if rest else 0))
        self.execution.observe(seconds)
        for wait in waits:
            self.wait.observe(wait)


_TF_CONFIGURED = threading.Lock()
_tf_done = False


def configure_tensorflow(threads: int) -> list[str]:
    """Once per process, before TensorFlow runs anything: intra-op threads and GPU memory
    growth. Returns the GPUs TensorFlow sees."""
    global _tf_done
    from service.predictor import configure_devices

    with _TF_CONFIGURED:
        if not _tf_done:
            import tensorflow as tf

            if threads > 0:
                try:
                    tf.config.threading.set_intra_op_parallelism_threads(threads)
                    tf.config.threading.set_inter_op_parallelism_threads(threads)
                except RuntimeError as exc:  # TF already initialized: keep its settings
                    logger.warning("could not set TensorFlow threads: %s", exc)
            _tf_done = True
        return configure_devices()


class ServedModel:
    """One model of this worker: its predictor, its thread and one batcher per signature."""

    def __init__(self, info: ModelInfo, path: str, settings: ServingSettings) -> None:
        self.info = info
        self.path = str(path)
        self.settings = settings
        self.state = State.START
        self.error: str | None = None
        self.warm_up_seconds: dict[str, float] = {}
        self._predictor = None
        # The model's own thread: loading, warm-up and every batch run here, one at a time.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{info.name}")
        self._batchers: dict[str, Batcher] = {}

    @property
    def ready(self) -> bool:
        return self.state is State.AVAILABLE

    def start(self) -> Future[None]:
        """Loads and warms up on a thread of its own at low CPU priority (a new version
        compiles while the old one serves); the future is done when that succeeded or failed."""
        self.state = State.LOADING
        done: Future[None] = Future()

        def load() -> None:
            try:
                # Linux: a thread's niceness is its own (PRIO_PROCESS with the thread's id).
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOAD_NICENESS)
            except (OSError, AttributeError):
                pass
            try:
                self._load()
            finally:
                done.set_result(None)

        threading.Thread(target=load, name=f"load-{self.info.name}", daemon=True).start()
        return done

    def _load(self) -> None:
        try:
            from service.predictor import Predictor

            gpus = configure_tensorflow(
                self.settings.tf_threads or default_tf_threads(self.settings.workers)
            )
            started = time.perf_counter()
            predictor = Predictor(self.path, self.info, self.settings.buckets, self.settings.xla)
            loaded = time.perf_counter() - started
            self.warm_up_seconds = predictor.warm_up()
            self._predictor = predictor
            self.state = State.AVAILABLE
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
        except Exception as exc:  # the worker stays up; status and readiness report it
            logger.exception("loading %s from %s failed", self.info.tag, self.path)
            # Clients see one line without paths; the full text and traceback are above.
            self.error = public_error(exc)
            self.state = State.END
            LOAD_FAILURES.labels(model=self.info.name).inc()

    def _batcher(self, signature: str) -> Batcher:
        batcher = self._batchers.get(signature)
        if batcher is None:
            spec = self.info.signature(signature)  # ModelNotFound for unknown signatures
            dtype = None if spec.input.dtype == "string" else np.dtype(spec.input.dtype)
            predictor = self._predictor

            def run(inputs: np.ndarray) -> dict[str, np.ndarray]:
                if dtype is not None and inputs.dtype != dtype:
                    inputs = inputs.astype(dtype)
                return predictor.run(signature, inputs)

            batcher = Batcher(
                run,
                executor=self._thread,
                max_batch_size=self.settings.max_batch_size,
                max_queue_rows=self.settings.max_queue,
                max_queue_wait_s=self.settings.max_queue_wait_ms / 1000,
                max_queue_delay_s=self.settings.max_queue_delay_ms / 1000,
                buckets=self.settings.buckets,
                fill_fraction=self.settings.batch_fill,
                name=f"{self.info.name}/{signature}",
                observer=_Metrics(self.info.name, signature, self.settings.buckets),
            )
            self._batchers[signature] = batcher
        return batcher

    async def run(self, signature: str, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """``{output: [n, ...]}`` for ``inputs`` (``[n, ...]``), through the signature's batcher.

        Raises:
            ModelNotFound: unknown signature.
            NotReady: the model is loading or failed to load.
            Overloaded: the estimated queue wait exceeds the request's budget, or the row
                cap is reached.
            DeadlineExceeded: the request's deadline passed while queued.
            ModelFailure: the model call failed on these rows.
        """
        if self.state is not State.AVAILABLE:
            self.info.signature(signature)
            reason = self.error or "loading"
            raise NotReady(f"model '{self.info.name}' is not available ({reason}), retry later")
        return await self._batcher(signature).submit(inputs, request_deadline.get())

    async def close(self) -> None:
        """Finishes queued requests, then stops the batchers and the model's thread."""
        self.state = State.UNLOADING
        for batcher in list(self._batchers.values()):
            await batcher.close()
        self._thread.shutdown(wait=False, cancel_futures=True)
        self._predictor = None
        self.state = State.END


def default_tf_threads(workers: int) -> int:
    """Intra-op threads per worker so that the workers together use every CPU of the
    container's quota once (:func:`service.cpus.usable_cpus`, not the host's cores)."""
    return max(1, usable_cpus().count // max(1, workers))
