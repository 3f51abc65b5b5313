"""An endpoint's inference options on its console page: multi-model, asynchronous, serverless, autoscaling,
data capture.

Each section is read from the platform's own state when the page is drawn: the endpoint config and
DescribeEndpoint (as the API answers them), the live fleet (the models each instance holds, the
model servers of a serverless variant), the asynchronous queue's rows in the store, and the
Application Auto Scaling provider's scalable targets, policies and activities (called as the API
serves them). A section that does not apply is left out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from opensage.console.pages import BASE, Page
from opensage.errors import ServiceError
from opensage.serving.asyncinference import AsyncSettings

WINDOW_S = 1800  # the instance-count chart's span: the last 30 minutes, as the invocation charts
RECENT_ACTIVITIES = 10
SERVICE = "application-autoscaling"
_DESIRED = re.compile(r"desired instance count to (\d+)")
_FROM = re.compile(r"from (\d+) to (\d+)")


def _seconds(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


def instance_steps(
    activities: Iterable[Mapping[str, Any]], current: int | None, now: float, window_s: float = WINDOW_S
) -> dict[str, list[Any]]:
    """A variant's instance count over the last ``window_s`` seconds, as a step series, from its scaling activities.

    An activity that set the desired instance count ("Setting desired instance count to N.") starts a
    step at its time; before the first one in the window the count is what the latest earlier one
    set, else what the first one's cause says it changed from, else ``current``. The series ends at
    ``now`` with the ``current`` count. Every activity in the window (a change of bounds too) is
    marked: ``activities`` holds the count at its time, ``None`` at the other points.

    Returns ``{"x": [epoch seconds, ascending], "instances": [...], "activities": [...]}``.
    """
    start = now - window_s
    changes: list[tuple[float, int | None, int]] = []  # (time, count before, count after)
    marks: set[float] = set()
    for activity in activities:
        t = _seconds(activity.get("StartTime"))
        if t is None or t > now:
            continue
        if t >= start:
            marks.add(t)
        desired = _DESIRED.search(str(activity.get("Description") or ""))
        if desired and activity.get("StatusCode", "Successful") == "Successful":
            moved = _FROM.search(str(activity.get("Cause") or ""))
            changes.append((t, int(moved.group(1)) if moved else None, int(desired.group(1))))
    changes.sort(key=lambda c: c[0])
    earlier = [c for c in changes if c[0] < start]
    inside = [c for c in changes if c[0] >= start]
    if earlier:
        level: int | None = earlier[-1][2]
    elif inside:
        level = inside[0][1] if inside[0][1] is not None else inside[0][2]
    else:
        level = current
    steps = [(start, level), *((t, after) for t, _, after in inside)]
    steps.append((now, current if current is not None else steps[-1][1]))
    xs = sorted({t for t, _ in steps} | marks)
    counts: list[int | None] = []
    k = 0
    for x in xs:
        while k + 1 < len(steps) and steps[k + 1][0] <= x:
            k += 1
        counts.append(steps[k][1])
    marked = [c if x in marks else None for x, c in zip(xs, counts, strict=True)]
    return {"x": xs, "instances": counts, "activities": marked}


def capture_link(destination: str, endpoint: str) -> str:
    """The storage browser at ``<destination>/<endpoint>/``, where the endpoint's captured data is written."""
    if not destination.startswith("s3://"):
        return ""
    bucket, _, key = destination[5:].partition("/")
    prefix = f"{key.strip('/')}/{endpoint}/" if key.strip("/") else f"{endpoint}/"
    return f"{BASE}/storage/{quote(bucket)}?prefix={quote(prefix)}"


def policy_summary(policy: Mapping[str, Any]) -> str:
    """What a scaling policy acts on, in a line."""
    if policy.get("PolicyType") == "TargetTrackingScaling":
        config = policy.get("TargetTrackingScalingPolicyConfiguration") or {}
        predefined = (config.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType")
        metric = predefined or (config.get("CustomizedMetricSpecification") or {}).get("MetricName", "")
        parts = [f"{metric} at {float(config.get('TargetValue', 0)):g}"]
        for key, label in (("ScaleOutCooldown", "scale-out cooldown"), ("ScaleInCooldown", "scale-in cooldown")):
            if config.get(key) is not None:
                parts.append(f"{label} {config[key]} s")
        if config.get("DisableScaleIn"):
            parts.append("no scale-in")
        return ", ".join(parts)
    config = policy.get("StepScalingPolicyConfiguration") or {}
    steps = len(config.get("StepAdjustments") or [])
    return f"{config.get('AdjustmentType', '')}, {steps} step{'s' if steps != 1 else ''}"


def _multi_model(loaded: Mapping[str, list[list[str]]]) -> list[dict[str, Any]]:
    return [
        {"variant": variant, "instances": [{"n": n, "models": models} for n, models in enumerate(per, 1)]}
        for variant, per in loaded.items()
    ]


def _asynchronous(config: Mapping[str, Any], backlog: tuple[int, int]) -> dict[str, Any] | None:
    options = config.get("AsyncInferenceConfig")
    settings = AsyncSettings.of(options)
    if options is None or settings is None:
        return None
    client = options.get("ClientConfig") or {}
    return {
        "output_path": settings.output_path,
        "failure_path": settings.failure_path,
        "per_instance": settings.per_instance,
        "per_instance_default": not client.get("MaxConcurrentInvocationsPerInstance"),
        "queued": backlog[0],
        "in_flight": backlog[1],
        "backlog": sum(backlog),
    }


def _serverless(config: Mapping[str, Any], health: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    out = []
    for v in config.get("ProductionVariants") or []:
        settings = v.get("ServerlessConfig")
        if settings is None:
            continue
        servers = len(health.get(v["VariantName"], []))
        out.append(
            {
                "variant": v["VariantName"],
                "state": "warm" if servers else "cold",
                "instances": servers,
                "memory": settings.get("MemorySizeInMB"),
                "max_concurrency": settings.get("MaxConcurrency"),
                "provisioned": settings.get("ProvisionedConcurrency", 0) or 0,
            }
        )
    return out


async def _autoscaling(p: Page, name: str, counts: Mapping[str, int | None]) -> list[dict[str, Any]]:
    """Per variant with a scalable target: its bounds, policies, recent activities and instance-count chart."""
    ids = {f"endpoint/{name}/variant/{v}": v for v in counts}
    if not ids:
        return []
    answer = await p.api.call(
        p.session, SERVICE, "DescribeScalableTargets", {"ServiceNamespace": "sagemaker", "ResourceIds": list(ids)}
    )
    targets = {t["ResourceId"]: t for t in answer.get("ScalableTargets", []) if t["ResourceId"] in ids}
    now = time.time()
    out = []
    for resource_id, target in targets.items():
        request = {"ServiceNamespace": "sagemaker", "ResourceId": resource_id}
        policies, activities = await asyncio.gather(
            p.api.call(p.session, SERVICE, "DescribeScalingPolicies", dict(request)),
            p.api.call(p.session, SERVICE, "DescribeScalingActivities", dict(request)),
        )
        done = sorted(activities.get("ScalingActivities", []), key=lambda a: _seconds(a.get("StartTime")) or 0.0)
        variant = ids[resource_id]
        out.append(
            {
                "variant": variant,
                "resource_id": resource_id,
                "min": target.get("MinCapacity"),
                "max": target.get("MaxCapacity"),
                "suspended": [k for k, on in (target.get("SuspendedState") or {}).items() if on],
                "policies": [
                    {"name": x["PolicyName"], "type": x.get("PolicyType", ""), "summary": policy_summary(x)}
                    for x in policies.get("ScalingPolicies", [])
                ],
                "activities": list(reversed(done))[:RECENT_ACTIVITIES],
                "steps": instance_steps(done, counts[variant], now),
            }
        )
    return out


def _capture(desc: Mapping[str, Any], name: str) -> dict[str, Any]:
    capture = desc.get("DataCaptureConfig")
    if not capture or not capture.get("EnableCapture"):
        return {"on": False}
    destination = str(capture.get("DestinationS3Uri", "")).rstrip("/")
    return {
        "on": True,
        "status": capture.get("CaptureStatus", ""),
        "percentage": capture.get("CurrentSamplingPercentage"),
        "destination": f"{destination}/{name}/",
        "link": capture_link(destination, name),
    }


def _count(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


async def options(
    p: Page,
    name: str,
    desc: Mapping[str, Any],
    config: Mapping[str, Any],
    types: list[str],
    health: Mapping[str, list[Any]],
) -> dict[str, Any]:
    """The options sections of endpoint ``name``'s page (``config`` is its stored endpoint config)."""
    variants = {v["VariantName"]: v for v in desc.get("ProductionVariants") or []}
    counts = {
        v["VariantName"]: _count(variants.get(v["VariantName"], {}).get("CurrentInstanceCount"))
        if not v.get("ServerlessConfig")
        else len(health.get(v["VariantName"], []))
        for v in config.get("ProductionVariants") or []
    }
    multi = _multi_model(await asyncio.to_thread(p.api.loaded_models, name)) if "multi-model" in types else []
    backlog = await asyncio.to_thread(p.api.async_backlog, name) if "async" in types else (0, 0)
    try:
        scaling = await _autoscaling(p, name, counts)
    except ServiceError:  # the page still shows the rest; the section says it could not be read
        scaling = None
    return {
        "multi_model": multi,
        "asynchronous": _asynchronous(config, backlog),
        "serverless": _serverless(config, health),
        "autoscaling": scaling,
        "capture": _capture(desc, name),
    }
