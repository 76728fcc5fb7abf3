"""The serving engine of one worker process: every served model, in-process.

Each :class:`ServedModel` owns one SavedModel, a thread of its own that loads, warms up and
runs it (so the event loop never blocks), and one :class:`~service.batcher.Batcher` per
signature. Every door (friendly JSON, TF Serving REST, gRPC) calls :meth:`ServedModel.run`
with a validated numpy batch and gets numpy outputs back. No web framework here.

States follow TF Serving's ``ServableState``: ``START`` -> ``LOADING`` (load + XLA warm-up
of every signature and bucket) -> ``AVAILABLE``; a model that fails to load is ``END`` with
its error. :attr:`Engine.ready` is true once every model is ``AVAILABLE``.

Typical usage::

    engine = Engine({"imdb": (info, stored.path)}, settings)
    engine.start()                                   # loads in the background
    ...
    outputs = await engine.model("imdb").run("serving_default", token_ids)
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import json
import logging
import os
import threading
import time
import typing as t
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from service.batcher import Batcher, BatchObserver
from service.catalog import ModelInfo, Stored
from service.config import ServingSettings, bucket_for
from service.errors import InvalidInput, ModelNotFound, NotReady
from service.metrics import (
    BATCH_SIZE,
    CONFIG_ERRORS,
    EXECUTION,
    LOAD_FAILURES,
    PADDED_BATCH_SIZE,
    QUEUE_DEPTH,
    QUEUE_WAIT,
    REFUSED,
)
from service.model_versions import ModelVersions
from service.versions import ConfigError, ServingConfig, load_model_config, parse_config

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
        self.refusals = REFUSED.labels(model=model, reason="overload")
        self.expirations = REFUSED.labels(model=model, reason="deadline")
        self.size = BATCH_SIZE.labels(**labels)
        self.padded = PADDED_BATCH_SIZE.labels(**labels)
        self.wait = QUEUE_WAIT.labels(**labels)
        self.execution = EXECUTION.labels(**labels)

    def queued(self, depth_rows: int) -> None:
        self.depth.set(depth_rows)

    def refused(self) -> None:
        self.refusals.inc()

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
            self.error = f"{type(exc).__name__}: {exc}"
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
                max_queue_delay_s=self.settings.max_queue_delay_ms / 1000,
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
            Overloaded: the signature's queue is full.
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


class Engine:
    """Every model served by this worker, each with its versions (:mod:`service.model_versions`).

    Args:
        settings: the worker's settings (``poll_s``, ``model_config``, ...).
        source: what the store holds now (``{name: {version: StoredVersion}}``); called off
            the event loop at start and every ``poll_s`` seconds.
        names: the models to serve (fixed for the worker's life).
        config: the model config to start with (policy and labels).
    """

    def __init__(
        self,
        settings: ServingSettings,
        source: t.Callable[[], Stored],
        names: t.Iterable[str],
        config: ServingConfig | None = None,
        shared_config: Path | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.config = config or ServingConfig()
        self.models = {
            name: ModelVersions(
                name, lambda stored: ServedModel(stored.info, stored.path, settings)
            )
            for name in names
        }
        # A config applied by HandleReloadConfigRequest reaches one worker; it leaves it in
        # this file, which every worker of the server (and a replacement) applies too.
        self.shared_config = shared_config
        self._stamps: dict[str, int | None] = {}
        self._watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Reads the store and starts loading what the config wants, in the background.
        Call it on the event loop (the service's ``__init__`` runs there).

        Raises:
            InvalidInput: the config names a model or version that does not exist.
            ConfigError: the config file cannot be read.
        """
        stored = self.source()
        if self.settings.model_config and not os.path.isfile(self.settings.model_config):
            raise ConfigError(f"SERVICE_MODEL_CONFIG={self.settings.model_config}: no such file")
        config = self._changed(self.settings.model_config, load_model_config) or self.config
        config = self._changed(self.shared_config, _read_shared) or config
        self._check(config, stored)
        self._apply(config, stored)
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def _check(self, config: ServingConfig, stored: Stored) -> None:
        for name in config.models:
            if name not in self.models:
                raise InvalidInput(
                    f"models.{name}: not a served model (served: {', '.join(sorted(self.models))})"
                )
        for name, versions in self.models.items():
            versions.check(config.for_model(name), stored.get(name, {}))

    def _apply(self, config: ServingConfig, stored: Stored) -> None:
        self.config = config
        for name, versions in self.models.items():
            versions.update(stored.get(name, {}), config.for_model(name))

    def _changed(
        self, path: str | Path | None, read: t.Callable[[str | Path], ServingConfig]
    ) -> ServingConfig | None:
        """The config at ``path`` if the file changed since the last look (else None)."""
        if not path:
            return None
        try:
            stamp: int | None = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamps.get(str(path)):
            return None
        self._stamps[str(path)] = stamp
        return None if stamp is None else read(path)

    async def _watch(self) -> None:
        """Every second: a config shared by another worker; every ``poll_s``: the store and
        the config file."""
        tick = min(self.settings.poll_s, 1.0) if self.settings.poll_s > 0 else 1.0
        last_poll = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            try:
                shared = self._changed(self.shared_config, _read_shared)
                if shared is not None:
                    await self._adopt(shared)
                if (
                    self.settings.poll_s > 0
                    and time.monotonic() - last_poll >= self.settings.poll_s
                ):
                    last_poll = time.monotonic()
                    await self.poll()
            except asyncio.CancelledError:
                raise
            except (ConfigError, InvalidInput, OSError) as exc:
                CONFIG_ERRORS.inc()
                logger.error("model config not applied, keeping the current one: %s", exc)
            except Exception:
                logger.exception("looking at the model store failed; trying again later")

    async def poll(self) -> None:
        """One look at the store and the config file; applies what changed."""
        changed = await asyncio.to_thread(
            self._changed, self.settings.model_config, load_model_config
        )
        await self._adopt(changed or self.config)

    async def _adopt(self, config: ServingConfig) -> None:
        """Checks ``config`` against what the store holds now, then applies both."""
        stored = await asyncio.to_thread(self.source)
        self._check(config, stored)
        self._apply(config, stored)

    async def reload(self, config: ServingConfig, timeout_s: float = 300.0) -> None:
        """Applies ``config`` now (TF Serving's ``HandleReloadConfigRequest``), shares it with
        the other workers, and returns once every version it wants here has loaded or failed.

        Raises:
            InvalidInput: a model or version the config names does not exist.
            TimeoutError: loading took longer than ``timeout_s``.
        """
        await self._adopt(config)
        if self.shared_config is not None:
            _write_shared(self.shared_config, config)
            self._stamps[str(self.shared_config)] = os.stat(self.shared_config).st_mtime_ns
        deadline = time.monotonic() + timeout_s
        while not self.settled():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the new config's versions did not load in {timeout_s:.0f}s")
            await asyncio.sleep(0.1)

    def settled(self) -> bool:
        """No version the config wants is still loading."""
        return all(
            versions.versions[v].state not in (State.START, State.LOADING)
            for versions in self.models.values()
            for v in versions.desired()
            if v in versions.versions
        )

    @property
    def ready(self) -> bool:
        """Every model answers requests that name no version."""
        return bool(self.models) and all(model.ready for model in self.models.values())

    def model(
        self, name: str, version: str | int | None = None, label: str | None = None
    ) -> ServedModel:
        """The version of ``name`` that answers (``version``, ``label`` or the default).

        Raises:
            ModelNotFound: not served, or no such version or label.
            NotReady: that version is loading, failed or unloading.
            InvalidInput: both a version and a label.
        """
        model = self.models.get(name)
        if model is None:
            served = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"model '{name}' is not served (served: {served})")
        return model.get(version, label)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self.shared_config is not None:
            self.shared_config.unlink(missing_ok=True)
        for model in self.models.values():
            await model.close()


def _read_shared(path: str | Path) -> ServingConfig:
    return parse_config(json.loads(Path(path).read_text()), source="HandleReloadConfigRequest")


def _write_shared(path: Path, config: ServingConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(config.to_raw()))
    temporary.replace(path)  # atomic: other workers read all of it or the previous one


def default_tf_threads(workers: int) -> int:
    """Intra-op threads per worker so that the workers together use every core once."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
