"""Server subprocesses and what they are doing: free loopback ports, readiness, clean
shutdown, and inspection (workers by ``--worker-id``, CPU and RSS per process, CPU by kind
of thread, listening sockets, the machine's busy CPU).

Every server runs in its own process group, so stopping it reaches every worker that
``bentoml serve`` forks; what it prints goes to a log file that errors quote.

Typical usage::

    with ServerProcess(["bentoml", "serve", "--port", str(port)], ready_url=url + "/readyz",
                       log=Path("reports/serve.log")) as server:
        ...
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import psutil

LOOPBACK = "127.0.0.1"


def _exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """Turns SIGTERM (``timeout``, CI, ``kill``) into ``SystemExit`` in this process, so
    that every ``finally`` that stops a server runs: Python's default dies at once and
    leaves the servers it started running. Only from the main thread, and only where
    nobody installed a handler of their own."""
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _exit)


def alive(process: psutil.Process) -> bool:
    """Whether ``process`` still runs (a zombie, waiting to be reaped, does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


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


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has spent (all CPUs), idle and iowait excluded."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def listeners(port: int) -> int:
    """TCP sockets listening on ``port`` (any address), from ``/proc/net/tcp{,6}``."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` has a socket listening on ``port``."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)


def worker_processes(pid: int) -> dict[int, psutil.Process]:
    """The live workers of the ``bentoml serve`` process ``pid``, by BentoML's ``--worker-id``."""
    found = {}
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return {}
    for child in children:
        try:
            worker = _flag(child.cmdline(), "--worker-id")
            if worker is not None and child.status() != psutil.STATUS_ZOMBIE:
                found[int(worker)] = child
        except (psutil.NoSuchProcess, ValueError):
            continue
    return found


async def wait_closed(port: int, before: int, timeout: float = 10.0) -> float:
    """When fewer than ``before`` sockets listen on ``port``: a killed worker first frees its
    memory (10-200 ms for one holding models) and only then closes its files, so until then
    its gRPC socket still takes connections (and resets them when it closes)."""
    deadline = time.monotonic() + timeout
    while listeners(port) >= before and time.monotonic() < deadline:
        await asyncio.sleep(0.002)
    return time.monotonic()


async def wait_replacement(server: Any, index: int, dead: int, timeout: float) -> float | None:
    """When the replacement of worker ``index`` was warm (its readiness marker names it) and
    listening on the gRPC port; None after ``timeout`` seconds. ``server`` is a
    :class:`loadtest.live_server.Server`."""
    from service.runtime_files import server_directory_path

    marker = server_directory_path(server.pid) / f"worker-{index}"
    port = int(server.grpc_target.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replacement = server.worker_processes().get(index)
        if replacement is not None and replacement.pid != dead:
            try:
                marked = int(marker.read_text()) == replacement.pid
            except (OSError, ValueError):
                marked = False
            if marked and listens(replacement.pid, port):
                return time.monotonic()
        await asyncio.sleep(0.05)
    return None


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
    name = _flag(command, "--service-name") or (Path(command[0]).name if command else "?")
    # Ray retitles a worker per task (``ray::Actor.method``): one name, or a window's delta
    # would count a name seen only at its end from zero.
    return name.partition(".")[0] if name.startswith("ray::") else name


def _tree(pid: int) -> list[psutil.Process]:
    """``pid`` and every process under it (empty once ``pid`` is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _by_process(pid: int, measure: Callable[[psutil.Process], float]) -> dict[str, float]:
    """``measure`` summed per process name over the tree of ``pid``."""
    processes = _tree(pid)
    found: dict[str, float] = {}
    for process in processes:
        try:
            name = _process_name(process.cmdline(), process is processes[0])
            found[name] = found.get(name, 0) + measure(process)
        except psutil.NoSuchProcess:
            continue
    return found


def cpu_by_process(pid: int) -> dict[str, float]:
    """CPU seconds so far per process of the tree of ``pid``: ``arbiter`` and ``worker N`` for
    ``bentoml serve``, ``main`` for a plain server (helpers under their program's name)."""
    return _by_process(pid, lambda p: sum(p.cpu_times()[:2]))  # user + system


# What a server's threads are, by the name the kernel knows them by (``/proc/.../comm``).
THREAD_KINDS = ("main", "tensorflow", "grpc", "other")


def thread_kind(tid: int, pid: int, comm: str) -> str:
    """``main`` (the process's first thread: a worker's event loop), ``tensorflow`` (its op
    pools, ``tf_*``), ``grpc`` (gRPC core's C threads: ``event_engine``, ``grpc_*``) or
    ``other`` (Python threads: the model's runner, grpc.aio's poller, executors)."""
    if tid == pid:
        return "main"
    if comm.startswith("tf_"):
        return "tensorflow"
    if comm.startswith(("event_engine", "grpc")):
        return "grpc"
    return "other"


def cpu_by_thread(pid: int) -> dict[str, float]:
    """CPU seconds so far of the tree of ``pid``, summed by :func:`thread_kind` over its
    processes' live threads (Linux ``/proc``; a thread that has ended is no longer counted,
    so a difference over a window holds for a server's long-lived threads)."""
    processes = _tree(pid)
    if not processes:
        return {}
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    found = dict.fromkeys(THREAD_KINDS, 0.0)
    for process in (p.pid for p in processes):
        try:
            tids = os.listdir(f"/proc/{process}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                comm = Path(f"/proc/{process}/task/{tid}/comm").read_text().strip()
                # Fields after "(comm)": state is the 1st, utime the 12th, stime the 13th.
                fields = Path(f"/proc/{process}/task/{tid}/stat").read_text().rsplit(")", 1)[1]
                utime, stime = fields.split()[11:13]
            except (OSError, ValueError):
                continue  # the thread ended meanwhile
            kind = thread_kind(int(tid), process, comm)
            found[kind] += (int(utime) + int(stime)) / ticks
    return found


def rss_by_process(pid: int) -> dict[str, int]:
    """Resident memory in bytes per process of the tree, named as in :func:`cpu_by_process`."""
    return _by_process(pid, lambda p: p.memory_info().rss)  # type: ignore[return-value]


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

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, wait: bool = True) -> None:
        """Starts the server and (with ``wait``) waits until it is ready.

        Raises:
            RuntimeError: it exited, or was not ready in time (the log's tail says why).
        """
        exit_on_sigterm()
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
            if wait:
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

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds so far per process of the tree (:func:`cpu_by_process`)."""
        return cpu_by_process(self.proc.pid) if self.proc is not None else {}

    def cpu_by_thread(self) -> dict[str, float]:
        """CPU seconds so far by kind of thread over the tree (:func:`cpu_by_thread`)."""
        return cpu_by_thread(self.proc.pid) if self.proc is not None else {}

    def rss_by_process(self) -> dict[str, int]:
        """Resident bytes per process of the tree (:func:`rss_by_process`)."""
        return rss_by_process(self.proc.pid) if self.proc is not None else {}

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL to whatever is left after 30 s, then kills
        any child left: circus starts each ``bentoml serve`` worker in a session of its own,
        so a SIGKILL to the group would orphan them."""
        if self.proc is None:
            return
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        stop_process_group(self.proc)
        for child in children:
            if alive(child):
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    continue
