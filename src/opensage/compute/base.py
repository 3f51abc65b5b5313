"""The compute-backend interface: start a job's containers, report their exits, stop them.

Backends receive data (a :class:`JobSpec`), never callbacks; a :class:`Handle` is plain JSON that is
stored with the job, so a restarted server can find (and end) what an earlier one started.
"""

from __future__ import annotations

import collections
import random
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class RootFs:
    """An image's root file system for a container: shared read-only, with a writable layer of its own."""

    image: Path  # the unpacked image (opensage.ecr.rootfs), never written
    layer: Path  # this container's own: its changes, the overlay's work directory, the mount point
    workdir: str = "/"  # the image's WORKDIR, where the command starts
    user: str = ""  # uid[:gid] to run as (the image's USER, resolved); empty: root


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """One container (one instance of a job)."""

    host: str
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    cpus: int | None = None
    memory_bytes: int | None = None
    # (host directory, container path): bound at that path where the backend can (``/opt/ml``).
    mounts: tuple[tuple[Path, str], ...] = ()
    # EnableNetworkIsolation: no network but a loopback, where the backend can.
    isolate_network: bool = False
    # (name, address) the container resolves: the job's hosts (``algo-1``...), as a cluster's DNS gives them.
    peers: tuple[tuple[str, str], ...] = ()
    # Host paths the container writes (its own directories, the caches it fills): where containers run
    # as a user of their own (opensage.compute.confine) they stay in sight at their own paths and that
    # user owns them.
    owned: tuple[Path, ...] = ()
    # An image's root file system: the command runs inside it, the mounts bound into it. None: the
    # container sees this machine's file system (the built-in images).
    rootfs: RootFs | None = None
    # Besides its directory (``cwd``), what a node that does not see the platform's home needs to run the
    # container (the job's Python environment): shipped to it along (opensage.compute.shipping).
    carry: tuple[Path, ...] = ()
    # The instance type's GPUs: the backend gives the container that many of its machine's, where it has
    # them (opensage.compute.gpus).
    gpus: int = 0


@dataclass(frozen=True, slots=True)
class JobSpec:
    job_id: str
    containers: tuple[ContainerSpec, ...]


@dataclass(frozen=True, slots=True)
class ContainerState:
    host: str
    running: bool
    exit_code: int | None = None
    out_of_memory: bool = False
    memory_limit_bytes: int | None = None


Handle = dict[str, Any]


@dataclass(slots=True)
class JobStatus:
    containers: list[ContainerState] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return all(not c.running for c in self.containers)


class ComputeBackend(Protocol):
    name: str

    def submit(self, spec: JobSpec) -> Handle:
        """Start every container of ``spec``; returns a JSON-serializable handle."""

    def poll(self, handle: Handle) -> JobStatus:
        """Which containers still run, and how the others ended."""

    def stop(self, handle: Handle, grace_s: float) -> None:
        """SIGTERM every container, SIGKILL what is left after ``grace_s``."""

    def cleanup(self, handle: Handle) -> None:
        """Release what ``submit`` set up (cgroups, ...) once every container has ended."""

    def end_job(self, job_id: str) -> int:
        """End and release whatever of ``job_id`` still runs with no handle to name it (an earlier server
        died between ``submit`` and saving the handle); returns how many containers that was."""


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# free_port picks from the _PORT_SPAN ports that end _PORT_GAP below the ephemeral range: the ports just
# below it are where platforms are often put (``--port``), whose listeners bind several ports at once.
_PORT_SPAN, _PORT_GAP = 5000, 12768
_recent: collections.deque[int] = collections.deque(maxlen=256)


def _ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (for a model server or a job's tracker).

    It is taken below the kernel's ephemeral range: a port from that range, free now, can be handed to
    an outgoing connection before whoever asked binds it (a torchrun master, an XGBoost tracker),
    which then fails to listen. Ports handed out lately are not handed out again."""
    end = max(1024 + _PORT_SPAN, _ephemeral_low() - _PORT_GAP)
    first = end - _PORT_SPAN
    for _ in range(100):
        port = random.randrange(first, end)
        if port in _recent:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        _recent.append(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
