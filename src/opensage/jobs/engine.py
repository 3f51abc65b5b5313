"""What the container-running job engines (training, processing) share.

One asyncio task per job in the API server; a job's record is persisted with every step, its
containers run on a compute backend, and their output is tailed into the log store. At start-up a
server ends the jobs an earlier one left running; at shutdown it stops its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensage import states
from opensage.compute.base import ComputeBackend, Handle, JobStatus
from opensage.compute.instances import GiB
from opensage.errors import NotFound, OpenSageError
from opensage.logstore import LogStore
from opensage.store.sql import SqlStore

IN_PROGRESS, COMPLETED, FAILED, STOPPING, STOPPED = "InProgress", "Completed", "Failed", "Stopping", "Stopped"
SHUTDOWN_REASON = "InternalServerError: OpenSage was shut down while this job was running; start the job again."
RESTART_REASON = "InternalServerError: OpenSage restarted while this job was running; start the job again."


def call_on_loop(loop: asyncio.AbstractEventLoop | None, fn: Callable[[], object]) -> None:
    """Run ``fn`` on ``loop``: at once when called from that loop, else scheduled thread-safely.

    Stop requests come from provider methods that run in a worker thread; asyncio objects (events,
    tasks) may only be touched from their own loop.
    """
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is None or running is loop:
        fn()
    else:
        loop.call_soon_threadsafe(fn)


class JobFailed(OpenSageError):
    """Ends a job as Failed; the message is its FailureReason."""


@dataclass(slots=True)
class Run:
    """What an engine keeps in memory about a running job."""

    name: str
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    handle: Handle | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    last_status: JobStatus | None = None
    shutting_down: bool = False


class JobEngine(ABC):
    """The lifecycle common to job engines; subclasses give ``KIND``, ``_run`` and ``_end``."""

    KIND = ""

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
    ) -> None:
        self.store = store
        self.s3 = s3
        self.backend = backend
        self.logs = logs
        self.work_dir = work_dir
        self.clock = clock
        self.stop_grace_s = stop_grace_s
        self.poll_interval_s = poll_interval_s
        self.envs_dir = envs_dir or work_dir / "_envs"
        self._runs: dict[str, Run] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the jobs' tasks run on
        self._tasks: set[asyncio.Task[None]] = set()

    @abstractmethod
    async def _run(self, run: Run) -> None:
        """Run one job from its record to its end."""

    @abstractmethod
    async def _end(self, name: str, status: str, reason: str | None) -> None:
        """Record the end of a job (Stopped or Failed) that this server does not run."""

    def launch(self, name: str) -> None:
        """Start running a job whose record exists (status InProgress)."""
        run = Run(name)
        self._runs[name] = run
        self._loop = asyncio.get_running_loop()
        task = self._loop.create_task(self._run(run), name=f"{self.KIND}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def request_stop(self, name: str) -> bool:
        """Ask a running job to stop; False when no task of this server runs it."""
        run = self._runs.get(name)
        if run is None:
            return False
        call_on_loop(self._loop, run.stop_requested.set)
        return True

    async def recover(self) -> None:
        """At start-up: end the jobs an earlier server left running (their processes are stopped)."""
        for status in (IN_PROGRESS, STOPPING):
            for row in await asyncio.to_thread(self.store.list_resources, self.KIND, status=status):
                handle = row.data.get("_Handle")
                if handle:
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(self.backend.stop, handle, 1.0)
                        await asyncio.to_thread(self.backend.cleanup, handle)
                if status == STOPPING:
                    await self._end(row.name, STOPPED, None)
                else:
                    await self._end(row.name, FAILED, RESTART_REASON)
                shutil.rmtree(self.work_dir / row.name, ignore_errors=True)

    async def shutdown(self) -> None:
        """Stop every running job (server shutdown): they end Failed with a reason."""
        for run in list(self._runs.values()):
            run.shutting_down = True
            run.stop_requested.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.stop_grace_s + 5)

    async def _describe(self, name: str) -> dict:
        row = await asyncio.to_thread(self.store.get_resource, self.KIND, name)
        if row is None:
            raise NotFound(name)
        return row.data

    async def _save(self, name: str, **fields: Any) -> None:
        """Merge ``fields`` into the job's document (compare-and-set: a concurrent stop is kept)."""
        change = states.transition(self.KIND, None, self.clock(), fields=fields)
        with contextlib.suppress(NotFound):
            await asyncio.to_thread(self.store.modify_resource, self.KIND, name, change, now=self.clock())

    async def _await_containers(self, run: Run, desc: dict, pump: Callable[[bool], None]) -> tuple[str, JobStatus]:
        """Poll the containers (``pump`` moves their logs) until all have ended; stops them on request or
        past ``MaxRuntimeInSeconds``. The outcome is 'done', 'stopped' or 'max-runtime'."""
        limit = (desc.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit if limit else None
        outcome = "done"
        assert run.handle is not None
        while True:
            status: JobStatus = await asyncio.to_thread(self.backend.poll, run.handle)
            await asyncio.to_thread(pump, False)
            if status.done:
                break
            if outcome == "done":
                if run.stop_requested.is_set():
                    outcome = "stopped"
                elif deadline is not None and loop.time() > deadline:
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
    """Reads the complete new lines of a growing log file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

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
