"""Reliability scenarios against a real ``bentoml serve`` (issue 10), one table of verdicts.

Starts ``bentoml serve`` (two workers by default) on free loopback ports, in its own process
group and with a ``BENTOML_HOME`` of its own (a ``models`` link to the store's models, so its
Prometheus files are its own), and runs:

* ``kill``: ``kill -9`` of one worker under HTTP and gRPC load. Only requests in flight on the
  dead worker may fail; ``/readyz`` (a new connection every 50 ms) must answer within 100 ms
  and stay 200 (the other worker still serves); recovery is the time from the kill until
  the replacement is warm and listening.
* ``overload``: an open loop at 4x the measured capacity (``--items`` rows per request, HTTP
  and gRPC): only 200 and fast refusals (503 / RESOURCE_EXHAUSTED, p99 < 50 ms); then
  single requests must be back at their idle latency within 5 s.
* ``textcap``: a 7,000,000-character text to TF Serving REST, the friendly endpoint and gRPC
  (413 / RESOURCE_EXHAUSTED) while small requests run (all 200).
* ``protobuf``: malformed ``Predict`` messages, one per kind (never UNKNOWN or INTERNAL).
* ``hostile`` (a one-worker server of its own, :mod:`loadtest.hostile`): issue 15's
  hostile probes, one row each.
* ``sigterm`` (a server of its own): SIGTERM to ``bentoml serve`` with 32 requests in
  flight (16 HTTP whose bodies are still arriving, 16 gRPC): all 32 answered 200,
  ``/readyz`` 503 and gRPC health NOT_SERVING at once, new requests refused at once, exit 0.

Each row also shows the CPU other processes used meanwhile (the machine is shared). The
exit status is non-zero when a target is missed.

Typical usage::

    python -m loadtest.chaos                                  # make chaos: every model
    python -m loadtest.chaos --models imdb,translator --buckets 1,4,16,64 --scenarios kill
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp

from loadtest import payloads, report
from loadtest.report import names
from loadtest.chaos_verdicts import (
    IDLE_WITHIN_S,
    Outcome,
    Row,
    exit_status,
    judge_cases,
    judge_kill,
    judge_overload,
    judge_sigterm,
    render,
)
from loadtest.doors import door_call
from loadtest.generator import flood_from_processes, timed
from loadtest.live_server import (
    CpuMeter,
    Load,
    Server,
    background,
    first_refusal,
    grpc_raw,
    health_status,
    http_get,
    poll,
    post,
    sequential,
    serve,
    slow_post,
    wait_serving,
)
from loadtest.procs import listeners, wait_closed, wait_replacement
from loadtest.stats import fmt, percentile

ROOT = Path(__file__).resolve().parents[1]
ALL_MODELS = ("reuters", "imdb", "cifar", "cosine", "mnist", "translator")
SCENARIOS = ("kill", "overload", "textcap", "protobuf", "sigterm", "hostile")
IN_FLIGHT = 32  # requests in flight when SIGTERM arrives
CAPACITY_CLIENTS = 32  # closed-loop clients that measure the capacity the overload is 4x of


# ------------------------------------------------------------------ scenarios


async def scenario_kill(server: Server, args: argparse.Namespace) -> Row:
    stop = asyncio.Event()
    with CpuMeter(server.pid) as meter:
        doors = {door: (door_call(door, "imdb", 1), args.clients) for door in ("http", "grpc")}
        async with Load(server, doors) as load:
            readyz = asyncio.create_task(poll(server.url, lambda: not stop.is_set()))
            await asyncio.sleep(3)
            index, victim = min(server.worker_processes().items())
            port = int(server.grpc_target.rsplit(":", 1)[1])
            before = listeners(port)
            killed_at = time.monotonic()
            victim.send_signal(signal.SIGKILL)
            dead_at = await wait_closed(port, before)
            print(
                f"[kill] worker {index} (pid {victim.pid}) killed; its sockets closed after "
                f"{(dead_at - killed_at) * 1000:.0f} ms",
                flush=True,
            )
            recovered = await wait_replacement(server, index, victim.pid, args.recovery_timeout)
            recovery_s = None if recovered is None else recovered - killed_at
            print(f"[kill] replacement warm and listening after {fmt(recovery_s)} s", flush=True)
            await asyncio.sleep(3)
            stop.set()
            outcomes = await load.stop()
            probes = await readyz
    _trace(args, "kill", outcomes + probes, killed_at)
    return judge_kill(outcomes, killed_at, dead_at, probes, recovery_s, meter.other_cores)


async def scenario_overload(server: Server, args: argparse.Namespace) -> Row:
    idle = await sequential(server, "imdb", count=20)
    idle_ms = percentile([o.ms for o in idle if o.ok], 50) or 0.0
    # Capacity: enough closed-loop clients to keep both workers' queues busy.
    doors = {"http": (door_call("http", "imdb", args.items), CAPACITY_CLIENTS)}
    async with Load(server, doors) as load:
        await asyncio.sleep(1)
        window = time.monotonic()
        await asyncio.sleep(3)
        outcomes = await load.stop()
    capacity = sum(o.ok and o.done >= window for o in outcomes) / (time.monotonic() - window)
    print(
        f"[overload] capacity {capacity:.0f} req/s of {args.items} items; idle {idle_ms:.1f} ms",
        flush=True,
    )
    with CpuMeter(server.pid) as meter:
        flood = await asyncio.to_thread(
            flood_from_processes,
            server.url,
            server.grpc_target,
            args.items,
            4 * capacity,
            args.overload_s,
            args.generators,
        )
        ended = max(o.done for o in flood)
        after = await sequential(server, "imdb", seconds=IDLE_WITHIN_S + 1)
    _trace(args, "overload", flood + after, ended)
    return judge_overload(capacity, flood, idle_ms, after, ended, meter.other_cores)


async def scenario_textcap(server: Server, args: argparse.Namespace) -> Row:
    model = "translator" if "translator" in args.models else "imdb"
    rest_path, rest_body, friendly_path, friendly_body, grpc_body = payloads.big_text_requests(
        model
    )
    target = server.grpc_target
    requests = [  # each sent twice, while small requests run
        (f"TF Serving REST {model}", {"413"}, lambda http: post(http, rest_path, rest_body)),
        (
            f"friendly {friendly_path}",
            {"413"},
            lambda http: post(http, friendly_path, friendly_body),
        ),
        (f"gRPC Predict {model}", {"RESOURCE_EXHAUSTED"}, lambda _: grpc_raw(target, grpc_body)),
    ]
    cases: list[tuple[str, set[str], Outcome]] = []
    with CpuMeter(server.pid) as meter:
        async with background(server, "imdb", args.clients // 4 or 1) as load:
            await asyncio.sleep(2)
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(server.url, timeout=timeout) as http:
                for name, wanted, send in requests * 2:
                    cases.append((name, wanted, await send(http)))
            await asyncio.sleep(2)
            small = await load.stop()
    return judge_cases(f"{payloads.BIG_TEXT_CHARS:,}-char text", cases, small, meter.other_cores)


async def scenario_protobuf(server: Server, args: argparse.Namespace) -> Row:
    cases: list[tuple[str, set[str], Outcome]] = []
    with CpuMeter(server.pid) as meter:
        async with background(server, "imdb", args.clients // 4 or 1) as load:
            for name, wanted, body in payloads.malformed_requests():
                cases.append((name, wanted, await grpc_raw(server.grpc_target, body)))
            health = await health_status(server.grpc_target)
            small = await load.stop()
    row = judge_cases("malformed protobuf", cases, small, meter.other_cores)
    if health.status != "SERVING":
        row.missed.append(f"gRPC health {health.status} afterwards")
    return row


async def scenario_sigterm(server: Server, args: argparse.Namespace) -> Row:
    """SIGTERM to ``bentoml serve`` with ``IN_FLIGHT`` requests accepted and unanswered."""
    from loadtest.doors import GrpcChannels, grpc_requests

    half = IN_FLIGHT // 2
    body = payloads.json_bodies("imdb", args.items)[0]
    # gRPC requests cannot arrive slowly: take the slowest model, so they are still running.
    slow_model, slow_items = (
        ("translator", 8) if "translator" in args.models else ("imdb", args.items)
    )
    started: asyncio.Queue[None] = asyncio.Queue()
    release = asyncio.Event()
    proc = server.process.proc
    assert proc is not None
    with CpuMeter(server.pid) as meter:
        async with GrpcChannels(server.grpc_target, concurrency=half, timeout=60) as channels:
            for channel in channels.channels:  # connected before: the calls go out at once
                await channel.channel_ready()
            grpc_call = door_call("grpc", slow_model, slow_items)
            http = [
                asyncio.create_task(
                    slow_post(server.url, payloads.PATHS["imdb"], body, started, release)
                )
                for _ in range(half)
            ]
            for _ in range(half):
                await started.get()
            grpc_requests(slow_model, slow_items)  # encoded before the clock starts
            new_grpc = grpc_requests("imdb", 1)[0]
            calls = [
                asyncio.create_task(timed("grpc", grpc_call(channels, n))) for n in range(half)
            ]
            await asyncio.sleep(0.02)  # on the wire and in the server
            in_flight = http + calls
            still_open = sum(not task.done() for task in in_flight)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            async with aiohttp.ClientSession(
                server.url,
                connector=aiohttp.TCPConnector(force_close=True),
                timeout=aiohttp.ClientTimeout(total=5),
            ) as probe_http:
                refusals = {  # what each probe must get at once after the signal
                    "readyz": (lambda: http_get(probe_http, f"{server.url}/readyz"), {"503"}),
                    "health": (lambda: health_status(server.grpc_target), {"NOT_SERVING"}),
                    "new http": (lambda: post(probe_http, payloads.PATHS["imdb"], body), {"503"}),
                    "new grpc": (
                        lambda: grpc_raw(server.grpc_target, new_grpc, 5),
                        {"UNAVAILABLE"},
                    ),
                }
                found = await asyncio.gather(
                    *(
                        first_refusal(probe, refused, signalled)
                        for probe, refused in refusals.values()
                    )
                )
            probes = dict(zip(refusals, found, strict=True))
            await asyncio.sleep(0.2)
            release.set()
            outcomes = list(await asyncio.gather(*in_flight))
            try:
                exit_code = await asyncio.to_thread(proc.wait, server.grace_s + 60)
                exit_s: float | None = time.monotonic() - signalled
            except Exception:  # noqa: BLE001 (subprocess.TimeoutExpired: judged below)
                exit_code, exit_s = None, None
    print(f"[sigterm] exit {exit_code} after {fmt(exit_s)} s", flush=True)
    return judge_sigterm(
        outcomes, still_open, probes, exit_code, exit_s, server.grace_s, meter.other_cores
    )


SCENARIO_RUNS: dict[str, Callable[[Server, argparse.Namespace], Awaitable[Row]]] = {
    "kill": scenario_kill,
    "overload": scenario_overload,
    "textcap": scenario_textcap,
    "protobuf": scenario_protobuf,
    "sigterm": scenario_sigterm,
}


# ------------------------------------------------------------------ command line


def _trace(args: argparse.Namespace, name: str, outcomes: list[Outcome], origin: float) -> None:
    """With ``--trace``: every outcome of a scenario, times relative to ``origin``."""
    if not args.trace:
        return
    rows = [{**asdict(o), "sent": o.sent - origin, "done": o.done - origin} for o in outcomes]
    (args.out.parent / f"chaos-trace-{name}.json").write_text(json.dumps(rows))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.chaos", description=__doc__.split("\n\n")[0]
    )
    add = parser.add_argument
    add(
        "--models",
        type=names,
        default=ALL_MODELS,
        help="models the server loads (imdb is required; default: all six)",
    )
    add("--scenarios", type=names, default=SCENARIOS, help=f"default: {','.join(SCENARIOS)}")
    add("--workers", type=int, default=2)
    add("--buckets", default="", help="SERVICE_BATCH_BUCKETS (default: the service's)")
    add(
        "--items",
        type=int,
        default=32,
        help="items per request under overload and in flight at SIGTERM",
    )
    add("--clients", type=int, default=8, help="closed-loop clients per door")
    add("--overload-s", type=float, default=10.0, help="seconds at 4x capacity")
    add("--generators", type=int, default=2, help="processes sending the overload (default 2)")
    add("--recovery-timeout", type=float, default=300.0)
    add("--out", type=Path, default=ROOT / "reports" / "chaos.json")
    add("--trace", action="store_true", help="write every request's outcome")
    args = parser.parse_args(argv)
    if "imdb" not in args.models:
        parser.error("--models must include imdb (the scenarios' small requests)")
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.workers < 2 and "kill" in args.scenarios:
        parser.error("the kill scenario needs --workers 2 or more")
    return args


def serve_for(args: argparse.Namespace, name: str) -> Any:
    log = args.out.parent / f"chaos-{name}.log"
    return serve(args.models, args.workers, log, args.buckets)


def run(args: argparse.Namespace) -> list[Row]:
    """Every requested scenario; ``sigterm`` last, on a server of its own."""
    rows: list[Row] = []
    shared = [name for name in args.scenarios if name not in ("sigterm", "hostile")]
    if shared:
        with serve_for(args, "main") as server:
            asyncio.run(wait_serving(server.grpc_target))
            for name in shared:
                print(f"[{name}] ...", flush=True)
                rows.append(asyncio.run(SCENARIO_RUNS[name](server, args)))
    if "sigterm" in args.scenarios:
        with serve_for(args, "sigterm") as server:
            asyncio.run(wait_serving(server.grpc_target))
            rows.append(asyncio.run(scenario_sigterm(server, args)))
    if "hostile" in args.scenarios:  # issue 15's probes, on a one-worker server of their own
        from loadtest import hostile

        rows += hostile.run(args)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = report.describe_machine()
    print(report.machine_line(machine), flush=True)
    started = time.time()
    rows = run(args)
    config = {
        k: v if isinstance(v, str | int | float | tuple) else str(v) for k, v in vars(args).items()
    }
    result = {
        "machine": machine,
        "config": config,
        "rows": [{**asdict(row), "met": row.met} for row in rows],
        "elapsed_s": time.time() - started,
    }
    report.write(args.out, result, render(rows))
    status = exit_status(rows)
    print(f"\n{'every target met' if status == 0 else 'TARGETS MISSED'}; wrote {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
