"""The base of every controller: the part of the platform that drives one kind of long-running resource.

A controller (training, processing and transform jobs, endpoints; tuning jobs and the like next)
owns the asyncio tasks that move its resources through their states, and persists every step as a
transition of :mod:`opensage.states` applied with the store's compare-and-set. What they share:

* :class:`Controller` — the tasks (started on the server's loop, held until they end, cancelled at
  shutdown), the persistence (``_describe``, ``_save``, ``_move``) and the thread-safe bridge for
  requests that arrive on a worker thread (:func:`call_on_loop`).
* :class:`RunController` — resources with one run each that can be asked to stop (jobs): ``launch``,
  ``request_stop``, ``recover`` after a restart (what an earlier server left running ends Failed,
  what it was stopping ends Stopped) and ``shutdown`` (what runs ends Failed with a reason). A run
  cancelled before its coroutine ever started is still recorded as ended.

Subclasses give ``KIND``, ``_run`` and ``_end``; they run on an injected clock, so a state machine can
be driven in a unit test with a fake compute backend and a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from opensage import states
from opensage.compute.base import Handle, JobStatus
from opensage.errors import Conflict, NotFound
from opensage.states import JobStatus as Status
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

log = logging.getLogger(__name__)
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


class Controller:
    """Tasks and persistence for the resources of one ``KIND``."""

    KIND = ""

    def __init__(self, store: SqlStore, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the tasks run on
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task on the running loop, held until it ends."""
        self._loop = asyncio.get_running_loop()
        task = self._loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _wait_tasks(self, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def shutdown(self) -> None:
        """Cancel every task and wait (briefly) for them to end."""
        for task in list(self._tasks):
            task.cancel()
        await self._wait_tasks(5.0)

    async def _describe(self, name: str) -> dict:
        row = await asyncio.to_thread(self.store.get_resource, self.KIND, name)
        if row is None:
            raise NotFound(name)
        return row.data

    async def _rows(self, statuses: Iterable[str]) -> list[Resource]:
        rows: list[Resource] = []
        for status in statuses:
            rows.extend(await asyncio.to_thread(self.store.list_resources, self.KIND, status=status))
        return rows

    async def _save(self, name: str, **fields: Any) -> None:
        """Merge ``fields`` into the document (compare-and-set: a concurrent status change is kept)."""
        change = states.transition(self.KIND, None, self.clock(), fields=fields)
        with contextlib.suppress(NotFound):
            await asyncio.to_thread(self.store.modify_resource, self.KIND, name, change, now=self.clock())

    async def _move(
        self,
        name: str,
        status: str | None,
        *,
        fields: dict[str, Any] | None = None,
        drop: Iterable[str] = (),
        edit: Callable[[dict[str, Any]], None] | None = None,
        quiet_from: Iterable[str] = (),
    ) -> bool:
        """Move ``name`` to ``status`` (``None``: keep it) with ``fields``; ``False`` when it did not happen.

        It does not happen when the resource is gone, when its current status does not allow the move
        (logged unless the current status is one of ``quiet_from``), or when concurrent writers kept
        winning. ``edit`` changes the document further, inside the same compare-and-set.
        """
        now = self.clock()
        change = states.transition(self.KIND, status, now, fields=fields or {}, drop=tuple(drop), edit=edit)
        quiet = set(quiet_from)

        def write() -> bool:
            try:
                self.store.modify_resource(self.KIND, name, change, now=now)
            except NotFound:
                return False
            except states.IllegalTransition as exc:
                if exc.current not in quiet:
                    log.info("%s %s: %s", self.KIND, name, exc)
                return False
            except Conflict:
                log.warning("%s %s kept changing; its status %s was not written", self.KIND, name, status)
                return False
            return True

        try:
            return await asyncio.to_thread(write)
        except Exception:
            log.exception("%s %s: its status %s could not be saved", self.KIND, name, status)
            return False


class Spec(Protocol):
    """What a creator hands a controller: a typed spec of the resource (``opensage.jobs.specs``)."""

    @property
    def name(self) -> str: ...

    def initial_description(self, arn: str, now: dt.datetime) -> dict[str, Any]: ...


@dataclass(slots=True)
class Run:
    """What a controller keeps in memory about one running resource."""

    name: str
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    handle: Handle | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    last_status: JobStatus | None = None
    first_failure: str | None = None  # the host whose container failed first (a job's others are then stopped)
    shutting_down: bool = False
    task: asyncio.Task[None] | None = None
    started: dt.datetime | None = None  # when this server launched it (MaxRuntimeInSeconds counts from here)
    closers: list[Callable[[], None]] = field(default_factory=list)  # what to release when it ends (blocking calls)


class RunController(Controller, ABC):
    """Resources that run once and can be asked to stop: launch, stop, recover, shutdown."""

    def __init__(self, store: SqlStore, clock: Callable[[], dt.datetime], *, stop_grace_s: float = 10.0) -> None:
        super().__init__(store, clock)
        self.stop_grace_s = stop_grace_s
        self._runs: dict[str, Run] = {}
        self._end_listeners: list[Callable[[str], None]] = []

    def on_end(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(name)`` on the loop whenever a run of this controller's task ends (its end is
        recorded by then, unless the task was cancelled): what drives child resources waits on this, not
        on a poll."""
        self._end_listeners.append(listener)

    @abstractmethod
    async def _run(self, run: Run) -> None:
        """Run one resource from its record to its end."""

    @abstractmethod
    async def _end(self, name: str, status: str, reason: str | None) -> None:
        """Record the end (Stopped or Failed) of a resource whose run did not record one."""

    async def _release(self, row: Resource) -> None:
        """At recovery, before the end is recorded: free what an earlier server's run held."""

    def _stop(self, run: Run) -> None:
        """On the loop: tell ``run`` to stop (its task reads ``stop_requested``)."""
        run.stop_requested.set()

    async def create(self, spec: Spec, arn: str, *, parent_arn: str | None = None) -> Resource:
        """Record a new resource (InProgress) from ``spec`` and start it: the one way every creator
        (the API, a tuning job, a pipeline) starts one; ``parent_arn`` links it to what made it.

        Raises:
            AlreadyExists: one of that name exists.
        """
        now = self.clock()
        data = spec.initial_description(arn, now)
        row = Resource(self.KIND, spec.name, arn, Status.IN_PROGRESS, now, now, data, parent_arn=parent_arn)
        created = await asyncio.to_thread(self.store.create_resource, row)
        self.launch(spec.name)
        return created

    def launch(self, name: str) -> None:
        """Start running a resource whose record exists (status InProgress)."""
        run = Run(name, started=self.clock())
        self._runs[name] = run
        run.task = self._spawn(self._run(run), f"{self.KIND}:{name}")
        run.task.add_done_callback(lambda task: self._ended(run, task))

    def _ended(self, run: Run, task: asyncio.Task[None]) -> None:
        if self._runs.get(run.name) is run:
            del self._runs[run.name]
        if task.cancelled() and self._loop is not None and not self._loop.is_closed():
            # cancelled before (or without) recording an end: record it
            status, reason = (Status.FAILED, SHUTDOWN_REASON) if run.shutting_down else (Status.STOPPED, None)
            self._spawn(self._end(run.name, status, reason), f"{self.KIND}-ended:{run.name}")
        elif not task.cancelled() and task.exception() is not None:
            log.error("%s %s: its run raised", self.KIND, run.name, exc_info=task.exception())
        for listener in self._end_listeners:
            try:
                listener(run.name)
            except Exception:
                log.exception("%s %s: a listener of its end raised", self.KIND, run.name)

    def running(self, name: str) -> bool:
        return name in self._runs

    def request_stop(self, name: str) -> bool:
        """Ask a running resource to stop (from any thread); False when no task of this server runs it."""
        run = self._runs.get(name)
        if run is None:
            return False
        call_on_loop(self._loop, lambda: self._stop(run))
        return True

    async def recover(self) -> None:
        """At start-up: end what an earlier server left running (Failed) or was stopping (Stopped)."""
        for row in await self._rows((Status.IN_PROGRESS, Status.STOPPING)):
            with contextlib.suppress(Exception):
                await self._release(row)
            if row.status == Status.STOPPING:
                await self._end(row.name, Status.STOPPED, None)
            else:
                await self._end(row.name, Status.FAILED, RESTART_REASON)

    async def shutdown(self) -> None:
        """Stop every run (server shutdown): each ends Failed with a reason."""
        for run in list(self._runs.values()):
            run.shutting_down = True
            self._stop(run)
        await self._wait_tasks(self.stop_grace_s + 5)
        for task in list(self._tasks):
            task.cancel()
        await self._wait_tasks(1.0)
