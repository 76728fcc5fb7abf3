"""The dynamic batcher: one queue per model and signature, in the worker's event loop.

Requests from every door (friendly JSON, TF Serving REST, gRPC) call :meth:`Batcher.submit`
with a validated numpy batch of one or more rows. One asyncio task per batcher forms
batches and hands each to the model's own thread, so the event loop never blocks:

* **Batch while busy.** A batch leaves as soon as the model is free, with every queued row
  up to ``max_batch_size`` (TF Serving's ``max_batch_size``; Triton's
  ``max_batch_size``). While the model runs, new requests queue up and form the next
  batch. ``max_queue_delay_s`` (Triton's ``max_queue_delay_microseconds``, TF Serving's
  ``batch_timeout_micros``) optionally holds a batch back to let it fill; 0 by default.
* **Fill the padding.** The model pads every batch to the next of its ``buckets`` (the
  sizes compiled at start-up; Triton's ``preferred_batch_size``): 9 rows cost what 16 do.
  So when the model is free with fewer rows than their bucket, the batcher waits for the
  rest, for at most ``fill_fraction`` of that bucket's measured model time, and not at all
  while the last few waits saw nobody arrive (one client, or every client already queued:
  :class:`FillBackoff`). Under load the padded rows become real ones (fewer model calls
  for the same rows); a lone request never waits (1 row fills bucket 1).
* **Admission by time.** :meth:`submit` refuses a request at once
  (:class:`~service.errors.Overloaded`) when the wait it would face exceeds its budget:
  ``max_queue_wait_s``, or what is left of its own deadline if that is shorter. The wait is
  estimated as the rows ahead of it divided by the rows per second the model achieves
  (:class:`ThroughputEstimate`, a moving average of the batches it ran, optimistic until
  measured), plus what is left of the batch running now. ``max_queue_rows`` is only a
  memory guard on top (TF Serving's ``max_enqueued_batches`` x ``max_batch_size``).
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
                      max_queue_rows=16384, max_queue_wait_s=1.0)
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

from service.admission import REFUSED_ROWS, ThroughputEstimate, refuse_reason, wait_budget
from service.config import bucket_for
from service.errors import DeadlineExceeded, ModelFailure, Overloaded

logger = logging.getLogger("bentoml.keras_serving.batcher")

Outputs = dict[str, np.ndarray]
RunBatch = Callable[[np.ndarray], Mapping[str, np.ndarray]]


class BatchObserver:
    """Hooks for metrics; the default records nothing. Called in the event loop."""

    def queued(self, depth_rows: int) -> None:
        """Rows left waiting after a batch formed (not called per request: it is cheap to
        keep that way with prometheus_client's multiprocess files)."""

    def refused(self, reason: str) -> None:
        """A request was refused before queueing: ``overload`` (the row cap, a memory
        guard) or ``wait`` (its estimated wait exceeds its budget)."""

    def expired(self) -> None:
        """A request's deadline passed before its batch formed."""

    def batch(self, rows: int, waits: list[float], seconds: float) -> None:
        """A batch of ``rows`` ran in ``seconds``; ``waits`` are its requests' queue waits."""


class FillBackoff:
    """When to try filling a bucket: always after a wait that saw a row arrive; after a
    wait that saw none, skip the next 1, then 3, 7, 15 chances (so a load that cannot fill
    costs at most one wasted wait in 16 batches)."""

    LIMIT = 15

    def __init__(self) -> None:
        self.skip = 0  # chances left to skip
        self.streak = 0  # the skip after the next miss

    def should_try(self) -> bool:
        if self.skip > 0:
            self.skip -= 1
            return False
        return True

    def record(self, arrived: bool) -> None:
        if arrived:
            self.streak = 0
        else:
            self.streak = min(2 * self.streak + 1, self.LIMIT)
            self.skip = self.streak


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
        max_queue_rows: the most rows that may wait (a memory guard); more is refused at once.
        max_queue_wait_s: the longest estimated wait a request is queued for (0: no limit
            but its deadline); longer is refused at once.
        max_queue_delay_s: how long the oldest request may wait for a batch to fill
            while the model is idle (0: never wait).
        buckets: the batch sizes the model pads to (empty: no padding, nothing to fill).
        fill_fraction: the longest wait for a bucket to fill, as a fraction of its
            estimated model time (0: never wait). Unused with ``max_queue_delay_s``.
        name: for logs and error messages, e.g. ``imdb/serving_default``.
        observer: metrics hooks.
        estimate: the model's measured throughput (tests inject one).
        clock: ``time.monotonic`` or a stand-in (tests).
    """

    def __init__(
        self,
        run: RunBatch,
        *,
        executor: Executor,
        max_batch_size: int,
        max_queue_rows: int,
        max_queue_wait_s: float = 1.0,
        max_queue_delay_s: float = 0.0,
        buckets: tuple[int, ...] = (),
        fill_fraction: float = 0.0,
        name: str = "model",
        observer: BatchObserver | None = None,
        estimate: ThroughputEstimate | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_size < 1 or max_queue_rows < 1:
            raise ValueError("max_batch_size and max_queue_rows must be positive")
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_queue_rows = max_queue_rows
        self.max_queue_wait_s = max_queue_wait_s
        self.max_queue_delay_s = max_queue_delay_s
        self.buckets = tuple(sorted(b for b in buckets if b <= max_batch_size))
        self.fill_fraction = fill_fraction if self.buckets else 0.0
        self.fill = FillBackoff()
        self.estimate = estimate or ThroughputEstimate(max_batch_size)
        self._clock = clock
        self._running_rows = 0  # rows of the batch the model runs now
        self._running_since = 0.0
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

    def estimated_wait(self) -> float:
        """Seconds a request queued now would wait before its batch starts (estimated)."""
        running_for = self._clock() - self._running_since if self._running_rows else 0.0
        return self.estimate.wait_seconds(self._queued_rows, self._running_rows, running_for)

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
            Overloaded: the estimated wait exceeds the budget, or the row cap is reached;
                nothing was queued.
            DeadlineExceeded: the deadline passed before the batch formed.
            ModelFailure: the model call failed for these rows.
        """
        if self._closed:
            raise Overloaded(f"{self.name}: shutting down")
        rows = len(inputs)
        now = self._clock()
        wait = self.estimated_wait() if self._queued_rows or self._running_rows else 0.0
        budget = wait_budget(self.max_queue_wait_s, deadline, now)
        reason = refuse_reason(self._queued_rows, rows, self.max_queue_rows, wait, budget)
        if reason is not None:
            self.observer.refused(reason)
            if reason == REFUSED_ROWS:
                raise Overloaded(
                    f"{self.name}: {self._queued_rows} rows are already queued "
                    f"(cap {self.max_queue_rows}); retry later"
                )
            assert budget is not None
            own = not self.max_queue_wait_s or budget < self.max_queue_wait_s
            raise Overloaded(
                f"{self.name}: the estimated wait of {wait * 1000:.0f} ms exceeds "
                + (
                    f"the request's remaining deadline ({max(budget, 0) * 1000:.0f} ms)"
                    if own
                    else f"the queue's budget of {self.max_queue_wait_s * 1000:.0f} ms"
                )
                + f" ({self._queued_rows} rows queued); retry later"
            )
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            # First request, or a new event loop (tests run one per test): (re)start the task.
            self._queue.clear()
            self._queued_rows = 0
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._loop(), name=f"batcher {self.name}")
        pending = _Pending(inputs, loop.create_future(), deadline, now)
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
            elif self.fill_fraction > 0:
                await self._fill_bucket()
            batch = self._take()
            if batch:
                self._busy = True
                try:
                    await self._execute(batch)
                finally:
                    self._busy = False

    async def _let_fill(self) -> None:
        """Waits until the oldest request is ``max_queue_delay_s`` old or a batch is full."""
        if self._queue:
            deadline = self._queue[0].enqueued + self.max_queue_delay_s
            await self._wait_for_rows(self.max_batch_size, deadline)

    async def _fill_bucket(self) -> None:
        """Waits for the queued rows to fill their bucket, for at most ``fill_fraction`` of
        the bucket's estimated model time; see the module docstring."""
        rows = self._queued_rows
        if rows >= self.buckets[-1]:
            return
        target = bucket_for(rows, self.buckets)
        if rows >= target or not self.fill.should_try():
            return
        deadline = self._clock() + self.fill_fraction * self.estimate.batch_seconds(target)
        await self._wait_for_rows(target, deadline)
        self.fill.record(arrived=self._queued_rows > rows)

    async def _wait_for_rows(self, rows: int, deadline: float) -> None:
        """Waits until ``rows`` are queued, the queue empties, or the clock reaches
        ``deadline``."""
        assert self._wakeup is not None
        while self._queue and self._queued_rows < rows:
            left = deadline - self._clock()
            if left <= 0:
                return
            self._wakeup.clear()
            try:
                async with asyncio.timeout(left):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    def _take(self) -> list[_Pending]:
        """Pops the next batch: live requests, oldest first, up to ``max_batch_size`` rows
        (a single larger request goes alone; the model call splits it)."""
        now = self._clock()
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
        started = self._clock()
        self._running_rows, self._running_since = len(inputs), started
        failure: Exception | None = None
        try:
            outputs = await loop.run_in_executor(self._executor, self._run, inputs)
        except Exception as exc:  # noqa: BLE001 - isolated below, reported per request
            failure = exc
        finally:
            self._running_rows = 0
        if failure is not None:
            if len(batch) == 1:
                self._fail(batch[0], failure)
            else:
                logger.warning(
                    "%s: batch of %d rows failed (%s: %s); retrying request by request",
                    self.name,
                    len(inputs),
                    type(failure).__name__,
                    failure,
                )
                await self._one_by_one(batch)
            return
        seconds = self._clock() - started
        self.estimate.observe(len(inputs), seconds)
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
