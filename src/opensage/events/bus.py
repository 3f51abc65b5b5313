"""The event bus: events in, rules matched, targets invoked.

Events come from the platform itself (the store tells the bus of every change; :mod:`.sagemaker`
says which are events) and from PutEvents. :meth:`EventBus.publish` may be called from any thread
and only queues the event; one task on the server's loop takes them in order, matches each against
the enabled rules of its bus (rows of kind ``events-rule``, named ``<bus>/<rule>``, with their
targets in the document) and invokes every target of every matching rule. A target that fails is
logged with the rule and the event's id; the others still run. Per rule, CloudWatch gets EventBridge's
metrics (namespace ``AWS/Events``, dimension ``RuleName``): TriggeredRules, Invocations and
FailedInvocations. Events published before the loop runs wait for it; events are held in memory
between the change and their delivery, so a crash of the server loses the ones not yet delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

from opensage.events import patterns, sagemaker, targets
from opensage.logstore import LogStore
from opensage.store.entities import Resource
from opensage.store.metrics import MetricStore, Point, Stats
from opensage.store.sql import SqlStore

log = logging.getLogger(__name__)
RULE = "events-rule"
DEFAULT_BUS = "default"
MAX_PENDING = 10_000  # events kept while the bus is not delivering (a platform that was never started)


def rule_key(bus: str, name: str) -> str:
    return f"{bus}/{name}"


class EventBus:
    """Matches events against the stored rules and delivers them to the rules' targets."""

    def __init__(
        self,
        store: SqlStore,
        clock: Callable[[], dt.datetime],
        region: str,
        account_id: str,
        logs: LogStore | None = None,
        start_pipeline: targets.PipelineStarter | None = None,
        metric_store: MetricStore | None = None,
    ) -> None:
        self.metric_store = metric_store
        self.store = store
        self.clock = clock
        self.region = region
        self.account_id = account_id
        self.logs = logs
        self.start_pipeline = start_pipeline  # set by create_app once the SageMaker provider exists
        self._lock = threading.Lock()
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0  # events taken off the queue (tests and the console read it)

    # --- in --------------------------------------------------------------------------------------------

    def watch(self, before: Resource | None, after: Resource) -> None:
        """The store's watcher: queue the events a change of a resource is."""
        if after.kind == RULE:
            return
        for event in sagemaker.events_for(before, after, self.region, self.account_id, self.clock()):
            self.publish(event)

    def publish(self, event: dict[str, Any], bus: str = DEFAULT_BUS) -> None:
        """Queue ``event`` for the rules of ``bus`` (any thread)."""
        with self._lock:
            loop, queue = self._loop, self._queue
            if loop is None or queue is None or loop.is_closed():
                if len(self._pending) >= MAX_PENDING:
                    log.warning("the event bus is not delivering: event %s dropped", self._pending.pop(0)[1].get("id"))
                self._pending.append((bus, event))
                return
        loop.call_soon_threadsafe(queue.put_nowait, (bus, event))

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start delivering (on the running loop), the events queued so far first."""
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        with self._lock:
            self._loop, self._queue = asyncio.get_running_loop(), queue
            pending, self._pending = self._pending, []
        for item in pending:
            queue.put_nowait(item)
        self._task = self._loop.create_task(self._deliver(queue), name="event-bus")

    async def shutdown(self) -> None:
        with self._lock:
            self._loop, self._queue = None, None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued event has been delivered (tests)."""
        queue = self._queue
        if queue is not None:
            await asyncio.wait_for(queue.join(), timeout)

    # --- out ---------------------------------------------------------------------------------------------

    async def _deliver(self, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        while True:
            bus, event = await queue.get()
            try:
                await self.dispatch(bus, event)
            except Exception:
                log.exception("event %s could not be matched against the rules", event.get("id"))
            finally:
                self.delivered += 1
                queue.task_done()

    async def dispatch(self, bus: str, event: dict[str, Any]) -> list[str]:
        """Invoke the targets of every enabled rule of ``bus`` that ``event`` matches; the rules' names."""
        rows = await asyncio.to_thread(self.store.list_resources, RULE, status="ENABLED")
        matched = []
        for row in rows:
            if row.data.get("EventBusName", DEFAULT_BUS) != bus or not row.data.get("EventPattern"):
                continue
            try:
                pattern = patterns.parse(row.data["EventPattern"])
            except patterns.InvalidPattern:
                continue
            if not patterns.matches(pattern, event):
                continue
            matched.append(row.data["Name"])
            failed = 0
            for target in row.data.get("Targets") or []:
                failed += not await self._invoke(row, target, event)
            await asyncio.to_thread(self._count, row.data["Name"], len(row.data.get("Targets") or []), failed)
        return matched

    def _count(self, rule: str, invocations: int, failed: int) -> None:
        if self.metric_store is None:
            return
        minute = int(self.clock().timestamp() // 60) * 60
        dims = (("RuleName", rule),)
        points = [
            Point(("AWS/Events", name, dims), minute, "Count", Stats.of([float(value)]))
            for name, value in (("TriggeredRules", 1), ("Invocations", invocations), ("FailedInvocations", failed))
        ]
        try:
            self.metric_store.add(points)
        except Exception:
            log.exception("the metrics of rule %s could not be written", rule)

    async def _invoke(self, rule: Resource, target: dict[str, Any], event: dict[str, Any]) -> bool:
        """Deliver ``event`` to one target; whether it was."""
        try:
            kind = targets.kind_of(target["Arn"])
            if kind == "pipeline":
                if self.start_pipeline is None:
                    raise RuntimeError("SageMaker pipelines are not served by this platform")
                parameters = targets.pipeline_parameters(target, event)
                arn = await self.start_pipeline(target["Arn"], parameters, target.get("RoleArn"))
                log.info("rule %s: event %s started pipeline execution %s", rule.arn, event["id"], arn)
            else:
                await self._to_log_group(rule, target, event)
        except Exception as exc:
            log.warning("rule %s: target %s failed for event %s: %s", rule.arn, target.get("Id"), event["id"], exc)
            return False
        return True

    async def _to_log_group(self, rule: Resource, target: dict[str, Any], event: dict[str, Any]) -> None:
        if self.logs is None:
            raise RuntimeError("no log store")
        match = targets.LOG_GROUP_ARN.fullmatch(target["Arn"])
        assert match is not None
        text = targets.target_input(target, event)
        ms = int(self.clock().timestamp() * 1000)
        await asyncio.to_thread(self.logs.put_events, match.group(1), rule.data["Name"], [(ms, text)])
