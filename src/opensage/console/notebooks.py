"""Notebook instances: the list with create, start, stop and delete, and "Open JupyterLab" (a presigned URL)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from opensage.console.pages import BASE, Page, page, redirect
from opensage.errors import ServiceError

INSTANCE_TYPES = ("ml.t3.medium", "ml.t3.large", "ml.t3.xlarge", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.c5.xlarge")
LIST = f"{BASE}/notebook-instances"


@page
async def notebook_instances(p: Page) -> Response:
    listed = await p.api.listing(p.session, "ListNotebookInstances", "NotebookInstances", SortBy="CreationTime")
    configs = await p.api.listing(p.session, "ListNotebookInstanceLifecycleConfigs", "NotebookInstanceLifecycleConfigs")
    failures = {}
    for row in listed:
        if row["NotebookInstanceStatus"] == "Failed":
            desc = await p.api.sagemaker(
                p.session, "DescribeNotebookInstance", NotebookInstanceName=row["NotebookInstanceName"]
            )
            failures[row["NotebookInstanceName"]] = desc.get("FailureReason", "")
    return p.render(
        "notebooks.html",
        instances=listed,
        failures=failures,
        configs=[c["NotebookInstanceLifecycleConfigName"] for c in configs],
        instance_types=INSTANCE_TYPES,
        role=p.api.default_role_arn,
        error=p.request.query_params.get("error"),
    )


async def _call(p: Page, operation: str, **request: Any) -> Response:
    try:
        await p.api.sagemaker(p.session, operation, **request)
    except ServiceError as exc:
        return redirect(f"{LIST}?error={quote(exc.message)}")
    return redirect(LIST)


@page
async def create_notebook_instance(p: Page) -> Response:
    request: dict[str, Any] = {
        "NotebookInstanceName": p.field("name").strip(),
        "InstanceType": p.field("instance_type") or INSTANCE_TYPES[0],
        "RoleArn": p.field("role").strip() or p.api.default_role_arn,
    }
    if p.field("lifecycle_config"):
        request["LifecycleConfigName"] = p.field("lifecycle_config")
    if p.field("repository").strip():
        request["DefaultCodeRepository"] = p.field("repository").strip()
    return await _call(p, "CreateNotebookInstance", **request)


@page
async def start_notebook_instance(p: Page) -> Response:
    return await _call(p, "StartNotebookInstance", NotebookInstanceName=p.request.path_params["name"])


@page
async def stop_notebook_instance(p: Page) -> Response:
    return await _call(p, "StopNotebookInstance", NotebookInstanceName=p.request.path_params["name"])


@page
async def delete_notebook_instance(p: Page) -> Response:
    return await _call(p, "DeleteNotebookInstance", NotebookInstanceName=p.request.path_params["name"])


@page
async def open_notebook_instance(p: Page) -> Response:
    """A fresh presigned URL, followed at once: the browser lands in JupyterLab, signed in."""
    try:
        url = await p.api.sagemaker(
            p.session, "CreatePresignedNotebookInstanceUrl", NotebookInstanceName=p.request.path_params["name"]
        )
    except ServiceError as exc:
        return redirect(f"{LIST}?error={quote(exc.message)}")
    return redirect(url["AuthorizedUrl"])
