"""The benchmark's records, ratios, targets and printed table (no I/O but ``print``).

Every record has the same keys: ``model``, ``mode`` (ceiling, naive, http, grpc),
``concurrency`` (None for the ceiling), ``batch_size`` (the ceiling's; None otherwise),
``requests``, ``errors``, ``throughput`` (items/s; one item per request in load runs),
``p50_ms``/``p95_ms``/``p99_ms``/``mean_ms``, ``mean_batch_size`` (rows per model call,
from the service's ``/metrics``, as are ``queue_wait_ms``, gateway to batch start, and
``execution_ms``, one model call, both means), ``generator_cpu`` (the load generator's CPU seconds per
second: 1.0 is one core), ``server_cpu`` (the same for the server's process tree, when
the benchmark started it) and ``machine_cpu`` (every process on the machine: what exceeds
generator + server was someone else's load).
"""

from __future__ import annotations

import argparse
import os
import platform
from importlib import metadata
from typing import Any

# Above this share of one core, the single-threaded generator may be what limits a run.
GENERATOR_CPU_LIMIT = 0.8
TARGET_MODEL = "imdb"
TARGET_CONCURRENCY = 64


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_machine() -> dict[str, Any]:
    """CPU, memory, OS and the versions that matter for the numbers."""
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gb = None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "memory_gb": round(memory_gb, 1) if memory_gb else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow"),
        "bentoml": _version("bentoml"),
        "grpcio": _version("grpcio"),
        "httpx": _version("httpx"),
    }


def machine_line(machine: dict[str, Any]) -> str:
    return (
        f"Machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), {machine['memory_gb']} GB, "
        f"{machine['platform']}; Python {machine['python']}, TensorFlow {machine['tensorflow']}, "
        f"BentoML {machine['bentoml']}"
    )


def config_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "models": list(args.models),
        "modes": list(args.modes),
        "concurrency": list(args.concurrency),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "ceiling_batch_sizes": list(args.batch_sizes),
        "ceiling_seconds_per_size": args.ceiling_seconds,
        "target": args.url or "bentoml serve started by the benchmark",
        "grpc_target": args.grpc,
        "items_per_request": 1,
    }


def _ms(seconds: float | None) -> float | None:
    return seconds * 1000.0 if seconds is not None else None


def load_record(
    model: str, mode: str, concurrency: int, run: Any, metrics: Any, server_cpu: float | None
) -> dict[str, Any]:
    """The record of one load run (``loadtest.generator.Run``)."""
    return {
        "model": model,
        "mode": mode,
        "concurrency": concurrency,
        "batch_size": None,
        "requests": run.requests,
        "errors": run.errors,
        "error_kinds": run.error_kinds,
        "error_examples": run.error_examples,
        "duration_s": run.seconds,
        "throughput": run.throughput,
        **run.percentiles,
        "mean_batch_size": metrics.mean_batch_size if metrics is not None else None,
        "queue_wait_ms": _ms(metrics.mean("queue_wait")) if metrics is not None else None,
        "execution_ms": _ms(metrics.mean("execution")) if metrics is not None else None,
        "generator_cpu": run.generator_cpu,
        "server_cpu": server_cpu,
    }


def ceiling_records(ceiling: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per batch size of a ``loadtest.ceiling`` result."""
    return [
        {
            "model": ceiling["model"],
            "mode": "ceiling",
            "concurrency": None,
            "batch_size": row["batch_size"],
            "requests": row["calls"],
            "errors": 0,
            "throughput": row["items_per_s"],
            "p50_ms": row["p50_ms"],
            "p95_ms": row["p95_ms"],
            "p99_ms": row["p99_ms"],
            "mean_ms": row["mean_ms"],
            "mean_batch_size": row["batch_size"],
            "queue_wait_ms": None,
            "execution_ms": row["mean_ms"],
            "generator_cpu": None,
            "server_cpu": None,
            "signature": ceiling["signature"],
            "xla": ceiling["xla"],
            "tag": ceiling["tag"],
        }
        for row in ceiling["results"]
    ]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_progress(record: dict[str, Any]) -> None:
    level = (
        f"batch {record['batch_size']}"
        if record["mode"] == "ceiling"
        else f"c={record['concurrency']}"
    )
    print(
        f"  {record['model']:<10} {record['mode']:<7} {level:<9} {_fmt(record['throughput']):>8} items/s"
        f"  p50 {_fmt(record['p50_ms'], 2):>7} ms  p99 {_fmt(record['p99_ms'], 2):>7} ms"
        f"  errors {record['errors']}",
        flush=True,
    )


def _find(
    records: list[dict[str, Any]], model: str, mode: str, concurrency: int | None = None
) -> list[dict[str, Any]]:
    return [
        r for r in records
        if r["model"] == model and r["mode"] == mode and (concurrency is None or r["concurrency"] == concurrency)
    ]  # fmt: skip


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(records: list[dict[str, Any]], models: tuple[str, ...]) -> dict[str, Any]:
    """Ratios per model and concurrency, the targets of issue 5, and the generator check."""
    ratios: dict[str, Any] = {}
    for model in models:
        ceiling = _find(records, model, "ceiling")
        peak = max((r["throughput"] for r in ceiling), default=None)
        single = next((r["p50_ms"] for r in ceiling if r["batch_size"] == 1), None)
        per_level = {}
        levels = sorted(
            {r["concurrency"] for r in records if r["model"] == model and r["concurrency"]}
        )
        for level in levels:
            row = {
                m: (_find(records, model, m, level) or [None])[0] for m in ("http", "grpc", "naive")
            }
            thr = {m: r["throughput"] if r else None for m, r in row.items()}
            p50 = {m: r["p50_ms"] if r else None for m, r in row.items()}
            per_level[str(level)] = {
                "http_over_ceiling": _ratio(thr["http"], peak),
                "grpc_over_ceiling": _ratio(thr["grpc"], peak),
                "http_over_naive": _ratio(thr["http"], thr["naive"]),
                "grpc_over_naive": _ratio(thr["grpc"], thr["naive"]),
                "grpc_over_http_throughput": _ratio(thr["grpc"], thr["http"]),
                "grpc_over_http_p50": _ratio(p50["grpc"], p50["http"]),
            }
        overhead = {}
        for mode in ("http", "grpc"):
            at_one = _find(records, model, mode, 1)
            if at_one and single is not None and at_one[0]["p50_ms"] is not None:
                overhead[mode] = at_one[0]["p50_ms"] - single
        ratios[model] = {
            "ceiling_peak_items_per_s": peak,
            "ceiling_batch1_p50_ms": single,
            "by_concurrency": per_level,
            "added_ms_at_concurrency_1": overhead,
        }
    return {
        "ratios": ratios,
        "targets": _targets(records, ratios),
        "generator_check": _generator_check(records),
    }


def _target(name: str, value: float | None, goal: str, met: bool | None) -> dict[str, Any]:
    return {"target": name, "value": value, "goal": goal, "met": met}


def _targets(records: list[dict[str, Any]], ratios: dict[str, Any]) -> list[dict[str, Any]]:
    model = TARGET_MODEL
    levels = sorted({r["concurrency"] for r in _find(records, model, "http")})
    if not levels:
        return []
    level = TARGET_CONCURRENCY if TARGET_CONCURRENCY in levels else levels[-1]
    http = _find(records, model, "http", level)[0]
    naive = (_find(records, model, "naive", level) or [None])[0]
    speedup = _ratio(http["throughput"], naive["throughput"] if naive else None)
    targets = [
        _target(f"{model} HTTP c={level}: throughput vs naive", speedup, ">= 5x",
                speedup >= 5 if speedup is not None else None),
        _target(f"{model} HTTP c={level}: p99 ms", http["p99_ms"], "< 250",
                http["p99_ms"] < 250 if http["p99_ms"] is not None else None),
        _target(f"{model} HTTP c={level}: errors", http["errors"], "0", http["errors"] == 0),
    ]  # fmt: skip
    for lvl, row in ratios.get(model, {}).get("by_concurrency", {}).items():
        value = row["grpc_over_http_p50"]
        targets.append(
            _target(
                f"{model} c={lvl}: gRPC p50 / HTTP p50",
                value,
                "<= 1",
                value <= 1 if value is not None else None,
            )
        )
    for mode, added in ratios.get(model, {}).get("added_ms_at_concurrency_1", {}).items():
        targets.append(
            _target(
                f"{model} {mode.upper()} c=1: ms added to the in-process call",
                added,
                "<= 3",
                added <= 3,
            )
        )
    return targets


def _generator_check(records: list[dict[str, Any]]) -> dict[str, Any]:
    loads = [r for r in records if r.get("generator_cpu") is not None]
    if not loads:
        return {}
    worst = max(loads, key=lambda r: r["generator_cpu"])
    return {
        "method": "resource.getrusage(RUSAGE_SELF) of the generator process over each measured window",
        "max_generator_cpu": worst["generator_cpu"],
        "at": f"{worst['model']} {worst['mode']} c={worst['concurrency']}",
        "limit": GENERATOR_CPU_LIMIT,
        "bottleneck_suspected": worst["generator_cpu"] > GENERATOR_CPU_LIMIT,
    }


def _server_cpu(record: dict[str, Any]) -> str:
    """``154% (gw 92, runner 62)``: the total, and the gateway's and runners' shares."""
    total = record.get("server_cpu")
    if total is None:
        return "-"
    parts = record.get("server_cpu_by_process") or {}
    gateway = sum(v for k, v in parts.items() if not k.endswith("_runner"))
    runners = sum(v for k, v in parts.items() if k.endswith("_runner"))
    if not runners:
        return f"{total * 100:.0f}%"
    return f"{total * 100:.0f}% (gw {gateway * 100:.0f}, runner {runners * 100:.0f})"


def _others(record: dict[str, Any]) -> float | None:
    """CPU used by processes other than the generator and the server during a run."""
    parts = (record.get("machine_cpu"), record.get("generator_cpu"), record.get("server_cpu"))
    if any(part is None for part in parts):
        return None
    return max(0.0, parts[0] - parts[1] - parts[2])


def render(result: dict[str, Any]) -> str:
    """The report as Markdown: table, ratios, targets, generator check, machine."""
    header = (
        "| model | mode | conc. / batch | items/s | p50 ms | p95 ms | p99 ms | errors "
        "| mean batch | queue wait ms | model call ms | gen. CPU | server CPU | others' CPU |"
    )
    lines = [header, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    cpu = lambda v: f"{v * 100:.0f}%" if v is not None else "-"
    for r in result["records"]:
        level = f"b={r['batch_size']}" if r["mode"] == "ceiling" else f"c={r['concurrency']}"
        cells = [
            _fmt(r.get(k), d)
            for k, d in (("throughput", 1), ("p50_ms", 2), ("p95_ms", 2), ("p99_ms", 2))
        ]
        cells += [str(r.get("errors", "-")), _fmt(r.get("mean_batch_size"), 2)]
        cells += [_fmt(r.get("queue_wait_ms"), 2), _fmt(r.get("execution_ms"), 2)]
        cells += [cpu(r.get("generator_cpu")), _server_cpu(r), cpu(_others(r))]
        lines.append(f"| {r['model']} | {r['mode']} | {level} | " + " | ".join(cells) + " |")
    summary = result.get("summary", {})
    lines += ["", "Ratios (throughput unless noted; ceiling = best items/s over batch sizes):", ""]
    lines += [
        "| model | c | HTTP/ceiling | gRPC/ceiling | HTTP/naive | gRPC/naive | gRPC/HTTP | gRPC p50/HTTP p50 |"
    ]
    lines += ["|---|---|---:|---:|---:|---:|---:|---:|"]
    for model, ratios in summary.get("ratios", {}).items():
        for level, row in ratios["by_concurrency"].items():
            cells = " | ".join(
                _fmt(row[k], 2)
                for k in ("http_over_ceiling", "grpc_over_ceiling", "http_over_naive", "grpc_over_naive",
                          "grpc_over_http_throughput", "grpc_over_http_p50")
            )  # fmt: skip
            lines.append(f"| {model} | {level} | {cells} |")
        added = ", ".join(
            f"{m} {v:+.2f} ms" for m, v in ratios["added_ms_at_concurrency_1"].items()
        )
        if added:
            lines.append(f"| {model} | 1 | added to the in-process call (p50): {added} | | | | | |")
    lines += ["", "Targets (reported, not asserted):", ""]
    for t in summary.get("targets", []):
        mark = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        lines.append(f"- {t['target']}: {_fmt(t['value'], 2)} (goal {t['goal']}): {mark}")
    check = summary.get("generator_check")
    if check:
        verdict = (
            "may have limited that run" if check["bottleneck_suspected"] else "not the bottleneck"
        )
        cpus = result["machine"].get("cpu_count") or 1
        peak = check["max_generator_cpu"]
        generator = (
            "Load generator: one asyncio process (aiohttp; grpc.aio via clients.grpc), separate "
            f"from the server; peak CPU {peak * 100:.0f}% of one core ({peak / cpus * 100:.0f}% of "
            f"the machine's {cpus} CPUs) at {check['at']} (limit {check['limit'] * 100:.0f}%): "
            f"{verdict}. Measured with {check['method']}."
        )
        lines += ["", generator]
    lines += ["", machine_line(result["machine"])]
    load = result.get("load_average")
    if load:
        lines.append(f"Load average (1/5/15 min) before: {load['before']}, after: {load['after']}")
    for note in result.get("notes", []):
        lines.append(f"Note: {note}")
    return "\n".join(lines)
