"""What the container-running job engines (training, processing) share, on :mod:`opensage.controller`.

One asyncio task per job in the API server; a job's record is persisted with every step, its
containers run on a compute backend, and their output is tailed into the log store. At start-up a
server ends the jobs an earlier one left running (their processes are stopped); at shutdown it
stops its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from opensage.compute.base import ComputeBackend, JobSpec, JobStatus
from opensage.compute.instances import GiB
from opensage.controller import RESTART_REASON, SHUTDOWN_REASON, Run, RunController, call_on_loop
from opensage.errors import OpenSageError
from opensage.images import registry
from opensage.images.container import ContainerImage, ContainerImages, ImageError
from opensage.images.registry import BuiltinImage
from opensage.jobs.access import JobAccess, with_env
from opensage.logstore import LogStore
from opensage.states import JobStatus as _Status
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

IN_PROGRESS, COMPLETED, FAILED = _Status.IN_PROGRESS, _Status.COMPLETED, _Status.FAILED
STOPPING, STOPPED = _Status.STOPPING, _Status.STOPPED


class JobFailed(OpenSageError):
    """Ends a job as Failed; the message is its FailureReason."""


class JobEngine(RunController):
    """The lifecycle common to container jobs; subclasses give ``KIND``, ``_run`` and ``_end``."""

    access: JobAccess | None = None  # keys and endpoints for the user code jobs run (set by the platform)
    images: ContainerImages | None = None  # the registry's images, unpacked (set by the platform)

    async def _image(self, uri: str, what: str) -> BuiltinImage | ContainerImage | None:
        """The image a job names: one of the registry's, unpacked, or a built-in one (None: neither).

        Raises:
            JobFailed: it names the registry, which cannot give it (no such image, a corrupt layer...).
        """
        if self.images is not None:
            try:
                found = await asyncio.to_thread(self.images.prepare, uri)
            except ImageError as exc:
                raise JobFailed(f"ClientError: the {what} '{uri}' cannot be used: {exc}.") from exc
            if found is not None:
                return found
        return registry.resolve(uri)

    async def _with_access(self, spec: JobSpec, name: str, arn: str, isolated: bool) -> JobSpec:
        """``spec`` with the job's own key and the platform's endpoints (:mod:`opensage.jobs.access`); as it
        is for a network-isolated job, which could not use them."""
        if self.access is None or isolated:
            return spec
        return with_env(spec, await asyncio.to_thread(self.access.grant, self.KIND, name, arn))

    def __init__(
        self,
        store: SqlStore,
        s3: Any,
        backend: ComputeBackend,
        logs: LogStore,
        work_dir: Path,
        clock: Callable[[], dt.datetime],
        *,
        stop_grace_s: float = 10.0,
        poll_interval_s: float = 0.05,
        envs_dir: Path | None = None,
        archive_quotas: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(store, clock, stop_grace_s=stop_grace_s)
        self.archive_quotas = dict(archive_quotas or {})  # opensage.quotas' archive_* values
        self.s3 = s3
        self.backend = backend
        self.logs = logs
        self.work_dir = work_dir
        self.poll_interval_s = poll_interval_s
        self.envs_dir = envs_dir or work_dir / "_envs"

    async def _release(self, row: Resource) -> None:
        """An earlier server's job: end its processes, keep what they logged since, remove its directory."""
        handle = row.data.get("_Handle")
        with contextlib.suppress(Exception):
            if handle:
                await asyncio.to_thread(self.backend.stop, handle, 1.0)
                await asyncio.to_thread(self.backend.cleanup, handle)
            await asyncio.to_thread(self.backend.end_job, f"{self.KIND}/{row.name}")  # as JobSpec.job_id
        now_ms = int(self.clock().timestamp() * 1000)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(send_leftovers, self.work_dir / row.name / "logs", self.logs, now_ms)
        shutil.rmtree(self.work_dir / row.name, ignore_errors=True)

    async def _await_containers(
        self, run: Run, limit: int | None, pump: Callable[[bool], None]
    ) -> tuple[str, JobStatus]:
        """Poll the containers (``pump`` moves their logs) until all have ended; stops them on request or
        past ``limit`` seconds (MaxRuntimeInSeconds). The outcome is 'done', 'stopped' or 'max-runtime'.

        When one container of several fails (ends with a non-zero code) the others are stopped, as
        SageMaker ends a job whose instance failed: the rest would otherwise wait for it (a distributed
        rendezvous, a collective) until their own timeout. ``run.first_failure`` names that host."""
        started = run.started or self.clock()
        deadline = started + dt.timedelta(seconds=limit) if limit else None  # on the injected clock
        outcome = "done"
        assert run.handle is not None
        while True:
            status: JobStatus = await asyncio.to_thread(self.backend.poll, run.handle)
            await asyncio.to_thread(pump, False)
            if status.done:
                break
            failed = [c.host for c in status.containers if not c.running and c.exit_code not in (0, None)]
            if failed and run.first_failure is None:
                run.first_failure = failed[0]
                await asyncio.to_thread(self.backend.stop, run.handle, self.stop_grace_s)
                continue
            if outcome == "done":
                if run.stop_requested.is_set():
                    outcome = "stopped"
                elif deadline is not None and self.clock() > deadline:
                    outcome = "max-runtime"
                if outcome != "done":
                    await asyncio.to_thread(self.backend.stop, run.handle, self.stop_grace_s)
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.stop_requested.wait(), self.poll_interval_s)
        await asyncio.to_thread(pump, True)
        run.last_status = status
        return outcome, status


class LogTail:
    """Reads the complete new lines of a growing log file.

    With a ``group`` and ``stream``, :meth:`commit` records (next to the log) how far the lines have
    reached the log store; after a crash of the server the next one sends the rest
    (:func:`send_leftovers`), so a container's output after the crash is not lost.
    """

    def __init__(self, path: Path, group: str = "", stream: str = "") -> None:
        self.path = path
        self.group = group
        self.stream = stream
        self.offset = 0
        self.partial = b""

    @property
    def state_path(self) -> Path:
        return self.path.with_name(self.path.name + ".sent")

    def commit(self) -> None:
        """Record that the lines read so far are in the log store."""
        state = {"group": self.group, "stream": self.stream, "offset": self.offset - len(self.partial)}
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    def read(self, final: bool = False) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read(4 * 1024 * 1024)
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        data = self.partial + chunk
        lines = data.split(b"\n")
        self.partial = lines.pop()
        if final and self.partial:
            lines.append(self.partial)
            self.partial = b""
        # CloudWatch shows a container's tabs as "#011"; metric regexes are written against that.
        return [line.decode("utf-8", "replace").rstrip("\r").replace("\t", "#011") for line in lines if line.strip()]


def send_leftovers(logs_dir: Path, logs: LogStore, now_ms: int) -> int:
    """Send what containers logged after the last :meth:`LogTail.commit` (a crashed server's jobs)."""
    sent = 0
    for state_path in sorted(logs_dir.glob("*.log.sent")):
        try:
            state = json.loads(state_path.read_text())
            tail = LogTail(state_path.with_name(state_path.name.removesuffix(".sent")), state["group"], state["stream"])
            tail.offset = int(state["offset"])
        except (OSError, ValueError, KeyError):
            continue
        while lines := tail.read(final=True):
            logs.put_events(tail.group, tail.stream, [(now_ms, line) for line in lines])
            sent += len(lines)
    return sent


def tail_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` non-blank lines of a log file (none when it cannot be read)."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []
    return lines[-n:]


def last_lines(path: Path, n: int) -> str:
    return " | ".join(tail_lines(path, n)) or "(no output)"


def out_of_memory_reason(state: Any, what: str, instance_type: str, advice: str) -> str:
    """The FailureReason of a container killed for passing its instance type's memory."""
    gib = (state.memory_limit_bytes or 0) / GiB
    return (
        f"OutOfMemoryError: the {what} on {state.host} used more than the {gib:.1f} GiB of its instance type "
        f"({instance_type}) and was killed. {advice}"
    )


__all__ = [
    "COMPLETED",
    "FAILED",
    "IN_PROGRESS",
    "RESTART_REASON",
    "SHUTDOWN_REASON",
    "STOPPED",
    "STOPPING",
    "JobEngine",
    "JobFailed",
    "LogTail",
    "Run",
    "call_on_loop",
    "last_lines",
    "out_of_memory_reason",
    "tail_lines",
]
