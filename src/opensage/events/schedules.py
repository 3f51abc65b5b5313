"""The EventBridge Scheduler's runner: each enabled schedule starts its pipeline when it is due.

Every ``interval_s`` (and at once when a schedule is created or updated) a turn looks at each
ENABLED schedule: the last moment its expression names in ``(after, now]`` — ``after`` being the
later of its last firing and its last change, ``now`` capped at its ``EndDate`` — starts one
execution of its target pipeline. So a platform that was stopped when a schedule was due starts it
once when it is back (however many firings it missed), never twice. The firing is recorded before
the start, and a one-time schedule (or one past its ``EndDate``) with ``ActionAfterCompletion:
DELETE`` is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Callable
from typing import Any

from opensage.controller import Controller
from opensage.errors import NotFound
from opensage.events import targets
from opensage.serving import scaling
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch

log = logging.getLogger(__name__)
SCHEDULE, GROUP = "scheduler-schedule", "scheduler-group"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # <aws.scheduler.scheduled-time>, as AWS writes it


def schedule_key(group: str, name: str) -> str:
    return f"{group}/{name}"


def _when(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, dt.UTC)


def due(data: dict[str, Any], now: dt.datetime) -> dt.datetime | None:
    """The moment schedule ``data`` (its stored document) is to fire for, looked at ``now``; None: not due."""
    try:
        schedule = scaling.parse_schedule(data["ScheduleExpression"], data.get("ScheduleExpressionTimezone"))
    except ValueError:
        return None  # refused when written; an older row
    start, end = data.get("StartDate"), data.get("EndDate")
    after = max(v for v in (data.get("_LastFired"), data["_Since"]) if v is not None)
    if start is not None:
        after = max(after, start - 0.001)  # a moment at StartDate itself is due
    until = min(now.timestamp(), end) if end is not None else now.timestamp()
    anchor = start if start is not None else data["_Since"]
    return schedule.due(_when(after), _when(until), _when(anchor))


def finished(data: dict[str, Any], now: dt.datetime) -> bool:
    """No firing is left for schedule ``data``: a one-time one fired, or its EndDate passed."""
    if data["ScheduleExpression"].strip().startswith("at(") and data.get("_LastFired") is not None:
        return True
    return data.get("EndDate") is not None and now.timestamp() > data["EndDate"]


def parameters(data: dict[str, Any], scheduled: dt.datetime, execution_id: str) -> list[dict[str, str]]:
    """The target's pipeline parameters with the context attributes filled in."""
    context = {
        "<aws.scheduler.scheduled-time>": scheduled.astimezone(dt.UTC).strftime(TIME_FORMAT),
        "<aws.scheduler.schedule-arn>": data["Arn"],
        "<aws.scheduler.execution-id>": execution_id,
        "<aws.scheduler.attempt-number>": "1",
    }
    given = (data["Target"].get("SageMakerPipelineParameters") or {}).get("PipelineParameterList") or []
    out = []
    for p in given:
        value = str(p["Value"])
        for attribute, text in context.items():
            value = value.replace(attribute, text)
        out.append({"Name": p["Name"], "Value": value})
    return out


class ScheduleRunner(Controller):
    """Fires the schedules; the provider calls :meth:`wake` after changing one."""

    KIND = SCHEDULE

    def __init__(self, store: SqlStore, clock: Callable[[], dt.datetime], interval_s: float = 5.0) -> None:
        super().__init__(store, clock)
        self.interval_s = interval_s
        self.start_pipeline: targets.PipelineStarter | None = None  # set by create_app
        self._wake: asyncio.Event | None = None

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._spawn(self._loop_forever(), "scheduler")

    def wake(self) -> None:
        """Run a turn soon (from any thread)."""
        event = self._wake
        if event is not None and self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(event.set)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._wait_tasks(5.0)

    async def _loop_forever(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await self.turn()
            except Exception:
                log.exception("the scheduler's turn failed; it runs again in %.0f s", self.interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()

    async def turn(self) -> None:
        """Fire every enabled schedule that is due; delete the finished ones that say so."""
        now = self.clock()
        for row in await asyncio.to_thread(self.store.list_resources, SCHEDULE):
            data = row.data
            if data.get("State") != "ENABLED":
                continue
            moment = due(data, now)
            if moment is not None:
                data = await self._fire(row, moment)
            if data.get("ActionAfterCompletion") == "DELETE" and finished(data, now):
                with contextlib.suppress(NotFound):
                    await asyncio.to_thread(self.store.delete_resource, SCHEDULE, row.name)
                log.info("schedule %s finished and is deleted (ActionAfterCompletion DELETE)", data["Name"])

    async def _fire(self, row: Resource, moment: dt.datetime) -> dict[str, Any]:
        data = {**row.data, "_LastFired": epoch(moment)}
        try:  # recorded first: a crash after this never starts it twice
            await asyncio.to_thread(
                self.store.modify_resource,
                SCHEDULE,
                row.name,
                lambda r: ({**r.data, "_LastFired": epoch(moment)}, None),
                now=self.clock(),
            )
        except NotFound:
            return data  # deleted meanwhile
        target = data["Target"]
        if self.start_pipeline is None:
            log.warning("schedule %s is due but no pipeline service is running", data["Name"])
            return data
        try:
            arn = await self.start_pipeline(
                target["Arn"], parameters(data, moment, str(uuid.uuid4())), target.get("RoleArn")
            )
        except Exception as exc:
            log.warning("schedule %s could not start pipeline %s: %s", data["Name"], target["Arn"], exc)
            return data
        log.info("schedule %s started %s", data["Name"], arn)
        return data
