"""Trial components of jobs: every job is tracked as SageMaker tracks it.

A training, processing or transform job gets a trial component ``<job>-aws-training-job``
(``-aws-processing-job``, ``-aws-transform-job``) with the job as its ``Source``, the job's settings
as ``Parameters`` (hyperparameters, instance type and count), its inputs and image as
``InputArtifacts``; it is the job's vertex in lineage (:mod:`opensage.experiments.lineage`). When
the job's ``ExperimentConfig`` names a trial (which must exist) the component is associated with it;
otherwise it is unassigned, as SageMaker leaves it. As the job goes on, the component follows it:
status, start and end times, the model or outputs as ``OutputArtifacts``, and for a training job
the metrics it logged (from its CloudWatch series, and its final values).

:class:`JobComponents` is a store watcher: it sees every write of a job's row, in the writer's thread.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from opensage.errors import AlreadyExists, Conflict, NotFound, ServiceError
from opensage.experiments import records as rec
from opensage.store.entities import Resource
from opensage.store.metrics import MetricStore, dimensions
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch

log = logging.getLogger(__name__)

# job kind -> (suffix of its component, its source type, its name/status/start/end members)
JOB_KINDS: Mapping[str, tuple[str, str, str]] = {
    "training-job": ("aws-training-job", "SageMakerTrainingJob", "Training"),
    "processing-job": ("aws-processing-job", "SageMakerProcessingJob", "Processing"),
    "transform-job": ("aws-transform-job", "SageMakerTransformJob", "Transform"),
}
TRAINING_METRICS = "/aws/sagemaker/TrainingJobs"


def component_name(job_name: str, kind: str) -> str:
    return f"{job_name}-{JOB_KINDS[kind][0]}"


def _number(text: Any) -> dict[str, Any]:
    value = str(text).strip('"')
    try:
        return {"NumberValue": float(value)}
    except ValueError:
        return {"StringValue": value}


def _parameters(kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    resources = (
        data.get("ResourceConfig")
        or (data.get("ProcessingResources") or {}).get("ClusterConfig")
        or data.get("TransformResources")
        or {}
    )
    if resources.get("InstanceType"):
        out["SageMaker.InstanceType"] = {"StringValue": resources["InstanceType"]}
    if resources.get("InstanceCount") is not None:
        out["SageMaker.InstanceCount"] = {"NumberValue": float(resources["InstanceCount"])}
    for name, value in (data.get("HyperParameters") or {}).items():
        out[name] = _number(value)
    for name, value in (data.get("Environment") or {}).items() if kind == "processing-job" else ():
        out[name] = {"StringValue": str(value)}
    return out


def _inputs(kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    image = (data.get("AlgorithmSpecification") or {}).get("TrainingImage") or (data.get("AppSpecification") or {}).get(
        "ImageUri"
    )
    if image:
        out["SageMaker.ImageUri"] = {"Value": image}
    for channel in data.get("InputDataConfig") or []:
        uri = ((channel.get("DataSource") or {}).get("S3DataSource") or {}).get("S3Uri")
        if uri:
            out[channel["ChannelName"]] = {"MediaType": channel.get("ContentType") or "S3Uri", "Value": uri}
    for item in data.get("ProcessingInputs") or []:
        uri = (item.get("S3Input") or {}).get("S3Uri")
        if uri:
            out[item["InputName"]] = {"MediaType": "S3Uri", "Value": uri}
    source = ((data.get("TransformInput") or {}).get("DataSource") or {}).get("S3DataSource") or {}
    if source.get("S3Uri"):
        out["SageMaker.TransformInput"] = {"MediaType": "S3Uri", "Value": source["S3Uri"]}
    if data.get("ModelName"):
        out["SageMaker.ModelName"] = {"Value": data["ModelName"]}
    return out


def _outputs(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    model = (data.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if model:
        out["SageMaker.ModelArtifact"] = {"MediaType": "S3Uri", "Value": model}
    for item in (data.get("ProcessingOutputConfig") or {}).get("Outputs") or []:
        uri = (item.get("S3Output") or {}).get("S3Uri")
        if uri:
            out[item["OutputName"]] = {"MediaType": "S3Uri", "Value": uri}
    path = (data.get("TransformOutput") or {}).get("S3OutputPath")
    if path:
        out["SageMaker.TransformOutput"] = {"MediaType": "S3Uri", "Value": path}
    return out


class JobComponents:
    def __init__(
        self, store: SqlStore, clock: Callable[[], dt.datetime], metric_store: MetricStore | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self.metric_store = metric_store

    def watch(self, before: Resource | None, after: Resource) -> None:
        if after.kind not in JOB_KINDS:
            return
        try:
            if before is None:
                self._create(after)
            if before is None or before.status != after.status or before.data != after.data:
                self._follow(after)
        except (ServiceError, NotFound, Conflict, AlreadyExists) as exc:
            log.warning("the trial component of %s %s was not updated: %s", after.kind, after.name, exc)

    def _create(self, job: Resource) -> None:
        kind = job.kind
        name = component_name(job.name, kind)
        arn = job.arn.split(":", 5)
        arn[5] = f"experiment-trial-component/{name.lower()}"
        config = job.data.get("ExperimentConfig") or {}
        request = {
            "TrialComponentName": name,
            "DisplayName": config.get("TrialComponentDisplayName") or name,
            "Parameters": _parameters(kind, job.data),
            "InputArtifacts": _inputs(kind, job.data),
            "Status": {"PrimaryStatus": "InProgress"},
        }
        now = self.clock()
        rec.create_component(
            self.store, request, ":".join(arn), now, {"SourceArn": job.arn, "SourceType": JOB_KINDS[kind][1]}
        )
        trial = config.get("TrialName")
        if trial and self.store.get_resource(rec.TRIAL, rec.key(trial)) is not None:
            rec.associate(self.store, name, trial, now)

    def _follow(self, job: Resource) -> None:
        noun = JOB_KINDS[job.kind][2]
        data = job.data
        status = data.get(f"{noun}JobStatus") or job.status
        changes: dict[str, Any] = {
            "Status": {
                "PrimaryStatus": status if status in rec.STATUSES else "InProgress",
                **({"Message": data["FailureReason"]} if data.get("FailureReason") else {}),
            },
            "StartTime": data.get(f"{noun}StartTime"),
            "EndTime": data.get(f"{noun}EndTime"),
            "OutputArtifacts": _outputs(data) or None,
        }
        if job.kind == "training-job":
            changes["_JobMetrics"] = self._metrics(job) or None
        name = component_name(job.name, job.kind)

        def change(row: Resource) -> tuple[dict[str, Any], str | None] | None:
            new = {**row.data, **{k: v for k, v in changes.items() if v is not None}}
            if new == row.data:
                return None
            new["LastModifiedTime"] = epoch(self.clock())
            return new, new["Status"]["PrimaryStatus"]

        self.store.modify_resource(rec.COMPONENT, rec.key(name), change, now=self.clock())

    def _metrics(self, job: Resource) -> list[dict[str, Any]]:
        """The metric summaries of a training job: its CloudWatch series (every host), its final values."""
        final = {m["MetricName"]: m for m in job.data.get("FinalMetricDataList") or []}
        if not final:
            return []
        totals: dict[str, list[float]] = {}
        if self.metric_store is not None:
            start, end = job.created_at.timestamp() - 60, self.clock().timestamp() + 60
            hosts = [
                f"algo-{i + 1}" for i in range(int((job.data.get("ResourceConfig") or {}).get("InstanceCount", 1)))
            ]
            for name in final:
                for host in hosts:
                    key = (TRAINING_METRICS, name, dimensions([("Host", f"{job.name}/{host}")]))
                    for p in self.metric_store.points(start, end, key=key):
                        t = totals.setdefault(name, [0.0, 0.0, float("inf"), float("-inf")])
                        t[0] += p.stats.count
                        t[1] += p.stats.total
                        t[2], t[3] = min(t[2], p.stats.low), max(t[3], p.stats.high)
        out = []
        for name, m in sorted(final.items()):
            value = float(m["Value"])
            count, total, low, high = totals.get(name, [1.0, value, value, value])
            out.append(
                {
                    "MetricName": name,
                    "SourceArn": job.arn,
                    "TimeStamp": m.get("Timestamp"),
                    "Max": high,
                    "Min": low,
                    "Last": value,
                    "Count": int(count),
                    "Avg": total / count if count else value,
                }
            )
        return out
