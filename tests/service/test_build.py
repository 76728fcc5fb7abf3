"""``bentoml build`` packages the service, its code and every model of the store."""

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
