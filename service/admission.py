"""Admission by time: how long a request would wait in a batcher's queue, and whether it may.

:class:`ThroughputEstimate` is the model's measured rate per batch-size class;
:func:`wait_budget` and :func:`refuse_reason` are the rule :meth:`service.batcher.Batcher.submit`
applies before queueing anything. Pure functions and one small class, no event loop, so the
tests drive them with plain numbers.

Typical usage::

    estimate = ThroughputEstimate(max_batch_size=64)
    estimate.observe(rows=16, seconds=0.004)
    wait = estimate.wait_seconds(rows_ahead=120, running_rows=16, running_for=0.001)
    refuse_reason(queued_rows=120, rows=1, max_queue_rows=16384, wait_s=wait,
                  budget_s=wait_budget(1.0, None, now=0.0))   # None: queue it
"""

from __future__ import annotations

# Before the model ran any batch, assume it is this fast: optimistic, so a fresh model
# admits work up to the row cap, and its first batches measure the real rate.
OPTIMISTIC_ROWS_PER_S = 1_000_000.0
# Weight of the newest batch in the moving average of a size class's rate.
RATE_WEIGHT = 0.3
# The reasons a request is refused before queueing (keras_serving_refused_total{reason}).
REFUSED_ROWS, REFUSED_WAIT = "overload", "wait"


class ThroughputEstimate:
    """Rows per second the model achieves, per batch-size class (powers of two up to
    ``max_batch_size``): a moving average over the batches it ran.

    A class not measured yet is estimated optimistically from the nearest one that is: a
    bigger batch is assumed to take no longer than a smaller one (batching is how a model
    gets faster per row), a smaller one to be as fast per row as a bigger one. With nothing
    measured, ``default_rows_per_s``.
    """

    def __init__(
        self,
        max_batch_size: int,
        weight: float = RATE_WEIGHT,
        default_rows_per_s: float = OPTIMISTIC_ROWS_PER_S,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.weight = weight
        self.default_rows_per_s = default_rows_per_s
        self._rates: dict[int, float] = {}  # size class -> rows per second

    def size_class(self, rows: int) -> int:
        """The power of two at or above ``rows``, at most ``max_batch_size``."""
        return min(self.max_batch_size, 1 << max(0, rows - 1).bit_length())

    def observe(self, rows: int, seconds: float) -> None:
        """One batch of ``rows`` took ``seconds`` of model time."""
        if rows < 1 or seconds <= 0:
            return
        size = self.size_class(rows)
        rate = rows / seconds
        old = self._rates.get(size)
        self._rates[size] = rate if old is None else old + self.weight * (rate - old)

    def rows_per_s(self, rows: int) -> float:
        """The rate a batch of ``rows`` runs at (measured, or estimated optimistically)."""
        size = self.size_class(rows)
        if size in self._rates:
            return self._rates[size]
        below = [s for s in self._rates if s < size]
        if below:
            nearest = max(below)
            return self._rates[nearest] * size / nearest
        above = [s for s in self._rates if s > size]
        if above:
            return self._rates[min(above)]
        return self.default_rows_per_s

    def batch_seconds(self, rows: int) -> float:
        """How long a batch of ``rows`` takes."""
        return rows / self.rows_per_s(rows) if rows > 0 else 0.0

    def wait_seconds(
        self, rows_ahead: int, running_rows: int = 0, running_for: float = 0.0
    ) -> float:
        """How long a new request waits before its batch starts: what is left of the batch
        running now (``running_rows``, started ``running_for`` seconds ago), then the
        ``rows_ahead`` queued before it, in full batches."""
        left = max(0.0, self.batch_seconds(running_rows) - running_for) if running_rows else 0.0
        return left + rows_ahead / self.rows_per_s(self.max_batch_size)


def wait_budget(max_wait_s: float, deadline: float | None, now: float) -> float | None:
    """The longest a request may wait in the queue: ``max_wait_s`` (0 = no limit), or what
    is left of its ``deadline`` if that is shorter. None: no limit."""
    budgets = [max_wait_s] if max_wait_s > 0 else []
    if deadline is not None:
        budgets.append(deadline - now)
    return min(budgets) if budgets else None


def refuse_reason(
    queued_rows: int, rows: int, max_queue_rows: int, wait_s: float, budget_s: float | None
) -> str | None:
    """The admission rule: why a request of ``rows`` must be refused now, or None to queue
    it. The row cap (memory) first; a request alone in an empty queue always passes it.
    Then time: a request that would wait (``wait_s`` > 0) longer than its budget."""
    if queued_rows > 0 and queued_rows + rows > max_queue_rows:
        return REFUSED_ROWS
    if budget_s is not None and wait_s > 0 and wait_s > budget_s:
        return REFUSED_WAIT
    return None
