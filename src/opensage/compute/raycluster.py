"""The ``ray`` backend: every container (a job's instance, a model server) is a Ray actor.

Each instance of a job (a training or processing container, a model server) is a named, detached
actor (:class:`InstanceActor`) in the ``opensage`` namespace, holding the resources its instance type
names (its vCPUs, up to what the biggest node of the cluster has). Inside, the actor runs the
container with the local backend of its node, so a container under Ray is the same process, with
the same mounts, limits and exit codes, as one run locally. The handle names the actors; a restarted
platform ends what an earlier one left running, by the saved handle or, when the earlier one died
before it saved one, by the job's name (:meth:`RayBackend.end_job`).

Until the instance agent stages data on the node that runs a container, the containers read and
write the platform's home: the actors are placed on the platform's own node
(:data:`PIN_TO_PLATFORM_NODE`).

With no address the platform starts a Ray head of its own (:func:`start_head`) whose state is in
``<home>/ray``, connects to it again after a crash and ends it at shutdown (:meth:`RayBackend.close`);
``--ray-address`` connects to a running cluster, which shutdown leaves running.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from opensage.compute import cores
from opensage.compute.base import ContainerSpec, ContainerState, Handle, JobSpec, JobStatus
from opensage.compute.confine import Confinement
from opensage.compute.local import LocalBackend

NAMESPACE = "opensage"
PIN_TO_PLATFORM_NODE = True
START_TIMEOUT_S = 600.0  # how long a job may wait for the cluster to have room for it
WORKER_PORTS = (10100, 14900)  # below the ports free_port hands out (opensage.compute.base)
JOB_PREFIXES = ("training-job/", "processing-job/")  # JobSpec.job_id of the jobs whose instances hold CPUs


class RayUnavailable(Exception):
    """Ray is not installed or the cluster cannot be reached; the message says what to do."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("the Ray backend needs Ray: pip install 'opensage[ray]' (or pip install ray)") from exc
    return ray


class InstanceActor:
    """One container on a node of the cluster, run by that node's local backend."""

    def __init__(self, confinement: Confinement | None = None) -> None:
        self.backend = LocalBackend(confinement=confinement)
        self.handle: Handle | None = None

    def start(self, job_id: str, container: ContainerSpec) -> dict[str, Any]:
        if not Path(container.cwd).is_dir():
            raise RuntimeError(
                f"node {os.uname().nodename} does not see the container's directory {container.cwd}: it runs "
                "where the platform's home is"
            )
        self.handle = self.backend.submit(JobSpec(job_id, (container,)))
        info = dict(self.handle["containers"][0])
        info["node"] = os.uname().nodename
        return info

    def poll(self) -> ContainerState:
        assert self.handle is not None
        return self.backend.poll(self.handle).containers[0]

    def stop(self, grace_s: float) -> None:
        if self.handle is not None:
            self.backend.stop(self.handle, grace_s)

    def cleanup(self) -> None:
        if self.handle is not None:
            self.backend.cleanup(self.handle)


class RayBackend:
    name = "ray"

    def __init__(self, address: str, confinement: Confinement | None = None, head: Path | None = None) -> None:
        ray = _ray()
        self.ray = ray
        self.confinement = confinement
        self.head = head  # the directory of the head this platform started (start_head), ended by close()
        plain = address.removeprefix("ray://")
        if ":" in plain and not _answers(plain):  # ray.init would retry for minutes before it gave up
            raise RayUnavailable(f"could not connect to the Ray cluster at {address}: nothing answers there")
        try:
            ray.init(
                address=address,
                namespace=NAMESPACE,
                ignore_reinit_error=True,
                log_to_driver=False,
                include_dashboard=False,
            )
        except Exception as exc:  # ConnectionError, or Ray's own when nothing listens
            raise RayUnavailable(f"could not connect to the Ray cluster at {address}: {exc}") from exc
        self._actor_class = ray.remote(max_restarts=0, max_concurrency=4)(InstanceActor)
        self.node_id = ray.get_runtime_context().get_node_id()

    def _largest_node_cpus(self) -> float:
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        if PIN_TO_PLATFORM_NODE:
            nodes = [n for n in nodes if n.get("NodeID") == self.node_id] or nodes
        return max((float(n.get("Resources", {}).get("CPU", 1)) for n in nodes), default=1.0)

    def _cpus(self, job_id: str, container: ContainerSpec, count: int) -> float:
        """The CPUs an instance holds in the cluster: a job's instance its vCPUs (no more than a node has, shared
        by the job's instances, so that a job always fits an idle node); a model server or notebook none (it
        idles between requests, and endpoints must not wait for jobs to end)."""
        if not job_id.startswith(JOB_PREFIXES):
            return 0.0
        largest = self._largest_node_cpus()
        return max(0.01, min(float(container.cpus or 1), largest / count))

    def submit(self, spec: JobSpec) -> Handle:
        ray = self.ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        started: list[dict[str, Any]] = []
        handle: Handle = {"backend": self.name, "job_id": spec.job_id, "containers": started}
        share = cores.share(cores.usable_cores(), len(spec.containers))
        try:
            for container in spec.containers:
                name = f"{spec.job_id}/{container.host}/{uuid.uuid4().hex[:8]}"
                env = {cores.SHARE_ENV: str(share), **container.env}
                options: dict[str, Any] = {
                    "name": name,
                    "lifetime": "detached",
                    "num_cpus": self._cpus(spec.job_id, container, len(spec.containers)),
                }
                if PIN_TO_PLATFORM_NODE:
                    options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self.node_id, soft=False)
                actor = self._actor_class.options(**options).remote(self.confinement)
                try:
                    info = ray.get(actor.start.remote(spec.job_id, _with_env(container, env)), timeout=START_TIMEOUT_S)
                except Exception:
                    with contextlib.suppress(Exception):
                        ray.kill(actor)
                    raise
                started.append({**info, "actor": name})
        except Exception:
            self.stop(handle, 0)
            self.cleanup(handle)
            raise
        return handle

    def _actor(self, entry: dict[str, Any]) -> Any:
        try:
            return self.ray.get_actor(entry["actor"], namespace=NAMESPACE)
        except ValueError:
            return None

    def poll(self, handle: Handle) -> JobStatus:
        status = JobStatus()
        for entry in handle["containers"]:
            actor = self._actor(entry)
            state = None
            if actor is not None:
                with contextlib.suppress(self.ray.exceptions.RayError):
                    state = self.ray.get(actor.poll.remote(), timeout=60)
            # an actor that is gone (its node died, it was killed) ended its container with no exit code
            status.containers.append(state if state is not None else ContainerState(entry["host"], False, None))
        return status

    def stop(self, handle: Handle, grace_s: float) -> None:
        calls = [(a, a.stop.remote(grace_s)) for a in map(self._actor, handle["containers"]) if a is not None]
        for _, call in calls:
            with contextlib.suppress(self.ray.exceptions.RayError):
                self.ray.get(call, timeout=grace_s + 60)

    def cleanup(self, handle: Handle) -> None:
        for entry in handle["containers"]:
            actor = self._actor(entry)
            if actor is None:
                continue
            with contextlib.suppress(self.ray.exceptions.RayError):
                self.ray.get(actor.cleanup.remote(), timeout=60)
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)


    def close(self) -> None:
        """Disconnect; end the head the platform started (a crash leaves it, so that its actors live on)."""
        with contextlib.suppress(Exception):
            self.ray.shutdown()
        if self.head is not None:
            stop_head(self.head)

    def end_job(self, job_id: str) -> int:
        from ray.util import list_named_actors

        names = [n for n in list_named_actors() if n.startswith(f"{job_id}/")]
        containers = [{"actor": name, "host": name.split("/")[1]} for name in names]
        handle: Handle = {"backend": self.name, "job_id": job_id, "containers": containers}
        self.stop(handle, 1.0)
        self.cleanup(handle)
        return len(containers)


def _with_env(container: ContainerSpec, env: dict[str, str]) -> ContainerSpec:
    import dataclasses

    return dataclasses.replace(container, env=env)


# --- the platform's own head node -------------------------------------------------------------------


def start_head(directory: Path, timeout: float = 120.0) -> str:
    """The address of the Ray head this platform runs under ``directory`` (started when none runs)."""
    _ray()
    state = directory / "head.json"
    if state.is_file():
        with contextlib.suppress(ValueError, KeyError, OSError):
            address = json.loads(state.read_text())["address"]
            if _answers(address):
                return str(address)
    directory.mkdir(parents=True, exist_ok=True)
    ray_cli = str(Path(sys.executable).with_name("ray"))
    if not Path(ray_cli).exists():
        ray_cli = shutil.which("ray") or ray_cli
    # Ray's fixed defaults (10001, 52365) would clash with a second platform's head, and its worker ports
    # (10002-19999) with the model servers' (opensage.compute.base.free_port): each gets a port of its own
    port, client, agent, agent_grpc = (_spare_port() for _ in range(4))
    temp = _temp_dir(directory)
    argv = [
        ray_cli, "start", "--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false",
        "--disable-usage-stats", f"--num-cpus={cores.usable_cores()}", f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--min-worker-port={WORKER_PORTS[0]}", f"--max-worker-port={WORKER_PORTS[1]}",
    ]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    run = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if run.returncode != 0:
        raise RayUnavailable(f"could not start a Ray head node: {(run.stderr or run.stdout).strip()[-2000:]}")
    address = f"127.0.0.1:{port}"
    state.write_text(json.dumps({"address": address, "temp_dir": str(temp), "started": time.time()}))
    return address


def _temp_dir(directory: Path) -> Path:
    """Ray's temporary directory for the head of ``directory``: short, as its Unix socket paths must be."""
    import hashlib
    import tempfile

    return Path(tempfile.gettempdir()) / f"opensage-ray-{hashlib.sha256(str(directory).encode()).hexdigest()[:10]}"


def _spare_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(address: str) -> bool:
    import socket

    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except (OSError, ValueError):
        return False


def stop_head(directory: Path) -> int:
    """End the Ray head started under ``directory`` (its processes, found by their temporary directory)."""
    import psutil

    temp = str(_temp_dir(directory))
    ended = 0
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(temp in part for part in proc.info["cmdline"] or []):
                proc.kill()
                ended += 1
    (directory / "head.json").unlink(missing_ok=True)
    time.sleep(0.5)  # the killed processes let go of their sockets and logs
    shutil.rmtree(temp, ignore_errors=True)
    return ended
