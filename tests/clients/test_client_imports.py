"""`clients` and `tfserving_api` work where TensorFlow cannot be imported, and the service
never imports the client library."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Make every TensorFlow import fail, then use the clients for real (protos, tensors, an
# actual gRPC call to a closed port, the CLI parser).
WITHOUT_TENSORFLOW = textwrap.dedent(
    """
    import sys
    for name in ("tensorflow", "tensorflow_serving", "keras", "tf_keras"):
        sys.modules[name] = None  # `import name` (and its submodules) now raises ImportError
    try:
        import tensorflow
    except ImportError:
        pass
    else:
        raise SystemExit("the import block did not work")

    import numpy as np
    import clients, clients.grpc, clients.http, clients.__main__
    from tfserving_api.tensors import to_ndarray, to_tensor_proto

    assert to_ndarray(to_tensor_proto(np.eye(2, dtype=np.float32))).sum() == 2
    with clients.GrpcClient("127.0.0.1:1", retry=1, timeout=2) as client:
        assert client.health() is False
    with clients.HttpClient("http://127.0.0.1:1", retry=1, timeout=2) as client:
        assert client.ready() is False
    clients.__main__.build_parser().parse_args(["sentiment", "x", "--grpc"])
    blocked = ("tensorflow", "tensorflow_serving", "keras")
    leaked = [m for m, mod in sys.modules.items() if m.split(".")[0] in blocked and mod is not None]
    assert not leaked, leaked
    print("ok")
    """
)


# The shared protocol package alone: every module of it, a round trip, a proto message.
PROTOCOL_WITHOUT_TENSORFLOW = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    for name in ("tensorflow", "tensorflow_serving", "keras", "tf_keras", "clients", "service"):
        sys.modules[name] = None  # `import name` (and its submodules) now raises ImportError

    import numpy as np
    import tfserving_api
    for module in pkgutil.walk_packages(tfserving_api.__path__, "tfserving_api."):
        importlib.import_module(module.name)
    from tfserving_api._proto.tensorflow_serving.apis import predict_pb2
    from tfserving_api.contract import TENSOR_SIGNATURE
    from tfserving_api.tensors import to_ndarray, to_tensor_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = TENSOR_SIGNATURE
    request.inputs["x"].CopyFrom(to_tensor_proto(np.eye(2, dtype=np.float32)))
    again = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert to_ndarray(again.inputs["x"]).sum() == 2
    print("ok")
    """
)


@pytest.mark.parametrize(
    "code",
    [WITHOUT_TENSORFLOW, PROTOCOL_WITHOUT_TENSORFLOW],
    ids=["clients", "tfserving_api"],
)
def test_import_and_work_without_tensorflow(code: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["service", "tfserving_api"])
def test_package_does_not_import_the_client_library(package: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(
            m for m in _imported_modules(path) if m == "clients" or m.startswith("clients.")
        )
        for path in sorted((REPO / package).rglob("*.py"))
    }
    assert not {path: mods for path, mods in offenders.items() if mods}


@pytest.mark.parametrize(
    ("module", "absent"), [("clients.http", "grpc"), ("clients.grpc", "httpx"), ("clients", "grpc")]
)
def test_each_transport_loads_only_its_own_library(module: str, absent: str) -> None:
    code = f"import sys, {module}; assert {absent!r} not in sys.modules; print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
