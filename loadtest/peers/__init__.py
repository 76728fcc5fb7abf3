"""The peers of the benchmark: the same imdb SavedModel served by plain BentoML, LitServe
and Ray Serve, each as its docs show batching, with two workers or replicas.

Each peer is one short server file here (``bentoml_peer.py``, ``litserve_peer.py``,
``rayserve_peer.py``, all loading the model through ``peer_model.py``) run from a virtual
environment of its own, ``.bench/<peer>/``, created with ``python -m venv`` and the pins of
:data:`PEERS` the first time the peer is asked for (TensorFlow included: ~600 MB of
wheels per venv). :func:`serve_peer` starts one on
a free loopback port in its own process group and stops the group on exit, even on failure.
Every peer takes the generator's friendly imdb body, ``{"texts": [review]}``, on
``POST /predict``; :func:`peer_call` checks its answer as the service's is checked.

Typical usage::

    python -m loadtest.peers                     # make bench-peers-smoke: each peer, briefly
    python -m loadtest.bench --models imdb --modes naive,http,bentoml,litserve,rayserve
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest import checks, payloads
from loadtest.doors import Call
from loadtest.doors import post_call
from loadtest.procs import LOOPBACK, ServerProcess, alive, free_port
from loadtest.targets import PEERS as NAMES

HERE = Path(__file__).resolve().parent
BENCH_DIR = HERE.parents[1] / ".bench"
MODELS = ("imdb",)  # what the peer servers load (peer_model.py)
PATH = "/predict"
WORKERS = 2  # each peer's workers or replicas
# Every peer's venv: TensorFlow and NumPy as the project pins them (pyproject.toml).
COMMON = ("tensorflow==2.21.0", "numpy==2.4.6")


@dataclass(frozen=True)
class Peer:
    """One peer: its pinned requirements, how its server starts, where it says ready."""

    requirements: tuple[str, ...]
    command: Callable[[Path, int, Path], list[str]]  # (venv, port, temp dir) -> argv
    ready: str  # a GET path answering 200 once the peer serves
    # A log line each worker prints once it serves, when ``ready`` answers for one worker.
    worker_ready: str = ""


PEERS = {
    # The project's own BentoML pin: the peer and the service run the same BentoML.
    "bentoml": Peer(
        ("bentoml==1.4.38", *COMMON),
        lambda venv, port, _: [
            str(venv / "bin" / "bentoml"), "serve", "bentoml_peer:ImdbPeer", "--working-dir",
            str(HERE), "--host", LOOPBACK, "--port", str(port),
        ],  # fmt: skip
        "/readyz",  # any one worker's: both must also log that they are initialized
        "Service ImdbPeer initialized",
    ),
    "litserve": Peer(
        ("litserve==0.2.19", *COMMON),
        lambda venv, port, _: [
            str(venv / "bin" / "python"), str(HERE / "litserve_peer.py"), "--port", str(port)
        ],
        "/health",
    ),
    "rayserve": Peer(
        ("ray[serve]==2.60.0", *COMMON),
        lambda venv, port, tmp: [
            str(venv / "bin" / "python"), str(HERE / "rayserve_peer.py"), "--port", str(port),
            "--temp-dir", str(tmp / "ray"),
        ],  # fmt: skip
        PATH,
    ),
}
assert tuple(PEERS) == NAMES, "loadtest.targets.PEERS names the same peers"


def ensure_venv(name: str, root: Path | None = None) -> Path:
    """``root/name`` (default ``.bench/<name>``), a venv with :data:`PEERS` ``[name]``'s
    pins, created (or re-created when the pins changed) if need be.

    Raises:
        subprocess.CalledProcessError: venv or pip failed (pip's output says why).
    """
    venv, pins = (root or BENCH_DIR) / name, "\n".join(PEERS[name].requirements) + "\n"
    stamp = venv / ".installed"
    if stamp.is_file() and stamp.read_text() == pins:
        return venv
    print(f"Installing the {name} peer into {venv} (once; pins: {pins.split()}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, *PEERS[name].requirements], check=True)
    stamp.write_text(pins)
    return venv


def saved_model(model: str) -> Path:
    """The SavedModel directory of ``model:latest`` in the BentoML store (``$BENTOML_HOME``)."""
    import bentoml

    return Path(bentoml.models.get(f"{model}:latest").path)


def peer_env(model_path: Path, home: Path) -> dict[str, str]:
    """A peer's environment: its own modules on the path, quiet TensorFlow, no telemetry, a
    ``BENTOML_HOME`` of its own (BentoML clears the Prometheus files under it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {
        **env,
        "PYTHONPATH": str(HERE),
        "PEER_SAVED_MODEL": str(model_path),
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "True",
        "RAY_USAGE_STATS_ENABLED": "0",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": env.get("CUDA_VISIBLE_DEVICES", ""),
    }


@contextlib.contextmanager
def serve_peer(
    name: str, model_path: Path, log: Path, root: Path | None = None
) -> Iterator[tuple[str, ServerProcess]]:
    """Peer ``name`` serving ``model_path`` on a free loopback port, ready; yields its base
    URL and process tree, and stops its process group (and any orphan) on exit."""
    venv = ensure_venv(name, root)
    port, tmp = free_port(), Path(tempfile.mkdtemp(prefix=f"peer-{name}-"))
    url = f"http://{LOOPBACK}:{port}"
    env = peer_env(model_path, tmp)
    command = PEERS[name].command(venv, port, tmp)
    try:
        with ServerProcess(command, url + PEERS[name].ready, log, env, HERE, 600) as server:
            _wait_workers(server, PEERS[name].worker_ready, WORKERS)
            yield url, server
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_workers(server: ServerProcess, line: str, workers: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while line and server.tail(1 << 30).count(line) < workers:
        if time.monotonic() > deadline or server.proc.poll() is not None:
            raise RuntimeError(f"not {workers} workers logging {line!r}:\n{server.tail()}")
        time.sleep(0.5)


def peer_call(model: str = "imdb") -> Call:
    """One review per request on ``POST /predict``, checked as the friendly door's answer
    is (a bare JSON list, BentoML's batchable answer, is the list of results)."""

    def check(body: bytes, _: str | None) -> None:
        answer = json.loads(body)
        answer = {"results": answer} if isinstance(answer, list) else answer
        checks.check(model, checks.from_json(model, answer), 1)

    return post_call(PATH, payloads.json_bodies(model, 1), check)


def smoke(names: tuple[str, ...], seconds: float = 3.0, log_dir: Path | None = None) -> int:
    """Each peer on imdb for ``seconds`` at 4 clients: every answer right, the server then
    stopped with nothing of its process tree left. Returns the failures."""
    import psutil

    from loadtest.generator import load_client, measure

    failures, model = 0, saved_model("imdb")
    for name in names:
        log = (log_dir or BENCH_DIR) / f"{name}-smoke.log"
        with serve_peer(name, model, log) as (url, server):
            tree = psutil.Process(server.proc.pid).children(recursive=True)

            async def load(url: str = url) -> Any:
                async with load_client("http", url, 4) as session:
                    return await measure(peer_call(), session, 4, seconds, 1.0)

            run = asyncio.run(load())
        _, survivors = psutil.wait_procs(tree, timeout=10)  # SIGKILLed a moment ago: reaped soon
        left = [p.pid for p in survivors if alive(p)]
        ok = run.requests > 0 and run.errors == 0 and not left
        failures += not ok
        print(
            f"{name}: {'ok' if ok else 'FAILED'}: {run.requests} answers, {run.errors} errors "
            f"{run.error_examples[:1]}, {len(tree)} child processes, left running: {left}",
            flush=True,
        )
    return failures
