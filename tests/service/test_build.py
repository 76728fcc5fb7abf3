"""``bentoml build`` packages the service, its code and every model of the store, and writes
the Dockerfile ``bentoml containerize`` builds: both ports exposed, no test-only package."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"reuters", "imdb", "cifar", "cosine", "mnist", "translator"}
# The test extra and the profilers: none of them may reach the image.
TEST_ONLY = ("pytest", "schemathesis", "hypothesis", "grpcio-tools", "py-spy", "tritonclient")


@pytest.fixture(scope="module")
def built(trained_store) -> tuple[Path, str]:
    """``bentoml build`` of the repository: the Bento's directory and its tag."""
    env = {
        **os.environ,
        "BENTOML_HOME": str(trained_store.home),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "BENTOML_DO_NOT_TRACK": "True",
    }
    bentoml = str(Path(sys.executable).parent / "bentoml")
    proc = subprocess.run(
        [bentoml, "build", "--output", "tag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tag = proc.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    return trained_store.home / "bentos" / name / version, tag


def test_bentoml_build_contains_service_code_and_models(trained_store, built):
    bento, _ = built
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    assert manifest["service"] == "service.service:ModelServer"
    services = {s["name"]: s for s in manifest["services"]}
    assert set(services) == {"keras_serving"}  # one service: every model in-process
    # BentoML 1.4 records the service's models in the Bento (``bentoml export`` ships them).
    packaged = {m["tag"] for s in services.values() for m in s["models"]}
    assert {tag.split(":")[0] for tag in packaged} == MODELS
    for module in ("service.py", "engine.py", "batcher.py", "predictor.py", "tfserving_rest.py"):
        assert (bento / "src" / "service" / module).is_file(), module
    for tag in packaged:
        name, version = tag.split(":")
        assert (trained_store.home / "models" / name / version / "metadata.json").is_file(), tag

    # The image: HTTP and TF Serving's gRPC port exposed, the env defaults set.
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    exposed = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("EXPOSE ")}
    assert {"3000", "8500"} <= exposed, exposed
    for default in ("SERVICE_WORKERS=auto", "GRPC_PORT=8500", "GRPC_HOST=0.0.0.0"):
        assert f"ARG {default}" in dockerfile, default
    assert {e["name"]: e["value"] for e in manifest["envs"]}["GRPC_PORT"] == "8500"
    # deploy/k8s/overlays/shared-store relies on the image's layout: the store it mounts is
    # $BENTOML_HOME/models and the service's code is $BENTO_PATH/src.
    from tools.kustomize import render

    home = Path(re.search(r"^ENV BENTOML_HOME=(\S+)$", dockerfile, re.M)[1])
    bento_path = Path(re.search(r"^ARG BENTO_PATH=(\S+)$", dockerfile, re.M)[1])
    [deployment] = [
        o for o in render(ROOT / "deploy/k8s/overlays/shared-store") if o["kind"] == "Deployment"
    ]
    [main] = deployment["spec"]["template"]["spec"]["containers"]
    [store] = [m for m in main["volumeMounts"] if m["name"] == "models"]
    assert Path(store["mountPath"]) == home / "models"
    assert main["args"][main["args"].index("--working-dir") + 1] == str(bento_path / "src")
    # The gRPC door's protos and codec travel with the service (the image has no clients/).
    src = bento / "src"
    for module in (
        "tfserving_api/tensors.py",
        "tfserving_api/_proto/tensorflow_serving/apis/prediction_service_pb2_grpc.py",
        "tfserving_api/_proto/grpc_health/v1/health_pb2_grpc.py",
    ):
        assert (src / module).is_file(), module
    assert not (src / "clients").exists() and not (src / "tests").exists()
    # What the image installs: the runtime pins, nothing of the test extra, locked or not.
    for name in ("requirements.txt", "requirements.lock.txt"):
        path = bento / "env" / "python" / name
        if not path.is_file():
            continue
        packages = {
            line.split("==")[0].split("[")[0].strip().lower()
            for line in path.read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-"))
        }
        assert {"tensorflow", "keras", "bentoml", "grpcio"} <= packages, name
        assert not packages & set(TEST_ONLY), (name, packages & set(TEST_ONLY))


def test_the_image_code_serves_a_shared_store_and_hot_reloads_it(trained_store, built, tmp_path):
    """The shared-volume mode of deploy/k8s/overlays/shared-store, minus the container: the
    Bento's own ``src`` served with ``SERVICE_MODEL_SOURCE=store`` serves the store (not what
    it packaged) and loads a version registered there while it runs."""
    from loadtest.replicas import private_store, register_copy, replica, running, versions

    bento, _ = built
    store = private_store(trained_store.home, tmp_path)
    packaged = {t["tag"] for s in yaml.safe_load((bento / "bento.yaml").read_text())["services"]
                for t in s["models"]}  # fmt: skip
    rep = replica("bento-src", tmp_path)
    with running(rep, store, source=bento / "src", SERVICE_MODEL_SOURCE="store"):
        [old] = versions(rep)
        new = register_copy(store)
        deadline = time.monotonic() + 120
        while versions(rep) != {new: "AVAILABLE"} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert versions(rep) == {new: "AVAILABLE"}, rep.process.tail()
    assert new == old + 1
    latest = (store / "models" / "imdb" / "latest").read_text().strip()
    assert f"imdb:{latest}" not in packaged  # served from the store, not the Bento
