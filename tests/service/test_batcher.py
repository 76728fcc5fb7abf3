"""Unit tests of the dynamic batcher, with plain functions standing in for the model."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.admission import (
    OPTIMISTIC_ROWS_PER_S,
    REFUSED_ROWS,
    REFUSED_WAIT,
    ThroughputEstimate,
    refuse_reason,
    wait_budget,
)
from service.batcher import Batcher, BatchObserver, FillBackoff
from service.errors import DeadlineExceeded, ModelFailure, Overloaded


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.refusals = 0
        self.reasons: list[str] = []
        self.expirations = 0
        self.depths: list[int] = []

    def queued(self, depth_rows: int) -> None:
        self.depths.append(depth_rows)

    def refused(self, reason: str) -> None:
        self.refusals += 1
        self.reasons.append(reason)

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


def _measured(rows_per_s: float) -> ThroughputEstimate:
    estimate = ThroughputEstimate(16)
    for size in (1, 2, 4, 8, 16):
        estimate.observe(size, size / rows_per_s)
    return estimate


def test_a_free_model_waits_for_rows_to_fill_the_padding_of_the_bucket(executor):
    model = SlowModel()

    async def main():
        # bucket 4 takes 4 / 20 = 0.2 s: three rows may wait up to 0.2 s for a fourth.
        batcher, _ = make(
            model, executor, buckets=(1, 4, 16), fill_fraction=1.0, estimate=_measured(20)
        )
        first = [asyncio.ensure_future(batcher.submit(rows(v))) for v in (1, 2, 3)]
        await asyncio.sleep(0.05)
        fourth = asyncio.ensure_future(batcher.submit(rows(4)))
        await asyncio.gather(*first, fourth)
        await batcher.close()

    asyncio.run(main())
    assert model.calls == [4], "the fourth row joined the padded batch of three"


def test_without_filling_the_same_rows_take_two_model_calls(executor):
    model = SlowModel()

    async def main():
        batcher, _ = make(model, executor, buckets=(1, 4, 16), estimate=_measured(20))
        first = [asyncio.ensure_future(batcher.submit(rows(v))) for v in (1, 2, 3)]
        await asyncio.sleep(0.05)
        await asyncio.gather(*first, batcher.submit(rows(4)))
        await batcher.close()

    asyncio.run(main())
    assert model.calls == [3, 1]


def test_a_lone_request_never_waits_and_a_vain_wait_backs_off(executor):
    model = SlowModel()

    async def main():
        batcher, _ = make(
            model, executor, buckets=(1, 4, 16), fill_fraction=1.0, estimate=_measured(20)
        )
        started = time.monotonic()
        await batcher.submit(rows(1))  # one row fills bucket 1
        alone = time.monotonic() - started
        started = time.monotonic()
        await asyncio.gather(*(batcher.submit(rows(v)) for v in (1, 2, 3)))
        vain = time.monotonic() - started  # nobody else came: waited its 0.2 s
        started = time.monotonic()
        await asyncio.gather(*(batcher.submit(rows(v)) for v in (1, 2, 3)))
        skipped = time.monotonic() - started  # the next chance is skipped
        await batcher.close()
        return alone, vain, skipped

    alone, vain, skipped = asyncio.run(main())
    assert model.calls == [1, 3, 3]
    assert vain >= 0.15
    assert alone < 0.15 and skipped < 0.15  # generous: far below the 0.2 s wait


def test_fill_backoff_skips_1_3_7_15_chances_after_vain_waits():
    backoff = FillBackoff()
    skipped = []
    for _ in range(5):
        assert backoff.should_try()
        backoff.record(arrived=False)
        count = 0
        while not backoff.should_try():
            count += 1
        skipped.append(count)
    assert skipped == [1, 3, 7, 15, 15]
    backoff.record(arrived=True)  # a wait that saw a row arrive: try every time again
    assert backoff.should_try() and backoff.should_try()


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


# ---- admission by time: the estimate and the rule, with injected rates and a fake clock


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_estimate_is_optimistic_until_measured():
    estimate = ThroughputEstimate(max_batch_size=64)
    assert estimate.rows_per_s(64) == OPTIMISTIC_ROWS_PER_S
    assert estimate.wait_seconds(rows_ahead=16_384) < 0.02  # a fresh model admits a burst


@pytest.mark.parametrize(
    ("rows", "size_class"), [(1, 1), (2, 2), (3, 4), (33, 64), (64, 64), (500, 64)]
)
def test_size_classes(rows, size_class):
    assert ThroughputEstimate(max_batch_size=64).size_class(rows) == size_class


def test_estimate_is_a_moving_average_per_size_class():
    estimate = ThroughputEstimate(max_batch_size=64, weight=0.5)
    estimate.observe(64, 0.010)  # 6400 rows/s
    assert estimate.rows_per_s(64) == pytest.approx(6400)
    estimate.observe(64, 0.020)  # 3200 rows/s: halfway there
    assert estimate.rows_per_s(64) == pytest.approx(4800)
    estimate.observe(60, 0.0)  # no time measured: ignored
    assert estimate.rows_per_s(64) == pytest.approx(4800)


def test_unmeasured_classes_are_estimated_optimistically_from_the_nearest():
    estimate = ThroughputEstimate(max_batch_size=64)
    estimate.observe(1, 0.001)  # single rows: 1000 rows/s
    # A batch of 64 is assumed to take no longer than one of 1 (1 ms): 64,000 rows/s, so a
    # model measured only on single rows does not refuse the first burst.
    assert estimate.rows_per_s(64) == pytest.approx(64_000)
    assert estimate.batch_seconds(64) == pytest.approx(0.001)
    estimate.observe(64, 0.008)  # measured: 8000 rows/s
    assert estimate.rows_per_s(64) == pytest.approx(8000)
    assert estimate.rows_per_s(16) == pytest.approx(16_000)  # from the class below
    only_big = ThroughputEstimate(max_batch_size=64)
    only_big.observe(64, 0.008)
    assert only_big.rows_per_s(4) == pytest.approx(8000)  # as fast per row as the class above


def test_wait_counts_the_running_batch_and_the_rows_ahead():
    estimate = ThroughputEstimate(max_batch_size=64)
    estimate.observe(64, 0.010)  # 6400 rows/s
    assert estimate.wait_seconds(0) == 0
    assert estimate.wait_seconds(640) == pytest.approx(0.1)
    assert estimate.wait_seconds(640, running_rows=64, running_for=0.004) == pytest.approx(0.106)
    # A batch running longer than expected adds nothing (not a negative wait).
    assert estimate.wait_seconds(640, running_rows=64, running_for=1.0) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("max_wait", "deadline", "budget"),
    [
        (1.0, None, 1.0),
        (1.0, 1000.3, 0.3),
        (1.0, 1005.0, 1.0),
        (0.0, None, None),
        (0.0, 1002.0, 2.0),
    ],
)
def test_wait_budget_is_the_shorter_of_queue_budget_and_deadline(max_wait, deadline, budget):
    result = wait_budget(max_wait, deadline, now=1000.0)
    assert result == (None if budget is None else pytest.approx(budget))


# (case, queued rows, new rows, row cap, estimated wait s, budget s, refused for)
ADMISSION = [
    ("empty queue, idle model", 0, 64, 16_384, 0.0, 1.0, None),
    ("short wait", 1_984, 64, 16_384, 0.25, 1.0, None),
    ("wait over the budget", 10_000, 64, 16_384, 1.5, 1.0, REFUSED_WAIT),
    ("wait over the request's own deadline", 640, 64, 16_384, 0.1, 0.05, REFUSED_WAIT),
    ("no time budget", 10_000, 64, 16_384, 50.0, None, None),
    ("row cap (memory guard)", 16_380, 8, 16_384, 0.1, 1.0, REFUSED_ROWS),
    ("one request larger than the cap, queue empty", 0, 20_000, 16_384, 0.0, 1.0, None),
    ("deadline already passed, idle model", 0, 1, 16_384, 0.0, -0.5, None),
]


@pytest.mark.parametrize(
    "queued, rows, cap, wait, budget, reason",
    [a[1:] for a in ADMISSION],
    ids=[a[0] for a in ADMISSION],
)
def test_admission_rule(queued, rows, cap, wait, budget, reason):
    assert refuse_reason(queued, rows, cap, wait, budget) == reason


def test_batcher_refuses_by_estimated_wait_and_admits_below_it(executor):
    model = SlowModel()
    model.gate = threading.Event()
    clock = FakeClock()
    estimate = ThroughputEstimate(max_batch_size=8)
    estimate.observe(8, 0.1)  # 80 rows/s: 8 queued rows are 100 ms of work

    async def main():
        options = {"max_queue_rows": 1000, "max_queue_wait_s": 0.25}
        batcher, recorder = make(model, executor, estimate=estimate, clock=clock, **options)
        running = asyncio.ensure_future(batcher.submit(rows(0)))
        await asyncio.sleep(0.02)  # the model holds it (one row: 12.5 ms expected)
        clock.now += 1.0  # ... for far longer than expected: nothing of it is left to wait for
        first = [asyncio.ensure_future(batcher.submit(rows(*range(8)))) for _ in range(3)]
        await asyncio.sleep(0)  # three admitted: 0, 100 and 200 ms ahead of each, < 250 ms
        assert batcher.estimated_wait() == pytest.approx(0.3)  # 24 rows ahead at 80 rows/s
        started = time.perf_counter()
        with pytest.raises(Overloaded, match="wait of 300 ms exceeds the queue's budget of 250 ms"):
            await batcher.submit(rows(1))
        refused_in = time.perf_counter() - started
        # The request's own deadline, when shorter, is the budget.
        soon = clock.now + 0.05
        with pytest.raises(Overloaded, match="remaining deadline"):
            await batcher.submit(rows(1), deadline=soon)
        model.gate.set()
        await asyncio.gather(running, *first)  # everything admitted is answered
        await batcher.close()
        return recorder, refused_in

    recorder, refused_in = asyncio.run(main())
    assert recorder.reasons == [REFUSED_WAIT, REFUSED_WAIT]
    assert refused_in < 0.5  # at once, not after the model (generous bound)


def test_a_fresh_batcher_admits_a_burst_the_row_cap_allows(executor):
    model = SlowModel()
    model.gate = threading.Event()

    async def main():
        batcher, recorder = make(model, executor, max_batch_size=64, max_queue_rows=16_384)
        burst = [np.zeros((64, 2), np.float32) for _ in range(32)]  # 32 clients x 64 rows
        tasks = [asyncio.ensure_future(batcher.submit(inputs)) for inputs in burst]
        await asyncio.sleep(0.02)
        model.gate.set()
        await asyncio.gather(*tasks)
        await batcher.close()
        return recorder

    assert asyncio.run(main()).refusals == 0
