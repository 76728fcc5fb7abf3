"""CPU counts from fake cgroup trees: v2 ``cpu.max``, v1 CFS quota, hybrids, no quota."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cpus import Cpus, sizing_message, usable_cpus

V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V1_CPU_MOUNT = "32 31 0:29 {root} /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
V1_MEMORY_MOUNT = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
HYBRID_V2_MOUNT = "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"


def tree(root: Path, cgroup: str, mountinfo: str, files: dict[str, str]) -> Path:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    (root / "proc/self/mountinfo").write_text(mountinfo)
    for name, text in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


@pytest.mark.parametrize(
    ("cpu_max", "affinity", "count", "source"),
    [
        ("200000 100000", 64, 2, "cgroup v2 cpu.max 200000/100000"),
        ("150000 100000", 64, 2, "cgroup v2 cpu.max 150000/100000"),  # 1.5 CPUs: round up
        ("50000 100000", 64, 1, "cgroup v2 cpu.max 50000/100000"),  # half a CPU: still one
        ("max 100000", 8, 8, "sched_getaffinity (8 CPUs, no cgroup CPU quota)"),
        (
            "800000 100000",
            2,
            2,
            "sched_getaffinity (2 CPUs; cgroup v2 cpu.max 800000/100000 allows 8)",
        ),
        ("garbage", 4, 4, "sched_getaffinity (4 CPUs, no cgroup CPU quota)"),
    ],
)
def test_cgroup_v2_cpu_max(tmp_path, cpu_max, affinity, count, source):
    root = tree(
        tmp_path,
        "0::/kubepods/pod1/c1\n",
        V2_MOUNT,
        {"/sys/fs/cgroup/kubepods/pod1/c1/cpu.max": cpu_max},
    )
    assert usable_cpus(root, affinity=affinity) == Cpus(count, source)


def test_cgroup_v2_a_parents_limit_binds_too(tmp_path):
    root = tree(
        tmp_path,
        "0::/kubepods/pod1/c1\n",
        V2_MOUNT,
        {
            "/sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "max 100000",
            "/sys/fs/cgroup/kubepods/pod1/cpu.max": "300000 100000",
            "/sys/fs/cgroup/kubepods/cpu.max": "max 100000",
        },
    )
    assert usable_cpus(root, affinity=16).count == 3


def test_cgroup_v2_namespace_root(tmp_path):
    # A container with its own cgroup namespace: "0::/" and the mount is its own cgroup.
    root = tree(tmp_path, "0::/\n", V2_MOUNT, {"/sys/fs/cgroup/cpu.max": "400000 100000"})
    assert usable_cpus(root, affinity=64).count == 4


@pytest.mark.parametrize(
    ("quota", "period", "count"),
    [("300000", "100000", 3), ("250000", "100000", 3), ("-1", "100000", 32)],
)
def test_cgroup_v1_cfs_quota(tmp_path, quota, period, count):
    base = "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1"
    root = tree(
        tmp_path,
        "12:memory:/kubepods/pod1/c1\n4:cpu,cpuacct:/kubepods/pod1/c1\n",
        V1_CPU_MOUNT.format(root="/") + V1_MEMORY_MOUNT,
        {f"{base}/cpu.cfs_quota_us": quota, f"{base}/cpu.cfs_period_us": period},
    )
    cpus = usable_cpus(root, affinity=32)
    assert cpus.count == count
    if quota != "-1":
        assert cpus.source == f"cgroup v1 cpu.cfs_quota_us {quota}/{period}"


def test_cgroup_v1_docker_without_a_cgroup_namespace(tmp_path):
    # Docker's v1 default: the mount root is the container's cgroup, and /proc/self/cgroup
    # names it again; the quota sits at the mount point itself.
    root = tree(
        tmp_path,
        "4:cpu,cpuacct:/docker/abc123\n",
        V1_CPU_MOUNT.format(root="/docker/abc123"),
        {
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "200000",
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000",
        },
    )
    assert usable_cpus(root, affinity=32).count == 2


def test_hybrid_hierarchy_reads_the_v1_cpu_controller(tmp_path):
    # systemd's hybrid layout (this machine's): a v2 tree with no cpu controller beside v1.
    root = tree(
        tmp_path,
        "4:cpu,cpuacct:/job\n0::/job\n",
        V1_CPU_MOUNT.format(root="/") + HYBRID_V2_MOUNT,
        {
            "/sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_quota_us": "100000",
            "/sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_period_us": "100000",
            "/sys/fs/cgroup/unified/job/cgroup.procs": "1",
        },
    )
    assert usable_cpus(root, affinity=32) == Cpus(1, "cgroup v1 cpu.cfs_quota_us 100000/100000")


def test_no_proc_no_cgroup_means_the_affinity(tmp_path):
    no_quota = Cpus(6, "sched_getaffinity (6 CPUs, no cgroup CPU quota)")
    assert usable_cpus(tmp_path, affinity=6) == no_quota


def test_this_machine_never_exceeds_the_affinity():
    import os

    cpus = usable_cpus()
    assert 1 <= cpus.count <= len(os.sched_getaffinity(0))
    assert cpus.source


def test_sizing_message():
    assert sizing_message(2, "cgroup v2 cpu.max 200000/100000", 3) == (
        "2 workers from cgroup v2 cpu.max 200000/100000; 3 TensorFlow threads per worker "
        "(SERVICE_TF_THREADS)"
    )
    cpus = usable_cpus()
    assert sizing_message(1, "SERVICE_WORKERS=1", 0) == (
        f"1 worker from SERVICE_WORKERS=1; {cpus.count} TensorFlow "
        f"{'thread' if cpus.count == 1 else 'threads'} per worker "
        f"({cpus.count} CPUs from {cpus.source} / 1 worker)"
    )
    auto = sizing_message(cpus.count, cpus.source, 0)  # SERVICE_WORKERS=auto
    assert auto == (
        f"{cpus.count} {'worker' if cpus.count == 1 else 'workers'} from {cpus.source}; "
        f"1 TensorFlow thread per worker ({cpus.count} CPUs / "
        f"{cpus.count} {'worker' if cpus.count == 1 else 'workers'})"
    )
