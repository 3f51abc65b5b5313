"""The ``ray`` backend: every container (a job's instance, a model server) is a Ray actor.

Each instance of a job (a training or processing container, a model server) is a named, detached
actor (:class:`InstanceActor`) in the ``opensage`` namespace, holding the resources its instance type
names (its vCPUs, up to what the biggest node of the cluster has). Inside, the actor runs the
container with the local backend of its node, so a container under Ray is the same process, with
the same mounts, limits and exit codes, as one run locally. The handle names the actors; a restarted
platform ends what an earlier one left running, by the saved handle or, when the earlier one died
before it saved one, by the job's name (:meth:`RayBackend.end_job`).

A job's ``/opt/ml`` is staged in the platform's home. Its instances run on any node: one that sees the
home at its own path (this machine's, or those of a shared file system; :meth:`RayBackend._candidates`)
uses it there, and one that does not gets the instance's directory shipped through Ray's object store,
sends its log back at every poll and its new files when it ends (:mod:`opensage.compute.shipping`).
Nodes that see the home are preferred. Model servers run on the nodes that see it on the platform's
machine (the router reaches them on loopback). A job of several instances gets a placement group of one
bundle per instance (``SPREAD``) when every node may run it, and otherwise its instances go to the
least loaded of the nodes that may.

With no address the platform starts a Ray head of its own (:func:`start_head`, on loopback, with Ray's
token authentication and a token of its own) whose state is in
``<home>/ray``, connects to it again after a crash and ends it at shutdown (:meth:`RayBackend.close`);
``--ray-address`` connects to a running cluster, which shutdown leaves running.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from opensage.compute import cores, shipping
from opensage.compute.base import ContainerSpec, ContainerState, Handle, JobSpec, JobStatus
from opensage.compute.confine import Confinement
from opensage.compute.local import LocalBackend
from opensage.compute.rayactor import InstanceActor, addressed

log = logging.getLogger(__name__)
NAMESPACE = "opensage"
TOKEN_FILE = "auth_token"  # in the head's directory: the token its nodes and clients present
PROBE_FILE = "node-probe"  # in the shared directory: a node that reads it sees the platform's home
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


class RayBackend:
    """Containers as Ray actors, placed on the nodes that can run them.

    A job's instances need the platform's home at its own path (the job's ``/opt/ml`` is staged there):
    they run on the nodes that read the probe file the backend writes into ``shared`` (this machine's,
    or those of a shared file system). Model servers also need the router to reach them on loopback:
    they run on those of the nodes on the platform's machine. Without ``shared`` every container runs on
    the platform's own node."""

    name = "ray"

    def __init__(
        self, address: str, confinement: Confinement | None = None, head: Path | None = None, shared: Path | None = None
    ) -> None:
        if head is not None:  # the platform's own head, which asks for its token (start_head)
            _use_token(head_token(head))
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
        except Exception as exc:  # ConnectionError, AuthenticationError (the message says where the token goes)
            raise RayUnavailable(f"could not connect to the Ray cluster at {address}: {exc}") from exc
        self._actor_class = ray.remote(max_restarts=0, max_concurrency=4)(InstanceActor)
        self._reader = ray.remote(num_cpus=0)(_read)
        self._reaper = ray.remote(num_cpus=0)(_reap_container)
        self.node_id = ray.get_runtime_context().get_node_id()
        self._probe: tuple[Path, str] | None = None
        if shared is not None:
            shared.mkdir(parents=True, exist_ok=True)
            self._probe = (shared / PROBE_FILE, uuid.uuid4().hex)
            self._probe[0].write_text(self._probe[1])
        self._sees: dict[str, bool] = {self.node_id: True}  # node id -> it reads the probe file
        self._load: collections.Counter[str] = collections.Counter()  # node id -> containers started there

    # --- placement ----------------------------------------------------------------------------------

    def _candidates(self, job: bool, nodes: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
        """Of the alive ``nodes``, those that may run a job's instance (``job``) or a model server, and whether
        they are all of them (then Ray's own placement groups may choose among them)."""
        if self._probe is None:
            return [n for n in nodes if n["NodeID"] == self.node_id] or nodes[:1], len(nodes) == 1
        for node in nodes:
            if node["NodeID"] not in self._sees:
                self._sees[node["NodeID"]] = self._reads_probe(node["NodeID"])
        if job:  # every node: one that does not see the home gets the instance's directory shipped
            return nodes, True
        seeing = [n for n in nodes if self._sees[n["NodeID"]]]
        here = next((n["NodeManagerAddress"] for n in nodes if n["NodeID"] == self.node_id), None)
        seeing = [n for n in seeing if n["NodeManagerAddress"] == here]
        return seeing, len(seeing) == len(nodes)

    def _reads_probe(self, node_id: str) -> bool:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        assert self._probe is not None
        strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
        try:
            call = self._reader.options(scheduling_strategy=strategy).remote(str(self._probe[0]))
            found = self.ray.get(call, timeout=60)
        except Exception:  # the node died, or has no room even for a task of no CPU
            return False
        return bool(found == self._probe[1])

    def _cpus(self, job: bool, container: ContainerSpec, count: int, nodes: list[dict[str, Any]]) -> float:
        """The CPUs an instance holds in the cluster: a job's instance its vCPUs, fewer where the job would not
        fit the idle nodes it may run on otherwise (so that a job always starts once they are idle); a model
        server or notebook none (it idles between requests, and endpoints must not wait for jobs to end)."""
        if not job:
            return 0.0
        return fit_cpus(float(container.cpus or 1), [_node_cpus(n) for n in nodes], count)

    def _place(
        self, spec: JobSpec, handle: Handle, alive: list[dict[str, Any]]
    ) -> tuple[list[Any], list[str | None], float, float]:
        """The scheduling strategy of each container, the node each will run on where known, its CPUs and GPUs."""
        from ray.util import placement_group, placement_group_table
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

        job = spec.job_id.startswith(JOB_PREFIXES)
        nodes, everywhere = self._candidates(job, alive)
        count = len(spec.containers)
        cpus = self._cpus(job, spec.containers[0], count, nodes)
        gpus, nodes = self._gpus(spec.containers[0].gpus, nodes, alive)
        if job and count > 1 and len(nodes) > 1 and everywhere:
            name = f"{spec.job_id}/placement"
            bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
            group = placement_group([bundle] * count, strategy="SPREAD", name=name, lifetime="detached")
            handle["placement_group"] = name
            self.ray.get(group.ready(), timeout=START_TIMEOUT_S)
            where = placement_group_table(group)["bundles_to_node_id"]
            strategies = [PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i) for i in range(count)]
            return strategies, [where.get(i) for i in range(count)], cpus, gpus
        chosen: list[str] = []

        def order(node: dict[str, Any]) -> tuple[bool, bool, bool, float, int, bool]:
            # a node with GPUs to spare and room for the instance, that sees the home, the most room left
            # (for a job's instance), the fewest containers, the platform's own
            room = _node_cpus(node) - cpus * chosen.count(node["NodeID"])
            gpus_left = _node_gpus(node) - gpus * chosen.count(node["NodeID"])
            load = self._load[node["NodeID"]] + (0 if cpus else chosen.count(node["NodeID"]))
            far, own = not self._sees.get(node["NodeID"], False), node["NodeID"] == self.node_id
            return gpus_left < gpus, room < cpus - 1e-6, far, -room if cpus else 0.0, load, not own

        for _ in range(count):
            chosen.append(min(nodes, key=order)["NodeID"])
        return [NodeAffinitySchedulingStrategy(n, soft=False) for n in chosen], list(chosen), cpus, gpus

    def _gpus(
        self, wanted: int, nodes: list[dict[str, Any]], alive: list[dict[str, Any]]
    ) -> tuple[float, list[dict[str, Any]]]:
        """The GPUs each instance holds and the nodes it may run on: those with that many GPUs (or the most
        any has). A cluster with no GPU runs GPU instance types on CPUs, as a machine without GPUs does."""
        if not wanted:
            return 0.0, nodes
        most = max((_node_gpus(n) for n in nodes), default=0.0)
        if not most:
            if not any(_node_gpus(n) for n in alive):
                log.warning("no node of the Ray cluster has a GPU: instance types with GPUs run on CPUs (%d)", wanted)
                return 0.0, nodes
            raise RuntimeError(
                "the Ray cluster's GPU nodes cannot run this job: they do not see the platform's home at its path"
            )
        gpus = min(float(wanted), most)
        return gpus, [n for n in nodes if _node_gpus(n) >= gpus]

    # --- the compute interface ----------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> Handle:
        ray = self.ray
        started: list[dict[str, Any]] = []
        handle: Handle = {"backend": self.name, "job_id": spec.job_id, "containers": started}
        share = cores.share(cores.usable_cores(), len(spec.containers))
        try:
            alive = [n for n in ray.nodes() if n.get("Alive")]  # one look at the cluster for the whole job
            strategies, where, cpus, gpus = self._place(spec, handle, alive)
            calls: list[Any] = []
            for container, strategy in zip(addressed(spec, where, alive, self.node_id), strategies, strict=True):
                name = f"{spec.job_id}/{container.host}/{uuid.uuid4().hex[:8]}"
                options = {"name": name, "lifetime": "detached", "num_cpus": cpus, "num_gpus": gpus,
                           "scheduling_strategy": strategy}  # fmt: skip
                actor = self._actor_class.options(**options).remote(self.confinement)
                started.append({"host": container.host, "actor": name})  # found by name should a start fail
                env = {cores.SHARE_ENV: str(share), **container.env}
                node = where[len(calls)]
                far = spec.job_id.startswith(JOB_PREFIXES) and node is not None and not self._sees.get(node, False)
                directory = shipping.pack([Path(container.cwd), *container.carry]) if far else None
                started[-1].update(log=str(container.log_path), root=str(container.cwd))
                calls.append(actor.start.remote(spec.job_id, dataclasses.replace(container, env=env), directory))
            for entry, call in zip(started, calls, strict=True):  # the actors start together, each in its own process
                entry.update(ray.get(call, timeout=START_TIMEOUT_S))
                self._load[entry["node_id"]] += 1
        except Exception:
            self.stop(handle, 0)
            self.cleanup(handle)  # kills every actor it names, started or not
            raise
        # one line a job, formatted here: the log's repeat filter (opensage.listeners) holds back a template
        # seen too often, and every job's placement is worth its line
        shipped = {True: ", its directory shipped", False: ""}
        where_text = ", ".join(
            f"{c['host']} runs on Ray node {c['node_id']} ({c['node']}{shipped[bool(c.get('shipped'))]})"
            for c in started
        )
        log.info(f"{spec.job_id}: {where_text}")  # noqa: G004
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
            if actor is not None and entry.get("shipped"):
                with contextlib.suppress(self.ray.exceptions.RayError):
                    state, chunk, results = self.ray.get(actor.poll_shipped.remote(), timeout=600)
                    shipping.append(Path(entry["log"]), chunk)
                    if results is not None:  # the container ended: what it made comes home before it is reported
                        shipping.unpack_changes(results, Path(entry["root"]))
            elif actor is not None:
                with contextlib.suppress(self.ray.exceptions.RayError):
                    state = self.ray.get(actor.poll.remote(), timeout=60)
            # an actor that is gone (its node died, it was killed) ended its container with no exit code
            status.containers.append(state if state is not None else ContainerState(entry["host"], False, None))
        return status

    def stop(self, handle: Handle, grace_s: float) -> None:
        actors = [(entry, self._actor(entry)) for entry in handle["containers"]]
        calls = [actor.stop.remote(grace_s) for _, actor in actors if actor is not None]
        self._reap(handle["job_id"], [entry for entry, actor in actors if actor is None])
        for call in calls:
            with contextlib.suppress(self.ray.exceptions.RayError):
                self.ray.get(call, timeout=grace_s + 60)

    def _reap(self, job_id: str, entries: list[dict[str, Any]]) -> None:
        """End the containers of actors that are gone (killed, or died) but whose node lives: a Ray task on
        that node does what the actor would have (its processes, its cgroups)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        calls = []
        for entry in entries:
            if entry.get("node_id") and entry.get("pid"):
                strategy = NodeAffinitySchedulingStrategy(entry["node_id"], soft=False)
                calls.append(self._reaper.options(scheduling_strategy=strategy).remote(job_id, entry))
        for call in calls:
            with contextlib.suppress(Exception):  # the node is gone too, and its processes with it
                self.ray.get(call, timeout=60)

    def cleanup(self, handle: Handle) -> None:
        for entry in handle["containers"]:
            if self._load[entry.get("node_id", "")] > 0:
                self._load[entry["node_id"]] -= 1
            actor = self._actor(entry)
            if actor is None:
                self._reap(handle["job_id"], [entry])
                continue
            with contextlib.suppress(self.ray.exceptions.RayError):
                self.ray.get(actor.cleanup.remote(), timeout=60)
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)
        if handle.get("placement_group"):
            self._remove_group(handle["placement_group"])

    def _remove_group(self, name: str) -> None:
        from ray.util import get_placement_group, remove_placement_group

        with contextlib.suppress(Exception):
            remove_placement_group(get_placement_group(name))

    def end_job(self, job_id: str) -> int:
        from ray.util import list_named_actors

        names = [n for n in list_named_actors() if n.startswith(f"{job_id}/")]
        containers = [{"actor": name, "host": name.split("/")[1]} for name in names]
        handle: Handle = {"backend": self.name, "job_id": job_id, "containers": containers}
        self.stop(handle, 1.0)
        self.cleanup(handle)
        self._remove_group(f"{job_id}/placement")
        return len(containers)

    def close(self) -> None:
        """Disconnect; end the head the platform started (a crash leaves it, so that its actors live on)."""
        with contextlib.suppress(Exception):
            self.ray.shutdown()
        if self.head is not None:
            stop_head(self.head)


def _node_gpus(node: dict[str, Any]) -> float:
    return float((node.get("Resources") or {}).get("GPU", 0.0))


def _node_cpus(node: dict[str, Any]) -> float:
    return float(node.get("Resources", {}).get("CPU", 1))


def fit_cpus(requested: float, nodes: list[float], count: int) -> float:
    """The most CPUs, up to ``requested``, that each of ``count`` instances can hold with all of them placed
    on idle nodes of ``nodes`` CPUs (several to a node where they fit). Ray counts CPUs to 1/10000."""
    def fits(each: float) -> bool:
        return sum(int(cpus / each + 1e-9) for cpus in nodes) >= count

    candidates = {requested} | {cpus / k for cpus in nodes for k in range(1, count + 1)}
    best = max((c for c in candidates if 0 < c <= requested and fits(c)), default=0.0)
    return max(0.01, int(best * 10000) / 10000)


def _reap_container(job_id: str, entry: dict[str, Any]) -> None:
    """On the container's node: end it and release what it held (a Ray task, for an actor that is gone)."""
    backend = LocalBackend()
    handle: Handle = {"job_id": job_id, "containers": [entry]}
    backend.stop(handle, 1.0)
    backend.cleanup(handle)


def _read(path: str) -> str:
    """What a node reads at ``path`` ('' when it cannot): a Ray task, run on the node asked."""
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def head_token(directory: Path) -> Path:
    """The token file of the head under ``directory`` (Ray's token authentication): made once, this user's only."""
    path = directory / TOKEN_FILE
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(secrets.token_hex(32))
    return path


def _auth_env(token: Path) -> dict[str, str]:
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


def _use_token(token: Path) -> None:
    """This process connects with ``token``: Ray reads its mode when imported, so a Ray already imported
    reads its configuration again (as ``ray.init`` itself does when it turns token authentication on)."""
    os.environ.update(_auth_env(token))
    if "ray._raylet" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["ray._raylet"].Config.initialize("")


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
        "--node-ip-address=127.0.0.1",  # this machine's only: other machines join a cluster of the user's
        "--disable-usage-stats", f"--num-cpus={cores.usable_cores()}", f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--min-worker-port={WORKER_PORTS[0]}", f"--max-worker-port={WORKER_PORTS[1]}",
    ]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **_auth_env(head_token(directory))}
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
    temp = _temp_dir(directory)
    ended = end_ray_processes(temp)
    (directory / "head.json").unlink(missing_ok=True)
    return ended


def end_ray_processes(temp: Path) -> int:
    """Kill the Ray processes whose command names ``temp`` (a head's or node's temporary directory), with their
    workers (named after their actors) and the containers those started; then remove ``temp``."""
    import psutil

    marker = str(temp)
    ray_processes: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(marker in part for part in proc.info["cmdline"] or []):
                ray_processes.append(proc)
    everything = list(ray_processes)
    for proc in ray_processes:
        with contextlib.suppress(psutil.Error):
            everything.extend(proc.children(recursive=True))
    for proc in everything:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    time.sleep(0.5)  # the killed processes let go of their sockets and logs
    shutil.rmtree(temp, ignore_errors=True)
    return len(ray_processes)

