"""How many CPU cores a process can really use, and the thread caps a container gets from that.

An instance type's vCPUs (``SM_NUM_CPUS``, 4 for ``ml.m4.xlarge``) are a contract figure; the machine
under the job may have fewer cores. Compute libraries that start one thread per vCPU on fewer cores
lose most of their time to contention (XGBoost's ``exact`` method most of all), so every container
runs at most as many compute threads as the cores it can use: the least of the host's CPU count,
the process's affinity mask and its cgroup CPU quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``,
on the process's own cgroup and each of its ancestors). When several containers of one job share
the machine, the platform also gives each its share in ``OPENSAGE_CPU_SHARE``, a further bound.

OpenMP threads also wait passively (``OMP_WAIT_POLICY=PASSIVE``) unless the job says otherwise:
the machine is shared with the platform, other jobs and endpoints, and threads that spin at each
barrier take the core from the thread with the work. Measured on two cores with one other busy
process, the bank tutorial's 100 exact rounds took a median of 16.9 s (12.9 to 29.6) spinning
and 9.1 s (7.6 to 9.6) waiting passively; on an idle machine, 3.7 s and 4.0 s.

:func:`count_usable` and :func:`thread_env` are pure; :func:`usable_cores` reads the machine.
This module imports nothing beyond the standard library: the built-in images use it inside the
container process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import PurePosixPath

CGROUP_ROOT = "/sys/fs/cgroup"
# Where cgroup v1's cpu controller is mounted, by the names distributions give its directory.
_V1_CPU_DIRS = ("cpu,cpuacct", "cpuacct,cpu", "cpu")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")
SPIN_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")  # a job that sets one keeps its own
SHARE_ENV = "OPENSAGE_CPU_SHARE"  # the cores the platform gives one container of a job (see :func:`share`)

Quota = tuple[int, int]  # (quota, period) in microseconds: quota / period cores


def count_usable(cpu_count: int | None, affinity: int | None, quotas: Iterable[Quota] = ()) -> int:
    """The cores a process may use: the least of the host's count, its affinity mask and each CPU quota.

    A quota of 1.5 cores counts as 1 (more threads than that would be throttled); the answer is at
    least 1. Unknown inputs (``None``, a zero count) do not limit.
    """
    limits = [n for n in (cpu_count, affinity) if n]
    limits += [max(1, quota // period) for quota, period in quotas if quota > 0 and period > 0]
    return max(1, min(limits)) if limits else 1


def parse_cpu_max(text: str) -> Quota | None:
    """cgroup v2 ``cpu.max`` (``"max 100000"`` or ``"150000 100000"``); ``None`` when unlimited or unreadable."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) > 1 else 100000
    except ValueError:
        return None
    return (quota, period) if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str, period_text: str) -> Quota | None:
    """cgroup v1 ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us``; ``None`` when unlimited (``-1``) or unreadable."""
    try:
        quota, period = int(quota_text.strip()), int(period_text.strip())
    except ValueError:
        return None
    return (quota, period) if quota > 0 and period > 0 else None


def _ancestors(path: str) -> list[str]:
    """``/a/b`` -> ``["/a/b", "/a", "/"]``: a quota on any of them limits the process."""
    node = PurePosixPath(path if path.startswith("/") else "/" + path)
    return [str(node), *(str(p) for p in node.parents)]


def cgroup_quotas(proc_cgroup: str, read: Callable[[str], str | None], root: str = CGROUP_ROOT) -> list[Quota]:
    """The CPU quotas over a process, from its ``/proc/<pid>/cgroup`` text and a file reader.

    ``read(path)`` returns a file's text or ``None`` when it does not exist. In a container with its
    own cgroup namespace (or a cgroup mount rooted at its own group) the quota sits at the mount's
    root, which the walk up the ancestors reaches too.
    """
    quotas: list[Quota] = []
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path:
            continue
        if hierarchy == "0" and controllers == "":  # cgroup v2, the unified hierarchy
            for node in _ancestors(path):
                text = read(f"{root}{node.rstrip('/')}/cpu.max")
                found = parse_cpu_max(text) if text is not None else None
                if found:
                    quotas.append(found)
        elif "cpu" in controllers.split(","):
            for mount in _V1_CPU_DIRS:
                for node in _ancestors(path):
                    base = f"{root}/{mount}{node.rstrip('/')}"
                    quota, period = read(f"{base}/cpu.cfs_quota_us"), read(f"{base}/cpu.cfs_period_us")
                    found = parse_cfs(quota, period) if quota is not None and period is not None else None
                    if found:
                        quotas.append(found)
    return quotas


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def usable_cores(env: Mapping[str, str] | None = None) -> int:
    """The cores this process can really use (host, affinity mask, cgroup quotas, the platform's share)."""
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        affinity = None
    usable = count_usable(os.cpu_count(), affinity, cgroup_quotas(_read("/proc/self/cgroup") or "", _read))
    given = (os.environ if env is None else env).get(SHARE_ENV, "")
    return min(usable, int(given)) if given.isdigit() and int(given) > 0 else usable


def share(usable: int, containers: int) -> int:
    """The cores of each of ``containers`` containers of one job running side by side on ``usable`` cores."""
    return max(1, usable // max(1, containers))


def thread_cap(vcpus: int | None, usable: int) -> int:
    """The compute threads for an instance of ``vcpus`` vCPUs on ``usable`` cores: the lesser, at least 1."""
    return max(1, min(vcpus, usable) if vcpus else usable)


def thread_env(vcpus: int | None, usable: int, env: Mapping[str, str]) -> dict[str, str]:
    """``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` for a container whose own
    variables are ``env``: the thread cap, except for those ``env`` sets itself; and the passive
    OpenMP wait policy unless ``env`` sets how threads wait."""
    n = str(thread_cap(vcpus, usable))
    out = {name: n for name in THREAD_VARIABLES if name not in env}
    if not any(name in env for name in SPIN_VARIABLES):
        out[WAIT_POLICY[0]] = WAIT_POLICY[1]
    return out
