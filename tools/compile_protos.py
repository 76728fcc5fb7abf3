"""Regenerate `tfserving_api/_proto/`: TF Serving's and the Open Inference Protocol's protos,
compiled without TensorFlow.

Neither the clients nor the gateway may need TensorFlow, and the `tensorflow-serving-api`
wheel pulls all of it in. So we compile our own copy of the few protos they speak. The
wheels ship no `.proto` sources, but every `*_pb2.py` embeds its `FileDescriptorProto` as
the byte literal passed to `AddSerializedFile(...)`; this script reads those literals with `ast`
(nothing from TensorFlow is imported), trims the two files that would drag in half of
TensorFlow's graph protos, and feeds the resulting descriptor set to `grpc_tools.protoc`.

Proto packages and message names are unchanged (`tensorflow.serving.PredictRequest`, ...),
so the wire format is byte-for-byte TF Serving's. The Open Inference Protocol ("KServe V2",
package ``inference``) is in no installed wheel we may import: its ``.proto`` is vendored
under ``tools/protos/`` (see the note at its top) and compiled from source the same way.

The generated modules are rewritten to register into a private descriptor pool (`tfserving_api._proto._pool.POOL`) instead of the
process-wide default pool: the server process imports the real `tensorflow_serving`
modules too, and the default pool rejects a second, different file with the same name
(our trimmed `meta_graph.proto`, or any TF release whose protos drifted from ours).

Typical usage (dev time only; needs TensorFlow and tensorflow-serving-api *installed*,
plus `pip install grpcio-tools==1.85.1`)::

    python tools/compile_protos.py            # writes tfserving_api/_proto/
    python tools/compile_protos.py --check    # exit 1 if the checked-in code is stale
"""

from __future__ import annotations

import argparse
import ast
import filecmp
import importlib.util
import re
import shutil
import sys
import tempfile
from pathlib import Path

from google.protobuf import any_pb2, descriptor_pb2, wrappers_pb2

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tfserving_api" / "_proto"
PACKAGE = "tfserving_api._proto"

# The files we generate code for, in no particular order. PredictionService is kept
# whole (Classify/Regress/MultiInference need only the small example/input protos) so
# the generated servicer is a faithful stand-in for TF Serving's in tests.
GENERATE = [
    "tensorflow/core/framework/types.proto",
    "tensorflow/core/framework/tensor_shape.proto",
    "tensorflow/core/framework/resource_handle.proto",
    "tensorflow/core/framework/tensor.proto",
    "tensorflow/core/protobuf/meta_graph.proto",
    "tensorflow/core/protobuf/error_codes.proto",
    "xla/tsl/protobuf/error_codes.proto",
    "tensorflow/core/example/feature.proto",
    "tensorflow/core/example/example.proto",
    "tensorflow_serving/apis/model.proto",
    "tensorflow_serving/apis/predict.proto",
    "tensorflow_serving/apis/get_model_metadata.proto",
    "tensorflow_serving/apis/status.proto",
    "tensorflow_serving/apis/get_model_status.proto",
    "tensorflow_serving/apis/input.proto",
    "tensorflow_serving/apis/classification.proto",
    "tensorflow_serving/apis/regression.proto",
    "tensorflow_serving/apis/inference.proto",
    "tensorflow_serving/apis/prediction_service.proto",
    "tensorflow_serving/apis/model_service.proto",
    # HandleReloadConfigRequest: a ModelServerConfig (version policy and labels per model).
    "tensorflow_serving/apis/model_management.proto",
    "tensorflow_serving/config/model_server_config.proto",
    "tensorflow_serving/config/file_system_storage_path_source.proto",
    "tensorflow_serving/config/logging_config.proto",
    "tensorflow_serving/config/log_collector_config.proto",
    "grpc_health/v1/health.proto",
]

# Protos vendored as source (relative to VENDORED): compiled from the .proto text.
VENDORED = REPO / "tools" / "protos"
VENDORED_PROTOS = ["inference/grpc_predict_v2.proto"]

# Installed packages whose *_pb2.py modules embed the descriptors above.
SOURCE_PACKAGES = ("tensorflow_serving", "tensorflow", "grpc_health")

# Files whose top-level messages we cut down. meta_graph.proto is needed only for
# SignatureDef/TensorInfo (GetModelMetadata); the rest of it imports graph, function,
# op_def, saved_object_graph, struct, ... Fields whose type is then missing (only
# TensorInfo.CompositeTensor.type_spec) are dropped: the parser keeps them as unknown
# fields, so nothing on the wire is lost.
KEEP_MESSAGES = {
    "tensorflow/core/protobuf/meta_graph.proto": {"TensorInfo", "SignatureDef"},
}

# Well-known types come from the protobuf runtime itself; `_pool.py` adds them to POOL.
WELL_KNOWN = {
    "google/protobuf/any.proto": any_pb2,
    "google/protobuf/wrappers.proto": wrappers_pb2,
}

GRPC_SERVICES = [
    "tensorflow_serving/apis/prediction_service.proto",
    "tensorflow_serving/apis/model_service.proto",
    "grpc_health/v1/health.proto",
    "inference/grpc_predict_v2.proto",
]

POOL_MODULE = '''\
"""Private descriptor pool for our copy of the TF Serving and Open Inference Protocol protos.

Generated by tools/compile_protos.py. Keeping these descriptors out of protobuf's default
pool lets `tfserving_api` live in the same process as the real `tensorflow` and
`tensorflow_serving` packages, whatever their versions: the default pool refuses two
different files with the same name, and our `meta_graph.proto` is a trimmed copy. Likewise
`tritonclient` registers its own `inference.*` messages (from `grpc_service.proto`) there.
"""

from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
for _well_known in (any_pb2, wrappers_pb2):
    POOL.AddSerializedFile(_well_known.DESCRIPTOR.serialized_pb)
'''


def package_dirs() -> list[Path]:
    """Directories of the SOURCE_PACKAGES, found without importing them."""
    dirs = []
    for name in SOURCE_PACKAGES:
        # find_spec on a top-level name locates the package without importing it.
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            sys.exit(f"error: {name} is not installed; it is needed (as files) to regenerate")
        dirs.append(Path(next(iter(spec.submodule_search_locations))))
    return dirs


def serialized_descriptor(pb2_file: Path) -> bytes | None:
    """The byte literal a generated `*_pb2.py` passes to `AddSerializedFile`."""
    for node in ast.walk(ast.parse(pb2_file.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
        ):
            return ast.literal_eval(node.args[0])
    return None


def installed_descriptors() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The FileDescriptorProtos of GENERATE embedded in the installed TF / TF Serving gencode."""
    found: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for package_dir in package_dirs():
        for pb2 in sorted(package_dir.rglob("*_pb2.py")):
            text = pb2.read_text(errors="replace")
            match = re.search(r"^# source: (\S+\.proto)$", text, re.M)
            if not match or match.group(1) not in GENERATE or match.group(1) in found:
                continue
            data = serialized_descriptor(pb2)
            if data is not None:
                found[match.group(1)] = descriptor_pb2.FileDescriptorProto.FromString(data)
    return found


def _defined_types(fd: descriptor_pb2.FileDescriptorProto) -> set[str]:
    prefix = f".{fd.package}" if fd.package else ""
    names: set[str] = set()

    def walk(messages, enums, scope: str) -> None:
        names.update(f"{scope}.{e.name}" for e in enums)
        for m in messages:
            names.add(f"{scope}.{m.name}")
            walk(m.nested_type, m.enum_type, f"{scope}.{m.name}")

    walk(fd.message_type, fd.enum_type, prefix)
    return names


def _exported_types(files: dict[str, descriptor_pb2.FileDescriptorProto], name: str) -> set[str]:
    """Types a file makes visible to its importers: its own plus its public imports'."""
    fd = files[name]
    names = _defined_types(fd)
    for i in fd.public_dependency:
        names |= _exported_types(files, fd.dependency[i])
    return names


def _prune_message(msg: descriptor_pb2.DescriptorProto, known: set[str]) -> None:
    keep = [f for f in msg.field if not f.type_name or f.type_name in known]
    if len(keep) != len(msg.field):
        used_oneofs = {f.oneof_index for f in keep if f.HasField("oneof_index")}
        if any(i not in used_oneofs for i in range(len(msg.oneof_decl))):
            raise SystemExit(f"error: pruning {msg.name} would empty a oneof")
        del msg.field[:]
        msg.field.extend(keep)
    for nested in msg.nested_type:
        _prune_message(nested, known)


def vendored_descriptors() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The FileDescriptorProtos of VENDORED_PROTOS, parsed from their source by protoc."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "vendored.binpb"
        argv = ["protoc", f"-I{VENDORED}", f"--descriptor_set_out={out}", *VENDORED_PROTOS]
        if protoc.main(argv) != 0:
            sys.exit(f"error: protoc failed: {' '.join(argv)}")
        parsed = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return {fd.name: fd for fd in parsed.file}


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """The trimmed, dependency-closed set of files protoc compiles."""
    installed = installed_descriptors()
    installed.update(vendored_descriptors())
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for name, module in WELL_KNOWN.items():
        files[name] = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
    for name in GENERATE + VENDORED_PROTOS:
        if name not in installed:
            raise SystemExit(f"error: no installed *_pb2.py embeds {name}")
        fd = descriptor_pb2.FileDescriptorProto()
        fd.CopyFrom(installed[name])
        if name in KEEP_MESSAGES:
            kept = [m for m in fd.message_type if m.name in KEEP_MESSAGES[name]]
            del fd.message_type[:]
            fd.message_type.extend(kept)
        files[name] = fd

    known = set().union(*(_defined_types(fd) for fd in files.values()))
    for name in GENERATE + VENDORED_PROTOS:
        fd = files[name]
        for msg in fd.message_type:
            _prune_message(msg, known)
        for service in fd.service:
            methods = [
                m for m in service.method if m.input_type in known and m.output_type in known
            ]
            del service.method[:]
            service.method.extend(methods)
        # Keep only imports that still define something we reference (or are public).
        referenced = _referenced_types(fd)
        public = {fd.dependency[i] for i in fd.public_dependency}
        deps = [
            d
            for d in fd.dependency
            if d in public or (d in files and _exported_types(files, d) & referenced)
        ]
        missing = [d for d in deps if d not in files]
        if missing:
            raise SystemExit(f"error: {name} still needs {missing}; add them to GENERATE")
        public_idx = [deps.index(d) for d in public]
        del fd.dependency[:]
        fd.dependency.extend(deps)
        del fd.public_dependency[:]
        fd.public_dependency.extend(public_idx)
    return descriptor_pb2.FileDescriptorSet(file=list(files.values()))


def _referenced_types(fd: descriptor_pb2.FileDescriptorProto) -> set[str]:
    refs: set[str] = set()

    def walk(messages) -> None:
        for m in messages:
            refs.update(f.type_name for f in m.field if f.type_name)
            walk(m.nested_type)

    walk(fd.message_type)
    for service in fd.service:
        for method in service.method:
            refs.update((method.input_type, method.output_type))
    return refs


# Only the generated packages; `grpc` and `google.protobuf` stay the real runtime.
_IMPORT = re.compile(
    r"^(from|import) (tensorflow_serving|tensorflow|xla|grpc_health|inference)\b", re.M
)
_MODULE_NAME = re.compile(r"BuildTopDescriptorsAndMessages\(DESCRIPTOR, '([\w.]+)'")


def rewrite(path: Path) -> None:
    """Point a generated module at `tfserving_api._proto` and the private pool."""
    text = path.read_text()
    text = _IMPORT.sub(lambda m: f"{m.group(1)} {PACKAGE}.{m.group(2)}", text)
    if path.name.endswith("_pb2.py"):
        text = text.replace(
            "_descriptor_pool.Default().AddSerializedFile(", "_POOL.AddSerializedFile("
        )
        text = text.replace(
            "# @@protoc_insertion_point(imports)",
            f"from {PACKAGE}._pool import POOL as _POOL\n# @@protoc_insertion_point(imports)",
            1,
        )
        text = _MODULE_NAME.sub(
            lambda m: f"BuildTopDescriptorsAndMessages(DESCRIPTOR, '{PACKAGE}.{m.group(1)}'", text
        )
    header = "# Rewritten by tools/compile_protos.py for tfserving_api's private descriptor pool.\n"
    path.write_text(header + text)


def generate(out: Path) -> None:
    """Write the generated package to `out`."""
    try:
        from grpc_tools import protoc
    except ImportError:
        sys.exit("error: grpcio-tools is missing: pip install grpcio-tools==1.85.1")
    with tempfile.TemporaryDirectory() as tmp:
        set_path = Path(tmp) / "descriptors.binpb"
        set_path.write_bytes(descriptor_set().SerializeToString())
        out.mkdir(parents=True, exist_ok=True)
        args = ["protoc", f"--descriptor_set_in={set_path}"]
        base = args + [f"--python_out={out}", f"--pyi_out={out}", *GENERATE, *VENDORED_PROTOS]
        grpc = args + [f"--grpc_python_out={out}", *GRPC_SERVICES]
        for argv in (base, grpc):
            if protoc.main(argv) != 0:
                sys.exit(f"error: protoc failed: {' '.join(argv)}")
    for path in sorted(out.rglob("*.py*")):
        if path.suffix in (".py", ".pyi") and path.name not in ("__init__.py", "_pool.py"):
            rewrite(path)
    (out / "_pool.py").write_text(POOL_MODULE)
    init = (
        '"""TF Serving and Open Inference Protocol protos compiled without TensorFlow. '
        'Generated: do not edit."""\n'
    )
    (out / "__init__.py").write_text(init)
    for package_dir in {p.parent for p in out.rglob("*_pb2.py")}:
        while package_dir != out:
            (package_dir / "__init__.py").touch()
            package_dir = package_dir.parent


def same_tree(a: Path, b: Path) -> bool:
    """Whether two generated trees hold the same files with the same content."""
    files_a = {
        p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    files_b = {
        p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output package directory")
    parser.add_argument("--check", action="store_true", help="only compare with --out")
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            fresh = same_tree(Path(tmp), args.out)
        print("up to date" if fresh else f"{args.out} is stale: rerun tools/compile_protos.py")
        return 0 if fresh else 1
    if args.out.exists():
        shutil.rmtree(args.out)
    generate(args.out)
    print(f"wrote {sum(1 for _ in args.out.rglob('*.py'))} modules to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
