"""What the machine did over a measured window, beside the load generator's own numbers.

The service's ``/metrics`` histograms (through :class:`loadtest.generator.MetricsDelta`),
the CPU of each server process (when the benchmark started the server) and the busy CPU of
the whole machine, so that a run disturbed by other processes shows in the report.

Typical usage::

    probe = WindowProbe(MetricsDelta(url, "imdb"), server)
    run = await measure(call, client, 64, 10, 2, on_window=probe.at)
    probe.server_cpu_by_process      # {"arbiter": 0.01, "worker 1": 0.93, "worker 2": 0.91}
    probe.server_cpu_by_thread       # {"main": 0.9, "tensorflow": 0.5, "grpc": 0.1, "other": 0.3}
"""

from __future__ import annotations

import time

from loadtest.generator import MetricsDelta
from loadtest.procs import ServerProcess, machine_busy_seconds


class WindowProbe:
    """Edges of one measured window: ``/metrics`` totals, CPU per server process, machine CPU.

    Args:
        metrics: The service's metrics for one model, or None (not the service).
        server: The server's process tree, or None (not started by the benchmark).
    """

    def __init__(self, metrics: MetricsDelta | None, server: ServerProcess | None) -> None:
        self.metrics = metrics
        self.server = server
        self.edges: dict[str, tuple[dict[str, float] | None, float, float]] = {}
        self.threads: dict[str, dict[str, float]] = {}

    async def at(self, edge: str) -> None:
        if self.metrics is not None:
            await self.metrics.scrape(edge)
        server = self.server.cpu_by_process() if self.server is not None else None
        if self.server is not None:
            self.threads[edge] = self.server.cpu_by_thread()
        self.edges[edge] = (server, machine_busy_seconds(), time.perf_counter())

    def _wall(self) -> float:
        return self.edges["end"][2] - self.edges["start"][2]

    @property
    def server_cpu_by_process(self) -> dict[str, float] | None:
        """Each server process's CPU seconds per second (1.0 = one core busy)."""
        if len(self.edges) != 2 or self.edges["start"][0] is None:
            return None
        start, end = self.edges["start"][0], self.edges["end"][0]
        wall = self._wall()
        return {name: (end[name] - start.get(name, 0.0)) / wall for name in sorted(end)}

    @property
    def server_cpu_by_thread(self) -> dict[str, float] | None:
        """The server's CPU seconds per second by kind of thread (``main``, ``tensorflow``,
        ``grpc``, ``other``: :func:`loadtest.procs.thread_kind`), or None when unknown."""
        start, end = self.threads.get("start"), self.threads.get("end")
        if not start or not end:  # no server process, or it was gone at an edge
            return None
        wall = self._wall()
        return {kind: max(0.0, end[kind] - start.get(kind, 0.0)) / wall for kind in end}

    @property
    def server_cpu(self) -> float | None:
        """The server's CPU seconds per second (2.0 = two cores busy), or None when unknown."""
        by_process = self.server_cpu_by_process
        return sum(by_process.values()) if by_process is not None else None

    @property
    def machine_cpu(self) -> float | None:
        """Busy CPU seconds per second over the whole machine (generator and server included)."""
        if len(self.edges) != 2:
            return None
        return (self.edges["end"][1] - self.edges["start"][1]) / self._wall()
