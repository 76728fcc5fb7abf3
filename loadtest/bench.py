"""Side-by-side serving benchmark: the service against its ceiling and a naive server.

For each model, in one run on one machine:

1. ``ceiling``: the served SavedModel called in-process at batch sizes 1...128
   (``loadtest.ceiling``, in a subprocess);
2. ``naive``: the same SavedModel behind a minimal per-request endpoint
   (``loadtest.naive_server``), at concurrency 1, 8, 32 and 64;
3. ``layers``: servers answering without a model (``loadtest.bare_servers``: bare
   uvicorn, the same route in a minimal BentoML service, a trivial ``@bentoml.api``, a bare
   ``grpc.aio`` Predict) at 64 clients: which layer of a door costs what;
4. ``http`` (friendly JSON), ``tfserving`` (TF Serving REST), ``grpc`` (TF Serving
   gRPC), ``v2-http`` and ``v2-grpc`` (the Open Inference Protocol's doors, binary tensors
   over HTTP, ``ModelInfer`` over gRPC): the service at the same concurrencies with one item per request, and with
   ``--items`` more (32: a client that batches) at ``--items-concurrency``. Throughput,
   p50/p95/p99, errors, mean batch size, queue wait and refusals from ``/metrics``, CPU per
   server process (arbiter, each worker), generator CPU per request; RSS per process once
   the service is ready with every model loaded;
5. ``bentoml``, ``litserve``, ``rayserve`` (only when named in ``--modes``): the peers of
   ``loadtest.peers``, the same imdb SavedModel behind plain BentoML, LitServe and Ray Serve
   (each in a venv of its own under ``.bench/``, installed the first time), at the same
   concurrencies as naive, one review per request, before the service starts.

Prints one table and the ratios (service/ceiling, service/naive, between doors) with the
targets of issue 8, and writes ``reports/bench.json`` (and the tables in
``reports/bench.md``). Requests are pre-encoded and gRPC goes through bare stubs
(``loadtest.doors``), so the generator, which shares the machine, stays cheap.

Either targets a running service (``--url``, ``--grpc``; ``$BENTOML_HOME`` must be that
service's store, for the ceiling and the naive server) or starts ``bentoml serve`` itself on
free loopback ports, serving ``--serve-models`` (default: all six), after training quick
synthetic models for what the store lacks.

Typical usage::

    python -m loadtest.bench                                     # make bench
    python -m loadtest.bench --models imdb --quick --serve-models imdb
    python -m loadtest.bench --modes layers --quick
    python -m loadtest.bench --url http://127.0.0.1:3000 --grpc 127.0.0.1:8500 --modes http,grpc
    python -m loadtest.bench --models imdb --quick --modes tfserving,grpc,v2-http,v2-grpc
    python -m loadtest.bench --models imdb --modes naive,http,bentoml,litserve,rayserve
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

from loadtest import peers, report
from loadtest.bare_servers import LAYERS, Layer
from loadtest.doors import DOORS, GRPC_DOORS, Call, door_call
from loadtest.generator import MetricsDelta, load_client, measure
from loadtest.live_server import serve, wait_serving
from loadtest.probe import WindowProbe
from loadtest.procs import LOOPBACK, ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("imdb", "reuters", "cifar", "translator")
ALL_MODELS = ("imdb", "reuters", "cifar", "cosine", "mnist", "translator")
DEFAULT_MODES = ("ceiling", "naive", "layers", *DOORS)
MODES = (*DEFAULT_MODES, *peers.NAMES)  # the peers only when asked for: they install venvs
CONCURRENCY = (1, 8, 32, 64)
QUICK = {
    "concurrency": (1, 8),
    "items_concurrency": (1,),
    "layers_concurrency": 64,
    "duration": 1.5,
    "warmup": 0.5,
    "batch_sizes": (1, 8, 64),
    "ceiling_seconds": 0.3,
}
FULL = {
    "concurrency": CONCURRENCY,
    "items_concurrency": (1, 8),
    "layers_concurrency": 64,
    "duration": 10.0,
    "warmup": 2.0,
    "batch_sizes": (1, 2, 4, 8, 16, 32, 64, 128),
    "ceiling_seconds": 2.0,
}


def _ints(raw: str) -> tuple[int, ...]:
    return tuple(int(v) for v in report.names(raw))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench", description=__doc__.split("\n\n")[0]
    )
    add = parser.add_argument
    add(
        "--models",
        type=report.names,
        default=MODELS,
        help=f"comma-separated (default: {','.join(MODELS)})",
    )
    add(
        "--modes",
        type=report.names,
        default=DEFAULT_MODES,
        help=f"comma-separated (default: {','.join(DEFAULT_MODES)}; peers: {','.join(peers.NAMES)})",
    )
    add("--url", help="a running service (default: start bentoml serve)")
    add("--grpc", help="its gRPC target host:port (default: --url's host, port 8500)")
    add(
        "--serve-models",
        default="all",
        help="models the started service loads ('all': the six; RSS is measured with them)",
    )
    add("--quick", action="store_true", help="a short smoke run: concurrency 1,8, 1.5 s windows")
    add("--concurrency", type=_ints, help="comma-separated (default: 1,8,32,64)")
    add("--items", type=_ints, default=(1, 32), help="items per request (default: 1,32)")
    add(
        "--items-concurrency",
        type=_ints,
        help="concurrency of runs with more than one item (default: 1,8)",
    )
    add("--layers-concurrency", type=int, help="clients of the layers rows (64)")
    add("--duration", type=float, help="measured seconds per run (default 10)")
    add("--warmup", type=float, help="unmeasured seconds before each run (default 2)")
    add("--batch-sizes", type=_ints, help="ceiling batch sizes (default 1,2,...,128)")
    add("--out", type=Path, default=ROOT / "reports" / "bench.json")
    add(
        "--exports", type=Path, default=ROOT / "exports", help="where missing models are trained to"
    )
    args = parser.parse_args(argv)
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    serve_models = ALL_MODELS if args.serve_models == "all" else report.names(args.serve_models)
    args.serve_models = tuple(dict.fromkeys((*serve_models, *args.models)))
    # The ceiling at every request size, for the items-per-request ratio.
    args.batch_sizes = tuple(sorted({*args.batch_sizes, *args.items}))
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
        command = [sys.executable, "-m", "training", model, "--synthetic", "--quick"]
        command += ["--out", str(exports)]
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


async def run_level(
    model: str,
    mode: str,
    target: str,
    concurrency: int,
    args: argparse.Namespace,
    metrics_url: str | None,
    server: ServerProcess | None,
    items: int = 1,
    layer: Layer | None = None,
    call: Call | None = None,
) -> dict[str, Any]:
    """The record of ``model`` over ``mode`` (a door, naive or a layer) at one concurrency.

    Args:
        model: The model whose payload is sent.
        mode: a door (``http``, ``tfserving``, ``grpc``, ``v2-http``, ``v2-grpc``), ``naive``
            (friendly JSON) or ``layers``.
        target: Base URL, or ``host:port`` for gRPC.
        concurrency: Closed-loop clients.
        args: Durations.
        metrics_url: The service's base URL, to scrape ``/metrics`` (None: no metrics).
        server: The server's process tree, when the benchmark started it (for its CPU).
        items: Items per request.
        layer: For ``layers``: which bare server is loaded.
        call: The checked request, when not the door's (a peer's, over HTTP).
    """
    door = layer.door if layer is not None else "http" if mode == "naive" or call else mode
    call = call or door_call(door, model, items, path=layer.path if layer and layer.path else None)
    probe = WindowProbe(MetricsDelta(metrics_url, model) if metrics_url else None, server)
    async with load_client(door, target, concurrency) as client:
        run = await measure(call, client, concurrency, args.duration, args.warmup, probe.at)
    record = report.load_record(
        model, mode, concurrency, run, probe.metrics, probe.server_cpu, items=items
    )
    if layer is not None:
        record["layer"] = layer.name
    record["machine_cpu"] = probe.machine_cpu
    by_process = probe.server_cpu_by_process or {}
    record["server_cpu_by_process"] = {k: v for k, v in by_process.items() if v >= 0.01}
    record["server_cpu_by_thread"] = probe.server_cpu_by_thread
    record["load_1m"] = os.getloadavg()[0]
    report.print_progress(record)
    return record


def run_naive(model: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The naive server of ``model`` at every concurrency, one item per request."""
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    log = args.out.parent / f"naive-{model}.log"
    command = [sys.executable, "-m", "loadtest.naive_server", model, "--port", str(port)]
    with ServerProcess(command, f"{url}/readyz", log, env=child_env(), cwd=ROOT) as naive:
        return [
            asyncio.run(run_level(model, "naive", url, level, args, None, naive))
            for level in args.concurrency
        ]


def run_peers(model: str, args: argparse.Namespace, notes: list[str]) -> list[dict[str, Any]]:
    """Each peer named in ``--modes`` (:mod:`loadtest.peers`) at every concurrency; one that
    does not install or start is a note, not the end of the run."""
    records = []
    for name in (m for m in peers.NAMES if m in args.modes):
        log = args.out.parent / f"peer-{name}-{model}.log"
        try:
            with peers.serve_peer(name, peers.saved_model(model), log) as (url, server):
                for level in args.concurrency:
                    call = peers.peer_call()
                    record = asyncio.run(
                        run_level(model, name, url, level, args, None, server, call=call)
                    )
                    records.append({**record, "peer": list(peers.PEERS[name].requirements)})
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            notes.append(f"peer {name} skipped: {str(exc)[-600:]}")
            print(f"WARNING: {notes[-1]}", flush=True)
    return records


def run_layers(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each bare server of :data:`loadtest.bare_servers.LAYERS`, loaded with one imdb
    review per request at ``--layers-concurrency`` clients."""
    records = []
    for layer in LAYERS:
        port = free_port()
        log = args.out.parent / f"layer-{layer.name}.log"
        command = layer.command(sys.executable, port)
        target = f"{LOOPBACK}:{port}" if layer.door == "grpc" else f"http://{LOOPBACK}:{port}"
        ready = layer.ready_url(port)
        with ServerProcess(command, ready, log, env=child_env(), cwd=ROOT, timeout=120) as server:
            level = args.layers_concurrency
            records.append(
                asyncio.run(
                    run_level("imdb", "layers", target, level, args, None, server, layer=layer)
                )
            )
    return records


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every requested model and mode; returns the report (:func:`main` writes it)."""
    started = time.time()
    machine = report.describe_machine()
    result: dict[str, Any] = {
        "machine": machine,
        "config": report.config_of(args),
        "records": [],
        "notes": [],
    }
    print(report.machine_line(machine), flush=True)
    service_modes = [m for m in DOORS if m in args.modes]
    peer_modes = set(peers.NAMES) & set(args.modes)
    needs_store = bool({"ceiling", "naive", *peer_modes} & set(args.modes)) or (
        service_modes and not args.url
    )
    if needs_store:
        wanted = args.models if args.url else args.serve_models
        trained = ensure_models(wanted, args.exports)
        if trained:
            result["notes"].append(f"trained quick synthetic models for {', '.join(trained)}")
    records: list[dict[str, Any]] = result["records"]
    load_before = os.getloadavg()

    # Ceiling, naive and layers first, while no service competes for the CPU (when we start it).
    for model in args.models:
        if "ceiling" in args.modes:
            ceiling = run_ceiling(model, args)
            for row in report.ceiling_records(ceiling):
                row["load_1m"] = os.getloadavg()[0]
                records.append(row)
                report.print_progress(row)
        if "naive" in args.modes:
            records += run_naive(model, args)
        if peer_modes and model in peers.MODELS:
            records += run_peers(model, args, result["notes"])
        elif peer_modes:
            result["notes"].append(f"the peers serve {', '.join(peers.MODELS)} only: not {model}")
    if "layers" in args.modes:
        records += run_layers(args)

    if service_modes:
        if args.url:
            url = args.url.rstrip("/")
            records += _run_service(args, url, args.grpc, None, service_modes, result)
        else:
            print("Starting bentoml serve ...", flush=True)
            log = args.out.parent / "bench-serve.log"
            with serve(args.serve_models, log=log) as server:
                result["config"].update(
                    target=f"bentoml serve at {server.url}", grpc_target=server.grpc_target
                )
                result["rss"] = {
                    "models": list(args.serve_models),
                    "bytes_by_process": server.process.rss_by_process(),
                }
                print(report.rss_line(result["rss"]), flush=True)
                records += _run_service(
                    args, server.url, server.grpc_target, server.process, service_modes, result
                )

    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    result["elapsed_s"] = time.time() - started
    result["summary"] = report.summarize(records, args.models)
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
    if set(GRPC_DOORS) & set(modes):
        try:  # the gRPC door reports ready a moment after /readyz does
            asyncio.run(wait_serving(grpc_target))
        except RuntimeError as exc:
            print(f"WARNING: {exc}: gRPC runs skipped", flush=True)
            result["notes"].append(f"{exc}: gRPC runs skipped")
            modes = [m for m in modes if m not in GRPC_DOORS]
    # Doors alternate at each level: a batcher may adapt to recent traffic, so every door
    # must see the same history (with BentoML's batcher, gRPC at c=1 right after HTTP at
    # c=64 met a batcher still waiting ~40 ms for company).
    for model in args.models:
        for items in args.items:
            levels = args.concurrency if items == 1 else args.items_concurrency
            for level in levels:
                for mode in modes:
                    target = grpc_target if mode in GRPC_DOORS else url
                    records.append(
                        asyncio.run(run_level(model, mode, target, level, args, url, server, items))
                    )
    return records


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = bench(args)
    report.write(args.out, result, report.render(result))
    print(f"\nWrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
