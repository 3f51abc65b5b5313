"""Amazon EventBridge Scheduler: schedules that start SageMaker pipeline executions on time.

CreateSchedule / GetSchedule / UpdateSchedule / DeleteSchedule / ListSchedules, the schedule groups
(CreateScheduleGroup, GetScheduleGroup, ListScheduleGroups, DeleteScheduleGroup; ``default`` always
exists) and their tags. This is what the SDK's ``Pipeline.put_triggers([PipelineSchedule(...)])``,
``describe_trigger`` and ``delete_triggers`` call. :class:`opensage.events.schedules.ScheduleRunner`
fires the schedules.

Expressions are ``at(yyyy-mm-ddThh:mm:ss)``, ``rate(value minute|hour|day)`` and AWS's six-field
``cron(...)``, in ``ScheduleExpressionTimezone`` (UTC by default), between ``StartDate`` and
``EndDate``; a rate's intervals count from ``StartDate``, else from the schedule's last change.
``ActionAfterCompletion: DELETE`` deletes a one-time schedule once it fired (a recurring one once
its ``EndDate`` passed). The target's ``SageMakerPipelineParameters`` may use the context attributes
``<aws.scheduler.scheduled-time>``, ``<aws.scheduler.schedule-arn>``,
``<aws.scheduler.execution-id>`` and ``<aws.scheduler.attempt-number>``.

LIMITATIONS: targets are SageMaker pipelines (``arn:aws:sagemaker:...:pipeline/<name>``); other
targets are refused with a ValidationException. A ``FLEXIBLE`` time window fires at its start.
``RetryPolicy``, ``DeadLetterConfig``, ``KmsKeyArn`` and ``RoleArn`` are recorded, not used: a start
that fails is logged and not retried. cron's ``L``, ``W`` and ``#`` forms are refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, NotFound, ServiceError
from opensage.events import targets
from opensage.events.schedules import GROUP, SCHEDULE, ScheduleRunner, schedule_key
from opensage.serving import scaling
from opensage.store import tags
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch

DEFAULT_GROUP = "default"
_SCHEDULE_MEMBERS = (
    "ActionAfterCompletion",
    "Arn",
    "CreationDate",
    "Description",
    "EndDate",
    "FlexibleTimeWindow",
    "GroupName",
    "KmsKeyArn",
    "LastModificationDate",
    "Name",
    "ScheduleExpression",
    "ScheduleExpressionTimezone",
    "StartDate",
    "State",
    "Target",
)
_GROUP_MEMBERS = ("Arn", "CreationDate", "LastModificationDate", "Name", "State")


def _not_found(message: str) -> ServiceError:
    return ServiceError("ResourceNotFoundException", message, 404)


def _conflict(message: str) -> ServiceError:
    return ServiceError("ConflictException", message, 409)


def _invalid(message: str) -> ServiceError:
    return ServiceError("ValidationException", message)


def _ts(value: Any) -> float:
    return value.timestamp() if isinstance(value, dt.datetime) else float(value)


def check_schedule(request: dict[str, Any]) -> None:
    """Refuse (ValidationException) a schedule OpenSage could not run as asked."""
    try:
        scaling.parse_schedule(request["ScheduleExpression"], request.get("ScheduleExpressionTimezone"))
    except ValueError as exc:
        raise _invalid(f"Invalid Schedule Expression {request['ScheduleExpression']}: {exc}") from exc
    window = request["FlexibleTimeWindow"]
    if window["Mode"] == "FLEXIBLE" and not window.get("MaximumWindowInMinutes"):
        raise _invalid("FlexibleTimeWindow.MaximumWindowInMinutes is required when Mode is FLEXIBLE.")
    if window["Mode"] == "OFF" and window.get("MaximumWindowInMinutes"):
        raise _invalid("FlexibleTimeWindow.MaximumWindowInMinutes must not be given when Mode is OFF.")
    start, end = request.get("StartDate"), request.get("EndDate")
    if start is not None and end is not None and _ts(end) <= _ts(start):
        raise _invalid("The EndDate must be later than the StartDate.")
    target = request["Target"]
    if not targets.PIPELINE_ARN.fullmatch(target["Arn"]):
        raise _invalid(
            f"Target.Arn {target['Arn']} is not a SageMaker pipeline; OpenSage's scheduler starts SageMaker "
            "pipelines only (arn:aws:sagemaker:<region>:<account>:pipeline/<name>)."
        )
    for key in ("EcsParameters", "EventBridgeParameters", "KinesisParameters", "SqsParameters"):
        if target.get(key):
            raise _invalid(
                f"Target.{key} is for another kind of target; a SageMaker pipeline target takes "
                "SageMakerPipelineParameters."
            )


class SchedulerProvider:
    def __init__(self, store: SqlStore, clock: Callable[[], dt.datetime], runner: ScheduleRunner) -> None:
        self.store = store
        self.clock = clock
        self.runner = runner

    # --- groups ------------------------------------------------------------------------------------------

    def _group(self, ctx: RequestContext, name: str | None) -> Resource:
        name = name or DEFAULT_GROUP
        row = self.store.get_resource(GROUP, name)
        if row is None and name == DEFAULT_GROUP:  # always there, recorded when first asked for
            now = epoch(self.clock())
            arn = ctx.arn("scheduler", f"schedule-group/{name}")
            data = {"Name": name, "Arn": arn, "State": "ACTIVE", "CreationDate": now, "LastModificationDate": now}
            with contextlib.suppress(AlreadyExists):
                self.store.create_resource(Resource(GROUP, name, arn, "ACTIVE", self.clock(), self.clock(), data))
            row = self.store.get_resource(GROUP, name)
        if row is None:
            raise _not_found(f"Schedule group {name} does not exist.")
        return row

    def create_schedule_group(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["Name"]
        self._group(ctx, DEFAULT_GROUP)
        now = self.clock()
        arn = ctx.arn("scheduler", f"schedule-group/{name}")
        data = {
            "Name": name,
            "Arn": arn,
            "State": "ACTIVE",
            "CreationDate": epoch(now),
            "LastModificationDate": epoch(now),
        }
        try:
            self.store.create_resource(Resource(GROUP, name, arn, "ACTIVE", now, now, data))
        except AlreadyExists as exc:
            raise _conflict(f"Schedule group {name} already exists.") from exc
        if request.get("Tags"):
            tags.put_tags(self.store, arn, request["Tags"], now)
        return {"ScheduleGroupArn": arn}

    def get_schedule_group(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        data = self._group(ctx, request["Name"]).data
        return {k: data[k] for k in _GROUP_MEMBERS if k in data}

    def list_schedule_groups(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._group(ctx, DEFAULT_GROUP)
        prefix = request.get("NamePrefix") or ""
        rows = sorted(self.store.list_resources(GROUP), key=lambda r: r.name)
        return {
            "ScheduleGroups": [
                {k: r.data[k] for k in _GROUP_MEMBERS if k in r.data} for r in rows if r.name.startswith(prefix)
            ]
        }

    def delete_schedule_group(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["Name"]
        if name == DEFAULT_GROUP:
            raise _invalid("The default schedule group cannot be deleted.")
        row = self._group(ctx, name)
        for schedule in self.store.list_resources(SCHEDULE):  # as on AWS, its schedules go with it
            if schedule.data.get("GroupName") == name:
                self._drop(schedule)
        try:
            self.store.delete_resource(GROUP, name)
        except NotFound as exc:
            raise _not_found(f"Schedule group {name} does not exist.") from exc
        tags.drop_tags(self.store, row.arn)
        return {}

    # --- schedules ---------------------------------------------------------------------------------------

    def _schedule(self, ctx: RequestContext, request: dict[str, Any]) -> Resource:
        group = self._group(ctx, request.get("GroupName")).name
        row = self.store.get_resource(SCHEDULE, schedule_key(group, request["Name"]))
        if row is None:
            raise _not_found(f"Schedule {request['Name']} does not exist.")
        return row

    def _fields(self, request: dict[str, Any], group: str, arn: str, now: dt.datetime) -> dict[str, Any]:
        check_schedule(request)
        fields: dict[str, Any] = {
            k: request[k]
            for k in (
                "Description",
                "FlexibleTimeWindow",
                "KmsKeyArn",
                "ScheduleExpression",
                "ScheduleExpressionTimezone",
                "Target",
            )
            if request.get(k) is not None
        }
        for key in ("StartDate", "EndDate"):
            if request.get(key) is not None:
                fields[key] = round(_ts(request[key]), 3)
        fields.update(
            Name=request["Name"],
            GroupName=group,
            Arn=arn,
            State=request.get("State") or "ENABLED",
            ActionAfterCompletion=request.get("ActionAfterCompletion") or "NONE",
            LastModificationDate=epoch(now),
            _Since=epoch(now),  # the runner fires what falls after this
        )
        return fields

    def create_schedule(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        group = self._group(ctx, request.get("GroupName")).name
        name, now = request["Name"], self.clock()
        arn = ctx.arn("scheduler", f"schedule/{group}/{name}")
        data = {**self._fields(request, group, arn, now), "CreationDate": epoch(now)}
        try:
            self.store.create_resource(
                Resource(SCHEDULE, schedule_key(group, name), arn, data["State"], now, now, data)
            )
        except AlreadyExists as exc:
            raise _conflict(f"Schedule {name} already exists.") from exc
        self.runner.wake()
        return {"ScheduleArn": arn}

    def update_schedule(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._schedule(ctx, request)
        fields = self._fields(request, row.data["GroupName"], row.arn, self.clock())

        def change(current: Resource) -> tuple[dict[str, Any], str | None]:
            # UpdateSchedule replaces the schedule: what the request leaves out is gone
            kept: dict[str, Any] = {k: current.data[k] for k in ("CreationDate", "_LastFired") if k in current.data}
            return {**kept, **fields}, fields["State"]

        self.store.modify_resource(SCHEDULE, row.name, change, now=self.clock())
        self.runner.wake()
        return {"ScheduleArn": row.arn}

    def get_schedule(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        data = self._schedule(ctx, request).data
        return {k: data[k] for k in _SCHEDULE_MEMBERS if k in data}

    def list_schedules(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        group = request.get("GroupName")
        if group:
            self._group(ctx, group)
        prefix, state = request.get("NamePrefix") or "", request.get("State")
        rows = sorted(self.store.list_resources(SCHEDULE), key=lambda r: (r.data["GroupName"], r.data["Name"]))
        keep = ("Arn", "CreationDate", "GroupName", "LastModificationDate", "Name", "State")
        return {
            "Schedules": [
                {**{k: r.data[k] for k in keep if k in r.data}, "Target": {"Arn": r.data["Target"]["Arn"]}}
                for r in rows
                if r.data["Name"].startswith(prefix)
                and group in (None, "", r.data["GroupName"])
                and state in (None, "", r.data["State"])
            ]
        }

    def delete_schedule(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._drop(self._schedule(ctx, request))
        return {}

    def _drop(self, row: Resource) -> None:
        try:
            self.store.delete_resource(SCHEDULE, row.name)
        except NotFound as exc:
            raise _not_found(f"Schedule {row.data['Name']} does not exist.") from exc

    # --- tags (of schedule groups, as on AWS) ------------------------------------------------------------

    def _tagged(self, arn: str) -> str:
        if not any(r.arn == arn for r in self.store.list_resources(GROUP)):
            raise _not_found(f"Schedule group {arn.rsplit('/', 1)[-1]} does not exist.")
        return arn

    def tag_resource(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        tags.put_tags(self.store, self._tagged(request["ResourceArn"]), request["Tags"], self.clock())
        return {}

    def untag_resource(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        tags.remove_tags(self.store, self._tagged(request["ResourceArn"]), request["TagKeys"], self.clock())
        return {}

    def list_tags_for_resource(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {"Tags": tags.get_tags(self.store, self._tagged(request["ResourceArn"]))}
