"""``loadtest.procs``: a script that is sent SIGTERM still stops its servers; CPU by kind of
thread."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil

from loadtest.procs import THREAD_KINDS, cpu_by_thread, thread_kind

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


def test_threads_are_told_apart_by_id_and_kernel_name() -> None:
    assert thread_kind(7, 7, "python") == "main"
    assert thread_kind(8, 7, "tf_Compute") == "tensorflow"
    assert thread_kind(9, 7, "event_engine") == "grpc"
    assert thread_kind(10, 7, "grpc_global_tim") == "grpc"
    assert thread_kind(11, 7, "python") == "other"


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_cpu_by_thread_counts_the_main_thread_and_the_others_apart() -> None:
    before = cpu_by_thread(os.getpid())
    assert set(before) == set(THREAD_KINDS)
    _burn(0.3)
    burnt, release = threading.Event(), threading.Event()

    def work() -> None:  # burns, then stays alive: an ended thread leaves /proc/<pid>/task
        _burn(0.3)
        burnt.set()
        release.wait(10)

    worker = threading.Thread(target=work)
    worker.start()
    try:
        assert burnt.wait(10)
        after = cpu_by_thread(os.getpid())
    finally:
        release.set()
        worker.join()
    assert after["main"] - before["main"] >= 0.2
    assert after["other"] - before["other"] >= 0.2
    assert after["tensorflow"] == before["tensorflow"]
