"""Experiments, trials and trial components, as the store keeps them.

Each is a row of its own kind, keyed by its lower-cased name (names are unique per account whatever
their case, and ARNs are lower-case). A trial's ``parent_arn`` is its experiment's ARN; a trial
component keeps the trials it is associated with in its document (``_Trials``, changed with a
compare-and-set), so its ``Parents`` come with it and a trial's components are the components that
name it. A component made for a job (``<job>-aws-training-job``) has the job as its ``Source``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from opensage.errors import AlreadyExists, NotFound, ServiceError, not_found, validation_error
from opensage.experiments.metrics import TrialMetrics
from opensage.store import tags
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch, jsonable

EXPERIMENT = "experiment"
TRIAL = "experiment-trial"
COMPONENT = "experiment-trial-component"
TRIALS = "_Trials"  # the trials a component is associated with: [{"TrialName", "ExperimentName"}]
NOUN = {EXPERIMENT: "Experiment", TRIAL: "Trial", COMPONENT: "TrialComponent"}
ARN_PART = {EXPERIMENT: "experiment", TRIAL: "experiment-trial", COMPONENT: "experiment-trial-component"}
STATUSES = ("InProgress", "Completed", "Failed", "Stopping", "Stopped")


def public(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not k.startswith("_") and k != "Tags"}


def key(name_or_arn: str) -> str:
    """The row name of an entity given its name or ARN."""
    return name_or_arn.rsplit("/", 1)[-1].lower() if name_or_arn.startswith("arn:") else name_or_arn.lower()


def get(store: SqlStore, kind: str, name: str) -> Resource:
    row = store.get_resource(kind, key(name))
    if row is None:
        raise not_found(f"{NOUN[kind]} '{name}' does not exist.")  # as SageMaker words it
    return row


def _already(kind: str, arn: str) -> ServiceError:
    return validation_error(f"{NOUN[kind]} '{arn.rsplit('/', 1)[-1]}' already exists: {arn}")


def _create(
    store: SqlStore,
    kind: str,
    name: str,
    arn: str,
    data: dict[str, Any],
    now: dt.datetime,
    request: Mapping[str, Any],
    parent_arn: str | None = None,
    status: str = "",
) -> Resource:
    try:
        row = store.create_resource(Resource(kind, key(name), arn, status, now, now, data, parent_arn=parent_arn))
    except AlreadyExists as exc:
        raise _already(kind, arn) from exc
    if request.get("Tags"):
        tags.put_tags(store, arn, request["Tags"], now)
    return row


def _stamped(request: Mapping[str, Any], arn_member: str, arn: str, now: dt.datetime) -> dict[str, Any]:
    data = jsonable(public(request))
    data.update({arn_member: arn, "CreationTime": epoch(now), "LastModifiedTime": epoch(now)})
    return data


def create_experiment(store: SqlStore, request: Mapping[str, Any], arn: str, now: dt.datetime) -> Resource:
    data = _stamped(request, "ExperimentArn", arn, now)
    return _create(store, EXPERIMENT, request["ExperimentName"], arn, data, now, request)


def create_trial(store: SqlStore, request: Mapping[str, Any], arn: str, now: dt.datetime) -> Resource:
    experiment = get(store, EXPERIMENT, request["ExperimentName"])
    data = _stamped(request, "TrialArn", arn, now)
    data["ExperimentName"] = experiment.data["ExperimentName"]
    return _create(store, TRIAL, request["TrialName"], arn, data, now, request, parent_arn=experiment.arn)


def check_parameters(parameters: Mapping[str, Any] | None) -> None:
    for name, value in (parameters or {}).items():
        if not isinstance(value, Mapping) or len([k for k in ("StringValue", "NumberValue") if k in value]) != 1:
            raise validation_error(f"Parameter {name!r} needs exactly one of StringValue or NumberValue.")


def create_component(
    store: SqlStore, request: Mapping[str, Any], arn: str, now: dt.datetime, source: Mapping[str, Any] | None = None
) -> Resource:
    check_parameters(request.get("Parameters"))
    data = _stamped(request, "TrialComponentArn", arn, now)
    data.setdefault("Parameters", {})
    data.setdefault("InputArtifacts", {})
    data.setdefault("OutputArtifacts", {})
    if source:
        data["Source"] = dict(source)
    data[TRIALS] = []
    status = (request.get("Status") or {}).get("PrimaryStatus", "")
    return _create(store, COMPONENT, request["TrialComponentName"], arn, data, now, request, status=status)


def update(store: SqlStore, kind: str, name: str, changes: Mapping[str, Any], now: dt.datetime) -> Resource:
    """Set the members of ``changes`` (None: left as they are) on an entity's document."""
    get(store, kind, name)

    def change(row: Resource) -> tuple[dict[str, Any], str | None]:
        data = {**row.data, **{k: v for k, v in jsonable(dict(changes)).items() if v is not None}}
        data["LastModifiedTime"] = epoch(now)
        return data, None

    return store.modify_resource(kind, key(name), change, now=now)


def update_component(store: SqlStore, request: Mapping[str, Any], now: dt.datetime) -> Resource:
    """UpdateTrialComponent: set what it gives, add the parameters and artifacts, remove those it names."""
    check_parameters(request.get("Parameters"))
    name = request["TrialComponentName"]
    get(store, COMPONENT, name)
    for member in ("Parameters", "InputArtifacts", "OutputArtifacts"):
        both = set(request.get(member) or {}) & set(request.get(f"{member}ToRemove") or [])
        if both:
            raise validation_error(f"{member} and {member}ToRemove both name {', '.join(sorted(both))}.")

    def change(row: Resource) -> tuple[dict[str, Any], str | None]:
        data = dict(row.data)
        for member in ("DisplayName", "Status", "StartTime", "EndTime"):
            if request.get(member) is not None:
                data[member] = jsonable(request[member])
        for member in ("Parameters", "InputArtifacts", "OutputArtifacts"):
            merged = {**(data.get(member) or {}), **jsonable(dict(request.get(member) or {}))}
            for gone in request.get(f"{member}ToRemove") or []:
                merged.pop(gone, None)
            data[member] = merged
        data["LastModifiedTime"] = epoch(now)
        status = (data.get("Status") or {}).get("PrimaryStatus")
        return data, status

    return store.modify_resource(COMPONENT, key(name), change, now=now)


def associate(
    store: SqlStore, component: str, trial: str, now: dt.datetime, add: bool = True
) -> tuple[Resource, Resource]:
    """Associate (or, ``add`` False, disassociate) a component and a trial; both rows afterwards."""
    t = get(store, TRIAL, trial)
    get(store, COMPONENT, component)
    parent = {"TrialName": t.data["TrialName"], "ExperimentName": t.data["ExperimentName"]}

    def change(row: Resource) -> tuple[dict[str, Any], str | None] | None:
        current = [p for p in row.data.get(TRIALS, []) if p["TrialName"].lower() != t.name]
        if add and len(current) != len(row.data.get(TRIALS, [])):
            return None  # associated already: nothing to write
        return {**row.data, TRIALS: [*current, parent] if add else current}, None

    updated = store.modify_resource(COMPONENT, key(component), change, now=now)
    return updated, t


def components_of(store: SqlStore, trials: Iterable[str]) -> list[Resource]:
    """The components associated with any of ``trials`` (row names)."""
    wanted = set(trials)
    return [
        row
        for row in store.list_resources(COMPONENT)
        if any(p["TrialName"].lower() in wanted for p in row.data.get(TRIALS, []))
    ]


def trials_of(store: SqlStore, experiment: Resource) -> list[Resource]:
    return store.list_resources(TRIAL, parent_arn=experiment.arn)


def delete(store: SqlStore, kind: str, name: str, metrics: TrialMetrics | None = None) -> Resource:
    """Delete an entity that nothing depends on (SageMaker's rule: an experiment without trials, a
    trial without components, a component associated with no trial)."""
    row = get(store, kind, name)
    if kind == EXPERIMENT and trials_of(store, row):
        raise validation_error(
            f"Experiment '{row.data['ExperimentName']}' still has trials; delete them (DeleteTrial) "
            "before the experiment."
        )
    if kind == TRIAL and components_of(store, [row.name]):
        raise validation_error(
            f"Trial '{row.data['TrialName']}' still has trial components; disassociate them "
            "(DisassociateTrialComponent) before deleting the trial."
        )
    if kind == COMPONENT and row.data.get(TRIALS):
        names = ", ".join(p["TrialName"] for p in row.data[TRIALS])
        raise validation_error(
            f"Trial component '{row.data['TrialComponentName']}' is associated with trial(s) {names}; "
            "disassociate it (DisassociateTrialComponent) before deleting it."
        )
    try:
        store.delete_resource(kind, row.name)
    except NotFound as exc:
        raise not_found(f"{NOUN[kind]} '{name}' does not exist.") from exc
    tags.drop_tags(store, row.arn)
    if kind == COMPONENT and metrics is not None:
        metrics.drop(row.name)
    return row


def describe_component(row: Resource, metrics: TrialMetrics) -> dict[str, Any]:
    out = public(row.data)
    source = (row.data.get("Source") or {}).get("SourceArn")
    out["Metrics"] = metrics.summaries(row.name, source) + list(row.data.get("_JobMetrics") or [])
    if source:
        out["Sources"] = [dict(row.data["Source"])]
    return out


def component_record(row: Resource, metrics: TrialMetrics, tag_list: list[dict[str, str]]) -> dict[str, Any]:
    """A component as Search answers it: its description, its Parents and Tags."""
    out = describe_component(row, metrics)
    out.pop("Sources", None)
    out["Parents"] = [dict(p) for p in row.data.get(TRIALS, [])]
    if tag_list:
        out["Tags"] = tag_list
    return out


def component_summary(row: Resource) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: row.data[k]
        for k in (
            "TrialComponentName",
            "TrialComponentArn",
            "DisplayName",
            "Status",
            "StartTime",
            "EndTime",
            "CreationTime",
            "LastModifiedTime",
        )
        if k in row.data
    }
    if row.data.get("Source"):
        out["TrialComponentSource"] = dict(row.data["Source"])
    return out


def trial_record(store: SqlStore, row: Resource, tag_list: list[dict[str, str]]) -> dict[str, Any]:
    out = public(row.data)
    out["TrialComponentSummaries"] = [
        {
            k: v
            for k, v in {
                "TrialComponentName": c.data["TrialComponentName"],
                "TrialComponentArn": c.arn,
                "TrialComponentSource": c.data.get("Source"),
                "CreationTime": c.data["CreationTime"],
            }.items()
            if v is not None
        }
        for c in components_of(store, [row.name])
    ]
    if tag_list:
        out["Tags"] = tag_list
    return out
