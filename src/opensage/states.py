"""Statuses and the transitions allowed between them, per resource kind, with AWS's exact values.

Every write of a status goes through :func:`transition`, which builds the change that the store's
:meth:`~opensage.store.sql.SqlStore.modify_resource` applies with a compare-and-set: a transition
the current status does not allow raises :class:`IllegalTransition` (a ``Conflict``), and a write
racing another one is re-applied to what the other stored, so nothing is lost.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from opensage.errors import Conflict
from opensage.store.entities import Resource
from opensage.timestamps import epoch


class JobStatus(StrEnum):
    """TrainingJobStatus, ProcessingJobStatus and TransformJobStatus share these values."""

    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"


class TuningJobStatus(StrEnum):
    """HyperParameterTuningJobStatus."""

    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    DELETING = "Deleting"
    DELETE_FAILED = "DeleteFailed"


class PipelineExecutionStatus(StrEnum):
    EXECUTING = "Executing"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    FAILED = "Failed"
    SUCCEEDED = "Succeeded"


class EndpointStatus(StrEnum):
    OUT_OF_SERVICE = "OutOfService"
    CREATING = "Creating"
    UPDATING = "Updating"
    SYSTEM_UPDATING = "SystemUpdating"
    ROLLING_BACK = "RollingBack"
    IN_SERVICE = "InService"
    DELETING = "Deleting"
    FAILED = "Failed"
    UPDATE_ROLLBACK_FAILED = "UpdateRollbackFailed"


class SecondaryStatus(StrEnum):
    """A training job's SecondaryStatus, with the message AWS shows beside each."""

    STARTING = "Starting"
    DOWNLOADING = "Downloading"
    TRAINING = "Training"
    UPLOADING = "Uploading"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    MAX_RUNTIME_EXCEEDED = "MaxRuntimeExceeded"


SECONDARY_MESSAGES: Mapping[str, str] = {
    SecondaryStatus.STARTING: "Preparing the instances for training",
    SecondaryStatus.DOWNLOADING: "Downloading input data",
    SecondaryStatus.TRAINING: "Training image download completed. Training in progress.",
    SecondaryStatus.UPLOADING: "Uploading generated training model",
    SecondaryStatus.COMPLETED: "Training job completed",
    SecondaryStatus.FAILED: "Training job failed",
    SecondaryStatus.STOPPING: "Stopping the training job",
    SecondaryStatus.STOPPED: "Training job stopped",
    SecondaryStatus.MAX_RUNTIME_EXCEEDED: "Training job stopped because it exceeded MaxRuntimeInSeconds",
}

_J = JobStatus
_JOB: Mapping[str, frozenset[str]] = {
    _J.IN_PROGRESS: frozenset({_J.IN_PROGRESS, _J.COMPLETED, _J.FAILED, _J.STOPPING, _J.STOPPED}),
    _J.STOPPING: frozenset({_J.STOPPING, _J.STOPPED, _J.FAILED, _J.COMPLETED}),  # it may end before the stop
    _J.COMPLETED: frozenset(),
    _J.FAILED: frozenset(),
    _J.STOPPED: frozenset(),
}
_E = EndpointStatus
_ENDPOINT: Mapping[str, frozenset[str]] = {
    _E.CREATING: frozenset({_E.CREATING, _E.IN_SERVICE, _E.FAILED, _E.DELETING}),
    _E.IN_SERVICE: frozenset(
        {_E.IN_SERVICE, _E.UPDATING, _E.SYSTEM_UPDATING, _E.DELETING, _E.OUT_OF_SERVICE, _E.FAILED}
    ),
    _E.UPDATING: frozenset({_E.UPDATING, _E.IN_SERVICE, _E.ROLLING_BACK, _E.FAILED, _E.DELETING}),
    _E.SYSTEM_UPDATING: frozenset({_E.SYSTEM_UPDATING, _E.IN_SERVICE, _E.FAILED, _E.DELETING}),
    _E.ROLLING_BACK: frozenset({_E.IN_SERVICE, _E.UPDATE_ROLLBACK_FAILED, _E.FAILED, _E.DELETING}),
    _E.OUT_OF_SERVICE: frozenset({_E.IN_SERVICE, _E.SYSTEM_UPDATING, _E.DELETING, _E.FAILED}),
    _E.FAILED: frozenset({_E.DELETING, _E.UPDATING, _E.SYSTEM_UPDATING}),
    _E.UPDATE_ROLLBACK_FAILED: frozenset({_E.DELETING, _E.UPDATING}),
    _E.DELETING: frozenset({_E.DELETING}),
}
_T = TuningJobStatus
_TUNING: Mapping[str, frozenset[str]] = {
    _T.IN_PROGRESS: frozenset({_T.IN_PROGRESS, _T.COMPLETED, _T.FAILED, _T.STOPPING, _T.STOPPED}),
    _T.STOPPING: frozenset({_T.STOPPING, _T.STOPPED, _T.FAILED, _T.COMPLETED}),
    _T.COMPLETED: frozenset({_T.DELETING}),
    _T.FAILED: frozenset({_T.DELETING}),
    _T.STOPPED: frozenset({_T.DELETING}),
    _T.DELETING: frozenset({_T.DELETING, _T.DELETE_FAILED}),
    _T.DELETE_FAILED: frozenset({_T.DELETING}),
}
_P = PipelineExecutionStatus
_PIPELINE_EXECUTION: Mapping[str, frozenset[str]] = {
    _P.EXECUTING: frozenset({_P.EXECUTING, _P.STOPPING, _P.STOPPED, _P.FAILED, _P.SUCCEEDED}),
    _P.STOPPING: frozenset({_P.STOPPING, _P.STOPPED, _P.FAILED, _P.SUCCEEDED}),
    _P.STOPPED: frozenset({_P.EXECUTING}),  # RetryPipelineExecution
    _P.FAILED: frozenset({_P.EXECUTING}),
    _P.SUCCEEDED: frozenset(),
}
# resource kind -> its transition table
TRANSITIONS: Mapping[str, Mapping[str, frozenset[str]]] = {
    "training-job": _JOB,
    "processing-job": _JOB,
    "transform-job": _JOB,
    "endpoint": _ENDPOINT,
    "hyper-parameter-tuning-job": _TUNING,
    "pipeline-execution": _PIPELINE_EXECUTION,
}
STATUS_FIELD = {
    "training-job": "TrainingJobStatus",
    "processing-job": "ProcessingJobStatus",
    "transform-job": "TransformJobStatus",
    "endpoint": "EndpointStatus",
    "hyper-parameter-tuning-job": "HyperParameterTuningJobStatus",
    "pipeline-execution": "PipelineExecutionStatus",
}
TERMINAL_JOB_STATUSES = frozenset({_J.COMPLETED, _J.FAILED, _J.STOPPED})


class IllegalTransition(Conflict):
    """The resource's current status does not allow the asked one."""

    def __init__(self, kind: str, name: str, current: str, wanted: str) -> None:
        super().__init__(f"{kind} {name} is {current}; it cannot become {wanted}.")
        self.current = current
        self.wanted = wanted


def allowed(kind: str, current: str, wanted: str) -> bool:
    return wanted in TRANSITIONS[kind].get(current, frozenset())


Change = Callable[[Resource], tuple[dict[str, Any], str | None] | None]


def transition(
    kind: str,
    wanted: str | None,
    now: dt.datetime,
    *,
    fields: Mapping[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    secondary: str | None = None,
    only_from: frozenset[str] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> Change:
    """The change that moves a resource to ``wanted`` (``None``: only ``fields``), for ``modify_resource``.

    ``fields`` are merged into the document, ``drop`` removed from it, ``secondary`` appended to a
    training job's SecondaryStatusTransitions, ``edit`` may change the document further (it runs on
    the current one each attempt). ``only_from`` narrows the statuses the change may start from.
    """

    def change(row: Resource) -> tuple[dict[str, Any], str | None]:
        if only_from is not None and row.status not in only_from:
            raise IllegalTransition(kind, row.name, row.status, wanted or row.status)
        if wanted is not None and not allowed(kind, row.status, wanted):
            raise IllegalTransition(kind, row.name, row.status, wanted)
        data = dict(row.data)
        data.update(fields or {})
        for key in drop:
            data.pop(key, None)
        if secondary is not None:
            data = with_secondary(data, secondary, now)
        if wanted is not None:
            data[STATUS_FIELD[kind]] = wanted
        data["LastModifiedTime"] = epoch(now)
        if edit is not None:
            edit(data)
        return data, wanted

    return change


def with_secondary(data: Mapping[str, Any], secondary: str, now: dt.datetime) -> dict[str, Any]:
    """``data`` with the training job's SecondaryStatus moved on (the last transition closed; a final
    one closed at once)."""
    out = dict(data)
    transitions = [dict(t) for t in out.get("SecondaryStatusTransitions", [])]
    if transitions and transitions[-1]["Status"] == secondary:
        return out
    ts = epoch(now)
    if transitions:
        transitions[-1].setdefault("EndTime", ts)
    entry = {"Status": secondary, "StartTime": ts, "StatusMessage": SECONDARY_MESSAGES.get(secondary, secondary)}
    if secondary in _FINAL_SECONDARY:
        entry["EndTime"] = ts
    transitions.append(entry)
    out["SecondaryStatusTransitions"] = transitions
    out["SecondaryStatus"] = secondary
    out["LastModifiedTime"] = ts
    return out


_FINAL_SECONDARY = frozenset(
    {SecondaryStatus.COMPLETED, SecondaryStatus.FAILED, SecondaryStatus.STOPPED, SecondaryStatus.MAX_RUNTIME_EXCEEDED}
)
