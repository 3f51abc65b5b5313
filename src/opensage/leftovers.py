"""What a server that died without stopping (``kill -9``, a crash, a power cut) leaves running.

Its object store (a ``weed`` process over the home's data directory), its jobs' containers and its
model servers (processes working in a directory under the home) and their cgroups. ``opensage
down`` ends them when the server's pid is dead; ``up`` ends the store before it starts its own,
and the controllers end the jobs and endpoints they find in the store. The records stay: the next
``up`` marks the jobs that were running as Failed and brings the endpoints back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

import psutil

from opensage.compute.local import sweep_cgroups

log = logging.getLogger(__name__)


def end_orphaned_store(data_dir: Path) -> int:
    """End a store left running over ``data_dir`` by a server that died; how many processes it ended."""
    marker = f"-dir={data_dir}"
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["name"] == "weed" and marker in (proc.info["cmdline"] or []):
                log.warning("ending the object store (pid %d) left running by an earlier OpenSage", proc.pid)
                found.append(proc)
    _end(found)
    return len(found)


def _under(path: str, root: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(root)
    except (OSError, ValueError):
        return False


def end_orphaned_processes(home: Path) -> int:
    """End the containers and model servers a dead server of ``home`` left, with their children.

    Each was started as the leader of a session of its own, working in a directory under
    ``<home>/jobs`` or ``<home>/endpoints``: those session leaders and their sessions are ended.
    """
    roots = [(home / "jobs").resolve(), (home / "endpoints").resolve()]
    me = os.getpid()
    leaders = []
    for proc in psutil.process_iter(["pid", "cwd"]):
        with contextlib.suppress(psutil.Error, OSError):
            cwd = proc.info["cwd"]
            if proc.pid != me and os.getsid(proc.pid) == proc.pid and cwd and any(_under(cwd, r) for r in roots):
                leaders.append(proc)
    found = list(leaders)
    for leader in leaders:
        with contextlib.suppress(psutil.Error):
            found.extend(leader.children(recursive=True))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(leader.pid, signal.SIGTERM)
    _end(found)
    return len(leaders)


def _end(procs: list[psutil.Process], grace_s: float = 10.0) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


def end_all(home: Path) -> dict[str, int]:
    """End what a dead server of ``home`` left: its store, its processes, then their empty cgroups."""
    ended = {
        "object store": end_orphaned_store(home / "objects"),
        "job and model-server processes": end_orphaned_processes(home),
    }
    if (home / "ray" / "head.json").exists():  # the Ray head it started, with the actors it holds
        from opensage.compute.raycluster import stop_head

        ended["Ray head processes"] = stop_head(home / "ray")
    time.sleep(0.1)  # let the kernel empty the cgroups of the processes just ended
    ended["cgroups"] = sweep_cgroups()
    return ended
