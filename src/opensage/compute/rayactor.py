"""What runs on the Ray nodes for the ``ray`` backend (:mod:`opensage.compute.raycluster`): the actor of one
container, and the addresses a job's containers reach each other at."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from opensage.compute.base import ContainerSpec, ContainerState, Handle, JobSpec
from opensage.compute.confine import Confinement
from opensage.compute.local import LocalBackend
from opensage.contract import HOST_ADDRESSES_ENV


def ray_node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


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
        info["node_id"] = ray_node_id()
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
