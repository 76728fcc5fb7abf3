"""The chaos suite's verdicts: what each scenario's requests must look like (issue 10).

Pure functions over recorded :class:`Outcome` s (no I/O), so every target is unit-tested:
``judge_*`` turn one scenario's outcomes into a :class:`Row` with the targets it missed,
:func:`render` prints the table, :func:`exit_status` is the suite's verdict.

Typical usage::

    row = judge_kill(outcomes, killed_at, dead_at, readyz_probes, recovery_s, other_cpu)
    print(render([row])); sys.exit(exit_status([row]))
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc

from loadtest.doors import HttpStatus
from loadtest.stats import fmt, percentile, table

# Targets of issue 10.
FAIL_FAST_MS = 100.0  # a request that cannot be served fails within this
READYZ_MS = 100.0  # /readyz answers within this, at all times
REFUSAL_P99_MS = 50.0  # p99 of the refusals under overload
IDLE_WITHIN_S = 5.0  # after an overload, an idle request is back at its usual latency
OK = frozenset({"200", "OK"})
REFUSED = frozenset({"503", "RESOURCE_EXHAUSTED"})


@dataclass
class Outcome:
    """One request: when it was sent and answered, and how (``200``, ``503``, a gRPC code
    name such as ``OK`` or ``UNAVAILABLE``, ``connection``, ``timeout``, ``bad body``)."""

    door: str
    sent: float
    done: float
    status: str
    detail: str = ""

    @property
    def ms(self) -> float:
        return (self.done - self.sent) * 1000.0

    @property
    def ok(self) -> bool:
        return self.status in OK


def classify(exc: BaseException) -> tuple[str, str]:
    """The status of a failed request: its HTTP status, its gRPC code's name, or the kind of
    transport failure, and a short detail."""
    detail = str(exc)[:200]
    if isinstance(exc, HttpStatus):  # "HTTP 503: b'...'"
        return detail.split(":", 1)[0].removeprefix("HTTP ").strip(), detail
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return exc.code().name, str(exc.details())[:200]
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timeout", detail
    if isinstance(exc, aiohttp.ClientError | OSError | ConnectionError):
        return "connection", f"{type(exc).__name__}: {detail}"
    return "bad body", f"{type(exc).__name__}: {detail}"


@dataclass
class Row:
    """One scenario's line of the table, with the targets it missed."""

    scenario: str
    requests: int
    failures: int
    recovery_s: float | None
    p99_ms: float | None
    other_cpu: float | None  # cores busy with other processes, mean over the scenario
    missed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return not self.missed


def render(rows: list[Row]) -> str:
    """The chaos table (Markdown), then one line per missed target and note."""
    columns = ["scenario", "requests", "failures", "recovery s", "p99 ms", "other CPU"]
    cells = [
        [row.scenario, row.requests, row.failures, fmt(row.recovery_s), fmt(row.p99_ms),
         "-" if row.other_cpu is None else f"{row.other_cpu * 100:.0f}%"]
        for row in rows
    ]  # fmt: skip
    return verdict_table(columns, cells, rows, "lrrrrr")


def verdict_table(columns: list[str], cells: list[list[Any]], rows: list[Any], align: str) -> str:
    """A Markdown table of ``cells`` (a row's name first) whose last column is each row's
    verdict (``met`` or how many targets it missed), then every missed target and note."""
    verdicts = ["met" if row.met else f"**missed** ({len(row.missed)})" for row in rows]
    lines = table([*columns, "verdict"], [[*c, v] for c, v in zip(cells, verdicts)], align + "l")
    for [name, *_], row in zip(cells, rows, strict=True):
        lines += [f"* {name}: MISSED {text}" for text in row.missed]
        lines += [f"* {name}: {text}" for text in row.notes]
    return "\n".join(lines)


def exit_status(rows: list[Row]) -> int:
    """0 when every scenario met its targets, else 1."""
    return 0 if rows and all(row.met for row in rows) else 1


def judge_kill(
    outcomes: list[Outcome],
    killed_at: float,
    dead_at: float,
    readyz: list[Outcome],
    recovery_s: float | None,
    other_cpu: float | None,
) -> Row:
    """Only requests in flight on the dead worker (sent before it was gone, failing with a
    transport error or UNAVAILABLE) may fail; ``/readyz`` answers 200 within 100 ms."""
    lost = [
        o
        for o in outcomes
        if not o.ok and o.sent <= dead_at and o.status in ("connection", "UNAVAILABLE")
    ]
    failed = [o for o in outcomes if not o.ok and o not in lost]
    after = [o.ms for o in outcomes if o.ok and o.sent >= killed_at]
    row = Row(
        "worker kill -9 (HTTP + gRPC)",
        len(outcomes),
        len(failed),
        recovery_s,
        percentile(after, 99),
        other_cpu,
    )
    row.notes.append(f"in flight on the dead worker, lost: {len(lost)}")
    if failed:
        kinds = sorted({f"{o.door} {o.status}" for o in failed})
        row.missed.append(f"{len(failed)} requests failed besides those ({', '.join(kinds)})")
    if recovery_s is None:
        row.missed.append("the replacement worker never became warm")
    if readyz:
        worst = max(o.ms for o in readyz)
        not_ready = sum(o.status != "200" for o in readyz)
        row.notes.append(f"/readyz: {len(readyz)} probes, max {worst:.1f} ms, {not_ready} not 200")
        if worst > READYZ_MS:
            row.missed.append(f"/readyz took {worst:.1f} ms (target < {READYZ_MS:.0f})")
        if not_ready:
            row.missed.append(f"/readyz said not ready {not_ready} times while a worker served")
    if after:
        row.notes.append(f"after the kill: max {max(after):.0f} ms for an answered request")
    return row


def judge_sigterm(
    in_flight: list[Outcome],
    still_open: int,
    probes: dict[str, Outcome | None],
    exit_code: int | None,
    exit_s: float | None,
    grace_s: float,
    other_cpu: float | None,
) -> Row:
    """Every request in flight answered 200; ``/readyz`` 503, health NOT_SERVING and new
    requests refused within 100 ms of the signal; exit 0 within the grace period."""
    failed = [o for o in in_flight if not o.ok]
    row = Row(
        f"SIGTERM, {len(in_flight)} in flight",
        len(in_flight),
        len(failed),
        exit_s,
        percentile([o.ms for o in in_flight], 99),
        other_cpu,
    )
    row.notes.append(f"still unanswered when SIGTERM arrived: {still_open}")
    if failed:
        row.missed.append(
            f"{len(failed)} of {len(in_flight)} in flight were not answered 200 "
            f"({', '.join(sorted({o.status for o in failed}))})"
        )
    expected = {
        "readyz": {"503"},
        "health": {"NOT_SERVING"},
        "new http": {"503"},
        "new grpc": {"UNAVAILABLE"},
    }
    for name, wanted in expected.items():
        probe = probes.get(name)
        if probe is None:
            row.missed.append(f"{name}: no answer after the signal")
            continue
        row.notes.append(f"{name} after the signal: {probe.status} in {probe.ms:.1f} ms")
        if probe.status not in wanted or probe.ms > FAIL_FAST_MS:
            row.missed.append(
                f"{name}: {probe.status} in {probe.ms:.1f} ms "
                f"(want {'/'.join(sorted(wanted))} < {FAIL_FAST_MS:.0f} ms)"
            )
    if exit_code != 0:
        row.missed.append(f"bentoml serve exited with {exit_code}")
    if exit_s is None or exit_s > grace_s + 15:
        row.missed.append(f"exit took {fmt(exit_s)} s (grace {grace_s:.0f} s)")
    return row


def judge_overload(
    capacity: float,
    outcomes: list[Outcome],
    idle_ms: float,
    after: list[Outcome],
    overload_end: float,
    other_cpu: float | None,
) -> Row:
    """Only answers and fast refusals; single requests back at idle latency within 5 s."""
    refused = [o.ms for o in outcomes if o.status in REFUSED]
    answered = [o.ms for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok and o.status not in REFUSED]
    recovered = idle_recovery(after, overload_end, idle_ms)
    row = Row(
        "overload 4x capacity",
        len(outcomes),
        len(failed),
        recovered,
        percentile(answered, 99),
        other_cpu,
    )
    p99_refused = percentile(refused, 99)
    row.notes.append(
        f"capacity {capacity:.0f} req/s, offered {4 * capacity:.0f} req/s: {len(answered)} "
        f"answered, {len(refused)} refused (p99 {fmt(p99_refused)} ms); idle {idle_ms:.1f} ms"
    )
    if failed:
        row.missed.append(
            f"{len(failed)} neither answered nor refused "
            f"({', '.join(sorted({o.status for o in failed}))})"
        )
    by_door = {
        door: [o.ms for o in outcomes if o.door == door and o.status in REFUSED]
        for door in sorted({o.door for o in outcomes})
    }
    row.notes.append(
        "refusals by door: "
        + ", ".join(
            f"{door} {len(ms)} (p99 {fmt(percentile(ms, 99))} ms)" for door, ms in by_door.items()
        )
    )
    if not refused:
        row.missed.append("nothing was refused: the overload never reached the queue cap")
    for door, ms in by_door.items():
        worst = percentile(ms, 99)
        if worst is not None and worst > REFUSAL_P99_MS:
            row.missed.append(f"{door} refusals p99 {worst:.1f} ms (target < {REFUSAL_P99_MS:.0f})")
    if recovered is None or recovered > IDLE_WITHIN_S:
        row.missed.append(
            f"idle latency not back within {IDLE_WITHIN_S:.0f} s ({fmt(recovered)} s)"
        )
    return row


def idle_threshold_ms(idle_ms: float) -> float:
    """What still counts as the usual idle latency: twice it, or 5 ms more."""
    return max(2 * idle_ms, idle_ms + 5.0)


def idle_recovery(
    after: list[Outcome], overload_end: float, idle_ms: float, run: int = 5
) -> float | None:
    """Seconds from the overload's end until single requests were back at their usual
    latency: the send time of the first of ``run`` consecutive usual answers (one slow
    answer later on is the machine's noise, not the overload's), None if never."""
    threshold = idle_threshold_ms(idle_ms)
    usual = [o.ok and o.ms <= threshold for o in after]
    for first in range(len(after) - run + 1):
        if all(usual[first : first + run]):
            return max(0.0, after[first].sent - overload_end)
    return None


def judge_cases(
    scenario: str,
    cases: list[tuple[str, set[str], Outcome]],
    background: list[Outcome],
    other_cpu: float | None,
) -> Row:
    """Each case answered with one of its expected statuses (never UNKNOWN / INTERNAL / 5xx
    other than what is expected); the background requests all answered."""
    wrong = [(name, o) for name, wanted, o in cases if o.status not in wanted]
    failed_background = [o for o in background if not o.ok]
    row = Row(
        scenario,
        len(cases) + len(background),
        len(wrong) + len(failed_background),
        None,
        percentile([o.ms for o in background], 99),
        other_cpu,
    )
    for name, wanted, o in cases:
        row.notes.append(f"{name}: {o.status} in {o.ms:.0f} ms")
    for name, o in wrong:
        row.missed.append(f"{name}: {o.status} ({o.detail[:120]})")
    if failed_background:
        kinds = ", ".join(sorted({o.status for o in failed_background}))
        row.missed.append(f"{len(failed_background)} small requests failed meanwhile ({kinds})")
    if background:
        row.notes.append(
            f"small requests meanwhile: {len(background)}, "
            f"max {max(o.ms for o in background):.0f} ms"
        )
    return row
