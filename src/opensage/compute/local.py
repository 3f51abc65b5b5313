"""The ``local`` backend: one OS process (in its own process group) per container.

Each container runs in its own mount namespace with its directories at ``/opt/ml`` where the
machine allows it (:mod:`opensage.compute.sandbox`).

Memory limits: a cgroup (v1 ``memory`` controller, or v2 with the controller enabled) when this
process may create one (root); otherwise a watchdog that sums the resident memory of the
container's process tree on every poll and kills it past the limit. CPU: a cgroup v1 CFS quota when
available, and always ``OMP_NUM_THREADS`` and friends (unless the container's own variables set
them) capped at the lesser of the instance's vCPUs and the container's share of the cores this
machine really gives (:mod:`opensage.compute.cores`): an ``ml.m4.xlarge`` job on two cores runs two
compute threads, not four; OpenMP threads wait passively. ``SM_NUM_CPUS`` stays the instance
type's figure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from opensage.compute import cores, gpus, sandbox
from opensage.compute.base import ContainerSpec, ContainerState, Handle, JobSpec, JobStatus
from opensage.compute.confine import Confinement

log = logging.getLogger(__name__)
CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")
CGROUP_ROOT_NAME = "opensage"


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


class _Cgroups:
    """Create and read per-container cgroups (v1) when the machine lets us."""

    def __init__(self) -> None:
        self.memory = _writable(CGROUP_V1_MEMORY)
        self.cpu = _writable(CGROUP_V1_CPU)

    def create(self, name: str, memory_bytes: int | None, cpus: int | None) -> list[str]:
        paths: list[str] = []
        if self.memory and memory_bytes:
            path = CGROUP_V1_MEMORY / CGROUP_ROOT_NAME / name
            try:
                path.mkdir(parents=True, exist_ok=True)
                (path / "memory.limit_in_bytes").write_text(str(memory_bytes))
                with contextlib.suppress(OSError):
                    (path / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
                paths.append(str(path))
            except OSError as exc:
                log.info("memory cgroup unavailable (%s); using the RSS watchdog", exc)
        if self.cpu and cpus:
            path = CGROUP_V1_CPU / CGROUP_ROOT_NAME / name
            try:
                path.mkdir(parents=True, exist_ok=True)
                (path / "cpu.cfs_period_us").write_text("100000")
                (path / "cpu.cfs_quota_us").write_text(str(100000 * cpus))
                paths.append(str(path))
            except OSError as exc:
                log.info("cpu cgroup unavailable (%s)", exc)
        return paths

    @staticmethod
    def oom_killed(paths: list[str]) -> bool:
        for p in paths:
            control = Path(p) / "memory.oom_control"
            if control.exists():
                for line in control.read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and value.strip() not in ("", "0"):
                        return True
                failcnt = Path(p) / "memory.failcnt"
                if failcnt.exists() and failcnt.read_text().strip() not in ("", "0"):
                    return True
        return False

    @staticmethod
    def remove(paths: list[str]) -> None:
        for p in paths:
            with contextlib.suppress(OSError):
                os.rmdir(p)


def sweep_cgroups(min_age_s: float = 60.0) -> int:
    """Remove the containers' cgroups that no process uses any more (ones a dead server left); how many.

    Only those older than ``min_age_s``: a container of another server may be just about to enter
    the cgroup made for it."""
    removed = 0
    for root in (CGROUP_V1_MEMORY / CGROUP_ROOT_NAME, CGROUP_V1_CPU / CGROUP_ROOT_NAME):
        if not _writable(root):
            continue
        for path in root.iterdir():
            try:
                old = time.time() - path.stat().st_mtime > min_age_s
                if old and path.is_dir() and not (path / "cgroup.procs").read_text().strip():
                    path.rmdir()
                    removed += 1
            except OSError:
                continue
    return removed


def _tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class LocalBackend:
    name = "local"

    def __init__(self, use_cgroups: bool = True, confinement: Confinement | None = None) -> None:
        self.confinement = confinement  # None: containers run as this process's user
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._oom: set[int] = set()
        self._cgroups = _Cgroups()
        self.gpus = gpus.GpuPool(gpus.machine_gpus())
        if not use_cgroups:
            self._cgroups.memory = self._cgroups.cpu = False

    def submit(self, spec: JobSpec) -> Handle:
        started = []
        share = cores.share(cores.usable_cores(), len(spec.containers))  # the job's containers run side by side
        try:
            for container in spec.containers:
                started.append(self._start(spec.job_id, container, share))
        except Exception:
            self.stop({"containers": started}, 0)
            raise
        return {"backend": self.name, "job_id": spec.job_id, "containers": started}

    def _start(self, job_id: str, c: ContainerSpec, share: int) -> dict:
        cg_name = f"{job_id.replace('/', '_')}_{c.host}_{time.monotonic_ns()}"
        cgroups = self._cgroups.create(cg_name, c.memory_bytes, c.cpus)
        held = self.gpus.take(c.gpus) if c.gpus and gpus.VISIBLE_ENV not in c.env else []
        env = {cores.SHARE_ENV: str(share), **cores.thread_env(c.cpus, share, c.env), **gpus.visible(held), **c.env}

        def enter_cgroups() -> None:
            for path in cgroups:
                with open(os.path.join(path, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))

        c.log_path.parent.mkdir(parents=True, exist_ok=True)
        mounts = c.mounts
        if c.peers and sandbox.mounts_available():
            hosts = sandbox.hosts_file(c.log_path.with_name(f"{c.host}.hosts"), c.peers)
            mounts = (*mounts, (hosts, "/etc/hosts"))
        confined = None
        if c.rootfs is not None:  # the image's own file system, the container's user the image's
            argv, isolated = sandbox.wrap_rootfs(c.argv, c.rootfs, mounts, c.isolate_network)
        elif self.confinement is not None:
            self.confinement.take(c.owned)
            covers, kept = self.confinement.plan(c.owned)
            own = self.confinement.own_user
            uid, gid = (None, None) if own else (self.confinement.uid, self.confinement.gid)
            confined = sandbox.Confined(uid, gid, c.cwd, covers, kept)
        if c.rootfs is None:
            argv, isolated = sandbox.wrap(c.argv, mounts, c.isolate_network, confined)
        with open(c.log_path, "ab") as out:
            proc = subprocess.Popen(
                argv,
                cwd=c.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                preexec_fn=enter_cgroups if cgroups else None,
            )
        self._procs[proc.pid] = proc
        return {
            "host": c.host,
            "pid": proc.pid,
            "create_time": psutil.Process(proc.pid).create_time(),
            "cgroups": cgroups,
            "memory_bytes": c.memory_bytes,
            "watchdog": not any("memory" in p for p in cgroups),
            "mounted": bool(c.mounts) and (c.rootfs is not None or sandbox.mounts_available()),
            "network_isolated": isolated,
            "uid": confined.uid if confined and confined.uid is not None else os.getuid(),
            "gpus": held,
        }

    def poll(self, handle: Handle) -> JobStatus:
        status = JobStatus()
        for c in handle["containers"]:
            pid = c["pid"]
            proc = self._procs.get(pid)
            if proc is None:  # started by an earlier server: it cannot be waited for
                status.containers.append(ContainerState(c["host"], self._alive(c), None))
                continue
            code = proc.poll()
            if code is None and c["watchdog"] and c["memory_bytes"] and _tree_rss(pid) > c["memory_bytes"]:
                log.warning("container %s of %s exceeded its memory limit; killing it", c["host"], handle["job_id"])
                self._oom.add(pid)
                _kill_group(pid, signal.SIGKILL)
                code = proc.wait()
            if code is None:
                status.containers.append(ContainerState(c["host"], True))
                continue
            killed = code in (-signal.SIGKILL, 128 + signal.SIGKILL)  # the second: under a namespace's first process
            oom = pid in self._oom or (killed and _Cgroups.oom_killed(c["cgroups"]))
            status.containers.append(ContainerState(c["host"], False, code, oom, c["memory_bytes"]))
        return status

    @staticmethod
    def _alive(c: dict) -> bool:
        try:
            return psutil.Process(c["pid"]).create_time() == c["create_time"]
        except psutil.Error:
            return False

    def stop(self, handle: Handle, grace_s: float) -> None:
        live = [c for c in handle["containers"] if self._alive(c)]
        for c in live:
            _kill_group(c["pid"], signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for c in live:
            proc = self._procs.get(c["pid"])
            while self._alive(c) and time.monotonic() < deadline:
                if proc is not None and proc.poll() is not None:
                    break
                time.sleep(0.05)
            if self._alive(c) and (proc is None or proc.poll() is None):
                _kill_group(c["pid"], signal.SIGKILL)
                if proc is not None:
                    proc.wait()

    def cleanup(self, handle: Handle) -> None:
        for c in handle["containers"]:
            self._procs.pop(c["pid"], None)
            self._oom.discard(c["pid"])
            _Cgroups.remove(c["cgroups"])
            self.gpus.give_back(c.get("gpus") or [])

    def end_job(self, job_id: str) -> int:
        return 0  # a local container is known only by the handle's process ids


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
