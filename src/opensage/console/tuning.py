"""Hyperparameter tuning jobs: the page of one job (its trials, sortable; the objective per trial with
the best so far; each hyperparameter against the objective), Stop, and deploying the best trial
(through the training job's own Deploy). The list is :mod:`opensage.console.lists`' ``tuning-jobs``."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from opensage.console import forms
from opensage.console.pages import BASE, Page, page, redirect
from opensage.errors import ServiceError

SORTS = ("FinalObjectiveMetricValue", "Name", "CreationTime", "Status")


def _stamp(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, dt.datetime) else value


def chart_data(trials: list[dict[str, Any]], maximize: bool) -> dict[str, Any]:
    """The trials in the order they started: objective, best so far, and the tuned values."""
    ordered = sorted(trials, key=lambda t: (_stamp(t["CreationTime"]) or 0, t["TrainingJobName"]))
    best: float | None = None
    points = []
    for i, t in enumerate(ordered, 1):
        value = (t.get("FinalHyperParameterTuningJobObjectiveMetric") or {}).get("Value")
        if value is not None and (best is None or (value > best if maximize else value < best)):
            best = value
        points.append(
            {"n": i, "name": t["TrainingJobName"], "value": value, "best": best, "hps": t["TunedHyperParameters"]}
        )
    names = sorted({k for t in ordered for k in t["TunedHyperParameters"]})
    return {"trials": points, "hyperparameters": names}


@page
async def tuning_job(p: Page) -> Response:
    name = p.request.path_params["name"]
    desc = await p.api.describe(
        p.session, "DescribeHyperParameterTuningJob", "tuning job", HyperParameterTuningJobName=name
    )
    q = p.request.query_params
    sort = q.get("sort") if q.get("sort") in SORTS else "FinalObjectiveMetricValue"
    order = "asc" if q.get("order") == "asc" else "desc"
    trials = await p.api.listing(
        p.session,
        "ListTrainingJobsForHyperParameterTuningJob",
        "TrainingJobSummaries",
        HyperParameterTuningJobName=name,
        SortBy=sort,
        SortOrder="Ascending" if order == "asc" else "Descending",
    )
    every = trials
    if sort == "FinalObjectiveMetricValue":  # that order leaves out trials without an objective: show them last
        every = await p.api.listing(
            p.session,
            "ListTrainingJobsForHyperParameterTuningJob",
            "TrainingJobSummaries",
            HyperParameterTuningJobName=name,
        )
        listed = {t["TrainingJobName"] for t in trials}
        trials = trials + [t for t in every if t["TrainingJobName"] not in listed]
    config = desc["HyperParameterTuningJobConfig"]
    objective = config.get("HyperParameterTuningJobObjective") or (
        (desc.get("TrainingJobDefinitions") or [{}])[0].get("TuningObjective") or {}
    )
    maximize = objective.get("Type", "Maximize") == "Maximize"
    return p.render(
        "tuning_detail.html",
        job=desc,
        name=name,
        objective=objective,
        trials=trials,
        hp_names=sorted({k for t in every for k in t["TunedHyperParameters"]}),
        chart=json.dumps(chart_data(every, maximize)).replace("<", "\\u003c"),  # inside a <script> element
        filters={"sort": sort, "order": order},
        instance_types=forms.instance_choices(),
    )


@page
async def stop_tuning_job(p: Page) -> Response:
    name = p.request.path_params["name"]
    await p.api.describe(p.session, "DescribeHyperParameterTuningJob", "tuning job", HyperParameterTuningJobName=name)
    with contextlib.suppress(ServiceError):  # it ended meanwhile: the page shows how
        await p.api.sagemaker(p.session, "StopHyperParameterTuningJob", HyperParameterTuningJobName=name)
    return redirect(f"{BASE}/tuning-jobs/{quote(name)}")
