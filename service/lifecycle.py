"""A worker's life around its engine: readiness shared by every worker of one server.

Typical usage::

    peers = PeerReadiness(workers, bentoml.server_context.worker_index, os.getppid())
    peers.mark_ready()            # once this worker's models are warm
    peers.all_ready()             # /readyz and gRPC health
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class PeerReadiness:
    """Readiness of the whole server, not just this worker: every worker of one ``bentoml
    serve`` leaves a marker (its pid) in a directory named after their common parent once
    its models are warm, and the server is ready when every worker's marker names a live
    process. Kubernetes then sends no traffic to a pod whose other workers still load.
    """

    def __init__(self, workers: int, worker_index: int | None, parent_pid: int) -> None:
        self.workers = workers if worker_index is not None else 1
        self.worker_index = worker_index or 1
        self.directory = Path(tempfile.gettempdir()) / f"keras-serving-ready-{parent_pid}"
        self.marked = False

    def mark_ready(self) -> None:
        """Records that this worker's models are warm (once)."""
        if self.marked:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        marker = self.directory / f"worker-{self.worker_index}"
        temporary = marker.with_suffix(".tmp")
        temporary.write_text(str(os.getpid()))
        temporary.replace(marker)  # atomic: a reader never sees a half-written pid
        self.marked = True

    def withdraw(self) -> None:
        """This worker is shutting down: removes its marker (and the directory, once empty)."""
        self.marked = False
        (self.directory / f"worker-{self.worker_index}").unlink(missing_ok=True)
        try:
            self.directory.rmdir()
        except OSError:  # other workers' markers are still there
            pass

    def all_ready(self) -> bool:
        """Every worker has marked itself ready and is still alive."""
        if self.workers == 1:
            return self.marked
        for index in range(1, self.workers + 1):
            try:
                pid = int((self.directory / f"worker-{index}").read_text())
                os.kill(pid, 0)
            except (OSError, ValueError):
                return False
        return True
