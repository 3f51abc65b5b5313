"""Usable cores and thread caps: fed the text of cgroup files and affinity sizes, as a machine would show them."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from opensage.compute import cores
from opensage.compute.base import ContainerSpec, JobSpec
from opensage.compute.local import LocalBackend


def _reader(files: dict[str, str]):  # type: ignore[no-untyped-def]
    return files.get


@pytest.mark.parametrize(
    ("cpu_count", "affinity", "quotas", "expected"),
    [
        (8, 8, [], 8),  # nothing limits but the host
        (8, 2, [], 2),  # taskset / cpuset: the affinity mask
        (8, 8, [(200000, 100000)], 2),  # a two-core quota
        (8, 8, [(150000, 100000)], 1),  # 1.5 cores: one thread, not two throttled ones
        (8, 8, [(50000, 100000)], 1),  # half a core: still one
        (2, 8, [(400000, 100000)], 2),  # a quota above the host does not raise it
        (16, 6, [(800000, 100000), (400000, 100000)], 4),  # the tightest of several (a parent's quota)
        (None, None, [], 1),  # nothing known: one
        (4, None, [], 4),  # no affinity call on this OS
    ],
)
def test_the_least_limit_wins(cpu_count: int | None, affinity: int | None, quotas: list, expected: int) -> None:
    assert cores.count_usable(cpu_count, affinity, quotas) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("max 100000\n", None), ("200000 100000\n", (200000, 100000)), ("50000\n", (50000, 100000)), ("", None)],
)
def test_cpu_max(text: str, expected: tuple[int, int] | None) -> None:
    assert cores.parse_cpu_max(text) == expected


def test_cfs_quota() -> None:
    assert cores.parse_cfs("-1\n", "100000\n") is None
    assert cores.parse_cfs("300000\n", "100000\n") == (300000, 100000)
    assert cores.parse_cfs("garbage", "100000") is None


def test_cgroup_v2_quota_on_the_group_or_an_ancestor() -> None:
    proc = "0::/user.slice/job-1\n"
    files = {
        "/sys/fs/cgroup/user.slice/job-1/cpu.max": "max 100000\n",
        "/sys/fs/cgroup/user.slice/cpu.max": "300000 100000\n",
    }
    quotas = cores.cgroup_quotas(proc, _reader(files))
    assert quotas == [(300000, 100000)]
    assert cores.count_usable(8, 8, quotas) == 3


def test_cgroup_v2_inside_a_container_reads_the_mount_root() -> None:
    # Docker without a cgroup namespace: the host's path in /proc, the container's own group at the root.
    proc = "0::/system.slice/docker-abc.scope\n"
    files = {"/sys/fs/cgroup/cpu.max": "200000 100000\n"}
    assert cores.count_usable(64, 64, cores.cgroup_quotas(proc, _reader(files))) == 2


def test_cgroup_v1_cfs_quota() -> None:
    proc = "12:memory:/opensage/x\n4:cpu,cpuacct:/opensage/job\n1:name=systemd:/\n"
    files = {
        "/sys/fs/cgroup/cpu,cpuacct/opensage/job/cpu.cfs_quota_us": "400000\n",
        "/sys/fs/cgroup/cpu,cpuacct/opensage/job/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    }
    assert cores.cgroup_quotas(proc, _reader(files)) == [(400000, 100000)]


def test_no_cgroup_files_no_quota() -> None:
    assert cores.cgroup_quotas("0::/\n", _reader({})) == []
    assert cores.cgroup_quotas("", _reader({})) == []


def test_this_machine_answers_within_its_cpu_count() -> None:
    import os

    assert 1 <= cores.usable_cores() <= (os.cpu_count() or 1)


def test_thread_caps_keep_what_the_job_sets() -> None:
    assert cores.thread_cap(4, 2) == 2
    assert cores.thread_cap(2, 8) == 2
    assert cores.thread_cap(None, 3) == 3
    capped = cores.thread_env(4, 2, {})
    assert capped == {
        "OMP_NUM_THREADS": "2",
        "OPENBLAS_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    own = cores.thread_env(4, 2, {"OMP_NUM_THREADS": "8", "GOMP_SPINCOUNT": "100000"})
    assert own == {"OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


_SHOW_ENV = "import json, os; print(json.dumps({k: os.environ.get(k) for k in %r}))"


def _container_env(tmp_path: Path, vcpus: int, env: dict[str, str]) -> dict[str, str | None]:
    names = [*cores.THREAD_VARIABLES, "SM_NUM_CPUS", "OMP_WAIT_POLICY"]
    spec = JobSpec(
        "test/threads",
        (
            ContainerSpec(
                "algo-1",
                (sys.executable, "-c", _SHOW_ENV % names),
                {"PATH": "/usr/bin:/bin", **env},
                tmp_path,
                tmp_path / "algo-1.log",
                vcpus,
            ),
        ),
    )
    backend = LocalBackend(use_cgroups=False)
    handle = backend.submit(spec)
    deadline = time.monotonic() + 30
    while not backend.poll(handle).done:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    backend.cleanup(handle)
    return json.loads((tmp_path / "algo-1.log").read_text())


def test_a_container_sees_the_capped_thread_variables(tmp_path: Path) -> None:
    usable = cores.usable_cores()
    seen = _container_env(tmp_path, 64, {"SM_NUM_CPUS": "64"})
    assert seen["SM_NUM_CPUS"] == "64"  # the instance type's figure: the contract
    assert {seen[name] for name in cores.THREAD_VARIABLES} == {str(min(64, usable))}
    assert seen["OMP_WAIT_POLICY"] == "PASSIVE"


def test_a_container_keeps_the_thread_variables_its_job_sets(tmp_path: Path) -> None:
    seen = _container_env(tmp_path, 64, {"OMP_NUM_THREADS": "7"})
    assert seen["OMP_NUM_THREADS"] == "7"
    assert seen["MKL_NUM_THREADS"] == str(min(64, cores.usable_cores()))


def test_xgboost_threads_follow_the_usable_cores_unless_the_job_gives_nthread() -> None:
    from opensage.images.xgboost.train import Job

    job = Job({}, {}, ["algo-1"], "algo-1", None, num_cpus=4, num_gpus=0, image_tag="1.7-1", usable_cores=2)
    assert job.nthread({}) == 2
    assert job.nthread({"nthread": 3}) == 3  # the job's own setting
    assert Job({}, {}, ["algo-1"], "algo-1", None, 2, 0, "1.7-1", usable_cores=8).nthread({}) == 2


def test_xgboost_model_server_threads() -> None:
    from opensage.images.xgboost.serve import predict_threads

    assert predict_threads({"OMP_NUM_THREADS": "1"}, 8) == 1
    assert predict_threads({"OMP_NUM_THREADS": "16"}, 2) == 2
    assert predict_threads({}, 2) == 2


def test_the_share_of_each_container_of_a_job() -> None:
    assert cores.share(8, 2) == 4
    assert cores.share(2, 3) == 1
    assert cores.share(2, 1) == 2
