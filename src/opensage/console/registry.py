"""The model registry: its groups, and a group's page with its versions, their metrics side by side
(read from the statistics files their ``ModelMetrics`` name) and approving or rejecting a version with a
note (UpdateModelPackage, which also fires the rules that promote approved versions)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from opensage.console.api import Missing
from opensage.console.pages import BASE, Page, page, redirect
from opensage.errors import ServiceError

APPROVALS = ("Approved", "Rejected", "PendingManualApproval")
MAX_METRICS_BYTES = 1 << 20  # a statistics file larger than this is linked, not read


@page
async def groups(p: Page) -> Response:
    listed = await p.api.listing(p.session, "ListModelPackageGroups", "ModelPackageGroupSummaryList")
    rows = []
    for g in listed:
        versions = await p.api.listing(
            p.session, "ListModelPackages", "ModelPackageSummaryList", ModelPackageGroupName=g["ModelPackageGroupName"]
        )
        approved = [v for v in versions if v.get("ModelApprovalStatus") == "Approved"]
        rows.append({**g, "versions": len(versions), "approved": approved[0] if approved else None})
    return p.render("registry_list.html", groups=rows)


def flatten(report: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """The numbers of a metrics report by dotted name (SageMaker's ``{"auc": {"value": 0.9}}`` as ``auc``)."""
    if isinstance(report, dict):
        if isinstance(report.get("value"), int | float) and not isinstance(report.get("value"), bool):
            yield prefix, float(report["value"])
            return
        for k, v in report.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(report, int | float) and not isinstance(report, bool) and prefix:
        yield prefix, float(report)


def _metric_sources(package: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for section, sources in (package.get("ModelMetrics") or {}).items():
        for kind, source in (sources or {}).items():
            if isinstance(source, dict) and source.get("S3Uri"):
                yield f"{section}.{kind}", source["S3Uri"]


def _read_json(p: Page, uri: str) -> Any:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    body = p.api.open_object(bucket, key)
    try:
        data = body.read(MAX_METRICS_BYTES + 1)
    finally:
        body.close()
    if len(data) > MAX_METRICS_BYTES:
        return None
    return json.loads(data)


async def _metrics(p: Page, package: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
    """The numbers of a version's statistics files, and the sources that could not be read."""
    values: dict[str, float] = {}
    unread = []
    for label, uri in _metric_sources(package):
        if not label.endswith("Statistics") and label != "ModelQuality.Report":
            continue
        try:
            report = await asyncio.to_thread(_read_json, p, uri)
        except (Missing, ValueError, OSError):
            report = None
        if report is None:
            unread.append(uri)
            continue
        values.update(flatten(report))
    return values, unread


@page
async def group(p: Page) -> Response:
    name = p.request.path_params["name"]
    desc = await p.api.describe(
        p.session, "DescribeModelPackageGroup", "model package group", ModelPackageGroupName=name
    )
    summaries = await p.api.listing(
        p.session,
        "ListModelPackages",
        "ModelPackageSummaryList",
        ModelPackageGroupName=name,
        SortBy="CreationTime",
        SortOrder="Ascending",
    )
    versions = []
    for s in summaries:
        package = await p.api.sagemaker(p.session, "DescribeModelPackage", ModelPackageName=s["ModelPackageArn"])
        metrics, unread = await _metrics(p, package)
        versions.append({"package": package, "metrics": metrics, "unread": unread})
    metric_names = sorted({m for v in versions for m in v["metrics"]})
    property_names = sorted({k for v in versions for k in v["package"].get("CustomerMetadataProperties") or {}})
    return p.render(
        "registry_group.html",
        group=desc,
        name=name,
        versions=versions,
        metric_names=metric_names,
        property_names=property_names,
        approvals=APPROVALS,
        error=p.request.query_params.get("error"),
    )


@page
async def set_approval(p: Page) -> Response:
    name, version = p.request.path_params["name"], p.request.path_params["version"]
    package = await p.api.describe(
        p.session, "DescribeModelPackage", "model package", ModelPackageName=f"{name}/{version}"
    )
    status = p.field("status")
    back = f"{BASE}/model-registry/{quote(name)}"
    if status not in APPROVALS:
        return redirect(f"{back}?error={quote('Choose Approved, Rejected or PendingManualApproval.')}")
    request: dict[str, Any] = {"ModelPackageArn": package["ModelPackageArn"], "ModelApprovalStatus": status}
    if p.field("note").strip():
        request["ApprovalDescription"] = p.field("note").strip()[:1024]
    try:
        await p.api.sagemaker(p.session, "UpdateModelPackage", **request)
    except ServiceError as exc:
        return redirect(f"{back}?error={quote(exc.message)}")
    return redirect(f"{back}#v{version}")
