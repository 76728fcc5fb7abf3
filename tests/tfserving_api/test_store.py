"""``tfserving_api.store`` and its readers: a store entry without a valid ``model.yaml``
(which makes ``bentoml.models.list()`` raise) is skipped with one warning, by the service's
start-up and polling (``service.catalog``) and by training's next-version lookup; and
registration fsyncs a version before the rename that publishes it."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from service import catalog
from tfserving_api import store
from training import registry

METADATA = {
    "model": "cosine",
    "variant": "lstm",
    "dataset": {"name": "cosine", "synthetic": True},
    "params": 1,
    "metrics": {"mse": 0.1},
}


@pytest.fixture
def store_dir(tmp_path, monkeypatch) -> Path:
    from bentoml._internal.configuration.containers import BentoMLContainer

    folder = tmp_path / "home" / "models"
    monkeypatch.setattr(BentoMLContainer.model_store_dir, "get", lambda: str(folder))
    monkeypatch.setattr(store, "_WARNED", set())
    monkeypatch.setattr(catalog, "_WARNED", set())
    monkeypatch.setattr(catalog, "_INFO_CACHE", {})
    return folder


def _register(source: Path, tmp_path: Path, version: int) -> str:
    export = tmp_path / f"export-{version}"
    shutil.copytree(source, export)
    meta = json.loads((export / "metadata.json").read_text())
    (export / "metadata.json").write_text(json.dumps({**meta, "version": version}))
    return registry.register_export(export, {**METADATA, "version": version})


@pytest.fixture
def populated(store_dir, trained_store, tmp_path) -> Path:
    """cosine v1 and v2 registered, plus two broken entries: no model.yaml, garbage yaml."""
    source = trained_store.export_path("cosine")
    _register(source, tmp_path, 1)
    _register(source, tmp_path, 2)
    (store_dir / "cosine" / "halfcopied").mkdir()
    (store_dir / "cosine" / "zzzgarbage").mkdir()
    (store_dir / "cosine" / "zzzgarbage" / "model.yaml").write_text("{not: [valid")
    (store_dir / "stray").mkdir()
    (store_dir / "stray" / "entry").mkdir()
    return store_dir


def test_bentomls_own_list_raises_on_one_bad_entry(populated) -> None:
    from bentoml._internal.models import ModelStore

    with pytest.raises(Exception):  # the failure this module exists for
        ModelStore(str(populated)).list()


def test_bad_entries_are_skipped_with_one_warning_each(populated, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="bentoml.keras_serving.store"):
        for _ in range(3):  # three polls
            models = store.readable_models()
            assert sorted(m.info.labels["version"] for m in models) == ["1", "2"]
    warnings = [r.getMessage() for r in caplog.records if "skipping store entry" in r.getMessage()]
    assert len(warnings) == 3  # halfcopied, zzzgarbage, stray/entry: once each
    assert any("halfcopied" in w for w in warnings) and any("zzzgarbage" in w for w in warnings)


def test_the_service_and_training_read_past_the_bad_entries(populated) -> None:
    assert sorted(catalog.stored_versions()["cosine"]) == [1, 2]
    assert catalog.latest_tags()["cosine"].startswith("cosine:")
    assert registry.latest_version("cosine") == 2
    assert registry.registered_names() == {"cosine"}


def test_the_latest_tag_skips_a_newer_entry_without_usable_metadata(populated, tmp_path) -> None:
    good = catalog.latest_tags()["cosine"]
    broken = tmp_path / "broken-export"
    broken.mkdir()
    (broken / "metadata.json").write_text("{}")
    registry.register_export(broken, {**METADATA, "version": 3})  # newest, unusable
    assert catalog.latest_tags()["cosine"] == good


def test_registration_fsyncs_files_and_directories_before_the_rename(
    store_dir, tmp_path, monkeypatch
) -> None:
    export = tmp_path / "export"
    (export / "variables").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"pb")
    (export / "variables" / "variables.index").write_bytes(b"ix")
    (export / "metadata.json").write_text("{}")
    events: list[tuple[str, str]] = []
    fsync, rename = os.fsync, os.rename

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recording_rename(src, dst, *args, **kwargs) -> None:
        events.append(("rename", str(dst)))
        rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(registry.os, "fsync", recording_fsync)
    monkeypatch.setattr(registry.os, "rename", recording_rename)
    tag = registry.register_export(export, {**METADATA, "version": 7})
    version_dir = store_dir / "cosine" / tag.split(":")[1]
    published = events.index(("rename", str(version_dir)))
    before = {Path(path).name for kind, path in events[:published] if kind == "fsync"}
    for name in ("saved_model.pb", "variables.index", "metadata.json", "model.yaml", "variables"):
        assert name in before, f"{name} not fsynced before the rename"
    after = [path for kind, path in events[published:] if kind == "fsync"]
    assert str(store_dir / "cosine") in after  # the directory entry of the rename itself
