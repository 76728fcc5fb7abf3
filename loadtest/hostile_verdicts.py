"""Verdicts of the ``hostile`` chaos family (issue 15): pure functions over what each probe
recorded, so every target is unit-tested without a server.

A probe is one row: the answers it got, how long it took, the worst ``/livez`` time on the
same worker while it ran, and the server log's new tracebacks. :func:`judge_probe` checks the
targets every probe shares (expected answers only, never a 5xx / INTERNAL / UNKNOWN, no
traceback, ``/livez`` within 100 ms throughout) plus its own bound; :func:`judge_metrics`,
:func:`judge_trickle`, :func:`judge_reload` and :func:`judge_burst` add what is special to
theirs. :func:`render_probes` prints the table; :meth:`ProbeRow.as_row` is the chaos row.

Typical usage::

    row = judge_probe("varint 256,000", answers, {"INVALID_ARGUMENT"}, livez, tracebacks=0)
    print(render_probes([row]))
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from loadtest.chaos_verdicts import Outcome, Row, verdict_table
from loadtest.stats import fmt

LIVEZ_MS = 100.0  # /livez on the same worker answers within this while any probe runs
STRING_REFUSED_S = 0.5  # the 8 MB string tensor is refused within this
METRICS_GROWTH_BYTES = 100 * 1024  # /metrics after 1,000 unknown paths: at most this larger
SERVER_FAULTS = frozenset({"500", "502", "504", "INTERNAL", "UNKNOWN", "DATA_LOSS"})


@dataclass
class ProbeRow:
    """One hostile probe's line: what it got and whether its targets were met."""

    probe: str
    answer: str  # e.g. "64 x 404" or "INVALID_ARGUMENT"
    seconds: float | None  # the probe's own time (first request sent to last answer)
    livez_ms: float | None  # the worst /livez time meanwhile
    requests: int
    missed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return not self.missed

    def as_row(self, other_cpu: float | None = None) -> Row:
        """The line of the chaos table (``loadtest.chaos_verdicts.render``)."""
        failures = len(self.missed)
        notes = [f"answer {self.answer}, {fmt(self.seconds, 2)} s, /livez worst "
                 f"{fmt(self.livez_ms, 0)} ms", *self.notes]  # fmt: skip
        return Row(
            f"hostile: {self.probe}",
            self.requests,
            failures,
            None,
            self.livez_ms,
            other_cpu,
            list(self.missed),
            notes,
        )


def answers_summary(outcomes: list[Outcome]) -> str:
    """``"INVALID_ARGUMENT"`` for one answer, ``"998 x 404, 2 x 400"`` for many."""
    counts = Counter(o.status for o in outcomes)
    if len(outcomes) == 1:
        return outcomes[0].status
    return ", ".join(f"{n} x {status}" for status, n in counts.most_common()) or "none"


def span_s(outcomes: list[Outcome]) -> float | None:
    """From the first request sent to the last answer."""
    if not outcomes:
        return None
    return max(o.done for o in outcomes) - min(o.sent for o in outcomes)


def judge_probe(
    probe: str,
    outcomes: list[Outcome],
    expected: set[str],
    livez: list[Outcome],
    tracebacks: int,
    max_s: float | None = None,
) -> ProbeRow:
    """The targets every probe shares, and ``max_s`` for the probe's own time.

    Args:
        probe: the row's name.
        outcomes: the probe's answers (one per request it sent).
        expected: the statuses each answer may have (``"400"``, ``"INVALID_ARGUMENT"`` ...).
        livez: ``/livez`` probes on the same worker while it ran.
        tracebacks: tracebacks the server logged meanwhile.
        max_s: the probe must be answered within this (None: no bound of its own).
    """
    worst = max((o.ms for o in livez), default=None)
    row = ProbeRow(probe, answers_summary(outcomes), span_s(outcomes), worst, len(outcomes))
    if not outcomes:
        row.missed.append("no answer recorded")
    wrong = Counter(o.status for o in outcomes if o.status not in expected)
    for status, n in wrong.most_common():
        example = next(o.detail for o in outcomes if o.status == status)
        kind = "server fault" if status in SERVER_FAULTS else "unexpected"
        row.missed.append(
            f"{n} x {status} ({kind}; expected {'/'.join(sorted(expected))}): {example[:120]}"
        )
    if tracebacks:
        row.missed.append(f"{tracebacks} traceback(s) in the server log")
    if not livez:
        row.missed.append("no /livez probe answered meanwhile")
    elif worst is not None and worst > LIVEZ_MS:
        row.missed.append(f"/livez took {worst:.0f} ms (target {LIVEZ_MS:.0f} ms)")
    failed_livez = [o for o in livez if o.status != "200"]
    if failed_livez:
        row.missed.append(f"{len(failed_livez)} /livez probes failed ({failed_livez[0].status})")
    if max_s is not None and row.seconds is not None and row.seconds > max_s:
        row.missed.append(f"answered after {row.seconds:.2f} s (target {max_s} s)")
    return row


def judge_metrics(row: ProbeRow, before_bytes: int, after_bytes: int) -> ProbeRow:
    """``/metrics`` grew by at most :data:`METRICS_GROWTH_BYTES` over the probe."""
    growth = after_bytes - before_bytes
    row.notes.append(f"/metrics {before_bytes:,} -> {after_bytes:,} bytes ({growth:+,})")
    if growth > METRICS_GROWTH_BYTES:
        row.missed.append(
            f"/metrics grew by {growth:,} bytes (target under {METRICS_GROWTH_BYTES:,})"
        )
    return row


def judge_trickle(
    row: ProbeRow, opened: int, closed_after_s: list[float | None], timeout_s: float
) -> ProbeRow:
    """Every trickling connection was closed by the server within the header timeout plus a
    margin (``None``: still open when the probe gave up on it)."""
    closed = [s for s in closed_after_s if s is not None]
    margin = max(5.0, timeout_s)
    row.notes.append(
        f"{opened} connections trickling one header line a second; {len(closed)} closed by "
        f"the server, after {fmt(min(closed, default=None))}-{fmt(max(closed, default=None))} s"
        f" (SERVICE_HEADER_TIMEOUT_S={timeout_s:g})"
    )
    if opened == 0:
        row.missed.append("no connection could be opened")
    if len(closed) < len(closed_after_s):
        row.missed.append(f"{len(closed_after_s) - len(closed)} connections never closed")
    late = [s for s in closed if s > timeout_s + margin]
    if late:
        row.missed.append(f"{len(late)} closed only after {max(late):.1f} s")
    return row


def judge_reload(
    without: Outcome, with_token: Outcome, livez: list[Outcome], tracebacks: int
) -> ProbeRow:
    """``HandleReloadConfigRequest``: PERMISSION_DENIED without the token, applied with it."""
    row = judge_probe(
        "reload without/with token",
        [without, with_token],
        {"PERMISSION_DENIED", "OK"},
        livez,
        tracebacks,
    )
    row.answer = f"{without.status} / {with_token.status}"
    if without.status != "PERMISSION_DENIED":
        row.missed.append(f"without the token: {without.status}, not PERMISSION_DENIED")
    if with_token.status != "OK":
        row.missed.append(f"with the token: {with_token.status} ({with_token.detail[:120]})")
    return row


def judge_burst(row: ProbeRow, outcomes: list[Outcome]) -> ProbeRow:
    """The 32 x 64-review burst: no refusal at all (about 0.2 s of model time); says how
    many were refused, on top of :func:`judge_probe`'s wrong answers."""
    refused = [o for o in outcomes if o.status in ("503", "RESOURCE_EXHAUSTED")]
    if refused:
        row.missed.append(
            f"{len(refused)} of {len(outcomes)} refused ({refused[0].detail[:100]}); target 0"
        )
    return row


def render_probes(rows: list[ProbeRow]) -> str:
    """The hostile table (Markdown), then every missed target and note."""
    cells = [[row.probe, row.answer, fmt(row.seconds, 2), fmt(row.livez_ms, 0)] for row in rows]
    columns = ["probe", "answer", "time s", "worst /livez ms"]
    return verdict_table(columns, cells, rows, "llrr")
