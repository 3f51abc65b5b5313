"""Resource lists (filter by name and status, sortable, paginated) and the plainer detail pages
(models, processing jobs, transform jobs), all from the List*/Describe* provider methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from opensage.console import endpoints
from opensage.console.api import Missing
from opensage.console.logs import JOB_LOGS
from opensage.console.pages import BASE, Page, page, redirect
from opensage.errors import ServiceError

PAGE_SIZE = 20
_JOB_STATUSES = ("InProgress", "Completed", "Failed", "Stopping", "Stopped")


@dataclass(frozen=True, slots=True)
class Kind:
    """One resource kind's list page: the List operation, its item fields and the filters it takes."""

    segment: str  # URL path segment
    title: str
    singular: str
    list_op: str
    items: str
    prefix: str  # "TrainingJob" -> TrainingJobName, TrainingJobStatus
    statuses: tuple[str, ...]
    sorts: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]  # (heading, item field); *Time fields are shown as times, *Types as badges
    describe_op: str = ""

    @property
    def name_field(self) -> str:
        return f"{self.prefix}Name"

    @property
    def status_field(self) -> str:
        return f"{self.prefix}Status" if self.statuses else ""


KINDS = {
    k.segment: k
    for k in (
        Kind(
            "training-jobs",
            "Training jobs",
            "training job",
            "ListTrainingJobs",
            "TrainingJobSummaries",
            "TrainingJob",
            _JOB_STATUSES,
            ("Name", "CreationTime", "Status"),
            (("Secondary status", "SecondaryStatus"), ("Created", "CreationTime"), ("Ended", "TrainingEndTime")),
        ),
        Kind(
            "tuning-jobs",
            "Tuning jobs",
            "tuning job",
            "ListHyperParameterTuningJobs",
            "HyperParameterTuningJobSummaries",
            "HyperParameterTuningJob",
            _JOB_STATUSES,
            ("Name", "CreationTime", "Status"),
            (("Strategy", "Strategy"), ("Created", "CreationTime"), ("Ended", "HyperParameterTuningEndTime")),
        ),
        Kind(
            "endpoints",
            "Endpoints",
            "endpoint",
            "ListEndpoints",
            "Endpoints",
            "Endpoint",
            ("Creating", "InService", "Updating", "Failed", "Deleting", "OutOfService"),
            ("Name", "CreationTime", "Status"),
            (("Type", "EndpointTypes"), ("Created", "CreationTime"), ("Modified", "LastModifiedTime")),
        ),
        Kind(
            "models",
            "Models",
            "model",
            "ListModels",
            "Models",
            "Model",
            (),
            ("Name", "CreationTime"),
            (("Created", "CreationTime"),),
            "DescribeModel",
        ),
        Kind(
            "processing-jobs",
            "Processing jobs",
            "processing job",
            "ListProcessingJobs",
            "ProcessingJobSummaries",
            "ProcessingJob",
            _JOB_STATUSES,
            ("Name", "CreationTime", "Status"),
            (("Created", "CreationTime"), ("Ended", "ProcessingEndTime"), ("Failure", "FailureReason")),
            "DescribeProcessingJob",
        ),
        Kind(
            "transform-jobs",
            "Transform jobs",
            "transform job",
            "ListTransformJobs",
            "TransformJobSummaries",
            "TransformJob",
            _JOB_STATUSES,
            ("Name", "CreationTime", "Status"),
            (("Created", "CreationTime"), ("Ended", "TransformEndTime"), ("Failure", "FailureReason")),
            "DescribeTransformJob",
        ),
    )
}


async def list_page(p: Page, kind: Kind) -> Response:
    q = p.request.query_params
    name, status = q.get("name", "").strip(), q.get("status", "")
    sort = q.get("sort") if q.get("sort") in kind.sorts else "CreationTime"
    order = "asc" if q.get("order") == "asc" else "desc"
    request: dict[str, Any] = {"SortBy": sort, "SortOrder": "Ascending" if order == "asc" else "Descending"}
    if name:
        request["NameContains"] = name
    if status and status in kind.statuses:
        request["StatusEquals"] = status
    error, items = "", []
    served = p.api.serves("sagemaker", kind.list_op)
    try:
        items = await p.api.listing(p.session, kind.list_op, kind.items, **request)
    except ServiceError as exc:
        error = exc.message
    pages = max(1, -(-len(items) // PAGE_SIZE))
    try:
        number = min(max(1, int(q.get("page", "1"))), pages)
    except ValueError:
        number = 1
    shown = items[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
    if kind.segment == "endpoints":
        shown = await endpoints.with_types(p, shown)
    return p.render(
        "list.html",
        kind=kind,
        items=shown,
        total=len(items),
        page_number=number,
        pages=pages,
        filters={"name": name, "status": status, "sort": sort, "order": order},
        error=error,
        served=served,
    )


def _list_handler(segment: str):  # type: ignore[no-untyped-def]
    @page
    async def handler(p: Page) -> Response:
        return await list_page(p, KINDS[segment])

    handler.__name__ = f"list_{segment.replace('-', '_')}"
    return handler


list_training_jobs = _list_handler("training-jobs")
list_endpoints = _list_handler("endpoints")
list_tuning_jobs = _list_handler("tuning-jobs")
list_models = _list_handler("models")
list_processing_jobs = _list_handler("processing-jobs")
list_transform_jobs = _list_handler("transform-jobs")


def _facts(segment: str, desc: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(label, value, kind of value) rows of a detail page: kind is "", "time", "s3" or "status"."""
    if segment == "models":
        container = desc.get("PrimaryContainer") or (desc.get("Containers") or [{}])[0]
        return [
            ("ARN", desc.get("ModelArn"), ""),
            ("Created", desc.get("CreationTime"), "time"),
            ("Image", container.get("Image"), ""),
            ("Model data", container.get("ModelDataUrl"), "s3"),
            ("Execution role", desc.get("ExecutionRoleArn"), ""),
        ]
    if segment == "transform-jobs":
        source = desc.get("TransformInput", {}).get("DataSource", {}).get("S3DataSource", {})
        resources = desc.get("TransformResources", {})
        return [
            ("Failure reason", desc.get("FailureReason"), ""),
            ("Model", desc.get("ModelName"), "model"),
            ("Input", source.get("S3Uri"), "s3"),
            ("Output", desc.get("TransformOutput", {}).get("S3OutputPath"), "s3"),
            ("Instances", f"{resources.get('InstanceCount', '')} × {resources.get('InstanceType', '')}", ""),
            ("Strategy", desc.get("BatchStrategy"), ""),
            ("Created", desc.get("CreationTime"), "time"),
            ("Started", desc.get("TransformStartTime"), "time"),
            ("Ended", desc.get("TransformEndTime"), "time"),
        ]
    cluster = desc.get("ProcessingResources", {}).get("ClusterConfig", {})
    return [
        ("Failure reason", desc.get("FailureReason"), ""),
        ("Image", desc.get("AppSpecification", {}).get("ImageUri"), ""),
        ("Instances", f"{cluster.get('InstanceCount', '')} × {cluster.get('InstanceType', '')}", ""),
        *[
            (f"Input {i.get('InputName', '')}", i.get("S3Input", {}).get("S3Uri"), "s3")
            for i in desc.get("ProcessingInputs", [])
        ],
        *[
            (f"Output {o.get('OutputName', '')}", o.get("S3Output", {}).get("S3Uri"), "s3")
            for o in desc.get("ProcessingOutputConfig", {}).get("Outputs", [])
        ],
        ("Created", desc.get("CreationTime"), "time"),
        ("Ended", desc.get("ProcessingEndTime"), "time"),
    ]


def _detail_handler(segment: str):  # type: ignore[no-untyped-def]
    @page
    async def handler(p: Page) -> Response:
        kind = KINDS[segment]
        name = p.request.path_params["name"]
        if not p.api.serves("sagemaker", kind.describe_op):
            raise Missing(f"There is no {kind.singular} named “{name}” (this platform does not run them yet).")
        desc = await p.api.describe(p.session, kind.describe_op, kind.singular, **{kind.name_field: name})
        status = desc.get(kind.status_field, "") if kind.status_field else ""
        return p.render(
            "detail.html",
            kind=kind,
            name=name,
            desc=desc,
            facts=_facts(segment, desc),
            status=status,
            log=segment in JOB_LOGS,
        )

    handler.__name__ = f"detail_{segment.replace('-', '_')}"
    return handler


model_detail = _detail_handler("models")
processing_job_detail = _detail_handler("processing-jobs")
transform_job_detail = _detail_handler("transform-jobs")


@page
async def delete_model(p: Page) -> Response:
    await p.api.sagemaker(p.session, "DeleteModel", ModelName=p.request.path_params["name"])
    return redirect(f"{BASE}/models")
