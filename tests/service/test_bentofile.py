"""The image recipe without building it: bentofile.yaml pins what pyproject.toml pins, has no
test-only package, and bentofile.gpu.yaml differs from it only where the GPU needs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEST_ONLY = {"pytest", "pytest-timeout", "schemathesis", "hypothesis", "grpcio-tools", "py-spy"}


def pins(requirements: list[str]) -> dict[str, str]:
    """``name[extra]==1.2`` -> {"name[extra]": "1.2"}; every line must be an exact pin."""
    found = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==([\w.]+)", requirement.strip())
        assert match, f"not an exact pin: {requirement!r}"
        found[match[1].lower()] = match[2]
    return found


def bentofile(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_bentofile_pins_are_pyprojects_runtime_pins():
    runtime = pins([r for r in project()["dependencies"]])
    image = pins(bentofile("bentofile.yaml")["python"]["packages"])
    assert image.items() <= runtime.items(), set(image.items()) - set(runtime.items())
    assert not {name.split("[")[0] for name in image} & TEST_ONLY
    # What the service imports at run time (the rest of pyproject is training / load tests).
    for package in ("tensorflow", "keras", "bentoml", "grpcio", "protobuf", "prometheus-client"):
        assert package in image, package


def test_bentofile_packages_the_service_and_the_protos():
    config = bentofile("bentofile.yaml")
    assert config["service"] == "service.service:ModelServer"
    assert "tfserving_api/**/*.py" in config["include"]
    assert not any(pattern.startswith(("tests", "clients")) for pattern in config["include"])
    envs = {e["name"]: e["value"] for e in config["envs"]}
    assert envs["SERVICE_WORKERS"] == "auto" and envs["GRPC_PORT"] == "8500"
    template = ROOT / config["docker"]["dockerfile_template"]
    assert "EXPOSE 8500" in template.read_text()


def test_gpu_bentofile_is_the_cpu_one_with_cuda_tensorflow():
    cpu, gpu = bentofile("bentofile.yaml"), bentofile("bentofile.gpu.yaml")
    [cuda] = project()["optional-dependencies"]["gpu"]
    cpu_packages = [p for p in cpu["python"]["packages"] if not p.startswith("tensorflow==")]
    assert gpu["python"]["packages"] == [cuda, *cpu_packages]
    assert gpu["envs"] == [{"name": "SERVICE_GPUS", "value": "1"}, *cpu["envs"]]
    rest = {k: v for k, v in gpu.items() if k not in ("python", "envs")}
    assert rest == {k: v for k, v in cpu.items() if k not in ("python", "envs")}
