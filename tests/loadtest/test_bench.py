"""A short run of ``python -m loadtest.bench`` on imdb against the session's server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest import report

ROOT = Path(__file__).resolve().parents[2]
LOAD_MODES = {"naive", "http", "grpc"}
RECORD_KEYS = {
    "model", "mode", "concurrency", "batch_size", "requests", "errors", "throughput",
    "p50_ms", "p95_ms", "p99_ms", "mean_ms", "mean_batch_size", "queue_wait_ms", "execution_ms",
    "generator_cpu", "server_cpu",
}  # fmt: skip


@pytest.mark.integration
def test_quick_bench_writes_a_well_formed_report_without_errors(server, tmp_path):
    out = tmp_path / "bench.json"
    command = [
        sys.executable, "-m", "loadtest.bench", "--models", "imdb", "--quick",
        "--url", server.url, "--grpc", f"127.0.0.1:{server.grpc_port}",
        "--concurrency", "1,4", "--duration", "1", "--warmup", "0.5", "--batch-sizes", "1,4",
        "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "BENTOML_HOME": str(server.store.home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert "| imdb | grpc | c=4 |" in proc.stdout  # the printed table

    result = json.loads(out.read_text())
    records = result["records"]
    assert all(RECORD_KEYS <= set(r) for r in records)
    ceiling = [r for r in records if r["mode"] == "ceiling"]
    assert [r["batch_size"] for r in ceiling] == [1, 4]
    assert ceiling[0]["signature"] == "predict_text"
    loads = [r for r in records if r["mode"] in LOAD_MODES]
    assert {(r["mode"], r["concurrency"]) for r in loads} == {
        (m, c) for m in LOAD_MODES for c in (1, 4)
    }
    for r in loads:
        assert r["requests"] > 0 and r["throughput"] > 0, r
        assert r["errors"] == 0, r["error_examples"]
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"], r
        assert r["generator_cpu"] is not None
    for r in loads:
        if r["mode"] != "naive":
            assert r["mean_batch_size"] is not None and r["mean_batch_size"] >= 1, r
            assert r["queue_wait_ms"] >= 0 and r["execution_ms"] > 0, r

    machine = result["machine"]
    assert machine["cpu_count"] >= 1 and machine["cpu_model"] and machine["tensorflow"]
    summary = result["summary"]
    assert set(summary["ratios"]["imdb"]["by_concurrency"]) == {"1", "4"}
    assert {t["target"] for t in summary["targets"]} >= {
        "imdb HTTP c=4: errors",
        "imdb c=4: gRPC p50 / HTTP p50",
    }
    assert summary["generator_check"]["method"].startswith("resource.getrusage")
    assert result["notes"] == []  # nothing trained, nothing skipped


def test_targets_are_evaluated_from_the_records():
    def load(mode: str, concurrency: int, throughput: float, p50: float, p99: float) -> dict:
        return {"model": "imdb", "mode": mode, "concurrency": concurrency, "batch_size": None,
                "throughput": throughput, "p50_ms": p50, "p99_ms": p99, "errors": 0, "generator_cpu": 0.3}  # fmt: skip

    records = [
        {
            "model": "imdb",
            "mode": "ceiling",
            "concurrency": None,
            "batch_size": 1,
            "throughput": 500.0,
            "p50_ms": 2.0,
        },
        {
            "model": "imdb",
            "mode": "ceiling",
            "concurrency": None,
            "batch_size": 64,
            "throughput": 3000.0,
            "p50_ms": 20.0,
        },
        load("http", 1, 150.0, 4.5, 9.0),
        load("grpc", 1, 160.0, 4.0, 8.0),
        load("naive", 1, 140.0, 6.0, 12.0),
        load("http", 64, 1000.0, 60.0, 200.0),
        load("grpc", 64, 1100.0, 62.0, 180.0),
        load("naive", 64, 150.0, 400.0, 900.0),
    ]
    summary = report.summarize(records, ("imdb",))
    targets = {t["target"]: t for t in summary["targets"]}
    assert targets["imdb HTTP c=64: throughput vs naive"]["value"] == pytest.approx(1000 / 150)
    assert targets["imdb HTTP c=64: throughput vs naive"]["met"] is True
    assert targets["imdb HTTP c=64: p99 ms"]["met"] is True
    assert targets["imdb c=64: gRPC p50 / HTTP p50"]["met"] is False
    assert targets["imdb HTTP c=1: ms added to the in-process call"]["value"] == pytest.approx(2.5)
    assert targets["imdb GRPC c=1: ms added to the in-process call"]["met"] is True
    ratios = summary["ratios"]["imdb"]
    assert ratios["ceiling_peak_items_per_s"] == 3000.0
    assert ratios["by_concurrency"]["64"]["http_over_ceiling"] == pytest.approx(1 / 3)
    assert summary["generator_check"]["bottleneck_suspected"] is False
    assert "| imdb | 64 |" in report.render(
        {"machine": report.describe_machine(), "records": records, "summary": summary}
    )
