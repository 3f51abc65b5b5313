"""CloudWatch metric alarms: PutMetricAlarm, DescribeAlarms, DeleteAlarms (a mixin of the CloudWatch provider).

The autoscaler evaluates the alarms every interval over the same series GetMetricStatistics answers
(:mod:`opensage.serving.alarms`); an alarm's ``AlarmActions`` that name a StepScaling policy's ARN run
that policy while the alarm is in ALARM.

LIMITATIONS: alarms on one metric with a standard Statistic (no metric math, percentiles, anomaly
bands or composite alarms); Period a multiple of 60 s; actions other than Application Auto Scaling
policies (SNS, EC2) are kept but never invoked; no alarm history, SetAlarmState or mute rules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, ServiceError
from opensage.serving.alarms import KIND, alarm_document, alarm_resource
from opensage.store.sql import SqlStore

MAX_ALARMS = 10_000  # alarms per account and region, AWS's default quota
_OWN_FIELDS = ("LastModifiedTime",)  # kept by the store's transitions, not an alarm's


def _shown(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in _OWN_FIELDS}


def put_alarm(store: SqlStore, ctx: RequestContext, request: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """Create or replace an alarm; its document. Raises ServiceError for what cannot be evaluated."""
    name = request["AlarmName"]
    existing = store.get_resource(KIND, name)
    try:
        doc = alarm_document(request, ctx.arn("cloudwatch", f"alarm:{name}"), now, existing.data if existing else None)
    except ValueError as exc:
        raise ServiceError("InvalidParameterValue", str(exc)) from exc
    if existing is not None:
        store.update_resource(KIND, name, data=doc, now=now)
        return doc
    if len(store.list_resources(KIND)) >= MAX_ALARMS:
        raise ServiceError("LimitExceeded", f"The maximum number of alarms ({MAX_ALARMS}) has been reached.")
    try:
        store.create_resource(alarm_resource(doc, now))
    except AlreadyExists:  # put meanwhile: this one wins
        store.update_resource(KIND, name, data=doc, now=now)
    return doc


class AlarmOperations:
    """PutMetricAlarm, DescribeAlarms and DeleteAlarms over the platform's store."""

    clock: Callable[[], dt.datetime]

    @property
    def _alarm_store(self) -> SqlStore:
        return self.store.store  # type: ignore[attr-defined, no-any-return]  # the metric store's database

    def put_metric_alarm(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        put_alarm(self._alarm_store, ctx, request, self.clock())
        return {}

    def describe_alarms(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        types = request.get("AlarmTypes") or ["MetricAlarm"]
        if request.get("ChildrenOfAlarmName") or request.get("ParentsOfAlarmName") or "MetricAlarm" not in types:
            return {"MetricAlarms": [], "CompositeAlarms": []}  # no composite alarms here
        names = set(request.get("AlarmNames") or [])
        prefix = request.get("AlarmNamePrefix") or ""
        if names and prefix:
            raise ServiceError("InvalidParameterCombination", "Give AlarmNames or AlarmNamePrefix, not both.")
        wanted_state, action = request.get("StateValue"), request.get("ActionPrefix") or ""
        alarms = [
            _shown(row.data)
            for row in sorted(self._alarm_store.list_resources(KIND), key=lambda r: r.name)
            if (not names or row.name in names)
            and row.name.startswith(prefix)
            and wanted_state in (None, row.data.get("StateValue"))
            and (not action or any(a.startswith(action) for a in row.data.get("AlarmActions") or []))
        ]
        size = int(request.get("MaxRecords") or 50)
        start = int(request.get("NextToken") or 0) if str(request.get("NextToken") or "0").isdigit() else -1
        if start < 0:
            raise ServiceError("InvalidNextToken", "The NextToken is not one DescribeAlarms gave.")
        page: dict[str, Any] = {"MetricAlarms": alarms[start : start + size], "CompositeAlarms": []}
        if start + size < len(alarms):
            page["NextToken"] = str(start + size)
        return page

    def delete_alarms(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        names = list(request.get("AlarmNames") or [])
        missing = [n for n in names if self._alarm_store.get_resource(KIND, n) is None]
        if missing:  # as AWS: nothing is deleted when one name is wrong
            raise ServiceError("ResourceNotFound", f"No alarm named {', '.join(missing)} exists; nothing was deleted.")
        for name in names:
            self._alarm_store.delete_resource(KIND, name)
        return {}
