"""``service.runtime_files``: the server's private runtime directory (reload config and
readiness markers) refuses what another local user could have planted: symlinks, directories
of someone else or open to others; files are written without following links; a server's
files are its own (an earlier server's never apply)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from service import runtime_files as rf
from service.engine import _read_shared, _write_shared
from service.lifecycle import PeerReadiness
from service.versions import ConfigError, parse_config


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No SERVICE_RUNTIME_DIR or XDG_RUNTIME_DIR, and a temp dir of the test's own."""
    monkeypatch.delenv(rf.RUNTIME_DIR_ENV, raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    shared_tmp = tmp_path / "tmp"
    shared_tmp.mkdir(mode=0o777)
    os.chmod(shared_tmp, 0o1777)  # like /tmp: anyone may create entries
    monkeypatch.setattr("tempfile.tempdir", str(shared_tmp))
    return shared_tmp


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_default_is_a_0700_directory_per_user_and_per_server(env: Path) -> None:
    folder = rf.server_directory(os.getpid())
    base = env / f"keras-serving-{os.geteuid()}"
    assert folder.parent == base
    assert folder.name == f"server-{os.getpid()}-{rf.process_start(os.getpid())}"
    assert _mode(base) == 0o700 and _mode(folder) == 0o700


def test_xdg_runtime_dir_is_preferred_when_it_is_private(env, tmp_path, monkeypatch) -> None:
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    assert rf.base_directory() == xdg / "keras-serving"
    os.chmod(xdg, 0o755)  # not private: the temp dir's per-user directory instead
    assert rf.base_directory() == env / f"keras-serving-{os.geteuid()}"


def test_a_planted_symlink_is_refused_naming_the_path(env: Path, tmp_path: Path) -> None:
    attacker = tmp_path / "attacker"
    attacker.mkdir(mode=0o700)
    planted = env / f"keras-serving-{os.geteuid()}"
    planted.symlink_to(attacker)
    with pytest.raises(rf.UnsafeRuntimePath, match=f"{planted}: is a symbolic link"):
        rf.server_directory(os.getpid())
    with pytest.raises(rf.UnsafeRuntimePath, match="symbolic link"):
        PeerReadiness(2, 1, os.getpid())
    assert list(attacker.iterdir()) == []


def test_a_directory_open_to_others_is_refused(env: Path) -> None:
    planted = env / f"keras-serving-{os.geteuid()}"
    planted.mkdir()
    os.chmod(planted, 0o777)
    with pytest.raises(rf.UnsafeRuntimePath, match=f"{planted}: mode 0777 lets other users in"):
        rf.base_directory()


def test_a_directory_of_another_user_is_refused(env: Path, monkeypatch) -> None:
    planted = env / f"keras-serving-{os.geteuid()}"
    planted.mkdir(mode=0o700)
    me = os.geteuid()
    # As another user would see it: the directory exists and is not theirs.
    monkeypatch.setattr(os, "geteuid", lambda: me + 1)
    with pytest.raises(rf.UnsafeRuntimePath, match=f"owned by uid {me}, not by"):
        rf.check_private_directory(planted)


def test_an_explicit_runtime_dir_must_be_private_too(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(rf.RUNTIME_DIR_ENV, str(tmp_path / "run"))
    assert _mode(rf.base_directory()) == 0o700
    os.chmod(tmp_path / "run", 0o750)
    with pytest.raises(rf.UnsafeRuntimePath, match=str(tmp_path / "run")):
        rf.base_directory()


def test_files_never_follow_a_planted_link(tmp_path: Path) -> None:
    folder = rf.private_directory(tmp_path / "private")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = folder / "reload-config.json"
    target.symlink_to(victim)
    with pytest.raises(rf.UnsafeRuntimePath, match="symbolic link"):
        rf.read_private(target)
    rf.write_private(target, "new")  # replaces the link itself, never writes through it
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and rf.read_private(target) == "new"
    assert _mode(target) == 0o600
    assert [p.name for p in folder.iterdir()] == ["reload-config.json"]  # no temporary left


def test_a_shared_config_round_trips_and_garbage_is_a_config_error(tmp_path: Path) -> None:
    path = rf.private_directory(tmp_path / "p") / "reload-config.json"
    config = parse_config({"models": {"imdb": {"versions": "all", "labels": {"stable": 2}}}})
    _write_shared(path, config)
    assert _read_shared(path) == config
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a config this server wrote"):
        _read_shared(path)


def test_an_earlier_servers_files_never_apply_and_are_cleaned(env: Path) -> None:
    process = subprocess.Popen(["sleep", "30"])
    try:
        earlier = rf.server_directory(process.pid)
        (earlier / "reload-config.json").write_text('{"models": {"imdb": {"versions": "all"}}}')
    finally:
        process.kill()
        process.wait()
    # A new server, even one whose supervisor reused that pid, has a directory of its own
    # (pid and start time), and the dead server's directory goes when the next one starts.
    current = rf.server_directory(os.getpid())
    assert current != earlier and list(current.iterdir()) == []
    assert not earlier.exists()
