"""The benchmark's records and printed tables (no I/O but ``print``).

Every record has the same keys: ``model``, ``mode`` (ceiling, naive, layers, http,
tfserving, grpc), ``concurrency`` (None for the ceiling), ``batch_size`` (the ceiling's;
None otherwise), ``items`` (per request), ``requests``, ``errors``, ``throughput``
(items/s), ``requests_per_s``, ``p50_ms``/``p95_ms``/``p99_ms``/``mean_ms`` (per request),
``mean_batch_size`` (rows per model call, from the service's ``/metrics``, as are
``queue_wait_ms``, entering the queue to the batch starting, ``execution_ms``, one model
call, both means, and ``refused``), ``generator_cpu`` (the load generator's CPU seconds per
second: 1.0 is one core) and ``generator_ms_per_request``, ``server_cpu`` (the same for the
server's process tree, when the benchmark started it; by process in
``server_cpu_by_process``, by kind of thread in ``server_cpu_by_thread``: ``main``,
``tensorflow``, ``grpc``, ``other``) and ``server_ms_per_request``, and ``machine_cpu`` (every
process on the machine: what exceeds generator + server was someone else's load). Rows of
the ``layers`` mode also have ``layer``; a peer's (mode ``bentoml``, ``litserve``,
``rayserve``) also has ``peer``, its venv's pins. Ratios and targets: :mod:`loadtest.targets`.

Typical usage::

    record = load_record("imdb", "grpc", 64, run, metrics, server_cpu=1.7, items=1)
    print(render({"machine": describe_machine(), "records": [record], "summary": {}}))
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from loadtest.procs import THREAD_KINDS
from loadtest.stats import fmt, row, table
from loadtest.targets import DOORS, PEERS, summarize

__all__ = ["ceiling_records", "describe_machine", "load_record", "render", "summarize"]


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
    """One line naming the machine and the versions."""
    return (
        f"Machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), {machine['memory_gb']} GB, "
        f"{machine['platform']}; Python {machine['python']}, TensorFlow {machine['tensorflow']}, "
        f"BentoML {machine['bentoml']}"
    )


def config_of(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings, as recorded in the report."""
    return {
        "models": list(args.models),
        "modes": list(args.modes),
        "concurrency": list(args.concurrency),
        "items_per_request": list(args.items),
        "items_concurrency": list(args.items_concurrency),
        "layers_concurrency": args.layers_concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "ceiling_batch_sizes": list(args.batch_sizes),
        "ceiling_seconds_per_size": args.ceiling_seconds,
        "target": args.url or "bentoml serve started by the benchmark",
        "grpc_target": args.grpc,
        "served_models": list(args.serve_models) if not args.url else None,
    }


def _ms(seconds: float | None) -> float | None:
    return seconds * 1000.0 if seconds is not None else None


def load_record(
    model: str,
    mode: str,
    concurrency: int,
    run: Any,
    metrics: Any,
    server_cpu: float | None,
    items: int = 1,
) -> dict[str, Any]:
    """The record of one load run (``loadtest.generator.Run``) of ``items`` items per request."""
    answered = run.requests - run.errors
    return {
        "model": model,
        "mode": mode,
        "concurrency": concurrency,
        "batch_size": None,
        "items": items,
        "requests": run.requests,
        "errors": run.errors,
        "error_kinds": run.error_kinds,
        "error_examples": run.error_examples,
        "duration_s": run.seconds,
        "throughput": run.throughput * items,
        "requests_per_s": run.throughput,
        **run.percentiles,
        "mean_batch_size": metrics.mean_batch_size if metrics is not None else None,
        "queue_wait_ms": _ms(metrics.mean("queue_wait")) if metrics is not None else None,
        "execution_ms": _ms(metrics.mean("execution")) if metrics is not None else None,
        "refused": metrics.refused if metrics is not None else None,
        "generator_cpu": run.generator_cpu,
        "generator_ms_per_request": run.generator_ms_per_request,
        "server_cpu": server_cpu,
        "server_ms_per_request": (
            server_cpu * 1000.0 / run.throughput if server_cpu is not None and answered else None
        ),
    }


def ceiling_records(ceiling: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per batch size of a ``loadtest.ceiling`` result."""
    keys = ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "batch_size")
    return [
        {
            **{key: row[key] for key in keys},
            **{key: ceiling[key] for key in ("model", "signature", "xla", "tag")},
            "mode": "ceiling",
            "concurrency": None,
            "items": None,
            "requests": row["calls"],
            "errors": 0,
            "throughput": row["items_per_s"],
            "mean_batch_size": row["batch_size"],
            "queue_wait_ms": None,
            "execution_ms": row["mean_ms"],
            "generator_cpu": None,
            # The in-process caller's own CPU: its "server ms/req" is the model's cost per item.
            "server_cpu": row.get("cpu"),
            "server_ms_per_request": row.get("cpu_ms_per_item"),
        }
        for row in ceiling["results"]
    ]


def _level(record: dict[str, Any]) -> str:
    if record["mode"] == "ceiling":
        return f"b={record['batch_size']}"
    items = record.get("items", 1)
    return f"c={record['concurrency']}" + (f" x{items}" if items and items > 1 else "")


def _mode(record: dict[str, Any]) -> str:
    return f"layer {record['layer']}" if record.get("layer") else record["mode"]


def print_progress(record: dict[str, Any]) -> None:
    """One line per finished run."""
    gen = record.get("generator_ms_per_request")
    print(
        f"  {record['model']:<10} {_mode(record):<20} {_level(record):<9} "
        f"{fmt(record['throughput']):>8} items/s  p50 {fmt(record['p50_ms'], 2):>7} ms"
        f"  p99 {fmt(record['p99_ms'], 2):>7} ms  errors {record['errors']}"
        + (f"  gen {gen:.3f} ms/req" if gen is not None else ""),
        flush=True,
    )


def _server_cpu(record: dict[str, Any]) -> str:
    """``154% (arbiter 1, worker 1 77, worker 2 76)``: the total and each process's share."""
    total = record.get("server_cpu")
    if total is None:
        return "-"
    parts = record.get("server_cpu_by_process") or {}
    if len(parts) <= 1:
        return f"{total * 100:.0f}%"
    shares = ", ".join(f"{name} {share * 100:.0f}" for name, share in parts.items())
    return f"{total * 100:.0f}% ({shares})"


def _others(record: dict[str, Any]) -> float | None:
    """CPU used by processes other than the generator and the server during a run."""
    parts = (record.get("machine_cpu"), record.get("generator_cpu"), record.get("server_cpu"))
    if any(part is None for part in parts):
        return None
    return max(0.0, parts[0] - parts[1] - parts[2])


def _cpu(value: float | None) -> str:
    return f"{value * 100:.0f}%" if value is not None else "-"


def names(raw: str) -> tuple[str, ...]:
    """The names in a comma-separated command-line value (``imdb,cifar``)."""
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def write(out: Path, result: dict[str, Any], markdown: str) -> None:
    """Prints ``markdown`` and writes ``result`` to ``out`` (JSON) and ``markdown`` beside it
    (``.md``): what every run of ``loadtest`` leaves behind."""
    print()
    print(markdown)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown + "\n")


def rss_line(rss: dict[str, Any]) -> str:
    """``RSS with imdb, cifar loaded: arbiter 85 MB, worker 1 1150 MB, ...``."""
    parts = ", ".join(
        f"{name} {size / 2**20:.0f} MB" for name, size in sorted(rss["bytes_by_process"].items())
    )
    return f"RSS once ready with {', '.join(rss['models'])} loaded: {parts}"


def _main_table(records: list[dict[str, Any]]) -> list[str]:
    if not records:
        return []
    columns = [
        "model", "mode", "conc. / batch", "items/s", "p50 ms", "p95 ms", "p99 ms", "errors",
        "mean batch", "queue wait ms", "model call ms", "gen. CPU", "gen. ms/req", "server CPU",
        "server ms/req", "others' CPU",
    ]  # fmt: skip
    figures = (("throughput", 1), ("p50_ms", 2), ("p95_ms", 2), ("p99_ms", 2))
    rows = []
    for r in records:
        cells = [r["model"], r["mode"], _level(r)]
        cells += [fmt(r.get(k), d) for k, d in figures]
        cells += [str(r.get("errors", "-")), fmt(r.get("mean_batch_size"), 2)]
        cells += [fmt(r.get("queue_wait_ms"), 2), fmt(r.get("execution_ms"), 2)]
        cells += [_cpu(r.get("generator_cpu")), fmt(r.get("generator_ms_per_request"), 3)]
        cells += [_server_cpu(r), fmt(r.get("server_ms_per_request"), 2), _cpu(_others(r))]
        rows.append(cells)
    return table(columns, rows, align="lll" + "r" * 13)


def _layers_table(records: list[dict[str, Any]]) -> list[str]:
    layers = [r for r in records if r["mode"] == "layers"]
    if not layers:
        return []
    lines = [
        "",
        (
            "Which layer costs what: one imdb review per request, fixed answer, no model "
            "(one server process each); the service's imdb rows at the same concurrency below:"
        ),
        "",
    ]
    columns = [
        "server", "door", "c", "requests/s", "p50 ms", "p99 ms", "errors", "server CPU",
        "server ms/req", "gen. CPU", "gen. ms/req", "others' CPU",
    ]  # fmt: skip
    rows = []
    levels = {r["concurrency"] for r in layers}
    service = [
        r
        for r in records
        if r["model"] == "imdb"
        and r["mode"] in DOORS
        and r["concurrency"] in levels
        and r.get("items", 1) == 1
    ]
    for r in layers + service:
        name = r.get("layer") or f"service {r['mode']}"
        grpc = r["mode"] == "grpc" or (r.get("layer") or "").startswith("grpc")
        door = "grpc" if grpc else "http"
        cells = [name, door, r["concurrency"], fmt(r.get("requests_per_s"), 1)]
        cells += [fmt(r["p50_ms"], 2), fmt(r["p99_ms"], 2), str(r["errors"]), _server_cpu(r)]
        cells += [fmt(r.get("server_ms_per_request"), 3), _cpu(r.get("generator_cpu"))]
        cells += [fmt(r.get("generator_ms_per_request"), 3), _cpu(_others(r))]
        rows.append(cells)
    return lines + table(columns, rows, align="lll" + "r" * 9)


def _threads_table(records: list[dict[str, Any]]) -> list[str]:
    """The service's CPU per request by kind of thread (``loadtest.procs.thread_kind``)."""
    rows = []
    for r in records:
        threads = r.get("server_cpu_by_thread")
        if r["mode"] not in DOORS or not threads or not r.get("requests_per_s"):
            continue
        per_second = r["requests_per_s"]
        per_request = [threads.get(kind, 0.0) * 1000.0 / per_second for kind in THREAD_KINDS]
        rows.append(
            [r["model"], r["mode"], _level(r), *(fmt(ms, 3) for ms in per_request)]
            + [fmt(sum(per_request), 3)]
        )
    if not rows:
        return []
    intro = (
        "The service's CPU per request by thread, ms (every worker summed; event loop = each "
        "worker's main thread, TensorFlow = its op pools, gRPC core = grpc's C threads, other "
        "= Python threads: the model's runner, which runs TensorFlow's ops inline, and "
        "grpc.aio's poller):"
    )
    columns = ["model", "door", "c", "event loop", "TensorFlow", "gRPC core", "other", "total"]
    return ["", intro, "", *table(columns, rows, align="lll" + "r" * 5)]


def _ratios_table(summary: dict[str, Any]) -> list[str]:
    keys = (
        "http_over_ceiling", "tfserving_over_ceiling", "grpc_over_ceiling", "http_over_naive",
        "tfserving_over_naive", "grpc_over_naive", "grpc_over_http_throughput",
        "tfserving_over_http_throughput", "grpc_over_http_p50",
    )  # fmt: skip
    if not any(r["by_concurrency"] for r in summary.get("ratios", {}).values()):
        return []
    lines = [
        "",
        (
            "Ratios (throughput unless noted; ceiling = best items/s over batch sizes; one item per "
            "request):"
        ),
        "",
    ]
    columns = [
        "model", "c", "HTTP/ceiling", "REST/ceiling", "gRPC/ceiling", "HTTP/naive", "REST/naive",
        "gRPC/naive", "gRPC/HTTP", "REST/HTTP", "gRPC p50/HTTP p50",
    ]  # fmt: skip
    lines += table(columns, [], align="ll" + "r" * 9)
    for model, ratios in summary.get("ratios", {}).items():
        for level, ratio in ratios["by_concurrency"].items():
            lines.append(row([model, level, *(fmt(ratio[k], 2) for k in keys)]))
        added = ", ".join(
            f"{m} {v:+.2f} ms" for m, v in ratios["added_ms_at_concurrency_1"].items()
        )
        if added:
            lines.append(f"| {model} | 1 | added to the in-process call (p50): {added} |")
        for items, doors in ratios.get("batched_over_ceiling", {}).items():
            for door, by_level in doors.items():
                shares = ", ".join(f"c={c} {fmt(v, 2)}" for c, v in by_level.items())
                lines.append(
                    f"| {model} | {items} items/req | {door} items/s / ceiling b={items}: "
                    f"{shares} |"
                )
    return lines


def _peers_table(records: list[dict[str, Any]], summary: dict[str, Any]) -> list[str]:
    """The peers beside naive and friendly JSON at the peers' concurrencies."""
    if not any(r["mode"] in PEERS for r in records):
        return []
    columns = ["model", "c", "server", "items/s", "p50 ms", "p99 ms", "errors", "server ms/req",
               "x naive", "friendly JSON / peer"]  # fmt: skip
    lines = ["", "Peers (loadtest.peers: the same SavedModel, one review per request):", ""]
    rows = []
    for r in records:
        peer = r["mode"] in PEERS
        if not peer and (r["mode"] not in ("naive", "http") or r.get("items", 1) != 1):
            continue
        if not peer and not any(p["mode"] in PEERS and p["concurrency"] == r["concurrency"]
                                and p["model"] == r["model"] for p in records):  # fmt: skip
            continue
        ratio = summary.get("ratios", {}).get(r["model"], {}).get("by_concurrency", {})
        ratio = ratio.get(str(r["concurrency"]), {})
        over_naive = ratio.get(f"{r['mode']}_over_naive") if r["mode"] != "naive" else 1.0
        cells = [r["model"], r["concurrency"], r["mode"], fmt(r["throughput"], 1)]
        cells += [fmt(r["p50_ms"], 2), fmt(r["p99_ms"], 2), str(r["errors"])]
        cells += [fmt(r.get("server_ms_per_request"), 2), fmt(over_naive, 2)]
        rows.append([*cells, fmt(ratio.get(f"http_over_{r['mode']}"), 2) if peer else "-"])
    rows.sort(key=lambda cells: (cells[0], cells[1]))
    return lines + table(columns, rows, align="lll" + "r" * 7)


def _verdict(target: dict[str, Any]) -> str:
    if target["met"] is None:
        return "n/a"
    if target["met"]:
        return "met"
    side = "short" if target["goal"].startswith(">=") else "over"
    return f"MISSED ({side} by {abs(target['gap']):.2f})"


def render(result: dict[str, Any]) -> str:
    """The report as Markdown: tables, ratios, targets, generator check, RSS, machine."""
    records = result["records"]
    lines = _main_table([r for r in records if r["mode"] != "layers"])
    lines += _layers_table(records)
    lines += _threads_table(records)
    lines = lines[1:] if lines[:1] == [""] else lines
    summary = result.get("summary", {})
    lines += _ratios_table(summary)
    lines += _peers_table(records, summary)
    if summary.get("targets"):
        lines += ["", "Targets of issue 8 (reported, not asserted):", ""]
    for t in summary.get("targets", []):
        lines.append(f"- {t['target']}: {fmt(t['value'], 2)} (goal {t['goal']}): {_verdict(t)}")
    check = summary.get("generator_check")
    if check:
        verdict = (
            "may have limited that run" if check["bottleneck_suspected"] else "not the bottleneck"
        )
        cpus = result["machine"].get("cpu_count") or 1
        peak = check["max_generator_cpu"]
        per_request = ", ".join(
            f"{door} {ms:.3f}" for door, ms in check.get("ms_per_request", {}).items()
        )
        lines += [
            "",
            (
                "Load generator: one asyncio process beside the server (aiohttp with pre-encoded "
                "JSON; bare grpc.aio channels with pre-serialized requests); peak CPU "
                f"{peak * 100:.0f}% of one core ({peak / cpus * 100:.0f}% of the machine's {cpus} "
                f"CPUs) at {check['at']} (limit {check['limit'] * 100:.0f}%): {verdict}. CPU ms per "
                f"request (median over runs, one item): {per_request}. Measured with "
                f"{check['method']}."
            ),
        ]
    if result.get("rss"):
        lines += ["", rss_line(result["rss"])]
    lines += ["", machine_line(result["machine"])]
    load = result.get("load_average")
    if load:
        lines.append(f"Load average (1/5/15 min) before: {load['before']}, after: {load['after']}")
    for note in result.get("notes", []):
        lines.append(f"Note: {note}")
    return "\n".join(lines)
