"""Private runtime files of one ``bentoml serve``: the shared reload config and the readiness
markers its workers leave for each other.

They live in a directory only the server's user can reach, never under a guessable name in a
shared temp dir: another local user could create it first, plant a symlink, forge readiness
or a config that every new worker adopts. The base is ``$SERVICE_RUNTIME_DIR``, else
``$XDG_RUNTIME_DIR/keras-serving`` (the user's own tmpfs), else
``<tempdir>/keras-serving-<uid>``; below it each server has ``server-<pid>-<start>`` (the
supervisor's pid and start time: a later server that reuses the pid starts empty, so a config
left by an earlier server never applies to a new one). Every directory is created 0700 and
checked after the fact (not a symlink, owned by this user, no group or other permission);
anything else is refused with an error naming the path. Files are written to a fresh
``O_EXCL`` temporary and renamed over, and read with ``O_NOFOLLOW``.

Typical usage::

    folder = server_directory(os.getppid())
    write_private(folder / "reload-config.json", text)
    read_private(folder / "reload-config.json")
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

logger = logging.getLogger("bentoml.keras_serving.runtime")

RUNTIME_DIR_ENV = "SERVICE_RUNTIME_DIR"
MAX_FILE_BYTES = 16 * 1024 * 1024  # what a reader takes at most (a reload config is small)


class UnsafeRuntimePath(PermissionError):
    """A runtime directory or file another user could have planted or can reach."""


def process_start(pid: int) -> int:
    """The start time of process ``pid`` in clock ticks since boot (0 when unknown)."""
    try:
        # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return 0


def check_private_directory(path: Path) -> None:
    """Raises :class:`UnsafeRuntimePath` unless ``path`` is a real directory of this user
    that nobody else may enter (mode 0700 or narrower)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise UnsafeRuntimePath(f"{path}: runtime directory vanished") from None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeRuntimePath(
            f"{path}: is a symbolic link, refused as a runtime directory (remove it, or set "
            f"{RUNTIME_DIR_ENV} to a private directory)"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeRuntimePath(f"{path}: is not a directory, refused as a runtime directory")
    if info.st_uid != os.geteuid():
        raise UnsafeRuntimePath(
            f"{path}: owned by uid {info.st_uid}, not by this server's user (uid "
            f"{os.geteuid()}); refused (remove it, or set {RUNTIME_DIR_ENV})"
        )
    if info.st_mode & 0o077:
        raise UnsafeRuntimePath(
            f"{path}: mode {stat.S_IMODE(info.st_mode):04o} lets other users in; refused "
            "(chmod 700 it, or remove it)"
        )


def private_directory(path: Path) -> Path:
    """``path`` created 0700 if missing (its parent must exist), then checked.

    Raises:
        UnsafeRuntimePath: it exists and is a symlink, not ours or reachable by others.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    check_private_directory(path)
    return path


def base_directory() -> Path:
    """The user's runtime directory of every server (see the module docstring).

    Raises:
        UnsafeRuntimePath: the directory is not private to this user.
    """
    explicit = os.environ.get(RUNTIME_DIR_ENV, "").strip()
    if explicit:
        return private_directory(Path(explicit))
    xdg = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    if xdg:
        try:
            check_private_directory(Path(xdg))
        except UnsafeRuntimePath as exc:  # not the user's own: the temp dir will do
            logger.warning("XDG_RUNTIME_DIR not used: %s", exc)
        else:
            return private_directory(Path(xdg) / "keras-serving")
    return private_directory(Path(tempfile.gettempdir()) / f"keras-serving-{os.geteuid()}")


def server_directory(parent_pid: int) -> Path:
    """``<base>/server-<pid>-<start>`` of the server whose supervisor is ``parent_pid``,
    created if missing; directories of servers that are gone are removed on the way.

    Raises:
        UnsafeRuntimePath: a directory on the way is not private to this user.
    """
    base = base_directory()
    name = f"server-{parent_pid}-{process_start(parent_pid)}"
    _remove_stale(base, keep=name)
    return private_directory(base / name)


def server_directory_path(parent_pid: int) -> Path:
    """Where :func:`server_directory` is, without creating or cleaning anything (for an
    observer such as ``loadtest.chaos``)."""
    return base_directory() / f"server-{parent_pid}-{process_start(parent_pid)}"


def _remove_stale(base: Path, keep: str) -> None:
    """Removes ``server-<pid>-<start>`` directories whose process is gone (kill -9 leaves them)."""
    try:
        entries = list(os.scandir(base))
    except OSError:
        return
    for entry in entries:
        if entry.name == keep or not entry.name.startswith("server-"):
            continue
        try:
            _, pid, start = entry.name.split("-")
            if process_start(int(pid)) == int(start):
                continue  # that server still runs
            if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
        except (ValueError, OSError):
            continue


def write_private(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (readers see all of it or the previous file),
    through a new file (``O_EXCL | O_NOFOLLOW``, mode 0600) renamed over ``path``."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_private(path: Path, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The text of ``path``, refusing a symlink, a non-regular file or another user's file.

    Raises:
        FileNotFoundError: no such file.
        UnsafeRuntimePath: a symlink, not a regular file, or not ours.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise UnsafeRuntimePath(f"{path}: is a symbolic link, refused") from None
        raise
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise UnsafeRuntimePath(f"{path}: not a regular file of this server's user, refused")
        return source.read(max_bytes).decode("utf-8", "replace")
