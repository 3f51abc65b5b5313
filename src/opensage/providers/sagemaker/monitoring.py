"""SageMaker Model Monitor operations: data-quality job definitions, monitoring schedules, executions.

Create/Describe/List/DeleteDataQualityJobDefinition; Create/Describe/List/Update/Stop/Start/
DeleteMonitoringSchedule (an inline MonitoringJobDefinition or a job definition's name; a cron
schedule or NOW); ListMonitoringExecutions. :class:`opensage.monitor.scheduler.MonitorScheduler`
runs the executions as processing jobs of the analyzer image.

LIMITATIONS: only DataQuality monitoring (ModelQuality, ModelBias and ModelExplainability job
definitions answer NotImplemented); endpoints only (BatchTransformInput is refused); a deleted job
definition's schedule keeps running the definition as it was when the schedule was made.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, NotFound, ServiceError, resource_in_use, validation_error
from opensage.monitor import jobs as monitor_jobs
from opensage.monitor import schedules
from opensage.monitor.scheduler import EXECUTION, SCHEDULE, SCHEDULED, STOPPED, MonitorScheduler
from opensage.providers.sagemaker.listing import list_page
from opensage.store import tags
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch

DEFINITION = monitor_jobs.DEFINITION
_DEFINITION_KEYS = (
    "DataQualityBaselineConfig",
    "DataQualityAppSpecification",
    "DataQualityJobInput",
    "DataQualityJobOutputConfig",
    "JobResources",
    "NetworkConfig",
    "RoleArn",
    "StoppingCondition",
)


def _public(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not k.startswith("_")}


class MonitoringOperations:
    store: SqlStore
    clock: Callable[[], dt.datetime]
    monitoring: MonitorScheduler
    _require_role: Callable[[RequestContext, str], None]

    # --- job definitions ---------------------------------------------------------------------------

    def create_data_quality_job_definition(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["JobDefinitionName"]
        self._require_role(ctx, request["RoleArn"])
        definition = monitor_jobs.from_data_quality(request)
        self._check_definition(definition)
        now = self.clock()
        arn = ctx.arn("sagemaker", f"data-quality-job-definition/{name.lower()}")
        data = {"JobDefinitionArn": arn, "JobDefinitionName": name, "CreationTime": epoch(now)}
        data.update({k: request[k] for k in _DEFINITION_KEYS if k in request})
        try:
            self.store.create_resource(Resource(DEFINITION, name, arn, "", now, now, data))
        except AlreadyExists as exc:
            raise resource_in_use(f"Data quality job definition {name} already exists ({arn}).") from exc
        if request.get("Tags"):
            tags.put_tags(self.store, arn, request["Tags"], now)
        return {"JobDefinitionArn": arn}

    def describe_data_quality_job_definition(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self.store.get_resource(DEFINITION, request["JobDefinitionName"])
        if row is None:
            raise _missing(f"Job definition {request['JobDefinitionName']} does not exist.")
        return _public(row.data)

    def list_data_quality_job_definitions(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows, token = list_page(self.store, DEFINITION, request)
        endpoint = request.get("EndpointName")
        summaries = []
        for r in rows:
            name = ((r.data.get("DataQualityJobInput") or {}).get("EndpointInput") or {}).get("EndpointName")
            if endpoint and name != endpoint:
                continue
            summary = {
                "MonitoringJobDefinitionName": r.name,
                "MonitoringJobDefinitionArn": r.arn,
                "CreationTime": r.data["CreationTime"],
            }
            summaries.append({**summary, **({"EndpointName": name} if name else {})})
        return {"JobDefinitionSummaries": summaries, **({"NextToken": token} if token else {})}

    def delete_data_quality_job_definition(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["JobDefinitionName"]
        users = [
            s.name
            for s in self.store.list_resources(SCHEDULE)
            if (s.data.get("MonitoringScheduleConfig") or {}).get("MonitoringJobDefinitionName") == name
        ]
        if users:
            raise resource_in_use(f"Job definition {name} is used by monitoring schedule {users[0]}; delete it first.")
        try:
            self.store.delete_resource(DEFINITION, name)
        except NotFound as exc:
            raise _missing(f"Job definition {name} does not exist.") from exc
        return {}

    def _check_definition(self, definition: dict[str, Any]) -> None:
        try:
            endpoint = monitor_jobs.endpoint_name(definition)
            monitor_jobs.capture_destination(self.store, endpoint)
        except monitor_jobs.DefinitionError as exc:
            raise validation_error(str(exc)) from exc
        if not (definition.get("MonitoringOutputConfig") or {}).get("MonitoringOutputs"):
            raise validation_error("The job definition needs an output (MonitoringOutputs with an S3Output).")

    # --- schedules -----------------------------------------------------------------------------------

    def _schedule_definition(self, ctx: RequestContext, config: dict[str, Any]) -> tuple[dict[str, Any], dict]:
        """(the definition the config runs, the fields the schedule keeps of it)."""
        try:
            schedules.parse(config.get("ScheduleConfig"))
        except schedules.ScheduleError as exc:
            raise validation_error(str(exc)) from exc
        kind = config.get("MonitoringType", "DataQuality")
        if kind != "DataQuality":
            raise validation_error(f"MonitoringType {kind} is not available in OpenSage; use DataQuality.")
        if config.get("MonitoringJobDefinition"):
            definition = dict(config["MonitoringJobDefinition"])
            self._require_role(ctx, definition["RoleArn"])
            self._check_definition(definition)
            return definition, {}
        name = config.get("MonitoringJobDefinitionName")
        if not name:
            raise validation_error("Give MonitoringJobDefinition or MonitoringJobDefinitionName.")
        row = self.store.get_resource(DEFINITION, name)
        if row is None:
            raise _missing(f"Job definition {name} does not exist; create it with CreateDataQualityJobDefinition.")
        definition = monitor_jobs.from_data_quality(row.data)
        self._check_definition(definition)
        return definition, {"_JobDefinitionName": name, "_JobDefinition": row.data}

    async def create_monitoring_schedule(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["MonitoringScheduleName"]
        config = request["MonitoringScheduleConfig"]
        definition, kept = await asyncio.to_thread(self._schedule_definition, ctx, config)
        now = self.clock()
        arn = ctx.arn("sagemaker", f"monitoring-schedule/{name.lower()}")
        data = {
            "MonitoringScheduleArn": arn,
            "MonitoringScheduleName": name,
            "MonitoringScheduleStatus": SCHEDULED,
            "MonitoringType": config.get("MonitoringType", "DataQuality"),
            "CreationTime": epoch(now),
            "LastModifiedTime": epoch(now),
            "MonitoringScheduleConfig": config,
            "EndpointName": monitor_jobs.endpoint_name(definition),
            **kept,
        }
        try:
            await asyncio.to_thread(
                self.store.create_resource, Resource(SCHEDULE, name, arn, SCHEDULED, now, now, data)
            )
        except AlreadyExists as exc:
            raise resource_in_use(f"Monitoring schedule {name} already exists ({arn}).") from exc
        if request.get("Tags"):
            await asyncio.to_thread(tags.put_tags, self.store, arn, request["Tags"], now)
        self.monitoring.wake()
        return {"MonitoringScheduleArn": arn}

    def _schedule(self, name: str) -> Resource:
        row = self.store.get_resource(SCHEDULE, name)
        if row is None:
            raise _missing(f"Monitoring schedule {name} does not exist.")
        return row

    def describe_monitoring_schedule(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._schedule(request["MonitoringScheduleName"])
        return _public(row.data)

    def list_monitoring_schedules(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows, token = list_page(self.store, SCHEDULE, request)
        keys = (
            "MonitoringScheduleName",
            "MonitoringScheduleArn",
            "CreationTime",
            "LastModifiedTime",
            "MonitoringScheduleStatus",
            "EndpointName",
            "MonitoringType",
        )
        summaries = []
        for r in rows:
            if request.get("EndpointName") and r.data.get("EndpointName") != request["EndpointName"]:
                continue
            summary = {k: r.data[k] for k in keys if k in r.data}
            if r.data.get("_JobDefinitionName"):
                summary["MonitoringJobDefinitionName"] = r.data["_JobDefinitionName"]
            summaries.append(summary)
        return {"MonitoringScheduleSummaries": summaries, **({"NextToken": token} if token else {})}

    def update_monitoring_schedule(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._schedule(request["MonitoringScheduleName"])
        config = request["MonitoringScheduleConfig"]
        definition, kept = self._schedule_definition(ctx, config)
        fields = {"MonitoringScheduleConfig": config, "EndpointName": monitor_jobs.endpoint_name(definition), **kept}
        self._set(row.name, None, fields, drop=() if kept else ("_JobDefinitionName", "_JobDefinition"))
        return {"MonitoringScheduleArn": row.arn}

    def _set(self, name: str, status: str | None, fields: dict[str, Any], drop: tuple[str, ...] = ()) -> None:
        now = self.clock()

        def change(row: Resource) -> tuple[dict[str, Any], str | None]:
            data = {k: v for k, v in row.data.items() if k not in drop}
            data.update(fields, LastModifiedTime=epoch(now))
            if status is not None:
                data["MonitoringScheduleStatus"] = status
            return data, status

        self.store.modify_resource(SCHEDULE, name, change, now=now)
        self.monitoring.wake()

    def stop_monitoring_schedule(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._set(self._schedule(request["MonitoringScheduleName"]).name, STOPPED, {})
        return {}

    def start_monitoring_schedule(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._schedule(request["MonitoringScheduleName"])
        # from now on: the runs a stopped schedule missed are not made up
        self._set(row.name, SCHEDULED, {"_LastScheduledTime": epoch(self.clock())} if row.status == STOPPED else {})
        return {}

    def delete_monitoring_schedule(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._schedule(request["MonitoringScheduleName"])
        for execution in self.store.list_resources(EXECUTION, parent_arn=row.arn):
            self.store.delete_resource(EXECUTION, execution.name)
        self.store.delete_resource(SCHEDULE, row.name)
        return {}

    # --- executions ----------------------------------------------------------------------------------

    def list_monitoring_executions(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if request.get("MonitoringScheduleName"):
            extra["parent_arn"] = self._schedule(request["MonitoringScheduleName"]).arn
        by = request.get("SortBy", "CreationTime")
        page = {**request, "SortBy": "Status" if by == "Status" else "CreationTime"}
        rows, token = list_page(self.store, EXECUTION, page, **extra)
        found = [r for r in rows if _matches(r.data, request)]
        return {
            "MonitoringExecutionSummaries": [_public(r.data) for r in found],
            **({"NextToken": token} if token else {}),
        }


def _matches(data: dict[str, Any], request: dict[str, Any]) -> bool:
    if request.get("EndpointName") and data.get("EndpointName") != request["EndpointName"]:
        return False
    if request.get("MonitoringJobDefinitionName") and (
        data.get("MonitoringJobDefinitionName") != request["MonitoringJobDefinitionName"]
    ):
        return False
    if request.get("MonitoringTypeEquals") and data.get("MonitoringType") != request["MonitoringTypeEquals"]:
        return False
    scheduled = data.get("ScheduledTime", 0)
    before, after = request.get("ScheduledTimeBefore"), request.get("ScheduledTimeAfter")
    return not ((before and scheduled >= epoch(before)) or (after and scheduled <= epoch(after)))


def _missing(message: str) -> ServiceError:
    """SageMaker answers a missing monitoring resource with ResourceNotFound (not ValidationException)."""
    return ServiceError("ResourceNotFound", message)
