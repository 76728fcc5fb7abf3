"""Soak test: hours of mixed Locust traffic on both protocols against a real ``bentoml serve``.

Starts ``bentoml serve`` (every model, the service's default workers and buckets, a
``BENTOML_HOME`` of its own: :func:`loadtest.live_server.serve`), runs ``loadtest/locustfile.py``
headless against it (HTTP and gRPC users, every model) for ``--duration``, samples the RSS of
every server process each ``--sample-s`` seconds, and fails on:

* any failed request (Locust's count, HTTP and gRPC);
* a server process growing more than 10 % in RSS between the end of the warm-up and the end;
* p99 drifting more than 20 %: the median of Locust's rolling 10-second p99 over the last
  third of the run against the first third after the warm-up;
* a worker restarting (its pid changing).

Writes ``reports/soak.json`` (per-minute RSS, p99, request rate and the CPU other
processes used) and prints a summary table.

Typical usage::

    python -m loadtest.soak --duration 30m              # make soak DURATION=30m
    python -m loadtest.soak --duration 3m --users 8 --models imdb,cosine
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loadtest import report
from loadtest.report import names
from loadtest.live_server import CpuMeter, Server, serve, wait_serving
from loadtest.stats import fmt, table

ROOT = Path(__file__).resolve().parents[1]
ALL_MODELS = ("reuters", "imdb", "cifar", "cosine", "mnist", "translator")
MAX_RSS_GROWTH = 0.10
MAX_P99_DRIFT = 0.20


def parse_duration(text: str) -> float:
    """Seconds in ``30m``, ``90s``, ``1h``, ``1h30m`` or a bare number of seconds.

    Raises:
        ValueError: not a duration.
    """
    number = r"(\d+(?:\.\d*)?)"
    parts = re.fullmatch(f"(?:{number}h)?(?:{number}m)?(?:{number}s?)?", text.strip().lower())
    if not parts or not any(parts.groups()):
        raise ValueError(f"not a duration: {text!r} (e.g. 30m, 90s, 1h)")
    return sum(float(n) * unit for n, unit in zip(parts.groups(), (3600, 60, 1)) if n)


@dataclass
class Sample:
    """One look at the server: seconds since the start, RSS and pid per process."""

    at_s: float
    rss_mb: dict[str, float]
    pids: dict[str, int]
    other_cpu: float | None = None  # cores other processes used since the previous sample


@dataclass
class Verdict:
    """What the soak measured and which targets it missed."""

    requests: int
    failures: int
    rss_growth: dict[str, float]  # process -> fraction (0.05 = +5 %)
    p99_first_ms: float | None
    p99_last_ms: float | None
    restarts: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    @property
    def p99_drift(self) -> float | None:
        if not self.p99_first_ms or self.p99_last_ms is None:
            return None
        return self.p99_last_ms / self.p99_first_ms - 1.0


def rss_growth(samples: list[Sample], warmup_s: float) -> dict[str, float]:
    """Per process: RSS at the last sample over RSS at the first sample after the warm-up."""
    settled = [s for s in samples if s.at_s >= warmup_s] or samples[-1:]
    if not settled:
        return {}
    first, last = settled[0], settled[-1]
    return {
        name: last.rss_mb[name] / first.rss_mb[name] - 1.0
        for name in first.rss_mb
        if name in last.rss_mb and first.rss_mb[name] > 0
    }


def restarts(samples: list[Sample]) -> list[str]:
    """Processes whose pid changed (or that vanished) between samples."""
    first = samples[0].pids if samples else {}
    return sorted(
        {name for s in samples[1:] for name, pid in first.items() if s.pids.get(name) != pid}
    )


def p99_series(history: list[dict[str, str]]) -> list[tuple[float, float]]:
    """(Unix time, rolling 10-second p99 in ms) of Locust's ``Aggregated`` history rows."""
    series = []
    for row in history:
        if row.get("Name") != "Aggregated":
            continue
        try:
            value = float(row["99%"])
            series.append((float(row["Timestamp"]), value))
        except (KeyError, ValueError):  # "N/A" before the first request
            continue
    return series


def p99_drift_windows(
    series: list[tuple[float, float]], start: float, warmup_s: float, end: float
) -> tuple[float | None, float | None]:
    """Median rolling p99 over the first and the last third of ``[start + warmup_s, end]``."""
    begin = start + warmup_s
    third = (end - begin) / 3
    if third <= 0:
        return None, None
    first = [v for t, v in series if begin <= t < begin + third]
    last = [v for t, v in series if end - third <= t <= end]
    return (statistics.median(first) if first else None, statistics.median(last) if last else None)


def judge(
    requests: int,
    failures: int,
    samples: list[Sample],
    series: list[tuple[float, float]],
    start: float,
    warmup_s: float,
    end: float,
) -> Verdict:
    """The soak's targets: no failure, RSS growth <= 10 %, p99 drift <= 20 %, no restart."""
    first, last = p99_drift_windows(series, start, warmup_s, end)
    verdict = Verdict(requests, failures, rss_growth(samples, warmup_s), first, last)
    verdict.restarts = restarts(samples)
    if requests == 0:
        verdict.missed.append("no request was made")
    if failures:
        verdict.missed.append(f"{failures} of {requests} requests failed")
    for name, growth in sorted(verdict.rss_growth.items()):
        if growth > MAX_RSS_GROWTH:
            verdict.missed.append(f"{name} RSS grew {growth:+.1%} (limit {MAX_RSS_GROWTH:.0%})")
    drift = verdict.p99_drift
    if drift is None:
        verdict.missed.append("p99 drift unknown (run too short for three windows)")
    elif drift > MAX_P99_DRIFT:
        verdict.missed.append(
            f"p99 drifted {drift:+.1%}: {first:.0f} -> {last:.0f} ms (limit {MAX_P99_DRIFT:.0%})"
        )
    if verdict.restarts:
        verdict.missed.append(f"restarted: {', '.join(verdict.restarts)}")
    return verdict


def render(verdict: Verdict, samples: list[Sample], duration_s: float) -> str:
    """A Markdown summary: totals, then RSS and other CPU per sample."""
    drift = verdict.p99_drift
    columns = [
        "duration", "requests", "failures", "p99 first third ms", "p99 last third ms",
        "p99 drift", "max RSS growth", "verdict",
    ]  # fmt: skip
    totals = [
        f"{duration_s / 60:.1f} min", f"{verdict.requests:,}", verdict.failures,
        fmt(verdict.p99_first_ms, 0), fmt(verdict.p99_last_ms, 0),
        "-" if drift is None else f"{drift:+.1%}",
        f"{max(verdict.rss_growth.values(), default=0):+.1%}",
        "met" if not verdict.missed else "**missed**",
    ]  # fmt: skip
    names = _names(samples)
    rows = [
        [
            f"{sample.at_s / 60:.1f}",
            *(f"{sample.rss_mb.get(name, 0):,.0f}" for name in names),
            "-" if sample.other_cpu is None else f"{sample.other_cpu * 100:.0f}%",
        ]
        for sample in samples
    ]
    lines = table(columns, [totals], align="r" * 7 + "l") + [""]
    columns = ["minute", *(f"{name} RSS MB" for name in names), "other CPU"]
    lines += table(columns, rows, align="r" * len(columns))
    lines += [f"* MISSED {text}" for text in verdict.missed]
    return "\n".join(lines)


def _names(samples: list[Sample]) -> list[str]:
    return sorted({name for sample in samples for name in sample.rss_mb})


def _look(server: Server) -> tuple[dict[str, float], dict[str, int]]:
    rss = {name: value / 2**20 for name, value in server.process.rss_by_process().items()}
    pids = {f"worker {index}": p.pid for index, p in server.worker_processes().items()}
    pids["arbiter"] = server.pid
    return rss, pids


async def _watch(
    server: Server, locust: subprocess.Popen[bytes], every_s: float, started: float
) -> tuple[list[Sample], float | None]:
    """Samples RSS and pids every ``every_s`` seconds (and once at the end) until Locust
    exits; the CPU meter looks every second so that short-lived processes are counted."""
    meter = CpuMeter(server.pid)
    meter.sample()
    samples: list[Sample] = []
    mark = (time.monotonic(), meter.machine, meter.ours)
    due = time.monotonic()
    while True:
        done = locust.poll() is not None
        meter.sample()
        now = time.monotonic()
        if now >= due or done:
            since, machine, ours = mark
            other = (
                (meter.machine - machine - (meter.ours - ours)) / (now - since) if samples else None
            )
            rss, pids = _look(server)
            samples.append(
                Sample(now - started, rss, pids, None if other is None else max(0.0, other))
            )
            mark, due = (now, meter.machine, meter.ours), due + every_s
            print(
                f"[soak] {(now - started) / 60:5.1f} min  RSS "
                + ", ".join(f"{k} {v:,.0f} MB" for k, v in sorted(rss.items()))
                + ("" if other is None else f"  other CPU {max(0.0, other) * 100:.0f}%"),
                flush=True,
            )
        if done:
            return samples, meter.other_cores
        await asyncio.sleep(1.0)


def _locust_totals(stats_csv: Path) -> tuple[int, int]:
    with stats_csv.open() as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") == "Aggregated":
                return int(row["Request Count"]), int(row["Failure Count"])
    return 0, 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.soak", description=__doc__.split("\n\n")[0]
    )
    add = parser.add_argument
    add("--duration", default="30m", help="e.g. 30m, 2h, 600 (default 30m)")
    add("--warmup", default="", help="excluded from RSS and p99 (default: 10%%, >= 1m)")
    add("--users", type=int, default=16, help="Locust users (default 16)")
    add("--spawn-rate", type=float, default=4.0)
    add("--sample-s", type=float, default=60.0, help="seconds between RSS samples")
    add("--models", type=names, default=ALL_MODELS)
    add("--workers", type=int, default=0, help="default: the service's (one per core)")
    add("--buckets", default="", help="SERVICE_BATCH_BUCKETS (default: the service's)")
    add("--out", type=Path, default=ROOT / "reports" / "soak.json")
    args = parser.parse_args(argv)
    args.duration_s = parse_duration(args.duration)
    args.warmup_s = parse_duration(args.warmup) if args.warmup else max(60.0, 0.1 * args.duration_s)
    if args.warmup_s >= args.duration_s:
        args.warmup_s = args.duration_s / 4
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = report.describe_machine()
    print(report.machine_line(machine), flush=True)
    prefix = args.out.with_suffix("")
    workers = args.workers or os.cpu_count() or 1
    with serve(args.models, workers, prefix.with_name("soak-serve.log"), args.buckets) as server:
        asyncio.run(wait_serving(server.grpc_target))
        command = [
            str(Path(sys.executable).parent / "locust"), "-f", str(ROOT / "loadtest" / "locustfile.py"),
            "--headless", "--host", server.url, "--grpc-host", server.grpc_target,
            "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
            "--run-time", f"{int(args.duration_s)}s", "--csv", str(prefix), "--csv-full-history",
            "--only-summary", "--stop-timeout", "30",
        ]  # fmt: skip
        if set(args.models) != set(ALL_MODELS):  # only the served models' task sets
            command += ["--tags", *args.models]
        print(
            f"[soak] {args.duration_s / 60:.1f} min of Locust ({args.users} users), "
            f"RSS every {args.sample_s:.0f} s, warm-up {args.warmup_s:.0f} s",
            flush=True,
        )
        started_wall, started = time.time(), time.monotonic()
        with prefix.with_name("soak-locust.log").open("wb") as log:
            locust = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            try:
                samples, other = asyncio.run(_watch(server, locust, args.sample_s, started))
            finally:
                if locust.poll() is None:
                    locust.terminate()
                locust.wait(60)
        ended_wall = time.time()
    requests, failures = _locust_totals(Path(f"{prefix}_stats.csv"))
    with Path(f"{prefix}_stats_history.csv").open() as handle:
        series = p99_series(list(csv.DictReader(handle)))
    verdict = judge(requests, failures, samples, series, started_wall, args.warmup_s, ended_wall)
    result = {
        "machine": machine,
        "config": {k: str(v) for k, v in vars(args).items()},
        "verdict": {**asdict(verdict), "p99_drift": verdict.p99_drift},
        "samples": [asdict(s) for s in samples],
        "p99_series": series,
        "other_cpu_mean": other,
        "locust_exit_code": locust.returncode,
    }
    report.write(args.out, result, render(verdict, samples, ended_wall - started_wall))
    print(f"\n{'every target met' if not verdict.missed else 'TARGETS MISSED'}; wrote {args.out}")
    return 0 if not verdict.missed else 1


if __name__ == "__main__":
    sys.exit(main())
