"""Short runs of ``python -m loadtest.bench``: imdb against the session's server through
every door (one and four items per request), the layers without a model, and the targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest import report

ROOT = Path(__file__).resolve().parents[2]
LOAD_MODES = {"naive", "http", "tfserving", "grpc"}
RECORD_KEYS = {
    "model", "mode", "concurrency", "batch_size", "items", "requests", "errors", "throughput",
    "p50_ms", "p95_ms", "p99_ms", "mean_ms", "mean_batch_size", "queue_wait_ms", "execution_ms",
    "generator_cpu", "server_cpu",
}  # fmt: skip
LOAD_KEYS = {"requests_per_s", "generator_ms_per_request", "server_ms_per_request", "refused"}


def _bench(*options: str, home: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if home is not None:
        env["BENTOML_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "loadtest.bench", *options],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


@pytest.mark.integration
def test_quick_bench_writes_a_well_formed_report_without_errors(server, tmp_path):
    out = tmp_path / "bench.json"
    proc = _bench(
        "--models", "imdb", "--quick", "--modes", "ceiling,naive,http,tfserving,grpc",
        "--url", server.url, "--grpc", f"127.0.0.1:{server.grpc_port}",
        "--concurrency", "1,4", "--items", "1,4", "--items-concurrency", "2",
        "--duration", "0.6", "--warmup", "0.3", "--batch-sizes", "1",
        "--out", str(out), home=server.store.home,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert "| imdb | grpc | c=4 |" in proc.stdout  # the printed table
    assert "| imdb | tfserving | c=2 x4 |" in proc.stdout

    result = json.loads(out.read_text())
    records = result["records"]
    assert all(RECORD_KEYS <= set(r) for r in records)
    ceiling = [r for r in records if r["mode"] == "ceiling"]
    assert [r["batch_size"] for r in ceiling] == [1, 4]  # 4: the items-per-request size
    assert ceiling[0]["signature"] == "predict_text"
    # The model's own CPU per item, measured in the in-process caller (any thread of it).
    assert all(r["server_cpu"] > 0 and r["server_ms_per_request"] > 0 for r in ceiling)
    loads = [r for r in records if r["mode"] in LOAD_MODES]
    assert {(r["mode"], r["concurrency"], r["items"]) for r in loads} == {
        (m, c, 1) for m in LOAD_MODES for c in (1, 4)
    } | {(m, 2, 4) for m in LOAD_MODES - {"naive"}}
    for r in loads:
        assert LOAD_KEYS <= set(r), r
        assert r["requests"] > 0 and r["throughput"] > 0, r
        assert r["errors"] == 0, r["error_examples"]
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"], r
        assert r["generator_cpu"] is not None and r["generator_ms_per_request"] > 0
        # Items per second from what the generator counted in its window (--duration 0.6).
        assert r["duration_s"] == pytest.approx(0.6)
        assert r["throughput"] == pytest.approx(r["requests"] * r["items"] / 0.6)
    for r in loads:
        if r["mode"] != "naive":
            assert r["mean_batch_size"] is not None and r["mean_batch_size"] >= 1, r
            assert r["queue_wait_ms"] >= 0 and r["execution_ms"] > 0, r
            assert r["refused"] == 0, r
            # A server the benchmark did not start (--url): no process to read threads from.
            assert r["server_cpu_by_thread"] is None, r
    batched = [r for r in loads if r["items"] == 4]
    assert all(r["mean_batch_size"] >= 4 for r in batched), batched

    machine = result["machine"]
    assert machine["cpu_count"] >= 1 and machine["cpu_model"] and machine["tensorflow"]
    summary = result["summary"]
    ratios = summary["ratios"]["imdb"]
    assert set(ratios["by_concurrency"]) == {"1", "4"}
    assert set(ratios["batched_over_ceiling"]["4"]) == {"http", "tfserving", "grpc"}
    assert {t["target"] for t in summary["targets"]} >= {
        "imdb grpc c=4: throughput / naive",
        "imdb tfserving c=4: p99 ms",
        "imdb http c=4: errors",
        "imdb grpc c=1: ms added to the in-process call (p50)",
    }
    check = summary["generator_check"]
    assert check["method"].startswith("resource.getrusage")
    assert set(check["ms_per_request"]) == LOAD_MODES
    assert result["notes"] == []  # nothing trained, nothing skipped


def test_layers_rows_measure_each_door_without_a_model(tmp_path):
    out = tmp_path / "bench.json"
    proc = _bench(
        "--modes", "layers", "--quick", "--layers-concurrency", "4",
        "--duration", "0.5", "--warmup", "0.3", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert "Which layer costs what" in proc.stdout
    records = json.loads(out.read_text())["records"]
    assert [r["layer"] for r in records] == [
        "uvicorn", "bentoml-asgi", "bentoml-api", "grpc", "grpc-sync",
    ]
    for r in records:
        assert r["errors"] == 0 and r["requests"] > 0, r["error_examples"]
        assert r["concurrency"] == 4 and r["server_ms_per_request"] > 0, r
    bentoml = next(r for r in records if r["layer"] == "bentoml-api")
    assert "worker 1" in bentoml["server_cpu_by_process"]


def test_targets_of_issue_8_are_evaluated_from_the_records():
    def load(model, mode, concurrency, throughput, p50, p99, items=1) -> dict:
        return {"model": model, "mode": mode, "concurrency": concurrency, "batch_size": None,
                "items": items, "throughput": throughput, "p50_ms": p50, "p99_ms": p99,
                "errors": 0, "generator_cpu": 0.3, "generator_ms_per_request": 0.25}  # fmt: skip

    def ceiling(model, batch, throughput, p50) -> dict:
        return {"model": model, "mode": "ceiling", "concurrency": None, "batch_size": batch,
                "items": None, "throughput": throughput, "p50_ms": p50}  # fmt: skip

    records = [
        ceiling("imdb", 1, 500.0, 2.0),
        ceiling("imdb", 32, 2400.0, 13.0),
        ceiling("imdb", 64, 3000.0, 20.0),
        load("imdb", "http", 1, 300.0, 3.0, 9.0),
        load("imdb", "tfserving", 1, 300.0, 3.6, 9.0),
        load("imdb", "grpc", 1, 330.0, 2.8, 8.0),
        load("imdb", "naive", 1, 140.0, 6.0, 12.0),
        load("imdb", "http", 64, 1300.0, 60.0, 140.0),
        load("imdb", "tfserving", 64, 1000.0, 62.0, 180.0),
        load("imdb", "grpc", 64, 1600.0, 40.0, 90.0),
        load("imdb", "naive", 64, 600.0, 100.0, 300.0),
        load("imdb", "grpc", 1, 1920.0, 16.0, 20.0, items=32),
        load("imdb", "http", 1, 1200.0, 26.0, 30.0, items=32),
        load("cifar", "grpc", 64, 4000.0, 15.0, 30.0),
        load("cifar", "naive", 64, 1000.0, 60.0, 200.0),
    ]
    summary = report.summarize(records, ("imdb", "cifar"))
    targets = {t["target"]: t for t in summary["targets"]}
    speedup = targets["imdb grpc c=64: throughput / naive"]
    assert speedup["value"] == pytest.approx(1600 / 600) and speedup["met"] is True
    assert targets["imdb http c=64: throughput / naive"]["met"] is True
    missed = targets["imdb tfserving c=64: throughput / naive"]
    assert missed["met"] is False and missed["gap"] == pytest.approx(1000 / 600 - 2)
    assert targets["cifar grpc c=64: throughput / naive"]["met"] is False  # 4x < 5x
    assert "cifar http c=64: throughput / naive" not in targets  # not measured
    assert targets["imdb grpc c=64: p99 ms"]["met"] is True
    assert targets["imdb tfserving c=64: p99 ms"]["gap"] == pytest.approx(30.0)
    assert targets["imdb http c=64: errors"]["met"] is True
    added = targets["imdb tfserving c=1: ms added to the in-process call (p50)"]
    assert added["value"] == pytest.approx(1.6) and added["met"] is False
    assert targets["imdb grpc c=1: ms added to the in-process call (p50)"]["met"] is True
    batched = "imdb {} c=1, 32 items/request: items/s / ceiling b=32"
    assert targets[batched.format("grpc")]["value"] == pytest.approx(0.8)
    assert targets[batched.format("http")]["met"] is False  # 0.5
    ratios = summary["ratios"]["imdb"]
    assert ratios["ceiling_peak_items_per_s"] == 3000.0
    assert ratios["by_concurrency"]["64"]["http_over_ceiling"] == pytest.approx(1300 / 3000)
    assert summary["generator_check"]["bottleneck_suspected"] is False
    rendered = report.render(
        {"machine": report.describe_machine(), "records": records, "summary": summary}
    )
    assert "| imdb | 64 |" in rendered and "MISSED (short by 0.33)" in rendered
    assert "| imdb | grpc | c=1 x32 |" in rendered


def test_the_cpu_by_thread_table_is_per_request_for_the_service_doors():
    grpc = {"model": "imdb", "mode": "grpc", "concurrency": 64, "batch_size": None, "items": 1,
            "throughput": 2000.0, "requests_per_s": 2000.0, "p50_ms": 30.0, "p99_ms": 90.0,
            "errors": 0, "server_cpu_by_thread": {"main": 0.6, "tensorflow": 0.4, "grpc": 0.08,
                                                  "other": 0.2}}  # fmt: skip
    naive = {**grpc, "mode": "naive", "server_cpu_by_thread": {"main": 1.0}}
    rendered = report.render({"machine": report.describe_machine(), "records": [grpc, naive],
                              "summary": {}})  # fmt: skip
    assert "CPU per request by thread" in rendered
    # 0.6 cores at 2,000 requests/s: 0.3 ms of event loop per request; the naive server's
    # row is not the service's and is not in this table.
    assert "| imdb | grpc | c=64 | 0.300 | 0.200 | 0.040 | 0.100 | 0.640 |" in rendered
    assert rendered.count("| imdb | naive | c=64 |") == 1  # the main table only
