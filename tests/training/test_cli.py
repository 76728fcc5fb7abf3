"""The training command line, run as users run it: ``python -m training ...`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PUBLISHED = {
    ("reuters", "lstm"): 686_958,
    ("reuters", "stacked_lstm_raw"): 32_946,
    ("reuters", "lstm_raw"): 12_746,
    ("reuters", "stacked_simple_rnn_raw"): 9_996,
    ("imdb", "stacked_simple_rnn"): 328_353,
    ("imdb", "lstm"): 328_353,
    ("imdb", "simple_rnn"): 322_113,
    ("imdb", "stacked_lstm_raw"): 10_608,
    ("imdb", "conv1d"): 332_385,
    ("cifar", "cnn_rnn"): 22_110,
    ("cifar", "cnn_rnn_parallel"): 1_299_410,
    ("cosine", "simple_rnn"): 1_121,
    ("cosine", "lstm"): 29_345,
    ("mnist", "deep_cnn"): 137_510,
    ("mnist", "nin"): 87_135,
}


# TensorFlow's C++ runtime logs a few lines before Python can silence it; ignore those.
TF_NOISE = ("I0000", "W0000", "E0000", "WARNING: All log messages before absl")


def our_lines(stderr: str) -> list[str]:
    return [line for line in stderr.strip().splitlines() if not line.startswith(TF_NOISE)]


def run_cli(*args: str, home: Path | None = None, timeout: int = 600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    if home is not None:
        env["BENTOML_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_list_json_has_every_variant_with_params():
    proc = run_cli("list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    by_key = {(r["model"], r["variant"]): r for r in rows}
    for key, params in PUBLISHED.items():
        assert by_key[key]["params"] == params, key
    assert ("imdb", "stacked_gru_raw") in by_key and ("cosine", "gru") in by_key
    assert {("translator", "seq2seq"), ("translator", "attention")} <= set(by_key)
    for model in {r["model"] for r in rows}:
        defaults = [r["variant"] for r in rows if r["model"] == model and r["default"]]
        assert len(defaults) == 1, (model, defaults)
    assert all(isinstance(r["params"], int) and r["params"] > 0 for r in rows)


@pytest.mark.parametrize(
    "args, message",
    [
        (["bert"], "unknown model 'bert'"),
        (["imdb", "--variant", "transformer"], "unknown variant 'transformer'"),
        (["all", "--variant", "lstm"], "--variant needs a single model"),
        (["imdb", "--data-path", "/nonexistent/imdb.npz"], "/nonexistent/imdb.npz"),
        (["imdb", "--word-index", "imdb_word_index.json"], "--word-index needs --data-path"),
        (["imdb", "--learning-rate", "0"], "learning rate must be > 0"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args, message):
    proc = run_cli(*args, "--no-register")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "model, filename", [("imdb", "imdb.npz"), ("cifar", "cifar.tar.gz"), ("translator", "deu.txt")]
)
def test_malformed_data_path_exits_2(tmp_path, model, filename):
    bad = tmp_path / filename
    bad.write_bytes(b"\x00\x01 this is not the expected format\n")
    proc = run_cli(model, "--data-path", str(bad), "--no-register", "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(our_lines(proc.stderr)) == 1, proc.stderr


def test_unreachable_dataset_stops_without_synthetic(tmp_path):
    """This machine is offline; a user's machine without network must get a plain message."""
    proc = run_cli("mnist", "--quick", "--no-register", "--out", str(tmp_path))
    if proc.returncode == 0:
        pytest.fail("mnist downloaded: this test expects an offline machine")
    assert proc.returncode == 2
    assert "--synthetic" in proc.stderr and "Traceback" not in proc.stderr


def test_train_registers_in_bentoml_store_with_increasing_versions(tmp_path):
    home, out = tmp_path / "bentoml", tmp_path / "exports"
    for expected_version in (1, 2):
        proc = run_cli(
            "cosine", "--synthetic", "--quick", "--epochs", "2", "--out", str(out), home=home
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (out / "cosine" / str(expected_version) / "saved_model.pb").exists()
    assert "export" in proc.stdout and "mse" in proc.stdout  # the summary table

    # The report reads the folder and the store: each export once, synthetic, not compared.
    report = run_cli("report", "--out", str(out), home=home)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "2 exports" in report.stdout and report.stdout.count("**synthetic**") == 2
    assert (out / "report.md").exists() and (out / "report.png").exists()

    listing = subprocess.run(
        [str(Path(sys.executable).parent / "bentoml"), "models", "list", "-o", "json"],
        env={**os.environ, "BENTOML_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    models = json.loads(listing.stdout)
    assert len([m for m in models if m["tag"].startswith("cosine:")]) == 2

    env = {**os.environ, "BENTOML_HOME": str(home)}
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import bentoml, json; m = bentoml.models.get('cosine:latest'); "
            "print(json.dumps({'labels': m.info.labels, 'metadata': m.info.metadata, "
            "'path': m.path}))",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    info = json.loads(check.stdout)
    assert info["labels"]["model"] == "cosine" and info["labels"]["variant"] == "lstm"
    assert info["labels"]["version"] == "2"
    assert "metric_mse" in info["metadata"]
    assert (Path(info["path"]) / "saved_model.pb").exists()
    assert (Path(info["path"]) / "metadata.json").exists()

    # Another exports folder: the version still follows the store's (3, not 1), so the
    # service sees it as the newest; nothing of the staging store is left behind.
    other = tmp_path / "other"
    proc = run_cli(
        "cosine", "--synthetic", "--quick", "--epochs", "1", "--out", str(other), home=home
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [p.name for p in (other / "cosine").iterdir()] == ["3"]
    assert not list(home.glob(".staging-*"))


def test_a_registered_version_appears_in_the_store_whole(tmp_path, monkeypatch):
    """While the files are copied, the store has no trace of the version; then all of it."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    from training import registry

    export = tmp_path / "export"
    (export / "variables").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"pb")
    (export / "metadata.json").write_text("{}")
    store_dir = tmp_path / "home" / "models"
    monkeypatch.setattr(BentoMLContainer.model_store_dir, "get", lambda: str(store_dir))
    seen = []
    copytree = registry.shutil.copytree

    def watching_copytree(src, dst, *args, **kwargs):
        if Path(src) == export:  # our copy of the export (BentoML's own copies recurse too)
            seen.append(sorted(p.name for p in store_dir.glob("cosine/*")))
        return copytree(src, dst, *args, **kwargs)

    monkeypatch.setattr(registry.shutil, "copytree", watching_copytree)
    metadata = {
        "model": "cosine",
        "variant": "lstm",
        "version": 4,
        "dataset": {"name": "cosine", "synthetic": True},
        "params": 1,
        "metrics": {"mse": 0.1},
    }
    tag = registry.register_export(export, metadata)
    assert seen == [[]]  # nothing in the store while copying
    version = tag.split(":")[1]
    assert sorted(p.name for p in store_dir.glob("cosine/*")) == sorted([version, "latest"])
    assert (store_dir / "cosine" / "latest").read_text() == version
    assert (store_dir / "cosine" / version / "saved_model.pb").read_bytes() == b"pb"
    assert not list(store_dir.parent.glob(".staging-*"))


def test_fallback_synthetic_warns_loudly(tmp_path):
    proc = run_cli(
        "mnist",
        "--quick",
        "--epochs",
        "1",
        "--fallback-synthetic",
        "--no-register",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "falling back to SYNTHETIC data" in proc.stderr
    metadata = json.loads((tmp_path / "mnist" / "1" / "metadata.json").read_text())
    assert metadata["dataset"]["synthetic"] is True
