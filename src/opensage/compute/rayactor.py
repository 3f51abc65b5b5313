"""What runs on the Ray nodes for the ``ray`` backend (:mod:`opensage.compute.raycluster`): the actor of one
container, and the addresses a job's containers reach each other at."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

from opensage.compute import gpus, shipping
from opensage.compute.base import ContainerSpec, ContainerState, Handle, JobSpec
from opensage.compute.confine import Confinement
from opensage.compute.local import LocalBackend
from opensage.contract import HOST_ADDRESSES_ENV


def _ray_gpus() -> list[int]:
    import ray

    return [int(i) for i in ray.get_gpu_ids()]


def ray_node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


class InstanceActor:
    """One container on a node of the cluster, run by that node's local backend."""

    def __init__(self, confinement: Confinement | None = None) -> None:
        self.backend = LocalBackend(confinement=confinement)
        self.handle: Handle | None = None
        # a shipped container (opensage.compute.shipping): its directory, what it held at the start, the
        # log read so far, whether its results were collected
        self.shipped: tuple[Path, shipping.Snapshot] | None = None
        self.log: tuple[Path, int] | None = None
        self.collected = False
        self.carried: list[Path] = []

    def start(self, job_id: str, container: ContainerSpec, directory: bytes | None = None) -> dict[str, Any]:
        root = Path(container.cwd)
        if directory is not None and not root.exists():  # this node does not see the platform's home
            shipping.unpack(directory)
            for path in container.owned:
                Path(path).mkdir(parents=True, exist_ok=True)
            self.shipped = (root, shipping.snapshot(root))
            self.carried = [Path(p) for p in container.carry]
            self.log = (container.log_path, 0)
        elif not Path(container.cwd).is_dir():
            raise RuntimeError(
                f"node {os.uname().nodename} does not see the container's directory {container.cwd}: it runs "
                "where the platform's home is"
            )
        given = _ray_gpus() if container.gpus else []
        if given:  # the GPUs Ray gave this actor, not whatever the node's local backend would pick
            container = dataclasses.replace(container, env={**container.env, **gpus.visible(given)})
        self.handle = self.backend.submit(JobSpec(job_id, (container,)))
        info = dict(self.handle["containers"][0])
        info["node"] = os.uname().nodename
        info["node_id"] = ray_node_id()
        info["shipped"] = self.shipped is not None
        return info

    def poll(self) -> ContainerState:
        assert self.handle is not None
        return self.backend.poll(self.handle).containers[0]

    def poll_shipped(self) -> tuple[ContainerState, bytes, bytes | None]:
        """The container's state, its log's new bytes and, once it has ended (the first time only), its
        directory's new and changed files."""
        state = self.poll()
        assert self.log is not None and self.shipped is not None
        chunk = shipping.read_from(self.log[0], self.log[1])
        self.log = (self.log[0], self.log[1] + len(chunk))
        results = None
        if not state.running and not self.collected:
            rest = shipping.read_from(self.log[0], self.log[1], most=1 << 30)  # what it wrote last
            chunk += rest
            self.log = (self.log[0], self.log[1] + len(rest))
            results, self.collected = shipping.pack_changes(*self.shipped), True
        return state, chunk, results

    def stop(self, grace_s: float) -> None:
        if self.handle is not None:
            self.backend.stop(self.handle, grace_s)

    def cleanup(self) -> None:
        if self.handle is not None:
            self.backend.cleanup(self.handle)
        if self.shipped is not None:  # the node's copy of the directory
            for path in (self.shipped[0], *self.carried):
                shutil.rmtree(path, ignore_errors=True)


def addressed(spec: JobSpec, where: list[str | None], alive: list[dict[str, Any]], own: str) -> list[ContainerSpec]:
    """The containers of ``spec`` (on the nodes ``where``; None: the platform's, ``own``) with the addresses
    they reach each other at: a peer on the container's own machine as before, one on another machine by its
    node's address, in the hosts file (``peers``) and in the address map that XGBoost and TensorFlow read."""
    ips = {n["NodeID"]: n["NodeManagerAddress"] for n in alive}
    node_ip = {c.host: ips.get(node or own, ips.get(own)) for c, node in zip(spec.containers, where, strict=True)}
    out = []
    for container in spec.containers:
        mine = node_ip.get(container.host)

        def at(host: str, address: str, mine: str | None = mine) -> str:
            theirs = node_ip.get(host)
            return address if theirs is None or theirs == mine else str(theirs)

        peers = tuple((h, at(h, a)) for h, a in container.peers)
        env = container.env
        if env.get(HOST_ADDRESSES_ENV):
            table = json.loads(env[HOST_ADDRESSES_ENV])
            env = {**env, HOST_ADDRESSES_ENV: json.dumps({h: at(h, a) for h, a in table.items()})}
        out.append(dataclasses.replace(container, peers=peers, env=env))
    return out
