"""``make loadtest WORKERS=N``: Locust's master and N local workers (loadtest/distributed.py)
against the real server, both protocols; the master's report has every worker's requests."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_a_master_and_two_workers_run_both_protocols_without_failures(server, tmp_path):
    prefix = tmp_path / "locust"
    command = [
        sys.executable, "-m", "loadtest.distributed", "--workers", "2", "--",
        "--host", server.url, "--grpc-host", f"127.0.0.1:{server.grpc_port}",
        "--users", "6", "--spawn-rate", "6", "--run-time", "6s", "--stop-timeout", "10",
        "--csv", str(prefix), "--exit-code-on-error", "1", "--only-summary",
        # The master starts only once both workers joined; if one never does, it gives up.
        "--expect-workers-max-wait", "60",
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=180
    )
    output = proc.stdout[-3000:] + proc.stderr[-5000:]
    assert proc.returncode == 0, output
    with open(f"{prefix}_stats.csv", newline="") as stats:
        rows = list(csv.DictReader(stats))
    total = next(r for r in rows if r["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0, output
    # The gRPC users ran on the workers: --grpc-host reached them from the master.
    assert {"POST", "grpc"} <= {r["Type"] for r in rows if r["Name"] != "Aggregated"}, output
