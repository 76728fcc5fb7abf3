"""The dynamic batcher: one queue per model and signature, in the worker's event loop.

Requests from every door (friendly JSON, TF Serving REST, gRPC) call :meth:`Batcher.submit`
with a validated numpy batch of one or more rows. One asyncio task per batcher forms
batches and hands each to the model's own thread, so the event loop never blocks:

* **Batch while busy.** A batch leaves as soon as the model is free, with every queued row
  up to ``max_batch_size`` (TF Serving's ``max_batch_size``; Triton's
  ``max_batch_size``). While the model runs, new requests queue up and form the next
  batch. ``max_queue_delay_s`` (Triton's ``max_queue_delay_microseconds``, TF Serving's
  ``batch_timeout_micros``) optionally holds a batch back to let it fill; 0 by default.
* **Back-pressure.** At most ``max_queue_rows`` rows wait (TF Serving's
  ``max_enqueued_batches`` x ``max_batch_size``); past it :meth:`submit` raises
  :class:`~service.errors.Overloaded` at once instead of queueing.
* **Deadlines and cancellation.** A request whose deadline has passed when its batch forms
  is answered :class:`~service.errors.DeadlineExceeded` and never reaches the model; a
  request whose caller went away (cancelled) is skipped.
* **Failure isolation.** A failing batch is retried request by request, so one poisoned
  row fails only its own request.

Outputs stay numpy: each request gets views (``outputs[k][start:stop]``) of the batch's
output arrays. No web framework here; :mod:`service.engine` wires one batcher per model
and signature, and the tests drive it with plain functions.

Typical usage::

    batcher = Batcher(predictor_call, executor=model_thread, max_batch_size=64,
                      max_queue_rows=1024)
    outputs = await batcher.submit(np.zeros((1, 500), np.int32), deadline=time.monotonic() + 5)
    outputs["probabilities"]          # shape (1, 2)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from service.errors import DeadlineExceeded, ModelFailure, Overloaded

logger = logging.getLogger("bentoml.keras_serving.batcher")

Outputs = dict[str, np.ndarray]
RunBatch = Callable[[np.ndarray], Mapping[str, np.ndarray]]


class BatchObserver:
    """Hooks for metrics; the default records nothing. Called in the event loop."""

    def queued(self, depth_rows: int) -> None:
        """Rows left waiting after a batch formed (not called per request: it is cheap to
        keep that way with prometheus_client's multiprocess files)."""

    def refused(self) -> None:
        """A request was refused because the queue was full."""

    def expired(self) -> None:
        """A request's deadline passed before its batch formed."""

    def batch(self, rows: int, waits: list[float], seconds: float) -> None:
        """A batch of ``rows`` ran in ``seconds``; ``waits`` are its requests' queue waits."""


@dataclass(eq=False)
class _Pending:
    inputs: np.ndarray
    future: asyncio.Future[Outputs]
    deadline: float | None  # time.monotonic() after which the request is not worth running
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def rows(self) -> int:
        return len(self.inputs)


class Batcher:
    """Forms batches from concurrent requests for one model signature.

    Args:
        run: the model call; takes ``[n, ...]`` inputs, returns ``{name: [n, ...]}``.
            Runs on ``executor`` (one thread per model), never in the event loop.
        executor: where ``run`` is called.
        max_batch_size: the most rows one model call takes.
        max_queue_rows: the most rows that may wait; more is refused at once.
        max_queue_delay_s: how long the oldest request may wait for a batch to fill
            while the model is idle (0: never wait).
        name: for logs and error messages, e.g. ``imdb/serving_default``.
        observer: metrics hooks.
    """

    def __init__(
        self,
        run: RunBatch,
        *,
        executor: Executor,
        max_batch_size: int,
        max_queue_rows: int,
        max_queue_delay_s: float = 0.0,
        name: str = "model",
        observer: BatchObserver | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue_rows < 1:
            raise ValueError("max_batch_size and max_queue_rows must be positive")
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_queue_rows = max_queue_rows
        self.max_queue_delay_s = max_queue_delay_s
        self.name = name
        self.observer = observer or BatchObserver()
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._closed = False

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch (not counting the batch running now)."""
        return self._queued_rows

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch running."""
        return not self._queue and not self._busy

    async def submit(self, inputs: np.ndarray, deadline: float | None = None) -> Outputs:
        """Queues ``inputs`` (``[n, ...]``) and waits for their outputs (``{name: [n, ...]}``).

        Args:
            inputs: validated rows of the signature's input.
            deadline: ``time.monotonic()`` after which the answer is useless (None: none).

        Raises:
            Overloaded: the queue is full; nothing was queued.
            DeadlineExceeded: the deadline passed before the batch formed.
            ModelFailure: the model call failed for these rows.
        """
        if self._closed:
            raise Overloaded(f"{self.name}: shutting down")
        rows = len(inputs)
        if self._queued_rows + rows > self.max_queue_rows and self._queued_rows > 0:
            self.observer.refused()
            raise Overloaded(
                f"{self.name}: {self._queued_rows} rows are already queued "
                f"(cap {self.max_queue_rows}); retry later"
            )
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            # First request, or a new event loop (tests run one per test): (re)start the task.
            self._queue.clear()
            self._queued_rows = 0
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._loop(), name=f"batcher {self.name}")
        pending = _Pending(inputs, loop.create_future(), deadline)
        self._queue.append(pending)
        self._queued_rows += rows
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await pending.future
        except asyncio.CancelledError:
            pending.future.cancel()  # skipped when its batch forms
            raise

    async def close(self) -> None:
        """Refuses new requests, lets queued ones finish, then stops the batching task."""
        self._closed = True
        while not self.idle and self._task is not None and not self._task.done():
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    # ------------------------------------------------------------ the batching task

    async def _loop(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.max_queue_delay_s > 0:
                await self._let_fill()
            batch = self._take()
            if batch:
                self._busy = True
                try:
                    await self._execute(batch)
                finally:
                    self._busy = False

    async def _let_fill(self) -> None:
        """Waits until the oldest request is ``max_queue_delay_s`` old or a batch is full."""
        assert self._wakeup is not None
        while self._queue and self._queued_rows < self.max_batch_size:
            left = self._queue[0].enqueued + self.max_queue_delay_s - time.monotonic()
            if left <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                return

    def _take(self) -> list[_Pending]:
        """Pops the next batch: live requests, oldest first, up to ``max_batch_size`` rows
        (a single larger request goes alone; the model call splits it)."""
        now = time.monotonic()
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            pending = self._queue[0]
            if batch and rows + pending.rows > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_rows -= pending.rows
            if pending.future.done():  # the caller went away
                continue
            if pending.deadline is not None and now >= pending.deadline:
                self.observer.expired()
                pending.future.set_exception(
                    DeadlineExceeded(f"{self.name}: the request's deadline passed while queued")
                )
                continue
            batch.append(pending)
            rows += pending.rows
        self.observer.queued(self._queued_rows)
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        inputs = batch[0].inputs if len(batch) == 1 else np.concatenate([p.inputs for p in batch])
        started = time.monotonic()
        try:
            outputs = await loop.run_in_executor(self._executor, self._run, inputs)
        except Exception as exc:  # noqa: BLE001 - isolated below, reported per request
            if len(batch) == 1:
                self._fail(batch[0], exc)
            else:
                logger.warning(
                    "%s: batch of %d rows failed (%s: %s); retrying request by request",
                    self.name,
                    len(inputs),
                    type(exc).__name__,
                    exc,
                )
                await self._one_by_one(batch)
            return
        seconds = time.monotonic() - started
        self.observer.batch(len(inputs), [started - p.enqueued for p in batch], seconds)
        self._deliver(batch, outputs, len(inputs))

    async def _one_by_one(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        for pending in batch:
            if pending.future.done():
                continue
            try:
                outputs = await loop.run_in_executor(self._executor, self._run, pending.inputs)
            except Exception as exc:  # noqa: BLE001 - this request's own failure
                self._fail(pending, exc)
                continue
            self._deliver([pending], outputs, pending.rows)

    def _fail(self, pending: _Pending, exc: Exception) -> None:
        logger.error(
            "%s: model call failed on %d rows: %s: %s",
            self.name,
            pending.rows,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        if not pending.future.done():
            pending.future.set_exception(
                ModelFailure(f"{self.name}: the model failed on this input")
            )

    def _deliver(self, batch: list[_Pending], outputs: Mapping[str, np.ndarray], rows: int) -> None:
        wrong = [k for k, v in outputs.items() if len(v) != rows]
        if wrong:
            error = ModelFailure(f"{self.name}: output '{wrong[0]}' has the wrong number of rows")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        start = 0
        for pending in batch:
            stop = start + pending.rows
            if not pending.future.done():
                pending.future.set_result({k: v[start:stop] for k, v in outputs.items()})
            start = stop
