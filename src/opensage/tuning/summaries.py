"""A tuning job's trials as the API shows them: summaries, status counters, the best job.

A trial is an ordinary training job whose row links to the tuning job (``parent_arn``). What the
tuning job knows about each of its jobs (trial number, algorithm, tuned values) is kept in its own
document under ``_Trials``; the rest (status, times, final metrics) is read from the job's row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opensage.states import JobStatus
from opensage.store.entities import Resource

RETRYABLE_PREFIX = "InternalServerError"  # failures of the platform, not of the job: retried


def objective_value(child: Resource, info: Mapping[str, Any]) -> float | None:
    """The objective the job logged (its FinalMetricDataList entry, or for a job stopped before it
    wrote one, the last value its log shows), None when it has none."""
    if child.status == JobStatus.FAILED:
        return None
    for m in child.data.get("FinalMetricDataList") or []:
        if m.get("MetricName") == info["Metric"]:
            return float(m["Value"])
    last = info.get("Objective")
    return float(last) if last is not None and child.status == JobStatus.STOPPED else None


def objective_status(child: Resource, info: Mapping[str, Any]) -> str:
    if child.status in (JobStatus.IN_PROGRESS, JobStatus.STOPPING):
        return "Pending"
    return "Succeeded" if objective_value(child, info) is not None else "Failed"


def retryable(child: Resource) -> bool:
    return child.status == JobStatus.FAILED and str(child.data.get("FailureReason", "")).startswith(RETRYABLE_PREFIX)


def summary(child: Resource, info: Mapping[str, Any], tuning_name: str) -> dict[str, Any]:
    """HyperParameterTrainingJobSummary of one trial."""
    d = child.data
    metric = info["Metric"]
    out: dict[str, Any] = {
        "TrainingJobName": child.name,
        "TrainingJobArn": child.arn,
        "TuningJobName": tuning_name,
        "CreationTime": d.get("CreationTime"),
        "TrainingJobStatus": child.status,
        "TunedHyperParameters": dict(info.get("Tuned") or {}),
        "ObjectiveStatus": objective_status(child, info),
    }
    if info.get("Definition"):
        out["TrainingJobDefinitionName"] = info["Definition"]
    for key in ("TrainingStartTime", "TrainingEndTime", "FailureReason"):
        if d.get(key) is not None:
            out[key] = d[key]
    value = objective_value(child, info)
    if value is not None:
        out["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": info.get("Type", "Maximize"),
            "MetricName": metric,
            "Value": value,
        }
    return out


def summaries(children: Iterable[Resource], trials: Mapping[str, Any], tuning_name: str) -> list[dict[str, Any]]:
    return [summary(c, trials[c.name], tuning_name) for c in children if c.name in trials]


def counters(children: Iterable[Resource], trials: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """TrainingJobStatusCounters and ObjectiveStatusCounters."""
    jobs = {"Completed": 0, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0}
    objectives = {"Succeeded": 0, "Pending": 0, "Failed": 0}
    for c in children:
        info = trials.get(c.name)
        if info is None:
            continue
        if c.status in (JobStatus.IN_PROGRESS, JobStatus.STOPPING):
            jobs["InProgress"] += 1
        elif c.status == JobStatus.FAILED:
            jobs["RetryableError" if retryable(c) else "NonRetryableError"] += 1
        else:
            jobs[str(c.status)] += 1
        if not (retryable(c) and info.get("Retried")):  # a retried attempt's objective is its retry's
            objectives[objective_status(c, info)] += 1
    return jobs, objectives


def best(items: Iterable[dict[str, Any]], maximize: bool) -> dict[str, Any] | None:
    """The arg-best summary by its objective (the earliest on a tie)."""
    scored = [s for s in items if s.get("ObjectiveStatus") == "Succeeded"]
    if not scored:
        return None
    value = lambda s: s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]  # noqa: E731
    return (max if maximize else min)(scored, key=value)


def sort_key(by: str) -> Any:
    """The key ListTrainingJobsForHyperParameterTuningJob sorts by (Name by default)."""
    if by == "FinalObjectiveMetricValue":
        return lambda s: s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
    if by == "CreationTime":
        return lambda s: (s["CreationTime"], s["TrainingJobName"])
    if by == "Status":
        return lambda s: (s["TrainingJobStatus"], s["TrainingJobName"])
    return lambda s: s["TrainingJobName"]
