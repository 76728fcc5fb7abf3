"""How many CPUs this process may use: the container's CPU quota, not the host's cores.

A pod limited to 2 CPUs on a 64-core node sees ``os.cpu_count() == 64``; sizing workers or
TensorFlow threads from that starts 64 model-loading processes and gets the pod OOM-killed.
As Go's ``automaxprocs`` does, read the quota of this process's cgroup: cgroup v2 ``cpu.max``
(``"<quota> <period>"`` or ``"max <period>"``), else cgroup v1 ``cpu.cfs_quota_us`` /
``cpu.cfs_period_us`` (quota ``-1`` = none), round quota / period up, and bound it by the
CPUs the scheduler lets this process run on (``os.sched_getaffinity``: cpusets, ``taskset``).
The cgroup and its ancestors up to the mount point are all read (a limit set on a parent,
e.g. a pod-level cgroup, binds as well); the smallest wins.

Nothing here imports TensorFlow or BentoML.

Typical usage::

    cpus = usable_cpus()
    cpus.count    # 2
    cpus.source   # 'cgroup v2 cpu.max 200000/100000'
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Cpus:
    """A CPU count and where it came from (for the start-up log line)."""

    count: int
    source: str


@dataclass(frozen=True)
class _Quota:
    quota: int
    period: int
    file: str  # "cpu.max" or "cpu.cfs_quota_us"
    version: int

    @property
    def cpus(self) -> int:
        return max(1, math.ceil(self.quota / self.period))

    def describe(self) -> str:
        return f"cgroup v{self.version} {self.file} {self.quota}/{self.period}"


def _mounts(root: Path) -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fs type, super options) of every cgroup mount."""
    try:
        lines = (root / "proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        # "<id> <parent> <maj:min> <root> <mount point> <opts> [optional...] - <fs> <src> <super>"
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        mounts.append((fields[3], fields[4], tail[0], set(tail[2].split(","))))
    return mounts


def _memberships(root: Path) -> dict[str, str]:
    """``/proc/self/cgroup``: controller (``""`` for the v2 hierarchy) -> cgroup path."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return {}
    paths: dict[str, str] = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _cgroup_dirs(root: Path, mount_root: str, mount_point: str, cgroup: str) -> list[Path]:
    """The process's cgroup directory under ``mount_point``, then its parents up to the mount.

    Inside a container with its own cgroup namespace the path is ``/`` and the mount root is
    ``/``; without one (Docker's v1 default) the mount root is the container's own cgroup and
    the path repeats it, so the mount root is stripped off first.
    """
    relative = Path(cgroup)
    if mount_root != "/" and (cgroup == mount_root or cgroup.startswith(mount_root + "/")):
        relative = Path("/" + cgroup[len(mount_root) :].lstrip("/"))
    base = root / mount_point.lstrip("/")
    here = base / str(relative).lstrip("/")
    dirs = [here]
    while here != base and base in here.parents:
        here = here.parent
        dirs.append(here)
    return dirs


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_quota(directory: Path) -> _Quota | None:
    raw = _read(directory / "cpu.max")
    if not raw:
        return None
    parts = raw.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return _Quota(quota, period, "cpu.max", 2) if quota > 0 and period > 0 else None


def _v1_quota(directory: Path) -> _Quota | None:
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return _Quota(q, p, "cpu.cfs_quota_us", 1) if q > 0 and p > 0 else None


def cgroup_quota(root: Path = Path("/")) -> _Quota | None:
    """The tightest CPU quota on this process's cgroup or its ancestors, or None."""
    memberships = _memberships(root)
    quotas: list[_Quota] = []
    for mount_root, mount_point, fs, options in _mounts(root):
        if fs == "cgroup2" and "" in memberships:
            cgroup, read = memberships[""], _v2_quota
        elif fs == "cgroup" and "cpu" in options and "cpu" in memberships:
            cgroup, read = memberships["cpu"], _v1_quota
        else:
            continue
        for directory in _cgroup_dirs(root, mount_root, mount_point, cgroup):
            quota = read(directory)
            if quota is not None:
                quotas.append(quota)
    return min(quotas, key=lambda q: q.quota / q.period, default=None)


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def usable_cpus(root: Path = Path("/"), affinity: int | None = None) -> Cpus:
    """The CPUs this process may use: its cgroup quota rounded up, at most its affinity.

    Args:
        root: where ``proc/`` and the cgroup mounts are found (a fake tree in tests).
        affinity: the scheduler's CPU count (default ``len(os.sched_getaffinity(0))``).

    Returns:
        The count (at least 1) and a phrase saying where it came from.
    """
    allowed = affinity if affinity is not None else _affinity()
    allowed = max(1, allowed)
    quota = cgroup_quota(root)
    if quota is None:
        return Cpus(allowed, f"sched_getaffinity ({allowed} CPUs, no cgroup CPU quota)")
    if quota.cpus > allowed:
        return Cpus(
            allowed, f"sched_getaffinity ({allowed} CPUs; {quota.describe()} allows {quota.cpus})"
        )
    return Cpus(quota.cpus, quota.describe())


def sizing_message(workers: int, workers_source: str, tf_threads: int) -> str:
    """The start-up log line: how many workers and TensorFlow threads, and from what.

    Args:
        workers: ``ServingSettings.workers``.
        workers_source: ``ServingSettings.workers_source``.
        tf_threads: ``SERVICE_TF_THREADS`` (0 = the usable CPUs divided among the workers).
    """
    if tf_threads:
        threads, why = tf_threads, "SERVICE_TF_THREADS"
    else:
        cpus = usable_cpus()
        threads = max(1, cpus.count // max(1, workers))
        origin = "" if cpus.source == workers_source else f" from {cpus.source}"
        why = f"{cpus.count} CPUs{origin} / {workers} {_plural(workers, 'worker')}"
    return (
        f"{workers} {_plural(workers, 'worker')} from {workers_source}; "
        f"{threads} TensorFlow {_plural(threads, 'thread')} per worker ({why})"
    )


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"
