"""SageMaker Experiments: experiments, trials, trial components and their associations.

What the SDK v2's ``sagemaker.experiments.Run`` calls (load-or-create of each entity, the run's
component updated with its parameters, artifacts, status and times, ``list_runs``), and the job side:
a training, processing or transform job created with an ``ExperimentConfig`` gets a trial component
of its own (:mod:`opensage.experiments.jobs`). The values a run logs arrive through the
``sagemaker-metrics`` service (:mod:`opensage.providers.sagemaker_metrics`) and come back as the
component's ``Metrics``.

LIMITATIONS: ``CreatedBy``/``LastModifiedBy`` are not recorded; ``MetadataProperties`` are kept as
given; one account (no cross-account experiments).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import validation_error
from opensage.experiments import records as rec
from opensage.experiments.metrics import TrialMetrics
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore


def _time(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, dt.datetime) else value


def _listed(rows: list[Resource], request: dict[str, Any]) -> list[Resource]:
    """``rows`` within CreatedAfter/CreatedBefore, sorted by SortBy (Name or CreationTime) and SortOrder."""
    after, before = _time(request.get("CreatedAfter")), _time(request.get("CreatedBefore"))
    rows = [
        r
        for r in rows
        if (after is None or r.created_at.timestamp() > after) and (before is None or r.created_at.timestamp() < before)
    ]
    by = request.get("SortBy") or "CreationTime"
    if by not in ("Name", "CreationTime"):
        raise validation_error(f"SortBy must be Name or CreationTime, not {by!r}.")
    descending = (request.get("SortOrder") or "Descending") == "Descending"
    rows.sort(key=(lambda r: r.name) if by == "Name" else (lambda r: (r.created_at, r.name)), reverse=descending)
    return rows


class ExperimentOperations:
    store: SqlStore
    clock: Callable[[], dt.datetime]
    trial_metrics: TrialMetrics

    # --- experiments ----------------------------------------------------------------------------

    def create_experiment(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        arn = ctx.arn("sagemaker", f"experiment/{request['ExperimentName'].lower()}")
        rec.create_experiment(self.store, request, arn, self.clock())
        return {"ExperimentArn": arn}

    def describe_experiment(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return rec.public(rec.get(self.store, rec.EXPERIMENT, request["ExperimentName"]).data)

    def update_experiment(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        changes = {k: request.get(k) for k in ("DisplayName", "Description")}
        row = rec.update(self.store, rec.EXPERIMENT, request["ExperimentName"], changes, self.clock())
        return {"ExperimentArn": row.arn}

    def delete_experiment(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {"ExperimentArn": rec.delete(self.store, rec.EXPERIMENT, request["ExperimentName"]).arn}

    def list_experiments(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows = _listed(self.store.list_resources(rec.EXPERIMENT), request)
        keys = ("ExperimentArn", "ExperimentName", "DisplayName", "CreationTime", "LastModifiedTime")
        return {"ExperimentSummaries": [_pick(r.data, keys, "ExperimentSource") for r in rows]}

    # --- trials ---------------------------------------------------------------------------------

    def create_trial(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        arn = ctx.arn("sagemaker", f"experiment-trial/{request['TrialName'].lower()}")
        rec.create_trial(self.store, request, arn, self.clock())
        return {"TrialArn": arn}

    def describe_trial(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return rec.public(rec.get(self.store, rec.TRIAL, request["TrialName"]).data)

    def update_trial(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = rec.update(
            self.store, rec.TRIAL, request["TrialName"], {"DisplayName": request.get("DisplayName")}, self.clock()
        )
        return {"TrialArn": row.arn}

    def delete_trial(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {"TrialArn": rec.delete(self.store, rec.TRIAL, request["TrialName"]).arn}

    def list_trials(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("ExperimentName"):
            rows = rec.trials_of(self.store, rec.get(self.store, rec.EXPERIMENT, request["ExperimentName"]))
        else:
            rows = self.store.list_resources(rec.TRIAL)
        if request.get("TrialComponentName"):
            component = rec.get(self.store, rec.COMPONENT, request["TrialComponentName"])
            mine = {p["TrialName"].lower() for p in component.data.get(rec.TRIALS, [])}
            rows = [r for r in rows if r.name in mine]
        keys = ("TrialArn", "TrialName", "DisplayName", "CreationTime", "LastModifiedTime")
        return {"TrialSummaries": [_pick(r.data, keys, "TrialSource") for r in _listed(rows, request)]}

    # --- trial components -----------------------------------------------------------------------

    def create_trial_component(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        arn = ctx.arn("sagemaker", f"experiment-trial-component/{request['TrialComponentName'].lower()}")
        rec.create_component(self.store, request, arn, self.clock())
        return {"TrialComponentArn": arn}

    def describe_trial_component(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = rec.get(self.store, rec.COMPONENT, request["TrialComponentName"])
        return rec.describe_component(row, self.trial_metrics)

    def update_trial_component(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {"TrialComponentArn": rec.update_component(self.store, request, self.clock()).arn}

    def delete_trial_component(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = rec.delete(self.store, rec.COMPONENT, request["TrialComponentName"], self.trial_metrics)
        return {"TrialComponentArn": row.arn}

    def list_trial_components(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        given = [m for m in ("ExperimentName", "TrialName", "SourceArn") if request.get(m)]
        if len(given) > 1:
            raise validation_error(
                f"Give at most one of ExperimentName, TrialName and SourceArn, not {' and '.join(given)}."
            )
        if request.get("TrialName"):
            rows = rec.components_of(self.store, [rec.get(self.store, rec.TRIAL, request["TrialName"]).name])
        elif request.get("ExperimentName"):
            experiment = rec.get(self.store, rec.EXPERIMENT, request["ExperimentName"])
            rows = rec.components_of(self.store, [t.name for t in rec.trials_of(self.store, experiment)])
        else:
            rows = self.store.list_resources(rec.COMPONENT)
        if request.get("SourceArn"):
            source = request["SourceArn"].lower()
            rows = [r for r in rows if (r.data.get("Source") or {}).get("SourceArn", "").lower() == source]
        return {"TrialComponentSummaries": [rec.component_summary(r) for r in _listed(rows, request)]}

    def associate_trial_component(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        component, trial = rec.associate(self.store, request["TrialComponentName"], request["TrialName"], self.clock())
        return {"TrialComponentArn": component.arn, "TrialArn": trial.arn}

    def disassociate_trial_component(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        component, trial = rec.associate(
            self.store, request["TrialComponentName"], request["TrialName"], self.clock(), add=False
        )
        return {"TrialComponentArn": component.arn, "TrialArn": trial.arn}


def _pick(data: dict[str, Any], keys: tuple[str, ...], source_member: str) -> dict[str, Any]:
    out = {k: data[k] for k in keys if k in data}
    if data.get("Source"):
        out[source_member] = data["Source"]
    return out
