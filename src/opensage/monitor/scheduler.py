"""The monitoring scheduler: fires each Scheduled schedule on time and follows its executions.

Every ``interval_s`` (and at once when a schedule is created or started, or one of its processing
jobs ends) a turn:

1. for each schedule in status Scheduled, the moment its cron names last in ``(last fired, now]``
   (one run for however many a stopped platform missed, as a restart finds them) or, for ``NOW``,
   once: an execution (Pending) is recorded with its ScheduledTime, and the analyzer runs over the
   window as a processing job made through :meth:`ProcessingEngine.create` (``parent_arn`` the
   schedule's ARN), its inputs the captured hours of the endpoint that fall in the window — or the
   execution fails at once, saying which prefix and window held no captured data;
2. each InProgress execution whose processing job ended gets its status: Completed,
   CompletedWithViolations (its ``constraint_violations.json`` lists any), Failed (with the job's
   FailureReason) or Stopped; with ``publish_cloudwatch_metrics`` Enabled, each feature's drift
   distance goes to CloudWatch as ``feature_baseline_drift_<name>`` (namespace
   ``aws/sagemaker/Endpoints/data-metrics``, dimensions Endpoint and MonitoringSchedule).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from opensage.controller import Controller
from opensage.errors import AlreadyExists, NotFound
from opensage.jobs.processing import KIND as PROCESSING_KIND
from opensage.jobs.processing import ProcessingEngine
from opensage.jobs.specs import ProcessingJobSpec
from opensage.monitor import DRIFT_METRIC_PREFIX, DRIFT_NAMESPACE, STATISTICS_FILE, VIOLATIONS_FILE, checks
from opensage.monitor import jobs as monitor_jobs
from opensage.monitor.schedules import ScheduleError, parse
from opensage.objects.transfer import split_s3_uri
from opensage.store.entities import Resource
from opensage.store.metrics import MetricStore, Point, Stats, dimensions
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch

log = logging.getLogger(__name__)
SCHEDULE, EXECUTION = "monitoring-schedule", "monitoring-execution"
SCHEDULED, STOPPED, PENDING_SCHEDULE, FAILED_SCHEDULE = "Scheduled", "Stopped", "Pending", "Failed"
PENDING, IN_PROGRESS = "Pending", "InProgress"
COMPLETED, WITH_VIOLATIONS, FAILED, EXEC_STOPPED = "Completed", "CompletedWithViolations", "Failed", "Stopped"
RUNNING = (PENDING, IN_PROGRESS)


def _change(status: str | None, fields: dict[str, Any], now: dt.datetime) -> Callable[[Resource], Any]:
    def change(row: Resource) -> tuple[dict[str, Any], str | None]:
        data = {**row.data, **fields, "LastModifiedTime": epoch(now)}
        if status is not None:
            data[monitor_jobs.STATUS_FIELD[row.kind]] = status
        return data, status

    return change


class MonitorScheduler(Controller):
    """Runs the monitoring schedules; the provider calls :meth:`wake` after changing one."""

    KIND = SCHEDULE

    def __init__(
        self,
        store: SqlStore,
        clock: Callable[[], dt.datetime],
        processing: ProcessingEngine,
        s3: Any,
        metric_store: MetricStore | None,
        interval_s: float = 30.0,
    ) -> None:
        super().__init__(store, clock)
        self.processing = processing
        self.s3 = s3
        self.metric_store = metric_store
        self.interval_s = interval_s
        self._wake: asyncio.Event | None = None
        processing.on_end(lambda name: self.wake())

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._spawn(self._loop_forever(), "monitoring-scheduler")

    def wake(self) -> None:
        """Run a turn soon (from any thread)."""
        event = self._wake
        if event is not None and self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(event.set)

    async def _loop_forever(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await self.turn()
            except Exception:
                log.exception("the monitoring scheduler's turn failed; it runs again in %.0f s", self.interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()

    async def turn(self) -> None:
        """Fire what is due, then conclude the executions whose jobs ended."""
        now = self.clock()
        for row in await asyncio.to_thread(self.store.list_resources, SCHEDULE, status=SCHEDULED):
            try:
                await self._fire_due(row, now)
            except Exception:
                log.exception("monitoring schedule %s could not start its execution", row.name)
        for status in RUNNING:
            for execution in await asyncio.to_thread(self.store.list_resources, EXECUTION, status=status):
                await self._follow(execution)

    async def _fire_due(self, row: Resource, now: dt.datetime) -> None:
        config = row.data.get("MonitoringScheduleConfig") or {}
        try:
            schedule = parse(config.get("ScheduleConfig"))
        except ScheduleError:
            return  # refused at creation; an older row
        last = row.data.get("_LastScheduledTime")
        if schedule.one_off:
            if last is None:
                await self._execute(row, schedule.window(now), now)
            return
        after = dt.datetime.fromtimestamp(last if last is not None else row.data["CreationTime"], dt.UTC)
        due = schedule.due(after, now)
        if due is not None:
            await self._execute(row, schedule.window(due), due)

    async def _execute(self, row: Resource, window: tuple[dt.datetime, dt.datetime], scheduled: dt.datetime) -> None:
        now = self.clock()
        await asyncio.to_thread(
            self.store.modify_resource,
            SCHEDULE,
            row.name,
            _change(None, {"_LastScheduledTime": epoch(scheduled)}, now),
            now=now,
        )
        definition = monitor_jobs.definition_of(self.store, row.data)
        endpoint = row.data.get("EndpointName") or ""
        summary = {
            "MonitoringScheduleName": row.name,
            "ScheduledTime": epoch(scheduled),
            "CreationTime": epoch(now),
            "LastModifiedTime": epoch(now),
            "MonitoringExecutionStatus": PENDING,
            "EndpointName": endpoint,
            "MonitoringType": row.data.get("MonitoringType", "DataQuality"),
            **(
                {"MonitoringJobDefinitionName": row.data["_JobDefinitionName"]}
                if row.data.get("_JobDefinitionName")
                else {}
            ),
            "_Window": [epoch(window[0]), epoch(window[1])],
        }
        name = f"{row.name}-{scheduled:%Y%m%d%H%M}"
        arn = row.arn.replace(":monitoring-schedule/", ":monitoring-execution/") + f"/{scheduled:%Y%m%d%H%M}"
        execution = Resource(EXECUTION, name, arn, PENDING, now, now, summary, parent_arn=row.arn)
        try:
            await asyncio.to_thread(self.store.create_resource, execution)
        except AlreadyExists:
            return
        try:
            definition = await asyncio.to_thread(monitor_jobs.resolve, self.store, row.data)
            request = await asyncio.to_thread(
                monitor_jobs.processing_request,
                self.s3,
                definition,
                row.name,
                scheduled,
                window,
                f"model-monitoring-{scheduled:%Y%m%d%H%M}-{secrets.token_hex(4)}",
            )
        except (monitor_jobs.NoData, monitor_jobs.DefinitionError) as exc:
            await self._conclude(name, FAILED, {"FailureReason": str(exc)}, row)
            return
        except Exception as exc:
            log.exception("monitoring execution %s could not be made", name)
            await self._conclude(name, FAILED, {"FailureReason": f"InternalServerError: {exc}"}, row)
            return
        job_arn = row.arn.split(":monitoring-schedule/")[0] + f":processing-job/{request['ProcessingJobName']}"
        await self._update(
            name, IN_PROGRESS, {"ProcessingJobArn": job_arn, "_ProcessingJobName": request["ProcessingJobName"]}
        )
        await self.processing.create(ProcessingJobSpec.from_request(request), job_arn, parent_arn=row.arn)

    async def _update(self, name: str, status: str | None, fields: dict[str, Any]) -> None:
        now = self.clock()
        with contextlib.suppress(NotFound):
            await asyncio.to_thread(self.store.modify_resource, EXECUTION, name, _change(status, fields, now), now=now)

    async def _conclude(self, name: str, status: str, fields: dict[str, Any], schedule: Resource | None) -> None:
        await self._update(name, status, fields)
        row = await asyncio.to_thread(self.store.get_resource, EXECUTION, name)
        if row is None:
            return
        summary = {k: v for k, v in row.data.items() if not k.startswith("_")}
        schedule_name = row.data["MonitoringScheduleName"]
        now = self.clock()
        with contextlib.suppress(NotFound):
            await asyncio.to_thread(
                self.store.modify_resource,
                SCHEDULE,
                schedule_name,
                _change(None, {"LastMonitoringExecutionSummary": summary}, now),
                now=now,
            )

    async def _follow(self, execution: Resource) -> None:
        job_name = execution.data.get("_ProcessingJobName")
        if not job_name:
            if execution.status == PENDING and (self.clock() - execution.created_at).total_seconds() > 600:
                await self._conclude(
                    execution.name,
                    FAILED,
                    {"FailureReason": "InternalServerError: the execution never started its processing job."},
                    None,
                )
            return
        job = await asyncio.to_thread(self.store.get_resource, PROCESSING_KIND, job_name)
        if job is None:
            await self._conclude(execution.name, FAILED, {"FailureReason": f"Processing job {job_name} is gone."}, None)
            return
        status = job.data.get("ProcessingJobStatus")
        if status in ("InProgress", "Stopping"):
            if execution.status != IN_PROGRESS:
                await self._update(execution.name, IN_PROGRESS, {})
            return
        if status == "Failed":
            reason = str(job.data.get("FailureReason") or "The processing job failed.")
            await self._conclude(execution.name, FAILED, {"FailureReason": reason}, None)
            return
        if status == "Stopped":
            await self._conclude(execution.name, EXEC_STOPPED, {}, None)
            return
        outcome, fields = await asyncio.to_thread(self._read_results, execution, job)
        await self._conclude(execution.name, outcome, fields, None)

    def _read_results(self, execution: Resource, job: Resource) -> tuple[str, dict[str, Any]]:
        output = job.data["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"].rstrip("/")
        try:
            violations = self._json(f"{output}/{VIOLATIONS_FILE}").get("violations") or []
        except Exception as exc:
            return FAILED, {"FailureReason": f"AlgorithmError: the analyzer wrote no {VIOLATIONS_FILE} ({exc})."}
        env = job.data.get("Environment") or {}
        if env.get("publish_cloudwatch_metrics", "Enabled") == "Enabled" and self.metric_store is not None:
            try:
                self._publish(execution, env, output)
            except Exception:
                log.exception("monitoring execution %s: its drift metrics could not be published", execution.name)
        return (WITH_VIOLATIONS if violations else COMPLETED), {}

    def _json(self, uri: str) -> dict[str, Any]:
        bucket, key = split_s3_uri(uri)
        return dict(json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()))

    def _publish(self, execution: Resource, env: dict[str, str], output: str) -> None:
        assert self.metric_store is not None
        baseline_uri = monitor_jobs.baseline_statistics_uri(self.store, execution.data["MonitoringScheduleName"])
        if not baseline_uri:
            return
        found = checks.distances(self._json(baseline_uri), self._json(f"{output}/{STATISTICS_FILE}"))
        dims = dimensions(
            [
                ("Endpoint", execution.data.get("EndpointName", "")),
                ("MonitoringSchedule", execution.data["MonitoringScheduleName"]),
            ]
        )
        minute = int(self.clock().timestamp()) // 60 * 60
        self.metric_store.add(
            Point((DRIFT_NAMESPACE, f"{DRIFT_METRIC_PREFIX}{name}", dims), minute, "None", Stats.of([value]))
            for name, value in found.items()
        )
