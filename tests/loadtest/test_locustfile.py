"""Headless Locust runs of ``loadtest/locustfile.py``: both protocols against the real
server, and HTTP against a server answering 200 with wrong bodies.

Locust runs in a subprocess: importing it here would gevent-patch the whole test session.
"""

from __future__ import annotations

import csv
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).parent / "locust"


def run_locust(
    host: str, csv_prefix: Path, *extra: str, run_time: str = "5s"
) -> subprocess.CompletedProcess:
    """The command ``make loadtest`` runs, with few users for a few seconds."""
    command = [
        str(LOCUST), "-f", str(ROOT / "loadtest" / "locustfile.py"), "--headless",
        "--host", host, "--users", "6", "--spawn-rate", "6", "--run-time", run_time,
        "--csv", str(csv_prefix), "--html", f"{csv_prefix}.html",
        "--exit-code-on-error", "1", "--stop-timeout", "10", "--only-summary", *extra,
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120
    )


def stats_rows(csv_prefix: Path) -> list[dict[str, str]]:
    with open(f"{csv_prefix}_stats.csv", newline="") as stats:
        return list(csv.DictReader(stats))


@pytest.mark.integration
def test_both_protocols_run_without_failures(server, tmp_path):
    prefix = tmp_path / "locust"
    proc = run_locust(server.url, prefix, "--grpc-host", f"127.0.0.1:{server.grpc_port}")
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"

    rows = stats_rows(prefix)
    total = next(r for r in rows if r["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0, proc.stderr[-5000:]
    named = [r for r in rows if r["Name"] != "Aggregated"]
    assert {"POST", "grpc"} <= {r["Type"] for r in named}
    assert any(r["Type"] == "grpc" and r["Name"].startswith("Predict ") for r in named)
    assert Path(f"{prefix}.html").stat().st_size > 0


class WrongBodies(http.server.BaseHTTPRequestHandler):
    """Answers every POST with 200 and a body that answers nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"results": [], "forecast": [], "translations": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_200_with_a_wrong_body_fails_the_request_and_the_run(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WrongBodies)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        prefix = tmp_path / "locust"
        host = f"http://127.0.0.1:{server.server_address[1]}"
        proc = run_locust(host, prefix, "--tags", "http", run_time="3s")
    finally:
        server.shutdown()
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = stats_rows(prefix)
    total = next(r for r in rows if r["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0
    assert total["Failure Count"] == total["Request Count"]
    assert {r["Type"] for r in rows if r["Name"] != "Aggregated"} == {"POST"}  # --tags http
    with open(f"{prefix}_failures.csv", newline="") as failures:
        messages = " ".join(row["Error"] for row in csv.DictReader(failures))
    assert "results for" in messages or "horizon" in messages
