"""The compute-backend contract, run over every backend: ``local`` (with and without cgroups, confined) and ``ray``."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opensage.compute.base import ComputeBackend, ContainerSpec, JobSpec, JobStatus
from opensage.compute.local import LocalBackend


@pytest.fixture(scope="module")
def ray_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComputeBackend]:
    """A Ray head of the test's own (as ``opensage up --compute ray`` starts one), ended after the module."""
    pytest.importorskip("ray")
    from opensage.compute.raycluster import RayBackend, start_head, stop_head

    directory = tmp_path_factory.mktemp("ray")
    try:
        yield RayBackend(start_head(directory), head=directory)
    finally:
        import ray

        ray.shutdown()
        stop_head(directory)


@pytest.fixture(params=["local", "local-without-cgroups", "local-confined", "ray"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ComputeBackend]:
    if request.param == "ray":
        yield request.getfixturevalue("ray_backend")
        return
    if request.param != "local-confined":
        yield LocalBackend(use_cgroups=request.param == "local")
        return
    from opensage.compute.confine import confinement

    found = confinement([tmp_path / "home"], env={})
    if found is None:
        pytest.skip("containers run as the platform's user here (no mount or user namespaces)")
    yield LocalBackend(confinement=found)


def _spec(tmp_path: Path, code: str, hosts: int = 1, memory: int | None = None) -> JobSpec:
    containers = tuple(
        ContainerSpec(
            f"algo-{i + 1}",
            (sys.executable, "-c", code),
            {"HOST": f"algo-{i + 1}", "PATH": "/usr/bin:/bin"},
            tmp_path,
            tmp_path / f"algo-{i + 1}.log",
            1,
            memory,
            owned=(tmp_path,),
        )
        for i in range(hosts)
    )
    return JobSpec("test/job", containers)


def _wait(backend: ComputeBackend, handle: dict, timeout: float = 30) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = backend.poll(handle)
        if status.done:
            return status
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_containers_run_log_and_report_exit_codes(backend: ComputeBackend, tmp_path: Path) -> None:
    code = (
        "import os, sys; print('hello from', os.environ['HOST']); sys.exit(0 if os.environ['HOST'] == 'algo-1' else 3)"
    )
    handle = backend.submit(_spec(tmp_path, code, hosts=2))
    status = _wait(backend, handle)
    assert {c.host: c.exit_code for c in status.containers} == {"algo-1": 0, "algo-2": 3}
    assert (tmp_path / "algo-2.log").read_text().strip() == "hello from algo-2"
    backend.cleanup(handle)


def test_stop_ends_every_process_of_the_container(backend: ComputeBackend, tmp_path: Path) -> None:
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "time.sleep(60)"
    )
    handle = backend.submit(_spec(tmp_path, code))
    time.sleep(0.5)
    import psutil

    children = psutil.Process(handle["containers"][0]["pid"]).children(recursive=True)
    backend.stop(handle, 2.0)
    status = _wait(backend, handle)
    assert status.containers[0].exit_code != 0
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive
    backend.cleanup(handle)


def test_memory_limit_kills_and_reports_out_of_memory(backend: ComputeBackend, tmp_path: Path) -> None:
    code = "\n".join(
        [
            "import time",
            "blocks = []",
            "for _ in range(60):",
            "    blocks.append(bytearray(20 * 1024 * 1024))",
            "    time.sleep(0.05)",
            "time.sleep(30)",
        ]
    )
    handle = backend.submit(_spec(tmp_path, code, memory=200 * 1024 * 1024))
    status = _wait(backend, handle)
    state = status.containers[0]
    assert state.exit_code != 0 and state.out_of_memory, state
    backend.cleanup(handle)


def test_a_jobs_hosts_resolve_by_name(backend: ComputeBackend, tmp_path: Path) -> None:
    """Each container resolves the job's host names (algo-1, algo-2) as a SageMaker cluster's DNS does."""
    from opensage.compute import sandbox

    if not sandbox.mounts_available():
        pytest.skip("this machine gives no mount namespace, so /etc/hosts cannot be bound")
    code = "import socket; print(socket.gethostbyname('algo-1'), socket.gethostbyname('algo-2'))"
    spec = _spec(tmp_path, code, hosts=2)
    peers = (("algo-1", "127.0.0.1"), ("algo-2", "127.0.0.2"))
    spec = JobSpec(spec.job_id, tuple(dataclasses.replace(c, peers=peers) for c in spec.containers))
    handle = backend.submit(spec)
    status = _wait(backend, handle)
    assert [c.exit_code for c in status.containers] == [0, 0], (tmp_path / "algo-1.log").read_text()
    assert (tmp_path / "algo-2.log").read_text().strip() == "127.0.0.1 127.0.0.2"
    assert "algo-1" not in Path("/etc/hosts").read_text()  # the machine's own file is untouched
    backend.cleanup(handle)


@pytest.mark.parametrize("user", ["a-user-of-its-own", "a-user-namespace"])
def test_a_confined_container_sees_its_own_directories_and_not_the_platforms_home(tmp_path: Path, user: str) -> None:
    """User code runs as a user of its own that cannot read the platform's keys, nor undo what hides them.

    ``a-user-namespace`` is what a platform that is not root gives (here with root's own id mapped)."""
    import os

    from opensage.compute import sandbox
    from opensage.compute.confine import Confinement, confinement, interpreter_paths

    found = confinement([tmp_path / "home"], env={})
    if user == "a-user-namespace" and sandbox.user_namespaces_available():
        found = Confinement(os.getuid(), os.getgid(), (tmp_path / "home",), interpreter_paths(), own_user=True)
    if found is None:
        pytest.skip("containers run as the platform's user here (no mount or user namespaces)")
    home = tmp_path / "home"
    (home / "jobs" / "mine" / "algo-1").mkdir(parents=True)
    (home / "jobs" / "theirs").mkdir(parents=True)
    (home / "master.key").write_text("secret")
    (home / "jobs" / "theirs" / "data.csv").write_text("theirs")
    (home / "jobs" / "mine" / "algo-1" / "input.csv").write_text("mine")
    own = home / "jobs" / "mine"
    code = f"""
import os, subprocess
from pathlib import Path
home, own = Path({str(home)!r}), Path({str(own)!r})
print("uid", os.getuid())
print("input", (own / "algo-1" / "input.csv").read_text())
(own / "algo-1" / "model").mkdir()
(own / "algo-1" / "model" / "m.bin").write_text("model")
print("home", sorted(p.name for p in home.iterdir()))
for path in (home / "master.key", home / "jobs" / "theirs" / "data.csv"):
    print("hidden", path.name, not path.exists())
print("umount", subprocess.run(["umount", str(home)], capture_output=True).returncode != 0)
print("cwd", os.getcwd() == str(own / "algo-1"), sorted(os.listdir("..")))
print("processes", len([p for p in os.listdir("/proc") if p.isdigit()]) <= 2)
"""
    spec = ContainerSpec(
        "algo-1",
        (sys.executable, "-c", code),
        {"PATH": "/usr/bin:/bin"},
        own / "algo-1",
        tmp_path / "logs" / "algo-1.log",
        owned=(own,),
    )
    backend = LocalBackend(use_cgroups=False, confinement=found)
    handle = backend.submit(JobSpec("test/confined", (spec,)))
    status = _wait(backend, handle)
    log = (tmp_path / "logs" / "algo-1.log").read_text()
    assert status.containers[0].exit_code == 0, log
    lines = {}
    for line in log.splitlines():
        key, _, value = line.partition(" ")
        lines[key] = f"{lines[key]}; {value}" if key in lines else value
    if not found.own_user:
        assert lines["uid"] == str(found.uid) != "0"
        assert (own / "algo-1" / "model" / "m.bin").stat().st_uid == found.uid  # its files; the platform reads them
    assert lines["input"] == "mine"
    assert lines["home"] == "['jobs']"  # the keys out of sight, and of the jobs only its own
    assert lines["hidden"] == "master.key True; data.csv True"
    assert lines["umount"] == "True"
    assert lines["cwd"] == "True ['algo-1']"
    assert lines["processes"] == "True"  # its own shell and itself: none of the platform's
    assert os.stat(home / "master.key").st_uid == os.getuid()  # what it cannot see stays the platform's
    backend.cleanup(handle)


def test_a_job_whose_handle_was_lost_is_ended_by_its_id(ray_backend: ComputeBackend, tmp_path: Path) -> None:
    """A server that died between submit and saving the handle: the next one ends the job by its id."""
    import psutil

    handle = ray_backend.submit(_spec(tmp_path, "import time; time.sleep(60)", hosts=2))
    pids = [c["pid"] for c in handle["containers"]]
    assert all(psutil.pid_exists(pid) for pid in pids)
    assert ray_backend.end_job("test/job") == 2
    gone, alive = psutil.wait_procs([psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)], timeout=10)
    assert not alive
    assert ray_backend.end_job("test/job") == 0
