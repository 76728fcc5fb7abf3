"""``bentoml build`` packages the service, its code and every model of the store, and writes
the Dockerfile ``bentoml containerize`` builds: both ports exposed, no test-only package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"reuters", "imdb", "cifar", "cosine", "mnist", "translator"}
# The test extra and the profilers: none of them may reach the image.
TEST_ONLY = ("pytest", "schemathesis", "hypothesis", "grpcio-tools", "py-spy", "tritonclient")


def test_bentoml_build_contains_service_code_and_models(trained_store):
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
    bento = trained_store.home / "bentos" / name / version
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
