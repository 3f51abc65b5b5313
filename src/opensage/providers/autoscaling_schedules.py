"""Application Auto Scaling's scheduled actions: PutScheduledAction, DescribeScheduledActions, DeleteScheduledAction.

A scheduled action sets a scalable target's MinCapacity and/or MaxCapacity when its schedule comes
(``at(yyyy-mm-ddThh:mm:ss)``, ``rate(value unit)``, ``cron(minutes hours day-of-month month
day-of-week year)`` in ``Timezone``, between ``StartTime`` and ``EndTime``); the autoscaler runs it at
its next evaluation and brings the variant's count inside the new bounds. A rate's intervals count
from ``StartTime``, else from the action's creation.

LIMITATIONS: cron's ``L``, ``W`` and ``#`` forms are refused; a schedule is looked at once per
evaluation (``OPENSAGE_AUTOSCALING_INTERVAL_S``), so it runs up to that late.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, NotFound, ServiceError, validation_error
from opensage.serving import scaling
from opensage.serving.autoscaler import DIMENSION, SCHEDULED, TARGET
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch


def missing_target(resource_id: str) -> ServiceError:
    return ServiceError(
        "ObjectNotFoundException",
        f"No scalable target registered for service namespace: sagemaker, resource ID: {resource_id}, "
        f"scalable dimension: {DIMENSION}",
    )


def _ts(value: Any) -> float:
    return value.timestamp() if isinstance(value, dt.datetime) else float(value)


class ScheduledActions:
    """The scheduled-action operations of the Application Auto Scaling provider."""

    # Given by the provider this mixin is part of (AutoscalingProvider).
    store: SqlStore
    clock: Callable[[], dt.datetime]
    _check_target: Callable[[dict[str, Any]], tuple[str, str]]

    def put_scheduled_action(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._check_target(request)
        resource_id, action_name = request["ResourceId"], request["ScheduledActionName"]
        if self.store.get_resource(TARGET, resource_id) is None:
            raise missing_target(resource_id)
        name = f"{resource_id}:{action_name}"
        existing = self.store.get_resource(SCHEDULED, name)
        data: dict[str, Any] = dict(existing.data) if existing else {}
        for key in ("Schedule", "Timezone", "StartTime", "EndTime", "ScalableTargetAction"):
            if request.get(key) is not None:
                data[key] = _ts(request[key]) if key.endswith("Time") else request[key]
        if "Schedule" not in data:
            raise validation_error("Schedule is required to create a scheduled action.")
        try:
            scaling.parse_schedule(data["Schedule"], data.get("Timezone"))
        except ValueError as exc:
            raise validation_error(str(exc)) from exc
        action = data.get("ScalableTargetAction") or {}
        low, high = action.get("MinCapacity"), action.get("MaxCapacity")
        if low is None and high is None:
            raise validation_error("ScalableTargetAction needs MinCapacity, MaxCapacity or both.")
        if low is not None and high is not None and int(low) > int(high):
            raise validation_error(f"MinCapacity ({low}) must not be greater than MaxCapacity ({high}).")
        if (
            data.get("StartTime") is not None
            and data.get("EndTime") is not None
            and data["EndTime"] <= data["StartTime"]
        ):
            raise validation_error("EndTime must be later than StartTime.")
        now = self.clock()
        arn = (
            existing.arn
            if existing
            else ctx.arn(
                "autoscaling",
                f"scheduledAction:{uuid.uuid4()}:resource/sagemaker/{resource_id}:scheduledActionName/{action_name}",
            )
        )
        data.update(
            ScheduledActionName=action_name,
            ScheduledActionARN=arn,
            ServiceNamespace="sagemaker",
            ResourceId=resource_id,
            ScalableDimension=DIMENSION,
        )
        data.setdefault("CreationTime", epoch(now))
        if existing:
            self.store.update_resource(SCHEDULED, name, data=data, now=now)
        else:
            try:
                self.store.create_resource(Resource(SCHEDULED, name, arn, "", now, now, data))
            except AlreadyExists:
                self.store.update_resource(SCHEDULED, name, data=data, now=now)
        return {}

    def describe_scheduled_actions(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        names = set(request.get("ScheduledActionNames") or [])
        rows = [
            r.data
            for r in self.store.list_resources(SCHEDULED)
            if request["ServiceNamespace"] == "sagemaker"
            and (not names or r.data["ScheduledActionName"] in names)
            and request.get("ResourceId") in (None, r.data["ResourceId"])
            and request.get("ScalableDimension") in (None, DIMENSION)
        ]
        return {"ScheduledActions": sorted(rows, key=lambda d: d["CreationTime"])}

    def delete_scheduled_action(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._check_target(request)
        try:
            self.store.delete_resource(SCHEDULED, f"{request['ResourceId']}:{request['ScheduledActionName']}")
        except NotFound as exc:
            raise ServiceError(
                "ObjectNotFoundException",
                f"No scheduled action found for service namespace: sagemaker, resource ID: {request['ResourceId']}, "
                f"scalable dimension: {DIMENSION}, scheduled action name: {request['ScheduledActionName']}",
            ) from exc
        return {}
