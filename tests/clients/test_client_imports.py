"""`clients` works where TensorFlow cannot be imported."""

from __future__ import annotations

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
    from clients.tensors import to_ndarray, to_tensor_proto

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


def test_clients_import_and_work_without_tensorflow() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize(
    ("module", "absent"), [("clients.http", "grpc"), ("clients.grpc", "httpx"), ("clients", "grpc")]
)
def test_each_transport_loads_only_its_own_library(module: str, absent: str) -> None:
    code = f"import sys, {module}; assert {absent!r} not in sys.modules; print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
