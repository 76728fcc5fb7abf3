"""Side-by-side serving benchmark: the service against its ceiling and a naive server.

For each model, in one run on one machine:

1. ``ceiling``: the served SavedModel called in-process at batch sizes 1...128
   (``loadtest.ceiling``, in a subprocess);
2. ``http`` and ``grpc``: the service at concurrency 1, 8, 32 and 64 (throughput,
   p50/p95/p99, errors, mean batch size from ``/metrics``);
3. ``naive``: the same SavedModel behind a minimal per-request endpoint
   (``loadtest.naive_server``), at the same concurrencies.

Prints one table and the ratios (service/ceiling, service/naive, gRPC/HTTP), and writes
``reports/bench.json`` (and the table in ``reports/bench.md``): one record per model x mode x concurrency (or batch size for the
ceiling), the machine, the load generator's CPU use, and the targets of issue 5.

Either targets a running service (``--url``, ``--grpc``; ``$BENTOML_HOME`` must be that
service's store, for the ceiling and the naive server) or starts ``bentoml serve`` itself on
free loopback ports, after training quick synthetic models for what the store lacks.

Typical usage::

    python -m loadtest.bench                                     # make bench
    python -m loadtest.bench --models imdb --quick
    python -m loadtest.bench --url http://127.0.0.1:3000 --grpc 127.0.0.1:8500 --modes http,grpc
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from loadtest import report
from loadtest.generator import MetricsDelta, load_client, measure, workload
from loadtest.procs import LOOPBACK, ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("imdb", "reuters", "cifar", "translator")
MODES = ("ceiling", "naive", "http", "grpc")
CONCURRENCY = (1, 8, 32, 64)
QUICK = {
    "concurrency": (1, 8),
    "duration": 1.5,
    "warmup": 0.5,
    "batch_sizes": (1, 8, 64),
    "ceiling_seconds": 0.3,
}
FULL = {
    "concurrency": CONCURRENCY,
    "duration": 10.0,
    "warmup": 2.0,
    "batch_sizes": (1, 2, 4, 8, 16, 32, 64, 128),
    "ceiling_seconds": 2.0,
}


def _csv(kind: type, raw: str) -> tuple[Any, ...]:
    return tuple(kind(v.strip()) for v in raw.split(",") if v.strip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated (default: %(default)s)"
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated (default: %(default)s)"
    )
    parser.add_argument("--url", help="a running service (default: start bentoml serve)")
    parser.add_argument(
        "--grpc", help="its gRPC target host:port (default: --url's host, port 8500)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run: concurrency 1,8, 1.5 s windows"
    )
    parser.add_argument("--concurrency", help="comma-separated (default: 1,8,32,64)")
    parser.add_argument("--duration", type=float, help="measured seconds per run (default 10)")
    parser.add_argument(
        "--warmup", type=float, help="unmeasured seconds before each run (default 2)"
    )
    parser.add_argument("--batch-sizes", help="ceiling batch sizes (default 1,2,...,128)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench.json")
    parser.add_argument(
        "--exports", type=Path, default=ROOT / "exports", help="where missing models are trained to"
    )
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.models = _csv(str, args.models)
    args.modes = _csv(str, args.modes)
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    args.concurrency = _csv(int, args.concurrency) if args.concurrency else preset["concurrency"]
    args.duration = args.duration if args.duration is not None else preset["duration"]
    args.warmup = args.warmup if args.warmup is not None else preset["warmup"]
    args.batch_sizes = _csv(int, args.batch_sizes) if args.batch_sizes else preset["batch_sizes"]
    args.ceiling_seconds = preset["ceiling_seconds"]
    if args.url and not args.grpc:
        args.grpc = f"{urlsplit(args.url).hostname or LOOPBACK}:8500"
    return args


def child_env(**extra: str) -> dict[str, str]:
    """The environment of every subprocess: CPU only, quiet TensorFlow, no telemetry."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "BENTOML_DO_NOT_TRACK": "True", **extra}
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    return env


def ensure_models(models: tuple[str, ...], exports: Path) -> list[str]:
    """Trains quick synthetic models for whatever the BentoML store lacks.

    Returns:
        The models that had to be trained.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    missing = []
    for model in models:
        try:
            bentoml.models.get(f"{model}:latest")
        except NotFound:
            missing.append(model)
    store = os.environ.get("BENTOML_HOME", "~/bentoml")
    for model in missing:
        print(
            f"The BentoML store ({store}) has no {model}: training a quick synthetic one.",
            flush=True,
        )
        command = [
            sys.executable,
            "-m",
            "training",
            model,
            "--synthetic",
            "--quick",
            "--out",
            str(exports),
        ]
        subprocess.run(command, cwd=ROOT, env=child_env(), check=True)
    return missing


def run_ceiling(model: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "loadtest.ceiling", model,
        "--batch-sizes", ",".join(map(str, args.batch_sizes)),
        "--seconds", str(args.ceiling_seconds),
    ]  # fmt: skip
    proc = subprocess.run(
        command, cwd=ROOT, env=child_env(), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ceiling of {model} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has spent (all CPUs), idle and iowait excluded."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class WindowProbe:
    """What the machine did over a measured window: the service's histograms from
    ``/metrics``, the CPU of the server's processes (when the benchmark started it) and of
    the whole machine, so that a run disturbed by other processes shows."""

    def __init__(self, metrics: MetricsDelta | None, server: ServerProcess | None) -> None:
        self.metrics = metrics
        self.server = server
        self.edges: dict[str, tuple[dict[str, float] | None, float, float]] = {}

    async def at(self, edge: str) -> None:
        if self.metrics is not None:
            await self.metrics.scrape(edge)
        server = self.server.cpu_by_process() if self.server is not None else None
        self.edges[edge] = (server, _machine_busy_seconds(), time.perf_counter())

    def _wall(self) -> float:
        return self.edges["end"][2] - self.edges["start"][2]

    @property
    def server_cpu_by_process(self) -> dict[str, float] | None:
        """Each server process's CPU seconds per second (1.0 = one core busy)."""
        if len(self.edges) != 2 or self.edges["start"][0] is None:
            return None
        start, end = self.edges["start"][0], self.edges["end"][0]
        wall = self._wall()
        return {name: (end[name] - start.get(name, 0.0)) / wall for name in sorted(end)}

    @property
    def server_cpu(self) -> float | None:
        """The server's CPU seconds per second (2.0 = two cores busy), or None when unknown."""
        by_process = self.server_cpu_by_process
        return sum(by_process.values()) if by_process is not None else None

    @property
    def machine_cpu(self) -> float | None:
        """Busy CPU seconds per second over the whole machine (generator and server included)."""
        if len(self.edges) != 2:
            return None
        return (self.edges["end"][1] - self.edges["start"][1]) / self._wall()


async def run_level(
    model: str,
    mode: str,
    target: str,
    concurrency: int,
    args: argparse.Namespace,
    metrics_url: str | None,
    server: ServerProcess | None,
) -> dict[str, Any]:
    """The record of ``model`` over ``mode`` (http, grpc or naive) at one concurrency."""
    protocol = "grpc" if mode == "grpc" else "http"
    probe = WindowProbe(MetricsDelta(metrics_url, model) if metrics_url else None, server)
    async with load_client(protocol, target, concurrency) as client:
        run = await measure(
            workload(model, protocol), client, concurrency, args.duration, args.warmup, probe.at
        )
    record = report.load_record(model, mode, concurrency, run, probe.metrics, probe.server_cpu)
    record["machine_cpu"] = probe.machine_cpu
    by_process = probe.server_cpu_by_process or {}
    record["server_cpu_by_process"] = {k: v for k, v in by_process.items() if v >= 0.01}
    record["load_1m"] = os.getloadavg()[0]
    report.print_progress(record)
    return record


async def wait_for_grpc(target: str, timeout: float = 60.0) -> bool:
    """Whether gRPC health turns SERVING within ``timeout`` seconds: the gRPC door reports
    ready a moment after ``/readyz`` does (it checks the runners on its own schedule)."""
    from clients.grpc import AsyncClient

    deadline = time.monotonic() + timeout
    async with AsyncClient(target, timeout=5, retry=1) as client:
        while True:
            if await client.ready():
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every requested model and mode; returns the report (also written to ``--out``)."""
    started = time.time()
    machine = report.describe_machine()
    result: dict[str, Any] = {
        "machine": machine,
        "config": report.config_of(args),
        "records": [],
        "notes": [],
    }
    print(report.machine_line(machine), flush=True)
    needs_store = bool({"ceiling", "naive"} & set(args.modes)) or not args.url
    if needs_store:
        trained = ensure_models(args.models, args.exports)
        if trained:
            result["notes"].append(f"trained quick synthetic models for {', '.join(trained)}")
    records: list[dict[str, Any]] = result["records"]
    load_before = os.getloadavg()

    # Ceiling and naive first, while no service competes for the CPU (when we start it).
    for model in args.models:
        if "ceiling" in args.modes:
            ceiling = run_ceiling(model, args)
            for row in report.ceiling_records(ceiling):
                row["load_1m"] = os.getloadavg()[0]
                records.append(row)
                report.print_progress(row)
        if "naive" in args.modes:
            port = free_port()
            url = f"http://{LOOPBACK}:{port}"
            log = args.out.parent / f"naive-{model}.log"
            command = [sys.executable, "-m", "loadtest.naive_server", model, "--port", str(port)]
            with ServerProcess(command, f"{url}/readyz", log, env=child_env(), cwd=ROOT) as naive:
                for level in args.concurrency:
                    records.append(
                        asyncio.run(run_level(model, "naive", url, level, args, None, naive))
                    )

    service_modes = [m for m in ("http", "grpc") if m in args.modes]
    if service_modes:
        if args.url:
            url, grpc_target, server = args.url.rstrip("/"), args.grpc, None
            records += _run_service(args, url, grpc_target, None, service_modes, result)
        else:
            port, grpc_port = free_port(), free_port()
            url, grpc_target = f"http://{LOOPBACK}:{port}", f"{LOOPBACK}:{grpc_port}"
            env = child_env(SERVICE_MODELS=",".join(args.models), GRPC_PORT=str(grpc_port))
            command = [
                str(Path(sys.executable).parent / "bentoml"),
                "serve",
                "--host",
                LOOPBACK,
                "--port",
                str(port),
            ]
            print(f"Starting bentoml serve on {url} (gRPC {grpc_target}) ...", flush=True)
            result["config"].update(target=f"bentoml serve at {url}", grpc_target=grpc_target)
            log = args.out.parent / "bench-serve.log"
            with ServerProcess(command, f"{url}/readyz", log, env=env, cwd=ROOT) as server:
                records += _run_service(args, url, grpc_target, server, service_modes, result)

    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    result["elapsed_s"] = time.time() - started
    result["summary"] = report.summarize(records, args.models)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _run_service(
    args: argparse.Namespace,
    url: str,
    grpc_target: str,
    server: ServerProcess | None,
    modes: list[str],
    result: dict[str, Any],
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    if "grpc" in modes and not asyncio.run(wait_for_grpc(grpc_target)):
        note = f"gRPC at {grpc_target} was not serving after 60 s: gRPC runs skipped"
        print(f"WARNING: {note}", flush=True)
        result["notes"].append(note)
        modes = [m for m in modes if m != "grpc"]
    # Protocols alternate at each level: BentoML's batcher adapts its wait to recent traffic,
    # so both protocols must see the same history (gRPC at c=1 right after HTTP at c=64 met
    # a batcher still waiting ~40 ms for company).
    for model in args.models:
        for level in args.concurrency:
            for mode in modes:
                target = url if mode == "http" else grpc_target
                records.append(
                    asyncio.run(run_level(model, mode, target, level, args, url, server))
                )
    return records


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = bench(args)
    print()
    rendered = report.render(result)
    print(rendered)
    args.out.with_suffix(".md").write_text(rendered + "\n")
    print(f"\nWrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
