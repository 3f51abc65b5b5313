"""The events the platform emits on the default event bus, as SageMaker emits them to EventBridge.

:func:`events_for` turns one change of a stored resource (what the store tells its watchers) into
the events AWS sends for it: ``source`` ``aws.sagemaker``, the ``detail-type`` of the kind, the
resource's ARN in ``resources`` and its description in ``detail`` (times in epoch milliseconds, as
SageMaker's events carry them). Jobs and endpoints emit when their status changes; a model package
on every change, creation included (as on AWS, so a rule that promotes must filter on
``ModelApprovalStatus``); a pipeline execution when its status changes, and a step event for each
step whose status changed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from opensage.store.entities import Resource

SOURCE = "aws.sagemaker"
# kind -> (detail-type, status member) of the resources whose status changes are events
STATUS_EVENTS: Mapping[str, tuple[str, str]] = {
    "training-job": ("SageMaker Training Job State Change", "TrainingJobStatus"),
    "processing-job": ("SageMaker Processing Job State Change", "ProcessingJobStatus"),
    "transform-job": ("SageMaker Transform Job State Change", "TransformJobStatus"),
    "hyper-parameter-tuning-job": ("SageMaker HyperParameter Tuning Job State Change", "HyperParameterTuningJobStatus"),
    "endpoint": ("SageMaker Endpoint State Change", "EndpointStatus"),
}
MODEL_PACKAGE = "SageMaker Model Package State Change"
PIPELINE_EXECUTION = "SageMaker Model Building Pipeline Execution Status Change"
PIPELINE_STEP = "SageMaker Model Building Pipeline Execution Step Status Change"
DETAIL_TYPES = (*(d for d, _ in STATUS_EVENTS.values()), MODEL_PACKAGE, PIPELINE_EXECUTION, PIPELINE_STEP)


def envelope(
    detail_type: str,
    source: str,
    detail: Mapping[str, Any],
    resources: list[str],
    region: str,
    account: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """An event as EventBridge delivers it."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": resources,
        "detail": dict(detail),
    }


def _detail(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key.startswith("_"):
            continue
        if key.endswith("Time") and isinstance(value, int | float) and not isinstance(value, bool):
            value = int(round(value * 1000))
        out[key] = value
    return out


def _iso(value: Any) -> str | None:
    if not isinstance(value, int | float):
        return None
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def events_for(before: Resource | None, after: Resource, region: str, account: str, now: dt.datetime) -> list[dict]:
    """The events one stored change is, none when it is not one."""
    kind = after.kind
    if kind in STATUS_EVENTS:
        detail_type, member = STATUS_EVENTS[kind]
        if before is not None and before.data.get(member) == after.data.get(member):
            return []
        detail = _detail(after.data)
        if kind == "endpoint":
            detail.setdefault("Tags", {})
        return [envelope(detail_type, SOURCE, detail, [after.arn], region, account, now)]
    if kind == "model-package":
        if before is not None and before.data == after.data:
            return []
        return [envelope(MODEL_PACKAGE, SOURCE, _detail(after.data), [after.arn], region, account, now)]
    if kind == "pipeline-execution":
        return _pipeline_events(before, after, region, account, now)
    return []


def _pipeline_events(
    before: Resource | None, after: Resource, region: str, account: str, now: dt.datetime
) -> list[dict[str, Any]]:
    data, old = after.data, (before.data if before else {})
    pipeline_arn, arn = data.get("PipelineArn"), after.arn
    out = []
    status, previous = data.get("PipelineExecutionStatus"), old.get("PipelineExecutionStatus")
    if before is None or status != previous:
        detail = {
            "pipelineExecutionDisplayName": data.get("PipelineExecutionDisplayName"),
            "currentPipelineExecutionStatus": status,
            "previousPipelineExecutionStatus": previous,
            "executionStartTime": _iso(data.get("CreationTime")),
            "executionEndTime": _iso(data.get("LastModifiedTime"))
            if status in ("Succeeded", "Failed", "Stopped")
            else None,
            "pipelineExecutionDescription": data.get("PipelineExecutionDescription"),
            "pipelineArn": pipeline_arn,
            "pipelineExecutionArn": arn,
        }
        resources = [r for r in (pipeline_arn, arn) if r]
        out.append(envelope(PIPELINE_EXECUTION, SOURCE, _present(detail), resources, region, account, now))
    old_steps = old.get("_Steps") or {}
    for name, step in (data.get("_Steps") or {}).items():
        was = (old_steps.get(name) or {}).get("StepStatus")
        if not isinstance(step, Mapping) or step.get("StepStatus") == was:
            continue
        detail = {
            "stepName": name,
            "currentStepStatus": step.get("StepStatus"),
            "previousStepStatus": was,
            "stepStartTime": _iso(step.get("StartTime")),
            "stepEndTime": _iso(step.get("EndTime")),
            "metadata": step.get("Metadata") or {},
            "failureReason": step.get("FailureReason"),
            "pipelineArn": pipeline_arn,
            "pipelineExecutionArn": arn,
        }
        resources = [r for r in (pipeline_arn, arn) if r]
        out.append(envelope(PIPELINE_STEP, SOURCE, _present(detail), resources, region, account, now))
    return out


def _present(detail: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in detail.items() if v is not None}
