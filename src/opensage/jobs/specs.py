"""Typed job specs: what a job is asked to do, built once from a validated Create* request.

A spec is what every creator of a job hands the job's engine: the API provider (from the wire
request), and the platform's own controllers (a tuning job's trials, a pipeline's steps), which
derive specs from other specs (:meth:`TrainingJobSpec.with_hyperparameters`) instead of editing
wire dictionaries. ``document`` keeps the request exactly as given (minus ``Tags``), because
``Describe*`` answers what ``Create*`` was given plus what the platform computed.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opensage import states
from opensage.jobs import rules
from opensage.timestamps import epoch, jsonable

DEFAULT_MAX_RUNTIME_S = 86400


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One input channel of a training job (its S3 source and how the container reads it)."""

    name: str
    s3_uri: str
    s3_data_type: str  # S3Prefix | ManifestFile | AugmentedManifestFile
    distribution: str  # FullyReplicated | ShardedByS3Key
    content_type: str
    compression: str  # None | Gzip
    record_wrapper: str  # None | RecordIO
    input_mode: str  # File | Pipe | FastFile

    @classmethod
    def from_request(cls, channel: Mapping[str, Any], default_mode: str) -> ChannelSpec:
        source = channel["DataSource"]["S3DataSource"]
        return cls(
            channel["ChannelName"],
            source["S3Uri"],
            source.get("S3DataType", "S3Prefix"),
            source.get("S3DataDistributionType", "FullyReplicated"),
            channel.get("ContentType", ""),
            channel.get("CompressionType", "None"),
            channel.get("RecordWrapperType", "None"),
            channel.get("InputMode") or default_mode,
        )


@dataclass(frozen=True, slots=True)
class TrainingJobSpec:
    """A training job as CreateTrainingJob asks for it."""

    name: str
    image: str
    input_mode: str
    hyperparameters: Mapping[str, str]
    role_arn: str
    channels: tuple[ChannelSpec, ...]
    output_path: str
    instance_type: str
    instance_count: int
    max_runtime_s: int
    environment: Mapping[str, str]
    entrypoint: tuple[str, ...]
    arguments: tuple[str, ...]
    network_isolation: bool
    document: Mapping[str, Any]

    @classmethod
    def from_request(cls, request: Mapping[str, Any]) -> TrainingJobSpec:
        """The spec of a CreateTrainingJob request that passed the model's validation."""
        document = jsonable({k: v for k, v in request.items() if k != "Tags"})
        algo = document["AlgorithmSpecification"]
        mode = algo.get("TrainingInputMode") or "File"
        resources = document["ResourceConfig"]
        return cls(
            name=document["TrainingJobName"],
            image=algo.get("TrainingImage", ""),
            input_mode=mode,
            hyperparameters={k: str(v) for k, v in (document.get("HyperParameters") or {}).items()},
            role_arn=document["RoleArn"],
            channels=tuple(ChannelSpec.from_request(c, mode) for c in document.get("InputDataConfig") or []),
            output_path=document["OutputDataConfig"]["S3OutputPath"],
            instance_type=resources.get("InstanceType", "local"),
            instance_count=int(resources.get("InstanceCount", 1)),
            max_runtime_s=int(
                (document.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME_S)
            ),
            environment={k: str(v) for k, v in (document.get("Environment") or {}).items()},
            entrypoint=tuple(algo.get("ContainerEntrypoint") or ()),
            arguments=tuple(algo.get("ContainerArguments") or ()),
            network_isolation=bool(document.get("EnableNetworkIsolation", False)),
            document=document,
        )

    def renamed(self, name: str) -> TrainingJobSpec:
        """The same job under another name (a tuning job's trial, a pipeline step's job)."""
        return dataclasses.replace(self, name=name, document={**self.document, "TrainingJobName": name})

    def with_hyperparameters(self, hyperparameters: Mapping[str, str]) -> TrainingJobSpec:
        """The same job with ``hyperparameters`` in place of its own."""
        hps = {k: str(v) for k, v in hyperparameters.items()}
        return dataclasses.replace(self, hyperparameters=hps, document={**self.document, "HyperParameters": hps})

    def initial_description(self, arn: str, now: dt.datetime) -> dict[str, Any]:
        return initial_description(self, arn, now)


def initial_description(spec: TrainingJobSpec, arn: str, now: dt.datetime) -> dict[str, Any]:
    """DescribeTrainingJob right after CreateTrainingJob: the request plus what the platform computes."""
    data = copy.deepcopy(dict(spec.document))
    started = epoch(now)
    data.update(
        {
            "TrainingJobArn": arn,
            "TrainingJobStatus": states.JobStatus.IN_PROGRESS,
            "SecondaryStatus": states.SecondaryStatus.STARTING,
            "CreationTime": started,
            "LastModifiedTime": started,
            "SecondaryStatusTransitions": [
                {
                    "Status": states.SecondaryStatus.STARTING,
                    "StartTime": started,
                    "StatusMessage": states.SECONDARY_MESSAGES[states.SecondaryStatus.STARTING],
                }
            ],
            "ModelArtifacts": {"S3ModelArtifacts": ""},
            "EnableNetworkIsolation": spec.network_isolation,
            "EnableInterContainerTrafficEncryption": data.get("EnableInterContainerTrafficEncryption", False),
            "EnableManagedSpotTraining": data.get("EnableManagedSpotTraining", False),
            **rules.initial_statuses(data, started),
        }
    )
    data.setdefault("StoppingCondition", {"MaxRuntimeInSeconds": spec.max_runtime_s})
    data["AlgorithmSpecification"].setdefault("TrainingInputMode", spec.input_mode)
    return data


def _started(document: Mapping[str, Any], status_field: str, arn_field: str, arn: str, now: dt.datetime) -> dict:
    """A job's first description: its request, its ARN, InProgress, and the creation time."""
    data = copy.deepcopy(dict(document))
    data.update(
        {
            arn_field: arn,
            status_field: states.JobStatus.IN_PROGRESS,
            "CreationTime": epoch(now),
            "LastModifiedTime": epoch(now),
        }
    )
    return data


@dataclass(frozen=True, slots=True)
class ProcessingJobSpec:
    """A processing job as CreateProcessingJob asks for it."""

    name: str
    image: str
    entrypoint: tuple[str, ...]
    arguments: tuple[str, ...]
    role_arn: str
    instance_type: str
    instance_count: int
    max_runtime_s: int | None
    environment: Mapping[str, str]
    network_isolation: bool
    document: Mapping[str, Any]

    @classmethod
    def from_request(cls, request: Mapping[str, Any]) -> ProcessingJobSpec:
        """The spec of a CreateProcessingJob request that passed the model's validation."""
        document = jsonable({k: v for k, v in request.items() if k != "Tags"})
        app = document["AppSpecification"]
        cluster = document["ProcessingResources"]["ClusterConfig"]
        limit = (document.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
        return cls(
            name=document["ProcessingJobName"],
            image=app["ImageUri"],
            entrypoint=tuple(app.get("ContainerEntrypoint") or ()),
            arguments=tuple(app.get("ContainerArguments") or ()),
            role_arn=document["RoleArn"],
            instance_type=cluster["InstanceType"],
            instance_count=int(cluster.get("InstanceCount", 1)),
            max_runtime_s=int(limit) if limit else None,
            environment={k: str(v) for k, v in (document.get("Environment") or {}).items()},
            network_isolation=bool((document.get("NetworkConfig") or {}).get("EnableNetworkIsolation", False)),
            document=document,
        )

    def renamed(self, name: str) -> ProcessingJobSpec:
        """The same job under another name (a pipeline step's job, a monitoring schedule's run)."""
        return dataclasses.replace(self, name=name, document={**self.document, "ProcessingJobName": name})

    def initial_description(self, arn: str, now: dt.datetime) -> dict[str, Any]:
        """DescribeProcessingJob right after CreateProcessingJob."""
        return _started(self.document, "ProcessingJobStatus", "ProcessingJobArn", arn, now)


@dataclass(frozen=True, slots=True)
class TransformJobSpec:
    """A batch transform job as CreateTransformJob asks for it, with AWS's defaults filled in."""

    name: str
    model_name: str
    input_uri: str
    split_type: str  # None | Line
    content_type: str
    compression: str  # None | Gzip
    batch_strategy: str  # MultiRecord | SingleRecord
    max_payload_mb: int
    max_concurrent: int
    output_path: str
    accept: str  # the content type asked of the model (the input's when not given)
    assemble_with: str  # None | Line
    instance_type: str
    instance_count: int
    environment: Mapping[str, str]
    document: Mapping[str, Any]

    @classmethod
    def from_request(cls, request: Mapping[str, Any]) -> TransformJobSpec:
        """The spec of a CreateTransformJob request that passed the model's validation."""
        document = jsonable({k: v for k, v in request.items() if k != "Tags"})
        split = document["TransformInput"].get("SplitType", "None")
        document.setdefault("BatchStrategy", "MultiRecord" if split == "Line" else "SingleRecord")
        document.setdefault("MaxPayloadInMB", 6)
        document.setdefault("MaxConcurrentTransforms", 1)
        resources = document["TransformResources"]
        inputs, outputs = document["TransformInput"], document["TransformOutput"]
        content_type = inputs.get("ContentType", "text/csv")
        return cls(
            name=document["TransformJobName"],
            model_name=document["ModelName"],
            input_uri=inputs["DataSource"].get("S3DataSource", {}).get("S3Uri", ""),
            split_type=split,
            content_type=content_type,
            compression=inputs.get("CompressionType", "None"),
            batch_strategy=document["BatchStrategy"],
            max_payload_mb=int(document["MaxPayloadInMB"]),
            max_concurrent=max(1, int(document["MaxConcurrentTransforms"] or 1)),
            output_path=outputs["S3OutputPath"],
            accept=outputs.get("Accept") or content_type,
            assemble_with=outputs.get("AssembleWith", "None"),
            instance_type=resources["InstanceType"],
            instance_count=int(resources.get("InstanceCount", 1)),
            environment={k: str(v) for k, v in (document.get("Environment") or {}).items()},
            document=document,
        )

    def renamed(self, name: str) -> TransformJobSpec:
        return dataclasses.replace(self, name=name, document={**self.document, "TransformJobName": name})

    def initial_description(self, arn: str, now: dt.datetime) -> dict[str, Any]:
        """DescribeTransformJob right after CreateTransformJob."""
        return _started(self.document, "TransformJobStatus", "TransformJobArn", arn, now)
