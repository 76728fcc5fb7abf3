"""Model versions and labels (issue 9) through ``clients`` against a real ``bentoml serve``:
imdb versions 1 and 2 side by side (labels stable -> 1, canary -> 2) and a version 3 that
fails to load, on both transports; labels moved with ``reload_config`` over gRPC."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clients import __main__ as cli
from clients import errors
from clients import grpc as grpc_client
from clients import http as http_client
from clients.types import VersionStatus

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["a wonderful film <br /> with brilliant actors", "bad"]
TRANSPORTS = ("http", "grpc")
ADMIN_TOKEN = "versions-admin-token"  # SERVICE_ADMIN_TOKEN: reloads need it
CONFIG = "models:\n  imdb:\n    versions: all\n    labels: {stable: 1, canary: 2}\n"
REGISTER = """
import json, sys
from pathlib import Path
from training.registry import register_export

for path in sys.argv[1:]:
    print(register_export(Path(path), json.loads((Path(path) / "metadata.json").read_text())))
"""


def _copy_version(source: Path, exports: Path, version: int) -> Path:
    """The export at `source` as version `version` of imdb under `exports`."""
    target = exports / "imdb" / str(version)
    shutil.copytree(source, target)
    metadata = json.loads((target / "metadata.json").read_text())
    (target / "metadata.json").write_text(json.dumps({**metadata, "version": version}))
    return target


@pytest.fixture(scope="module")
def versioned_store(trained_store, tmp_path_factory):
    """A store with imdb only: the trained version 1, the same weights registered as
    version 2, and a version 3 whose saved_model.pb is cut short (it cannot load)."""
    tmp = tmp_path_factory.mktemp("versions")
    home, exports = tmp / "home", tmp / "exports"
    shutil.copytree(trained_store.home / "models" / "imdb", home / "models" / "imdb")
    source = trained_store.export_path("imdb")
    shutil.copytree(source, exports / "imdb" / "1")
    second = _copy_version(source, exports, 2)
    broken = _copy_version(source, exports, 3)
    graph = broken / "saved_model.pb"
    graph.write_bytes(graph.read_bytes()[:100])
    proc = subprocess.run(
        [sys.executable, "-c", REGISTER, str(second), str(broken)],
        cwd=ROOT,
        env={**os.environ, "BENTOML_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return type(trained_store)(home=home, exports=exports)


@pytest.fixture(scope="module")
def server(versioned_store, server_factory, tmp_path_factory) -> Iterator:
    """One worker (a config reload reaches the worker that receives it), imdb only."""
    tmp = tmp_path_factory.mktemp("versions_server")
    (tmp / "models.yaml").write_text(CONFIG)
    with server_factory(
        versioned_store,
        tmp / "serve.log",
        SERVICE_MODELS="imdb",
        SERVICE_WORKERS="1",
        SERVICE_MODEL_CONFIG=str(tmp / "models.yaml"),
        SERVICE_POLL_S="0",
        SERVICE_BATCH_BUCKETS="1,4",  # two texts at a time: two buckets, a short warm-up
        SERVICE_ADMIN_TOKEN=ADMIN_TOKEN,
    ) as (running, _):
        yield running


def make_client(server, transport: str, asynchronous: bool = False):
    module = http_client if transport == "http" else grpc_client
    cls = module.AsyncClient if asynchronous else module.Client
    if transport == "http":
        return cls(server.url, timeout=60, retry=1)
    return cls(f"127.0.0.1:{server.grpc_port}", timeout=60, retry=1, admin_token=ADMIN_TOKEN)


@pytest.fixture(scope="module", params=TRANSPORTS)
def client(request, server):
    with make_client(server, request.param) as client:
        yield client


@pytest.mark.parametrize(
    ("kwargs", "answered"),
    [({}, 2), ({"version": 1}, 1), ({"version": 2}, 2), ({"label": "stable"}, 1), ({"label": "canary"}, 2)],
    ids=["latest", "version-1", "version-2", "stable", "canary"],
)  # fmt: skip
def test_results_name_the_version_that_answered(client, kwargs, answered) -> None:
    results = client.sentiment(TEXTS, **kwargs)
    assert [(r.model.name, r.model.version) for r in results] == [("imdb", answered)] * 2
    assert client.metadata("imdb", **kwargs).version == answered


def test_versions_with_the_same_weights_answer_alike(client) -> None:
    one = client.sentiment(TEXTS, version=1)
    two = client.sentiment(TEXTS, label="canary")
    assert [r.label for r in one] == [r.label for r in two]
    np.testing.assert_allclose(
        [r.probability for r in one], [r.probability for r in two], atol=1e-6
    )


@pytest.mark.parametrize("kwargs", [{"version": 1}, {"label": "canary"}], ids=["version", "label"])
def test_predict_addresses_a_version(client, kwargs) -> None:
    outputs = client.predict("imdb", {"text": TEXTS}, signature="predict_text", **kwargs)
    assert outputs["probabilities"].shape == (2, 2)
    assert outputs["probabilities"].dtype == np.float32


def test_status_lists_every_version_with_its_error(server) -> None:
    with make_client(server, "http") as http, make_client(server, "grpc") as grpc:
        statuses = [http.status("imdb"), grpc.status("imdb")]
        assert http.status("imdb", label="canary") == grpc.status("imdb", label="canary")
        [canary] = grpc.status("imdb", label="canary").versions
    assert statuses[0] == statuses[1]
    one, two, three = statuses[0].versions
    assert one == VersionStatus(1, "AVAILABLE") and two == VersionStatus(2, "AVAILABLE")
    assert (three.version, three.state) == (3, "END")
    assert three.error_code != "OK" and three.error_message
    assert canary == two


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"version": 9}, "9"), ({"label": "nightly"}, "nightly")],
    ids=["version", "label"],
)
def test_unknown_version_or_label_is_model_not_found(client, kwargs, message) -> None:
    with pytest.raises(errors.ModelNotFound, match=message):
        client.sentiment(TEXTS, **kwargs)
    with pytest.raises(errors.ModelNotFound, match=message):
        client.predict("imdb", {"text": TEXTS}, signature="predict_text", **kwargs)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cli_version_and_label(server, transport, capsys) -> None:
    url = server.url if transport == "http" else f"127.0.0.1:{server.grpc_port}"
    argv = [
        "sentiment",
        "fine",
        "--url",
        url,
        "--json",
        *(["--grpc"] if transport == "grpc" else []),
    ]
    assert cli.main([*argv, "--label", "stable"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["model"]["version"] == 1
    assert cli.main([*argv, "--version", "2"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["model"]["version"] == 2


def _stable(server) -> list[int | None]:
    """The version `stable` answers with, on each transport."""
    versions = []
    for transport in TRANSPORTS:
        with make_client(server, transport) as client:
            versions.append(client.sentiment(TEXTS[:1], label="stable")[0].model.version)
    return versions


def test_reload_config_moves_a_label_and_back(server) -> None:
    moved = {"imdb": {"versions": "all", "labels": {"stable": 2, "canary": 2}}}
    original = {"imdb": {"versions": "all", "labels": {"stable": 1, "canary": 2}}}
    with make_client(server, "grpc") as grpc:
        try:
            grpc.reload_config(moved)
            assert _stable(server) == [2, 2]
        finally:
            grpc.reload_config(original)
    assert _stable(server) == [1, 1]

    async def move_async() -> None:
        async with make_client(server, "grpc", asynchronous=True) as client:
            try:
                await client.reload_config(moved)
                assert _stable(server) == [2, 2]
            finally:
                await client.reload_config(original)

    asyncio.run(move_async())
    assert _stable(server) == [1, 1]


def test_a_refused_config_is_a_typed_error_and_changes_nothing(server) -> None:
    with make_client(server, "grpc") as grpc:
        with pytest.raises(errors.InvalidInput, match="9"):
            grpc.reload_config({"imdb": {"versions": "all", "labels": {"stable": 9}}})
        with pytest.raises(errors.InvalidInput):
            grpc.reload_config({"no-such-model": {}})
    assert _stable(server) == [1, 1]


def test_a_reload_without_the_admin_token_is_permission_denied(server) -> None:
    target = f"127.0.0.1:{server.grpc_port}"
    for token in (None, "not-the-admin-token"):
        with grpc_client.Client(target, timeout=60, retry=1, admin_token=token) as grpc:
            with pytest.raises(errors.PermissionDenied, match="admin token"):
                grpc.reload_config({"imdb": {"versions": "all", "labels": {"stable": 2}}})
            assert grpc.sentiment(TEXTS[:1])[0].model.version  # inference stays open
    assert _stable(server) == [1, 1]


def test_reload_config_over_http_is_unsupported(server) -> None:
    with make_client(server, "http") as http, pytest.raises(errors.Unsupported, match="gRPC"):
        http.reload_config({"imdb": {}})
