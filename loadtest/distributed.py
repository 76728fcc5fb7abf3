"""Locust's distributed mode on one machine: a master and N local worker processes.

``make loadtest WORKERS=N`` runs this: N ``locust --worker`` processes connect to a headless
``locust --master --expect-workers N`` on 127.0.0.1, which starts the run once all of them
have joined, sends them the users and the custom options (``--grpc-host``), collects their
stats into one CSV / HTML report, and tells them to quit at the end. One Locust process
drives about one core, so this is how a load generator gets past one core's worth of
requests; workers on other machines join the same master (README, "Load tests").

Typical usage::

    python -m loadtest.distributed --workers 4 -- --host http://127.0.0.1:3000 \\
        --grpc-host 127.0.0.1:8500 --users 64 --spawn-rate 16 --run-time 60s
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from loadtest.procs import LOOPBACK, free_port

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"


def commands(workers: int, port: int, locust_args: list[str]) -> tuple[list[str], list[str]]:
    """The master's command and one worker's command."""
    locust = str(Path(sys.executable).parent / "locust")
    master = [
        locust, "-f", str(LOCUSTFILE), "--master", "--headless",
        "--master-bind-host", LOOPBACK, "--master-bind-port", str(port),
        "--expect-workers", str(workers), *locust_args,
    ]  # fmt: skip
    worker = [
        locust, "-f", str(LOCUSTFILE), "--worker",
        "--master-host", LOOPBACK, "--master-port", str(port),
    ]  # fmt: skip
    return master, worker


def run(workers: int, locust_args: list[str], port: int = 0) -> int:
    """Starts the workers, runs the master to its end, and stops any worker left.

    Args:
        workers: local worker processes (``--expect-workers`` in ``locust_args`` may ask
            for more, from other machines).
        locust_args: the master's options (host, users, run time, reports...).
        port: the master's port for workers (0 = any free one; remote workers need a
            known one, e.g. Locust's default 5557).

    Returns:
        The master's exit code (non-zero on failed requests with ``--exit-code-on-error``).
    """
    master_command, worker_command = commands(workers, port or free_port(), locust_args)
    started = [subprocess.Popen(worker_command, cwd=ROOT) for _ in range(workers)]
    try:
        return subprocess.run(master_command, cwd=ROOT, check=False).returncode
    finally:
        for worker in started:  # they quit when the master does; these are the stragglers
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, required=True, help="local worker processes")
    parser.add_argument("--port", type=int, default=0, help="master port (0: any free one)")
    parser.add_argument("locust_args", nargs=argparse.REMAINDER, help="-- then master options")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    extra = args.locust_args[1:] if args.locust_args[:1] == ["--"] else args.locust_args
    return run(args.workers, extra, args.port)


if __name__ == "__main__":
    sys.exit(main())
