"""Shared session fixtures: a store of freshly trained models and a real ``bentoml serve``.

``trained_store`` runs the training CLI once per session (synthetic data, quick, one epoch)
into a temporary ``BENTOML_HOME``; ``server`` starts ``bentoml serve`` from the repository
root against that store (the load tests' launcher, :func:`loadtest.live_server.serve`), on
free loopback ports, waits for ``/readyz`` and always stops the whole process group and any
orphaned worker afterwards, even when a test fails. ``pki`` is the throwaway certificates
of every TLS test (gRPC TLS and mutual TLS, HTTPS).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import typing as t
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadtest.live_server import serve

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("reuters", "imdb", "cifar", "cosine", "mnist", "translator")
# Fewer batch buckets than the default (1,2,...,64) keep the server's XLA warm-up short.
TEST_BUCKETS = "1,4,16,64"


@dataclass(frozen=True)
class TrainedStore:
    home: Path  # BENTOML_HOME holding every model
    exports: Path  # <exports>/<model>/<version>/, the same SavedModels as in the store

    def export_path(self, model: str) -> Path:
        versions = sorted((self.exports / model).iterdir(), key=lambda p: int(p.name))
        return versions[-1]


@dataclass(frozen=True)
class Pki:
    """Throwaway PEM files: a CA; a server certificate it signed for ``localhost`` and
    ``127.0.0.1``; a client certificate it signed; a "rogue" self-signed client certificate
    no CA here vouches for."""

    ca: Path
    server: Path  # certificate; the key is server_key
    server_key: Path
    client: Path
    client_key: Path
    rogue: Path
    rogue_key: Path

    @classmethod
    def in_folder(cls, d: Path) -> Pki:
        return cls(
            d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem",
            d / "client.key", d / "rogue.pem", d / "rogue.key",
        )  # fmt: skip


@dataclass(frozen=True)
class RunningServer:
    url: str  # http://127.0.0.1:<port>
    grpc_port: int  # GRPC_PORT given to the server (for the gRPC door)
    log: Path  # the server's stdout and stderr
    store: TrainedStore
    pid: int  # the `bentoml serve` process (its children are the workers)


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "BENTOML_HOME": str(home),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        "BENTOML_DO_NOT_TRACK": "True",
        **extra,
    }


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> TrainedStore:
    """Every model trained once (synthetic, --quick, 1 epoch) and registered in a fresh store.

    ``TEST_STORE=DIR`` reuses a store trained earlier the same way into ``DIR/home`` and
    ``DIR/exports`` (a developer's shortcut when iterating; CI always trains afresh).
    """
    reuse = os.environ.get("TEST_STORE")
    if reuse:
        return TrainedStore(home=Path(reuse) / "home", exports=Path(reuse) / "exports")
    home = tmp_path_factory.mktemp("bentoml_home")
    exports = tmp_path_factory.mktemp("exports")
    command = [sys.executable, "-m", "training", "all", "--synthetic", "--quick", "--epochs", "1"]
    proc = subprocess.run(
        [*command, "--out", str(exports)],
        cwd=ROOT,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, f"training failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return TrainedStore(home=home, exports=exports)


@contextlib.contextmanager
def start_server(
    store: TrainedStore, log: Path, wait: bool = True, **settings: str
) -> Iterator[tuple[RunningServer, subprocess.Popen]]:
    """``bentoml serve`` through the load tests' launcher (:func:`loadtest.live_server.serve`:
    free loopback ports, a home of its own linked to ``store``'s models) with extra
    ``SERVICE_*`` settings; its process group is stopped and any orphaned worker killed on
    exit, even on failure.

    Args:
        wait: wait until ``/readyz`` is 200 before yielding.
    """
    with serve(store=store.home, log=log, wait=wait, **settings) as server:
        assert server.process.proc is not None
        running = RunningServer(server.url, server.grpc_port, log, store, server.pid)
        yield running, server.process.proc


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The certificates of :class:`Pki`, made once per session with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    d = tmp_path_factory.mktemp("pki")
    key = ("-newkey", "rsa:2048", "-nodes", "-days", "1")
    _openssl("req", "-x509", *key, "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.pem",
             cwd=d)  # fmt: skip
    extensions = {
        "server": "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for name, extension in extensions.items():
        _openssl("req", "-new", *key[:3], "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)  # fmt: skip
        (d / f"{name}.ext").write_text(extension)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
                 cwd=d)  # fmt: skip
    _openssl("req", "-x509", *key, "-subj", "/CN=rogue", "-keyout", "rogue.key",
             "-out", "rogue.pem", cwd=d)  # fmt: skip
    return Pki.in_folder(d)


@pytest.fixture(scope="session")
def reference(trained_store: TrainedStore) -> t.Callable[..., dict[str, t.Any]]:
    """``reference(model, signature, array)``: the exported SavedModel called in this process,
    the answer every door must match."""
    import tensorflow as tf

    @functools.cache
    def load(model: str) -> t.Any:
        return tf.saved_model.load(str(trained_store.export_path(model)))

    def call(model: str, signature: str, array: t.Any) -> dict[str, t.Any]:
        function = load(model).signatures[signature]
        (name,) = function.structured_input_signature[1]
        return {k: v.numpy() for k, v in function(**{name: tf.constant(array)}).items()}

    return call


@pytest.fixture(scope="session")
def server(
    trained_store: TrainedStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """``bentoml serve`` on free ports, ready and warmed up (default settings but buckets)."""
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with start_server(trained_store, log, SERVICE_BATCH_BUCKETS=TEST_BUCKETS) as (running, _):
        yield running


@pytest.fixture(scope="session")
def server_factory() -> t.Callable[..., t.ContextManager[tuple[RunningServer, subprocess.Popen]]]:
    """:func:`start_server`, for tests that need a server with settings of their own."""
    return start_server
