"""The chaos suite's and the soak's verdicts, on recorded outcomes (no server)."""

from __future__ import annotations

import aiohttp
import grpc
import pytest

from loadtest import soak
from loadtest.chaos import parse_args
from loadtest.payloads import malformed_requests
from loadtest.chaos_verdicts import (
    Outcome,
    Row,
    classify,
    exit_status,
    idle_recovery,
    judge_cases,
    judge_kill,
    judge_overload,
    judge_sigterm,
    render,
)
from loadtest.doors import HttpStatus


def ok(door: str, sent: float, ms: float = 10.0) -> Outcome:
    return Outcome(door, sent, sent + ms / 1000, "OK" if door == "grpc" else "200")


def failed(door: str, sent: float, status: str, ms: float = 5.0) -> Outcome:
    return Outcome(door, sent, sent + ms / 1000, status, "detail")


class FakeRpcError(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection reset"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (HttpStatus("HTTP 503: b'{}'"), "503"),
        (HttpStatus("HTTP 413: b'too long'"), "413"),
        (FakeRpcError(), "UNAVAILABLE"),
        (aiohttp.ServerDisconnectedError(), "connection"),
        (ConnectionResetError(104, "reset"), "connection"),
        (TimeoutError(), "timeout"),
        (ValueError("probabilities do not sum to 1"), "bad body"),
    ],
)
def test_classify_names_the_failure(error: BaseException, status: str) -> None:
    assert classify(error)[0] == status


def test_kill_allows_only_failures_in_flight_on_the_dead_worker() -> None:
    outcomes = [
        ok("http", 0.0),
        failed("http", 0.95, "connection"),  # in flight when the worker died at 1.0
        failed("grpc", 0.99, "UNAVAILABLE"),
        ok("grpc", 1.5),
    ]
    readyz = [Outcome("readyz", t, t + 0.004, "200") for t in (0.0, 1.0, 2.0)]
    row = judge_kill(outcomes, 0.9, 1.0, readyz, 12.5, 0.1)
    assert row.met, row.missed
    assert (row.requests, row.failures, row.recovery_s) == (4, 0, 12.5)
    assert "lost: 2" in row.notes[0]


@pytest.mark.parametrize(
    ("late", "readyz_ms", "readyz_status", "recovery", "missed"),
    [
        (failed("http", 1.2, "503"), 4.0, "200", 10.0, "failed besides"),  # after the death
        (failed("grpc", 0.5, "INTERNAL"), 4.0, "200", 10.0, "failed besides"),  # not a transport
        (None, 150.0, "200", 10.0, "/readyz took 150.0 ms"),
        (None, 4.0, "503", 10.0, "said not ready"),
        (None, 4.0, "200", None, "never became warm"),
    ],
)
def test_kill_misses(late, readyz_ms, readyz_status, recovery, missed) -> None:
    outcomes = [ok("http", 0.0)] + ([late] if late else [])
    readyz = [Outcome("readyz", 2.0, 2.0 + readyz_ms / 1000, readyz_status)]
    row = judge_kill(outcomes, 0.9, 1.0, readyz, recovery, None)
    assert not row.met
    assert any(missed in text for text in row.missed), row.missed


def _sigterm_probes(ms: float = 20.0) -> dict[str, Outcome | None]:
    statuses = {
        "readyz": "503",
        "health": "NOT_SERVING",
        "new http": "503",
        "new grpc": "UNAVAILABLE",
    }
    return {name: Outcome("probe", 0.0, ms / 1000, status) for name, status in statuses.items()}


def test_sigterm_met_when_every_request_in_flight_is_answered() -> None:
    in_flight = [ok("http", 0.0, 300) for _ in range(16)] + [ok("grpc", 0.0, 50) for _ in range(16)]
    row = judge_sigterm(in_flight, 32, _sigterm_probes(), 0, 2.5, 10.0, 0.0)
    assert row.met, row.missed
    assert (row.requests, row.failures) == (32, 0)


@pytest.mark.parametrize(
    ("change", "missed"),
    [
        ({"in_flight_status": "503"}, "not answered 200"),
        ({"exit_code": -15}, "exited with -15"),
        ({"probe_ms": 250.0}, "want"),
        ({"probe": None}, "no answer"),
        ({"exit_s": 40.0}, "exit took"),
    ],
)
def test_sigterm_misses(change: dict, missed: str) -> None:
    in_flight = [ok("http", 0.0) for _ in range(31)]
    in_flight.append(failed("http", 0.0, change.get("in_flight_status", "200")))
    probes = _sigterm_probes(change.get("probe_ms", 20.0))
    if "probe" in change:
        probes["readyz"] = None
    row = judge_sigterm(
        in_flight, 32, probes, change.get("exit_code", 0), change.get("exit_s", 2.0), 10.0, None
    )
    assert any(missed in text for text in row.missed), row.missed


def test_idle_recovery_is_the_start_of_five_usual_answers_in_a_row() -> None:
    slow = [ok("http", 10.1, 40), ok("http", 10.5, 8), ok("http", 11.0, 30)]
    usual = [ok("http", 12.0 + i / 10, 6) for i in range(5)]
    blip = [ok("http", 13.0, 30), ok("http", 13.1, 6)]
    assert idle_recovery(slow + usual + blip, 10.0, idle_ms=5.0) == pytest.approx(2.0)
    assert idle_recovery(slow + usual[:4], 10.0, idle_ms=5.0) is None
    assert idle_recovery([], 10.0, idle_ms=5.0) is None


def test_overload_wants_only_answers_and_fast_refusals() -> None:
    flood = [ok("http", 0.0, 400) for _ in range(50)]
    flood += [failed("grpc", 0.0, "RESOURCE_EXHAUSTED", 3) for _ in range(50)]
    after = [ok("http", 11.0 + i / 10, 5) for i in range(5)]
    row = judge_overload(25.0, flood, 5.0, after, 10.0, 0.0)
    assert row.met, row.missed
    slow = flood + [failed("http", 0.0, "503", 80) for _ in range(10)]
    assert any(
        "refusals p99" in text for text in judge_overload(25.0, slow, 5.0, after, 10.0, 0.0).missed
    )
    broken = flood + [failed("http", 0.0, "500")]
    assert judge_overload(25.0, broken, 5.0, after, 10.0, 0.0).failures == 1
    late = [ok("http", 16.0 + i / 10, 5) for i in range(5)]
    assert any(
        "idle latency" in text for text in judge_overload(25.0, flood, 5.0, late, 10.0, 0.0).missed
    )


def test_cases_fail_on_an_unexpected_code_or_a_failed_background_request() -> None:
    cases = [("undecodable", {"INVALID_ARGUMENT"}, failed("grpc", 0.0, "INVALID_ARGUMENT"))]
    assert judge_cases("protobuf", cases, [ok("http", 0.0)], None).met
    wrong = [("undecodable", {"INVALID_ARGUMENT"}, failed("grpc", 0.0, "UNKNOWN"))]
    assert judge_cases("protobuf", wrong, [], None).failures == 1
    assert not judge_cases("protobuf", cases, [failed("http", 0.0, "503")], None).met


def test_table_and_exit_status() -> None:
    good = Row("a", 10, 0, 1.5, 12.0, 0.25)
    bad = Row("b", 10, 1, None, None, None, missed=["1 request failed"])
    text = render([good, bad])
    assert "| a | 10 | 0 | 1.5 | 12.0 | 25% | met |" in text
    assert "| b | 10 | 1 | - | - | - | **missed** (1) |" in text
    assert "* b: MISSED 1 request failed" in text
    assert exit_status([good]) == 0
    assert exit_status([good, bad]) == 1
    assert exit_status([]) == 1


def test_every_malformed_request_expects_no_server_fault() -> None:
    cases = malformed_requests()
    assert len(cases) >= 8
    for _name, wanted, body in cases:
        assert not wanted & {"UNKNOWN", "INTERNAL"} and isinstance(body, bytes)


def test_command_line_checks() -> None:
    args = parse_args(["--models", "imdb,translator", "--scenarios", "kill,sigterm"])
    assert args.models == ("imdb", "translator") and args.scenarios == ("kill", "sigterm")
    with pytest.raises(SystemExit):
        parse_args(["--models", "cifar"])
    with pytest.raises(SystemExit):
        parse_args(["--scenarios", "meteor"])


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("90s", 90), ("1h30m", 5400), ("600", 600)]
)
def test_soak_durations(text: str, seconds: float) -> None:
    assert soak.parse_duration(text) == seconds


def test_soak_rejects_a_bad_duration() -> None:
    with pytest.raises(ValueError):
        soak.parse_duration("soon")


def _samples(worker_mb: list[float], pids: list[int] | None = None) -> list[soak.Sample]:
    pids = pids or [100] * len(worker_mb)
    return [
        soak.Sample(60.0 * i, {"worker 1": mb, "arbiter": 80.0}, {"worker 1": pid, "arbiter": 1})
        for i, (mb, pid) in enumerate(zip(worker_mb, pids, strict=True))
    ]


def test_soak_verdict() -> None:
    series = [(1000.0 + t, 40.0) for t in range(600)]
    samples = _samples([700, 1000, 1010, 1020, 1030])
    verdict = soak.judge(5000, 0, samples, series, 1000.0, 60.0, 1600.0)
    assert not verdict.missed, verdict.missed
    assert verdict.rss_growth["worker 1"] == pytest.approx(0.03)  # from the end of the warm-up
    grown = soak.judge(5000, 0, _samples([1000, 1000, 1200]), series, 1000.0, 60.0, 1600.0)
    assert any("RSS grew" in text for text in grown.missed)
    drifting = [(1000.0 + t, 40.0 if t < 300 else 60.0) for t in range(600)]
    drifted = soak.judge(5000, 0, samples, drifting, 1000.0, 60.0, 1600.0)
    assert any("p99 drifted +50.0%" in text for text in drifted.missed)
    assert soak.judge(5000, 3, samples, series, 1000.0, 60.0, 1600.0).missed
    restarted = _samples([1000, 1000, 1000], pids=[100, 100, 200])
    assert soak.judge(5000, 0, restarted, series, 1000.0, 60.0, 1600.0).restarts == ["worker 1"]


def test_soak_reads_locust_history() -> None:
    rows = [
        {"Timestamp": "1000", "Name": "Aggregated", "99%": "N/A"},
        {"Timestamp": "1001", "Name": "/imdb/sentiment", "99%": "80"},
        {"Timestamp": "1001", "Name": "Aggregated", "99%": "42"},
    ]
    assert soak.p99_series(rows) == [(1001.0, 42.0)]
