"""Pipelines: the list, a pipeline's page (its DAG drawn, parameters, Start with parameters, its
executions) and an execution's page (the DAG coloured by step status, each step live with its
duration, job, cache hit, attempts and failure; Stop and Retry)."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from opensage.console.api import Missing
from opensage.console.pages import BASE, Page, page, redirect
from opensage.errors import ServiceError
from opensage.pipelines import definition as pd

NODE_W, NODE_H, GAP_X, GAP_Y = 180, 40, 60, 22
_JOBS = {  # a step's Metadata key -> (the console's page segment, how the ARN ends before the name)
    "TrainingJob": "training-jobs",
    "ProcessingJob": "processing-jobs",
    "TransformJob": "transform-jobs",
    "TuningJob": "tuning-jobs",
    "QualityCheck": "processing-jobs",
    "Model": "models",
    "Endpoint": "endpoints",
}


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    type: str
    x: int
    y: int
    status: str = ""


@dataclass(frozen=True, slots=True)
class Edge:
    path: str  # an SVG path from the upstream node's right side to the downstream node's left
    branch: str = ""  # "if" / "else" for a Condition's branches


@dataclass(frozen=True, slots=True)
class Dag:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    width: int
    height: int
    error: str = ""


def dag(definition_text: str, statuses: dict[str, str] | None = None) -> Dag:
    """The steps laid out left to right by depth (a step one column right of its deepest upstream step)."""
    try:
        parsed = pd.parse(definition_text)
    except pd.InvalidDefinition as exc:
        return Dag((), (), 0, 0, str(exc))
    depth: dict[str, int] = {}
    for name in parsed.order:
        ups = parsed.upstream.get(name, frozenset())
        depth[name] = 1 + max((depth[u] for u in ups if u in depth), default=-1)
    columns: dict[int, list[str]] = {}
    for name in parsed.order:
        columns.setdefault(depth[name], []).append(name)
    where: dict[str, tuple[int, int]] = {}
    nodes = []
    for col, names in sorted(columns.items()):
        for row, name in enumerate(names):
            x, y = col * (NODE_W + GAP_X) + 10, row * (NODE_H + GAP_Y) + 10
            where[name] = (x, y)
            nodes.append(Node(name, parsed.steps[name].type, x, y, (statuses or {}).get(name, "")))
    edges = []
    for name in parsed.order:
        step = parsed.steps[name]
        for up in sorted(parsed.upstream.get(name, frozenset())):
            (x1, y1), (x2, y2) = where[up], where[name]
            sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H // 2, x2, y2 + NODE_H // 2
            mid = (sx + ex) // 2
            branch = ""
            if step.condition == up:
                branch = "if" if step.branch else "else"
            edges.append(Edge(f"M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}", branch))
    width = max((n.x for n in nodes), default=0) + NODE_W + 10
    height = max((n.y for n in nodes), default=0) + NODE_H + 10
    return Dag(tuple(nodes), tuple(edges), width, height)


def _stamp(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, dt.datetime) else value


def step_rows(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ListPipelineExecutionSteps items as the table shows them: duration, the job's page, cache hit."""
    rows = []
    for s in sorted(steps, key=lambda s: _stamp(s.get("StartTime")) or 0):
        start, end = _stamp(s.get("StartTime")), _stamp(s.get("EndTime"))
        link = None
        for key, segment in _JOBS.items():
            arn = ((s.get("Metadata") or {}).get(key) or {}).get("Arn") or (
                (s.get("Metadata") or {}).get(key) or {}
            ).get("CheckJobArn")
            if arn:
                link = (f"{BASE}/{segment}/{quote(arn.rsplit('/', 1)[-1])}", arn.rsplit("/", 1)[-1])
                break
        rows.append(
            {
                "name": s["StepName"],
                "display": s.get("StepDisplayName") or "",
                "status": s.get("StepStatus", ""),
                "start": s.get("StartTime"),
                "seconds": round(end - start, 1) if start is not None and end is not None else None,
                "link": link,
                "cache": (s.get("CacheHitResult") or {}).get("SourcePipelineExecutionArn"),
                "attempts": s.get("AttemptCount", 1),
                "reason": s.get("FailureReason", ""),
                "outcome": ((s.get("Metadata") or {}).get("Condition") or {}).get("Outcome"),
            }
        )
    return rows


def _arn(p: Page, name: str, execution: str) -> str:
    return f"arn:aws:sagemaker:{p.api.region}:{p.api.account_id}:pipeline/{name}/execution/{execution}"


@page
async def list_pipelines(p: Page) -> Response:
    prefix = p.request.query_params.get("name", "").strip()
    request: dict[str, Any] = {"SortBy": "CreationTime", "SortOrder": "Descending"}
    if prefix:
        request["PipelineNamePrefix"] = prefix
    items = await p.api.listing(p.session, "ListPipelines", "PipelineSummaries", **request)
    return p.render("pipelines.html", items=items, prefix=prefix)


async def _describe(p: Page, operation: str, what: str, shown: str, **request: Any) -> dict[str, Any]:
    """A Describe* answer; :class:`Missing` (a 404 page) for the ResourceNotFound pipelines answer."""
    try:
        return dict(await p.api.sagemaker(p.session, operation, **request))
    except ServiceError as exc:
        if exc.code == "ResourceNotFound":
            raise Missing(f"There is no {what} “{shown}”.") from exc
        raise


async def _pipeline(p: Page, name: str) -> dict[str, Any]:
    return await _describe(p, "DescribePipeline", "pipeline named", name, PipelineName=name)


async def _execution(p: Page, name: str, execution_id: str) -> tuple[str, dict[str, Any]]:
    arn = _arn(p, name, execution_id)
    what = f"execution of pipeline {name} with the id"
    return arn, await _describe(p, "DescribePipelineExecution", what, execution_id, PipelineExecutionArn=arn)


@page
async def pipeline(p: Page) -> Response:
    name = p.request.path_params["name"]
    desc = await _pipeline(p, name)
    text = desc.get("PipelineDefinition") or "{}"
    try:
        parameters = pd.parse(text).parameters
    except pd.InvalidDefinition:
        parameters = {}
    executions = await p.api.listing(
        p.session, "ListPipelineExecutions", "PipelineExecutionSummaries", PipelineName=name
    )
    return p.render(
        "pipeline_detail.html",
        pipeline=desc,
        name=name,
        dag=dag(text),
        parameters=list(parameters.values()),
        executions=[{**e, "Id": e["PipelineExecutionArn"].rsplit("/", 1)[-1]} for e in executions],
        errors={},
    )


@page
async def start_execution(p: Page) -> Response:
    name = p.request.path_params["name"]
    desc = await _pipeline(p, name)
    fields = p.fields()
    given = [
        {"Name": key[len("param_") :], "Value": value}
        for key, value in fields.items()
        if key.startswith("param_") and value != ""
    ]
    request: dict[str, Any] = {"PipelineName": name, "ClientRequestToken": uuid.uuid4().hex}
    if given:
        request["PipelineParameters"] = given
    if fields.get("description"):
        request["PipelineExecutionDescription"] = fields["description"]
    try:
        answer = await p.api.sagemaker(p.session, "StartPipelineExecution", **request)
    except ServiceError as exc:
        text = desc.get("PipelineDefinition") or "{}"
        executions = await p.api.listing(
            p.session, "ListPipelineExecutions", "PipelineExecutionSummaries", PipelineName=name
        )
        return p.render(
            "pipeline_detail.html",
            400,
            pipeline=desc,
            name=name,
            dag=dag(text),
            parameters=list(pd.parse(text).parameters.values()),
            executions=[{**e, "Id": e["PipelineExecutionArn"].rsplit("/", 1)[-1]} for e in executions],
            errors={"_form": [exc.message]},
        )
    execution = answer["PipelineExecutionArn"].rsplit("/", 1)[-1]
    return redirect(f"{BASE}/pipelines/{quote(name)}/executions/{quote(execution)}")


async def _execution_context(p: Page) -> dict[str, Any]:
    name, execution = p.request.path_params["name"], p.request.path_params["execution"]
    arn, desc = await _execution(p, name, execution)
    steps = await p.api.listing(
        p.session, "ListPipelineExecutionSteps", "PipelineExecutionSteps", PipelineExecutionArn=arn
    )
    params = await p.api.listing(
        p.session, "ListPipelineParametersForExecution", "PipelineParameters", PipelineExecutionArn=arn
    )
    definition = await p.api.sagemaker(p.session, "DescribePipelineDefinitionForExecution", PipelineExecutionArn=arn)
    statuses = {s["StepName"]: s.get("StepStatus", "") for s in steps}
    return {
        "name": name,
        "execution_id": execution,
        "execution": desc,
        "parameters": params,
        "steps": step_rows(steps),
        "dag": dag(definition.get("PipelineDefinition") or "{}", statuses),
        "live": desc.get("PipelineExecutionStatus") in ("Executing", "Stopping"),
    }


@page
async def execution(p: Page) -> Response:
    return p.render("pipeline_execution.html", **await _execution_context(p))


@page
async def execution_steps(p: Page) -> Response:
    """The part of the execution page that refreshes while it runs."""
    return p.render("_pipeline_steps.html", **await _execution_context(p))


async def _act(p: Page, operation: str, **extra: Any) -> Response:
    name, execution_id = p.request.path_params["name"], p.request.path_params["execution"]
    arn, _ = await _execution(p, name, execution_id)
    with contextlib.suppress(ServiceError):  # it ended (or cannot be retried): the page shows how it stands
        await p.api.sagemaker(
            p.session, operation, PipelineExecutionArn=arn, ClientRequestToken=uuid.uuid4().hex, **extra
        )
    return redirect(f"{BASE}/pipelines/{quote(name)}/executions/{quote(execution_id)}")


@page
async def stop_execution(p: Page) -> Response:
    return await _act(p, "StopPipelineExecution")


@page
async def retry_execution(p: Page) -> Response:
    return await _act(p, "RetryPipelineExecution")
