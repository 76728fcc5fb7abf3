"""Unit tests of the dynamic batcher, with plain functions standing in for the model."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.batcher import Batcher, BatchObserver
from service.errors import DeadlineExceeded, ModelFailure, Overloaded


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.refusals = 0
        self.expirations = 0
        self.depths: list[int] = []

    def queued(self, depth_rows: int) -> None:
        self.depths.append(depth_rows)

    def refused(self) -> None:
        self.refusals += 1

    def expired(self) -> None:
        self.expirations += 1

    def batch(self, rows: int, waits: list[float], seconds: float) -> None:
        self.batches.append(rows)


class SlowModel:
    """Doubles its input; each call takes ``seconds`` and records the batch sizes it saw.
    A row equal to ``poison`` makes the whole call fail."""

    def __init__(self, seconds: float = 0.0, poison: float | None = None) -> None:
        self.seconds = seconds
        self.poison = poison
        self.calls: list[int] = []
        self.threads: set[str] = set()
        self.gate: threading.Event | None = None

    def __call__(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        self.threads.add(threading.current_thread().name)
        if self.gate is not None:
            self.gate.wait(5)
        self.calls.append(len(inputs))
        time.sleep(self.seconds)
        if self.poison is not None and (inputs == self.poison).any():
            raise ValueError("poisoned row")
        return {"double": inputs * 2, "first": inputs[:, 0]}


@pytest.fixture
def executor():
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="model") as pool:
        yield pool


def rows(*values: float) -> np.ndarray:
    return np.array([[v, v] for v in values], dtype=np.float32)


def make(model, executor, **kwargs) -> tuple[Batcher, Recorder]:
    recorder = Recorder()
    options = {"max_batch_size": 8, "max_queue_rows": 64, **kwargs}
    return Batcher(model, executor=executor, observer=recorder, name="m/s", **options), recorder


def test_single_request_gets_its_own_outputs(executor):
    async def main():
        batcher, _ = make(SlowModel(), executor)
        out = await batcher.submit(rows(1, 2))
        np.testing.assert_array_equal(out["double"], rows(2, 4))
        np.testing.assert_array_equal(out["first"], [1, 2])
        await batcher.close()

    asyncio.run(main())


def test_batches_form_while_the_model_is_busy(executor):
    model = SlowModel(seconds=0.05)

    async def main():
        batcher, recorder = make(model, executor)
        first = asyncio.ensure_future(batcher.submit(rows(0)))
        await asyncio.sleep(0.01)  # the first batch (one row) is running now
        others = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(1, 6)]
        results = await asyncio.gather(first, *others)
        for i, out in enumerate(results):
            np.testing.assert_array_equal(out["double"], rows(2 * i))
        await batcher.close()
        return recorder

    recorder = asyncio.run(main())
    assert model.calls == [1, 5], "the five requests queued behind the first share one call"
    assert recorder.batches == [1, 5]
    assert model.threads and all(name.startswith("model") for name in model.threads)


def test_a_batch_never_exceeds_max_batch_size(executor):
    model = SlowModel(seconds=0.02)

    async def main():
        batcher, _ = make(model, executor, max_batch_size=4)
        model.gate = threading.Event()  # hold the first call until everything is queued
        tasks = [asyncio.ensure_future(batcher.submit(rows(i, i))) for i in range(7)]
        await asyncio.sleep(0.02)
        model.gate.set()
        results = await asyncio.gather(*tasks)
        assert [len(r["double"]) for r in results] == [2] * 7
        await batcher.close()

    asyncio.run(main())
    assert max(model.calls) <= 4
    assert sum(model.calls) == 14


def test_full_queue_is_refused_at_once(executor):
    model = SlowModel()
    model.gate = threading.Event()

    async def main():
        batcher, recorder = make(model, executor, max_queue_rows=3)
        running = asyncio.ensure_future(batcher.submit(rows(0)))
        await asyncio.sleep(0.02)  # the model holds this one; the queue is empty again
        queued = [asyncio.ensure_future(batcher.submit(rows(i))) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        started = time.perf_counter()
        with pytest.raises(Overloaded, match="already queued"):
            await batcher.submit(rows(4))
        refused_in = time.perf_counter() - started
        model.gate.set()
        await asyncio.gather(running, *queued)  # the queued ones are still answered
        await batcher.close()
        return recorder, refused_in

    recorder, refused_in = asyncio.run(main())
    assert recorder.refusals == 1
    assert refused_in < 0.5  # answered without waiting for the model (generous bound)


def test_expired_deadlines_are_dropped_before_the_model_runs(executor):
    model = SlowModel()
    model.gate = threading.Event()

    async def main():
        batcher, recorder = make(model, executor)
        running = asyncio.ensure_future(batcher.submit(rows(0)))
        await asyncio.sleep(0.02)
        late = asyncio.ensure_future(batcher.submit(rows(7), deadline=time.monotonic() + 0.01))
        fine = asyncio.ensure_future(batcher.submit(rows(8), deadline=time.monotonic() + 30))
        await asyncio.sleep(0.05)  # the first deadline passes while the model is busy
        model.gate.set()
        await running
        with pytest.raises(DeadlineExceeded):
            await late
        np.testing.assert_array_equal((await fine)["first"], [8])
        await batcher.close()
        return recorder

    recorder = asyncio.run(main())
    assert recorder.expirations == 1
    assert model.calls == [1, 1], "the expired row never reached the model"


def test_poisoned_row_fails_only_its_own_request(executor):
    model = SlowModel(poison=13)
    model.gate = threading.Event()

    async def main():
        batcher, _ = make(model, executor)
        running = asyncio.ensure_future(batcher.submit(rows(0)))
        await asyncio.sleep(0.02)
        tasks = [asyncio.ensure_future(batcher.submit(rows(v))) for v in (1, 13, 3)]
        await asyncio.sleep(0)
        model.gate.set()
        await running
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.close()
        return results

    good1, bad, good3 = asyncio.run(main())
    np.testing.assert_array_equal(good1["first"], [1])
    np.testing.assert_array_equal(good3["first"], [3])
    assert isinstance(bad, ModelFailure)
    assert model.calls == [1, 3, 1, 1, 1], "the batch of three was retried one by one"


def test_cancelled_waiter_is_skipped_and_others_answered(executor):
    model = SlowModel()
    model.gate = threading.Event()

    async def main():
        batcher, _ = make(model, executor)
        running = asyncio.ensure_future(batcher.submit(rows(0)))
        await asyncio.sleep(0.02)
        gone = asyncio.ensure_future(batcher.submit(rows(5, 5, 5)))
        kept = asyncio.ensure_future(batcher.submit(rows(6)))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        model.gate.set()
        await running
        out = await kept
        await batcher.close()
        return out, gone

    out, gone = asyncio.run(main())
    assert gone.cancelled()
    np.testing.assert_array_equal(out["first"], [6])
    assert model.calls == [1, 1], "the cancelled request's three rows never ran"


def test_queue_delay_lets_a_batch_fill_when_idle(executor):
    model = SlowModel()

    async def main():
        batcher, _ = make(model, executor, max_queue_delay_s=0.1)
        first = asyncio.ensure_future(batcher.submit(rows(1)))
        await asyncio.sleep(0.02)
        second = asyncio.ensure_future(batcher.submit(rows(2)))
        await asyncio.gather(first, second)
        await batcher.close()

    asyncio.run(main())
    assert model.calls == [2]


def test_string_inputs_are_batched(executor):
    def upper(inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {"text": np.array([s.upper() for s in inputs], dtype=object)}

    async def main():
        batcher, _ = make(upper, executor)
        a, b = await asyncio.gather(
            batcher.submit(np.array([b"ab"], dtype=object)),
            batcher.submit(np.array([b"cd", b"ef"], dtype=object)),
        )
        await batcher.close()
        return a, b

    a, b = asyncio.run(main())
    assert a["text"].tolist() == [b"AB"]
    assert b["text"].tolist() == [b"CD", b"EF"]


def test_closed_batcher_refuses_and_finishes_queued_work(executor):
    model = SlowModel(seconds=0.05)

    async def main():
        batcher, _ = make(model, executor)
        queued = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(3)]
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="shutting down"):
            await batcher.submit(rows(9))
        results = await asyncio.gather(*queued)
        await closing
        return results

    results = asyncio.run(main())
    assert [r["first"].tolist() for r in results] == [[0], [1], [2]]
