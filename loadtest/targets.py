"""The benchmark's ratios and the targets of issue 8, computed from its records (no I/O).

Ratios per model: each door's throughput over the ceiling and over the naive server at each
concurrency, gRPC and TF Serving REST against the friendly HTTP door, the milliseconds a
door adds to the in-process call at one client, for requests of several items, items/s
over the ceiling's at that batch size, and each peer's (``loadtest.peers``) over naive's
and friendly JSON's over each peer's. Targets are reported, not asserted: each has its
value, goal, verdict and, when missed, by how much.

Typical usage::

    summary = summarize(records, ("imdb", "cifar"))
    for target in summary["targets"]:
        print(target["target"], target["value"], target["goal"], target["met"], target["gap"])
"""

from __future__ import annotations

from typing import Any

DOORS = ("http", "tfserving", "grpc")
# The Open Inference Protocol's doors, each measured against the TF Serving door of its
# transport (issue 18: within 15 % of its throughput in the same run).
V2_PEERS = {"v2-http": "tfserving", "v2-grpc": "grpc"}
V2_GOAL = 0.85
# Other servers of the same SavedModel (loadtest.peers): friendly JSON's throughput over
# each one's at 64 clients (issue 17).
PEERS = ("bentoml", "litserve", "rayserve")
PEER_GOAL = 3.0
# Above this share of one core, the single-threaded generator may be what limits a run.
GENERATOR_CPU_LIMIT = 0.8
TARGET_CONCURRENCY = 64
BATCHED_ITEMS = 32
# (model, door, goal): throughput over the naive server's at 64 clients, one item each.
SPEEDUP_GOALS = (
    ("imdb", "grpc", 2.5),
    ("imdb", "http", 2.0),
    ("imdb", "tfserving", 2.0),
    ("cifar", "grpc", 5.0),
    ("cifar", "http", 3.0),
)
P99_GOALS_MS = {"grpc": 100.0, "http": 150.0, "tfserving": 150.0}  # imdb, 64 clients
ADDED_GOALS_MS = {"grpc": 1.0, "http": 1.5, "tfserving": 1.5}  # imdb, one client, p50
BATCHED_GOAL = 0.7  # items/s at 32 items per request over the ceiling's at batch 32


def find(
    records: list[dict[str, Any]],
    model: str,
    mode: str,
    concurrency: int | None = None,
    items: int | None = 1,
) -> list[dict[str, Any]]:
    """Records of ``model`` and ``mode`` (at ``concurrency`` and ``items`` when given)."""
    return [
        r
        for r in records
        if r["model"] == model
        and r["mode"] == mode
        and (concurrency is None or r["concurrency"] == concurrency)
        and (items is None or r.get("items", 1) == items)
    ]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _first(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    return rows[0] if rows else None


def _ceiling_at(records: list[dict[str, Any]], model: str, batch: int) -> float | None:
    rows = [r for r in find(records, model, "ceiling", items=None) if r["batch_size"] == batch]
    return rows[0]["throughput"] if rows else None


def summarize(records: list[dict[str, Any]], models: tuple[str, ...]) -> dict[str, Any]:
    """Ratios per model and concurrency, the targets of issue 8, and the generator check."""
    ratios: dict[str, Any] = {}
    for model in models:
        ceiling = find(records, model, "ceiling", items=None)
        peak = max((r["throughput"] for r in ceiling), default=None)
        single = next((r["p50_ms"] for r in ceiling if r["batch_size"] == 1), None)
        per_level = {}
        levels = sorted(
            {r["concurrency"] for r in find(records, model, "naive")}
            | {r["concurrency"] for d in (*DOORS, *V2_PEERS) for r in find(records, model, d)}
            | {r["concurrency"] for p in PEERS for r in find(records, model, p)}
        )
        for level in levels:
            rows = {
                m: _first(find(records, model, m, level))
                for m in (*DOORS, *V2_PEERS, *PEERS, "naive")
            }
            thr = {m: r["throughput"] if r else None for m, r in rows.items()}
            p50 = {m: r["p50_ms"] if r else None for m, r in rows.items()}
            row: dict[str, float | None] = {}
            for door in DOORS:
                row[f"{door}_over_ceiling"] = _ratio(thr[door], peak)
                row[f"{door}_over_naive"] = _ratio(thr[door], thr["naive"])
            row["grpc_over_http_throughput"] = _ratio(thr["grpc"], thr["http"])
            row["tfserving_over_http_throughput"] = _ratio(thr["tfserving"], thr["http"])
            row["grpc_over_http_p50"] = _ratio(p50["grpc"], p50["http"])
            for door, peer in V2_PEERS.items():
                if thr[door] is not None:
                    row[f"{door}_over_{peer}_throughput"] = _ratio(thr[door], thr[peer])
            for peer in PEERS:
                if thr[peer] is not None:
                    row[f"{peer}_over_naive"] = _ratio(thr[peer], thr["naive"])
                    row[f"http_over_{peer}"] = _ratio(thr["http"], thr[peer])
            per_level[str(level)] = row
        overhead = {}
        for door in DOORS:
            at_one = find(records, model, door, 1)
            if at_one and single is not None and at_one[0]["p50_ms"] is not None:
                overhead[door] = at_one[0]["p50_ms"] - single
        batched: dict[str, dict[str, dict[str, float | None]]] = {}
        sizes = {r.get("items", 1) for r in records if r["model"] == model}
        for items in sorted(size for size in sizes if size is not None and size > 1):
            base = _ceiling_at(records, model, items)
            batched[str(items)] = {
                door: {
                    str(r["concurrency"]): _ratio(r["throughput"], base)
                    for r in find(records, model, door, items=items)
                }
                for door in DOORS
                if find(records, model, door, items=items)
            }
        ratios[model] = {
            "ceiling_peak_items_per_s": peak,
            "ceiling_batch1_p50_ms": single,
            "by_concurrency": per_level,
            "added_ms_at_concurrency_1": overhead,
            "batched_over_ceiling": batched,
        }
    return {
        "ratios": ratios,
        "targets": _targets(records, ratios),
        "generator_check": _generator_check(records),
    }


def _target(name: str, value: float | None, op: str, goal: float) -> dict[str, Any]:
    """One target: ``op`` is ``>=`` or ``<=``; ``gap`` is how far a miss is (value - goal)."""
    met = None if value is None else value >= goal if op == ">=" else value <= goal
    gap = None if value is None or met else value - goal
    return {"target": name, "value": value, "goal": f"{op} {goal:g}", "met": met, "gap": gap}


def _level(records: list[dict[str, Any]], model: str, door: str) -> int | None:
    levels = sorted({r["concurrency"] for r in find(records, model, door)})
    if not levels:
        return None
    return TARGET_CONCURRENCY if TARGET_CONCURRENCY in levels else levels[-1]


def _targets(records: list[dict[str, Any]], ratios: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []
    for model, door, goal in SPEEDUP_GOALS:
        level = _level(records, model, door)
        if level is None or not find(records, model, "naive", level):
            continue
        value = ratios.get(model, {}).get("by_concurrency", {}).get(str(level), {})
        name = f"{model} {door} c={level}: throughput / naive"
        targets.append(_target(name, value.get(f"{door}_over_naive"), ">=", goal))
    for door in DOORS:
        level = _level(records, "imdb", door)
        if level is None:
            continue
        row = find(records, "imdb", door, level)[0]
        targets.append(_target(f"imdb {door} c={level}: p99 ms", row["p99_ms"], "<=", P99_GOALS_MS[door]))  # fmt: skip
        targets.append(_target(f"imdb {door} c={level}: errors", row["errors"], "<=", 0))
    for door, peer in V2_PEERS.items():
        level = _level(records, "imdb", door)
        if level is None or not find(records, "imdb", peer, level):
            continue
        by_level = ratios.get("imdb", {}).get("by_concurrency", {}).get(str(level), {})
        value = by_level.get(f"{door}_over_{peer}_throughput")
        targets.append(_target(f"imdb {door} c={level}: throughput / {peer}", value, ">=", V2_GOAL))
    for model, ratio in ratios.items():
        for peer in PEERS:
            level = _level(records, model, peer)
            if level is None or not find(records, model, "http", level):
                continue
            value = ratio["by_concurrency"].get(str(level), {}).get(f"http_over_{peer}")
            targets.append(_target(f"{model} http c={level}: throughput / {peer}", value, ">=", PEER_GOAL))  # fmt: skip
    for door, added in ratios.get("imdb", {}).get("added_ms_at_concurrency_1", {}).items():
        name = f"imdb {door} c=1: ms added to the in-process call (p50)"
        targets.append(_target(name, added, "<=", ADDED_GOALS_MS[door]))
    for model, ratio in ratios.items():
        for door, by_level in ratio.get("batched_over_ceiling", {}).get(str(BATCHED_ITEMS), {}).items():  # fmt: skip
            if not by_level:
                continue
            # One client that batches: the service against the same batch called in-process.
            level = "1" if "1" in by_level else min(by_level, key=int)
            name = f"{model} {door} c={level}, {BATCHED_ITEMS} items/request: items/s / ceiling b={BATCHED_ITEMS}"  # fmt: skip
            targets.append(_target(name, by_level[level], ">=", BATCHED_GOAL))
    return targets


def _generator_check(records: list[dict[str, Any]]) -> dict[str, Any]:
    loads = [r for r in records if r.get("generator_cpu") is not None]
    if not loads:
        return {}
    worst = max(loads, key=lambda r: r["generator_cpu"])
    per_request: dict[str, list[float]] = {}
    for r in loads:
        if r.get("generator_ms_per_request") is not None and r.get("items", 1) == 1:
            key = r.get("layer") or r["mode"]
            per_request.setdefault(key, []).append(r["generator_ms_per_request"])
    return {
        "method": "resource.getrusage(RUSAGE_SELF) of the generator process over each measured window",
        "max_generator_cpu": worst["generator_cpu"],
        "at": f"{worst['model']} {worst.get('layer') or worst['mode']} c={worst['concurrency']}",
        "limit": GENERATOR_CPU_LIMIT,
        "bottleneck_suspected": worst["generator_cpu"] > GENERATOR_CPU_LIMIT,
        # median CPU ms per request (one item) by door, over every run
        "ms_per_request": {k: sorted(v)[len(v) // 2] for k, v in sorted(per_request.items())},
    }
