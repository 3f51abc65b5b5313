"""An endpoint's Model Monitor on its console page: schedules, executions, violations, drift per feature, alarms.

Read when the page is drawn, through the API as a user would call it (ListMonitoringSchedules,
DescribeMonitoringSchedule, ListMonitoringExecutions, DescribeProcessingJob, CloudWatch's
DescribeAlarms) and from the object store: the latest finished execution's
``constraint_violations.json`` and ``statistics.json`` beside the baseline's ``statistics.json``.
Each numeric feature gets a chart of the baseline's distribution against the latest window's
(their KLL histograms on a common axis, each scaled to its own total) with its drift distance.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from opensage.console.pages import Page
from opensage.errors import ServiceError
from opensage.monitor import DRIFT_METRIC_PREFIX, DRIFT_NAMESPACE, STATISTICS_FILE
from opensage.monitor.checks import distances
from opensage.monitor.jobs import baseline_statistics_uri
from opensage.objects.transfer import split_s3_uri

RECENT_EXECUTIONS = 10
FINISHED = ("Completed", "CompletedWithViolations")
VIOLATIONS_FILE = "constraint_violations.json"
CHART_W, CHART_H = 240.0, 60.0


def _histogram(feature: Mapping[str, Any] | None) -> list[tuple[float, float, float]]:
    """(lower, upper, count) buckets of a numeric feature's statistics, or none."""
    stats = (feature or {}).get("numerical_statistics") or {}
    buckets = ((stats.get("distribution") or {}).get("kll") or {}).get("buckets") or []
    return [(float(b["lower_bound"]), float(b["upper_bound"]), float(b["count"])) for b in buckets]


def chart(baseline: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Bars (x, width, height in a CHART_W x CHART_H box) of both distributions on one axis, densities scaled alike."""
    series = {"baseline": _histogram(baseline), "current": _histogram(current)}
    edges = [v for buckets in series.values() for b in buckets for v in b[:2]]
    if not edges or not any(series.values()):
        return None
    low, high = min(edges), max(edges)
    span = (high - low) or 1.0
    densities = {
        name: [(lo, hi, (c / (sum(b[2] for b in buckets) or 1.0)) / max(hi - lo, span / 1000)) for lo, hi, c in buckets]
        for name, buckets in series.items()
    }
    top = max((d for values in densities.values() for *_, d in values), default=0.0) or 1.0
    bars = {
        name: [
            {
                "x": round((lo - low) / span * CHART_W, 2),
                "w": round(max((hi - lo) / span * CHART_W, 0.5), 2),
                "h": round(d / top * CHART_H, 2),
            }
            for lo, hi, d in values
        ]
        for name, values in densities.items()
    }
    return {"bars": bars, "low": low, "high": high, "width": CHART_W, "height": CHART_H}


def _read_json(p: Page, uri: str | None) -> dict[str, Any] | None:
    if not uri:
        return None
    try:
        bucket, key = split_s3_uri(uri)
        return dict(json.loads(p.api.open_object(bucket, key).read()))
    except Exception:  # missing, unreadable or not JSON: the section says the report is not there
        return None


def _report(p: Page, output_uri: str | None, baseline_uri: str | None) -> dict[str, Any]:
    base = output_uri.rstrip("/") if output_uri else None
    violations = _read_json(p, f"{base}/{VIOLATIONS_FILE}" if base else None)
    current = _read_json(p, f"{base}/{STATISTICS_FILE}" if base else None)
    baseline = _read_json(p, baseline_uri)
    drift = distances(baseline, current) if baseline and current else {}
    by_name = {f["name"]: f for f in (current or {}).get("features") or []}
    base_by_name = {f["name"]: f for f in (baseline or {}).get("features") or []}
    violated = {v.get("feature_name") for v in (violations or {}).get("violations") or []}
    features = [
        {
            "name": name,
            "drift": drift.get(name),
            "violated": name in violated,
            "chart": chart(base_by_name.get(name), by_name.get(name)),
        }
        for name in dict.fromkeys([*base_by_name, *by_name])
    ]
    return {
        "violations": (violations or {}).get("violations") or [],
        "found": violations is not None,
        "features": features,
        "output": base,
        "baseline": baseline_uri,
    }


async def _schedule(p: Page, summary: Mapping[str, Any]) -> dict[str, Any]:
    name = summary["MonitoringScheduleName"]
    desc = await p.api.sagemaker(p.session, "DescribeMonitoringSchedule", MonitoringScheduleName=name)
    executions = (
        await p.api.sagemaker(
            p.session,
            "ListMonitoringExecutions",
            MonitoringScheduleName=name,
            SortBy="ScheduledTime",
            SortOrder="Descending",
            MaxResults=RECENT_EXECUTIONS,
        )
    )["MonitoringExecutionSummaries"]
    latest = next((e for e in executions if e.get("MonitoringExecutionStatus") in FINISHED), None)
    output = None
    if latest and latest.get("ProcessingJobArn"):
        job_name = latest["ProcessingJobArn"].rsplit("/", 1)[-1]
        try:
            job = await p.api.sagemaker(p.session, "DescribeProcessingJob", ProcessingJobName=job_name)
            outputs = (job.get("ProcessingOutputConfig") or {}).get("Outputs") or []
            output = outputs[0]["S3Output"]["S3Uri"] if outputs else None
        except ServiceError:
            output = None
    baseline_uri = await asyncio.to_thread(baseline_statistics_uri, p.api.store, name)
    report = await asyncio.to_thread(_report, p, output, baseline_uri) if latest else None
    config = desc.get("MonitoringScheduleConfig") or {}
    return {
        "name": name,
        "status": desc.get("MonitoringScheduleStatus", ""),
        "type": desc.get("MonitoringType", "DataQuality"),
        "cron": (config.get("ScheduleConfig") or {}).get("ScheduleExpression", ""),
        "failure": desc.get("FailureReason"),
        "executions": executions,
        "latest": latest,
        "report": report,
    }


async def _alarms(p: Page, endpoint: str) -> list[dict[str, Any]] | None:
    try:
        answer = await p.api.call(p.session, "cloudwatch", "DescribeAlarms", {"MaxRecords": 100})
    except ServiceError:
        return None
    found = []
    for alarm in answer.get("MetricAlarms") or []:
        dims = {d["Name"]: d["Value"] for d in alarm.get("Dimensions") or []}
        if alarm.get("Namespace") == DRIFT_NAMESPACE and dims.get("Endpoint") == endpoint:
            found.append(
                {
                    "name": alarm["AlarmName"],
                    "state": alarm.get("StateValue", ""),
                    "metric": alarm.get("MetricName", "").removeprefix(DRIFT_METRIC_PREFIX),
                    "threshold": alarm.get("Threshold"),
                    "reason": alarm.get("StateReason", ""),
                }
            )
    return found


async def monitoring(p: Page, endpoint: str) -> dict[str, Any]:
    """The endpoint's monitoring schedules (each with its recent executions and latest report) and drift alarms."""
    try:
        summaries = (await p.api.sagemaker(p.session, "ListMonitoringSchedules", EndpointName=endpoint))[
            "MonitoringScheduleSummaries"
        ]
    except ServiceError:
        return {"schedules": None, "alarms": None}
    schedules = [await _schedule(p, s) for s in summaries]
    return {"schedules": schedules, "alarms": await _alarms(p, endpoint) if schedules else []}
