"""Experiments in the console: the list, and an experiment's runs side by side (parameters, the metrics
each logged, the job behind a run), sortable by any of them; and an endpoint's lineage (the model it
serves, the job that trained it, the data that job read), read with QueryLineage as the SDK reads it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from opensage.console.pages import Page, page
from opensage.errors import ServiceError

SEARCH_PAGE = 100
JOB_PAGES = {
    "SageMakerTrainingJob": "training-jobs",
    "SageMakerProcessingJob": "processing-jobs",
    "SageMakerTransformJob": "transform-jobs",
}


@page
async def experiments(p: Page) -> Response:
    items = await p.api.listing(p.session, "ListExperiments", "ExperimentSummaries")
    return p.render("experiments.html", experiments=items)


def _param(value: Mapping[str, Any]) -> Any:
    return value.get("NumberValue", value.get("StringValue"))


def run_rows(components: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """One row per trial component (parameters by name, the last value and range of each metric, its job),
    and the parameter and metric names across them, sorted."""
    rows = []
    for c in components:
        source = c.get("Source") or {}
        rows.append(
            {
                "name": c["TrialComponentName"],
                "display": c.get("DisplayName") or c["TrialComponentName"],
                "status": (c.get("Status") or {}).get("PrimaryStatus", ""),
                "created": c.get("CreationTime"),
                "trials": [parent["TrialName"] for parent in c.get("Parents") or []],
                "params": {k: _param(v) for k, v in (c.get("Parameters") or {}).items()},
                "metrics": {m["MetricName"]: m for m in c.get("Metrics") or []},
                "job": source.get("SourceArn", "").rsplit("/", 1)[-1] if source else "",
                "job_page": JOB_PAGES.get(source.get("SourceType", ""), ""),
            }
        )
    params = sorted({k for r in rows for k in r["params"]})
    metrics = sorted({k for r in rows for k in r["metrics"]})
    return rows, params, metrics


def sort_rows(rows: list[dict[str, Any]], by: str, descending: bool) -> list[dict[str, Any]]:
    """``rows`` by ``name``, ``created``, ``param:<name>`` or ``metric:<name>`` (its last value); rows
    without the value last whatever the order."""

    def value(row: dict[str, Any]) -> Any:
        if by.startswith("param:"):
            return row["params"].get(by[6:])
        if by.startswith("metric:"):
            return (row["metrics"].get(by[7:]) or {}).get("Last")
        return row.get(by if by in ("name", "created") else "created")

    present = [r for r in rows if value(r) is not None]
    absent = [r for r in rows if value(r) is None]
    numeric = all(isinstance(value(r), int | float) for r in present)
    present.sort(key=lambda r: value(r) if numeric else str(value(r)), reverse=descending)
    return present + absent


async def _search(p: Page, resource: str, expression: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        extra: dict[str, Any] = {"NextToken": token} if token else {}
        answer = await p.api.sagemaker(
            p.session, "Search", Resource=resource, SearchExpression=expression, MaxResults=SEARCH_PAGE, **extra
        )
        found += answer.get("Results") or []
        token = answer.get("NextToken")
        if not token:
            return found


@page
async def experiment(p: Page) -> Response:
    name = p.request.path_params["name"]
    desc = await p.api.describe(p.session, "DescribeExperiment", "experiment", ExperimentName=name)
    parent = {"Filters": [{"Name": "Parents.ExperimentName", "Operator": "Equals", "Value": desc["ExperimentName"]}]}
    components = [r["TrialComponent"] for r in await _search(p, "ExperimentTrialComponent", parent)]
    rows, params, metrics = run_rows(components)
    q = p.request.query_params
    by = q.get("sort") or "created"
    order = "asc" if q.get("order") == "asc" else "desc"
    trials = await p.api.listing(p.session, "ListTrials", "TrialSummaries", ExperimentName=desc["ExperimentName"])
    return p.render(
        "experiment_detail.html",
        experiment=desc,
        name=name,
        runs=sort_rows(rows, by, order == "desc"),
        params=params,
        metrics=metrics,
        trials=trials,
        filters={"sort": by, "order": order},
    )


async def endpoint_lineage(p: Page, endpoint_arn: str) -> dict[str, Any] | None:
    """What made the model behind an endpoint: models, the jobs that produced them, their data and images.

    None when the endpoint has no lineage yet (it was never InService) or it cannot be read."""
    try:
        contexts = await p.api.listing(p.session, "ListContexts", "ContextSummaries", SourceUri=endpoint_arn)
        if not contexts:
            return None
        answer = await p.api.sagemaker(
            p.session, "QueryLineage", StartArns=[contexts[0]["ContextArn"]], Direction="Ascendants", IncludeEdges=False
        )
        out: dict[str, list[dict[str, Any]]] = {"models": [], "jobs": [], "data": [], "images": []}
        for v in answer.get("Vertices") or []:
            if v["LineageType"] == "Artifact":
                art = await p.api.sagemaker(p.session, "DescribeArtifact", ArtifactArn=v["Arn"])
                uri = (art.get("Source") or {}).get("SourceUri", "")
                key = {"Model": "models", "DataSet": "data", "Image": "images"}.get(v["Type"])
                if key:
                    out[key].append({"uri": uri, "type": v["Type"]})
            elif v["LineageType"] == "TrialComponent":
                tc = await p.api.sagemaker(
                    p.session, "DescribeTrialComponent", TrialComponentName=v["Arn"].rsplit("/", 1)[-1]
                )
                source = tc.get("Source") or {}
                out["jobs"].append(
                    {
                        "name": source.get("SourceArn", "").rsplit("/", 1)[-1],
                        "page": JOB_PAGES.get(source.get("SourceType", ""), ""),
                        "type": v["Type"],
                    }
                )
        for items in out.values():
            items.sort(key=lambda i: str(i.get("uri") or i.get("name")))
        return out
    except ServiceError:
        return None
