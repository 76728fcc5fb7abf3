"""Server subprocesses for the benchmark: free loopback ports, readiness, clean shutdown.

Every server runs in its own process group, so stopping it reaches every worker that
``bentoml serve`` forks; what it prints goes to a log file that errors quote.

Typical usage::

    with ServerProcess(["bentoml", "serve", "--port", str(port)], ready_url=url + "/readyz",
                       log=Path("reports/serve.log")) as server:
        ...
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

import psutil

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port that was free on the loopback interface a moment ago."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM a process started with ``start_new_session=True`` and its whole group (a
    ``bentoml serve`` arbiter and its workers); SIGKILL whatever is left after 30 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def _flag(command: list[str], flag: str) -> str | None:
    if flag in command and command.index(flag) + 1 < len(command):
        return command[command.index(flag) + 1]
    return None


def _process_name(command: list[str], is_root: bool) -> str:
    """``arbiter`` for a ``bentoml serve`` root, ``worker N`` for its workers (BentoML's
    ``--worker-id``), ``main`` for any other root, else the program's name."""
    if is_root:
        return "arbiter" if any(Path(part).name == "bentoml" for part in command[:2]) else "main"
    worker = _flag(command, "--worker-id")
    if worker is not None:
        return f"worker {worker}"
    return _flag(command, "--service-name") or (Path(command[0]).name if command else "?")


def _answers(url: str) -> bool:
    """``http://...`` answers 200, or ``tcp://host:port`` accepts a connection."""
    if url.startswith("tcp://"):
        host, _, port = url.removeprefix("tcp://").rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return True
        except OSError:
            return False
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class ServerProcess:
    """A server started in its own process group, ready once ``ready_url`` answers 200
    (or, for a ``tcp://host:port`` URL, accepts connections)."""

    def __init__(
        self,
        command: list[str],
        ready_url: str,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 600.0,
    ) -> None:
        self.command = command
        self.ready_url = ready_url
        self.log = log
        self.env = env
        self.cwd = cwd
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Starts the server and waits until it is ready.

        Raises:
            RuntimeError: it exited, or was not ready in time (the log's tail says why).
        """
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.command[0]} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            if _answers(self.ready_url):
                return
            time.sleep(0.5)
        raise RuntimeError(f"{self.ready_url} not ready after {self.timeout:.0f}s:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        """The end of the server's log."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by the server and all its children."""
        return sum(self.cpu_by_process().values())

    def _processes(self) -> list[tuple[str, psutil.Process]]:
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        named = []
        for process in processes:
            try:
                named.append((_process_name(process.cmdline(), process is root), process))
            except psutil.NoSuchProcess:
                continue
        return named

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds so far per process of the tree: ``arbiter`` and ``worker N`` for
        ``bentoml serve``, ``main`` for a plain server (helpers under their program's name)."""
        seconds: dict[str, float] = {}
        for name, process in self._processes():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            seconds[name] = seconds.get(name, 0.0) + times.user + times.system
        return seconds

    def rss_by_process(self) -> dict[str, int]:
        """Resident memory in bytes per process of the tree, named as in :meth:`cpu_by_process`."""
        rss: dict[str, int] = {}
        for name, process in self._processes():
            try:
                rss[name] = rss.get(name, 0) + process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return rss

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL to whatever is left after 30 s."""
        if self.proc is not None:
            stop_process_group(self.proc)
