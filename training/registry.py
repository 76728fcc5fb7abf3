"""Register exports in the BentoML model store (``$BENTOML_HOME``).

``bentoml.tensorflow`` / ``bentoml.keras`` are deprecated in BentoML 1.4 and broken on Keras 3,
so exports are stored as plain directories through ``bentoml.models.create``: the model's
directory holds the SavedModel and ``metadata.json``, and ``tf.saved_model.load(ref.path)``
loads it. A version is written in full beside the store, fsynced, then moved in with one
``rename``: a service watching the store (``SERVICE_POLL_S``) never sees it half-written,
and neither does one started after a power loss.

Typical usage::

    tag = register_export(Path("exports/imdb/3"), metadata)
    registered_names()   # {"imdb", ...}
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tfserving_api.store import readable_models


def register_export(export_path: Path, metadata: dict) -> str:
    """Copies an export directory into the BentoML store.

    Args:
        export_path: ``<out>/<model>/<version>`` as written by :mod:`training.export`.
        metadata: the export's metadata; model/variant become labels, metrics metadata.

    Returns:
        The BentoML tag, e.g. ``imdb:abc123``.
    """
    import bentoml

    labels = {
        "model": metadata["model"],
        "variant": metadata["variant"],
        "version": str(metadata["version"]),
        "synthetic": str(metadata["dataset"]["synthetic"]).lower(),
    }
    store_metadata = {
        "version": metadata["version"],
        "variant": metadata["variant"],
        "dataset": metadata["dataset"]["name"],
        "synthetic": metadata["dataset"]["synthetic"],
        "params": metadata["params"],
        "export_path": str(export_path),
        **{f"metric_{k}": float(v) for k, v in metadata["metrics"].items()},
    }
    with _staging_store() as (staging, store_dir):
        with bentoml.models.create(
            metadata["model"], labels=labels, metadata=store_metadata, _model_store=staging
        ) as ref:
            shutil.copytree(export_path, ref.path, dirs_exist_ok=True)
        _publish(Path(staging._path), store_dir, ref.tag.name, ref.tag.version)
    return str(ref.tag)


@contextlib.contextmanager
def _staging_store() -> Iterator[tuple[Any, Path]]:
    """A BentoML store beside the real one (same filesystem), removed afterwards."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    store_dir = Path(BentoMLContainer.model_store_dir.get())
    store_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=store_dir.parent))
    try:
        yield ModelStore(staging), store_dir
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flushes every file under ``root``, then every directory bottom-up (their entries), so
    that what a later rename publishes is on disk, not only in the page cache."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for file in files:
            if not os.path.islink(os.path.join(folder, file)):
                _fsync(Path(folder) / file)
        _fsync(Path(folder))


def _publish(staging: Path, store_dir: Path, name: str, version: str) -> None:
    """Moves a complete version into the store in one ``rename``, so that a service watching
    the store sees all of it or nothing, then points ``latest`` at it. Files and directories
    are fsynced before the rename and the store's directory after it: after a power loss a
    version is there in full or not at all (never visible with empty files)."""
    target = store_dir / name / version
    target.parent.mkdir(parents=True, exist_ok=True)
    fsync_tree(staging / name / version)
    os.rename(staging / name / version, target)
    _fsync(target.parent)
    latest = store_dir / name / "latest"
    temporary = latest.with_name(f".latest-{os.getpid()}")
    temporary.write_text(version)
    _fsync(temporary)
    os.replace(temporary, latest)
    _fsync(target.parent)


def _is_ascii_number(text: str) -> bool:
    # str.isdigit() alone takes "²", which int() refuses.
    return text.isascii() and text.isdigit()


def latest_version(name: str) -> int:
    """The highest integer version of ``name`` in the store (0 when there is none); entries
    without a valid ``model.yaml`` are skipped with a warning."""
    versions = [
        int(model.info.labels["version"])
        for model in readable_models(name)
        if _is_ascii_number(str(model.info.labels.get("version", "")))
    ]
    return max(versions, default=0)


def registered_names() -> set[str]:
    """Names of the models the BentoML store holds at least one readable version of."""
    return {m.tag.name for m in readable_models()}
