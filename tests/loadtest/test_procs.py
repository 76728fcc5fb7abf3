"""``loadtest.procs.ServerProcess``: a script that is sent SIGTERM still stops its servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from loadtest.procs import ServerProcess, free_port

    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    log = Path(sys.argv[1])
    with ServerProcess(command, f"http://127.0.0.1:{port}/", log, None, sys.argv[2]) as server:
        print(server.proc.pid, flush=True)
        time.sleep(120)
    """
)


def test_a_script_sent_sigterm_stops_the_server_it_started(tmp_path) -> None:
    script = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "server.log"), str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    server_pid = 0
    try:
        assert script.stdout is not None
        server_pid = int(script.stdout.readline())
        assert psutil.pid_exists(server_pid)
        script.send_signal(signal.SIGTERM)  # what `timeout` or CI sends
        assert script.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while psutil.pid_exists(server_pid) and time.monotonic() < deadline:
            try:
                if psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.1)
        alive = psutil.pid_exists(server_pid) and (
            psutil.Process(server_pid).status() != psutil.STATUS_ZOMBIE
        )
        assert not alive, "the server outlived the script that started it"
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
        if server_pid and psutil.pid_exists(server_pid):  # the failure this test is about
            os.killpg(server_pid, signal.SIGKILL)  # its own session: ServerProcess starts it so
