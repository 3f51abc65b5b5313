"""SageMaker training-job operations: Create, Describe, List, Stop.

LIMITATIONS: channels come from S3 (S3Prefix, ManifestFile) in File mode (Pipe and FastFile are
downloaded as File, and the job's log says so); only OpenSage's built-in images run. Debugger and
Profiler rules are evaluated over the job's metrics (:mod:`opensage.jobs.rules`: LossNotDecreasing,
Overfit, Overtraining; any other rule ends in ``Error`` saying why); no Debugger tensors or
profiler data are saved (``DebugHookConfig``, ``ProfilerConfig`` and ``TensorBoardOutputConfig``'s
uploads do not happen). Accepted, recorded, and without effect on one machine: ``VpcConfig``,
``ResourceConfig.VolumeKmsKeyId`` / ``VolumeSizeInGB`` / ``KeepAlivePeriodInSeconds`` (no warm
pools: every job starts in well under a second anyway), ``EnableInterContainerTrafficEncryption``
(instances talk over loopback), ``EnableManagedSpotTraining`` and ``MaxWaitTimeInSeconds`` (jobs
run at once, never interrupted), ``RetryStrategy`` (a job is not retried), ``ExperimentConfig``,
``SessionChainingConfig``, ``InfraCheckConfig``, ``EnableSageMakerMetricsTimeSeries`` (the metrics are
in CloudWatch either way). Refused with a ValidationException, because the
job would not do what they ask: the members in :data:`UNSUPPORTED`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, not_found, resource_in_use, validation_error
from opensage.jobs import training
from opensage.jobs.specs import TrainingJobSpec
from opensage.providers.sagemaker.listing import list_jobs
from opensage.providers.sagemaker.quotas import QuotaChecks
from opensage.providers.sagemaker.stopping import to_stopping
from opensage.providers.sagemaker.unsupported import Unsupported, enabled, refuse, refuse_nul
from opensage.store.sql import SqlStore

_DESCRIBE_DROP = ("_Handle", "Tags")
# Members that become the job's processes' arguments and environment.
_PROCESS_MEMBERS = (
    "HyperParameters",
    "Environment",
    "AlgorithmSpecification.ContainerEntrypoint",
    "AlgorithmSpecification.ContainerArguments",
)
UNSUPPORTED = (
    Unsupported(
        "ResourceConfig.InstanceGroups",
        "heterogeneous clusters are not supported; give InstanceType and InstanceCount.",
    ),
    Unsupported("ResourceConfig.TrainingPlanArn", "training plans are not supported; leave it out."),
    Unsupported("ResourceConfig.InstancePlacementConfig", "instance placement is not supported; leave it out."),
    Unsupported(
        "AlgorithmSpecification.TrainingImageConfig",
        "images from private registries are not supported; use an image URI of an OpenSage built-in image.",
    ),
    Unsupported(
        "TensorBoardOutputConfig",
        "TensorBoard output is not uploaded by OpenSage; write TensorBoard "
        "files under /opt/ml/output/data (uploaded as output.tar.gz) or to S3 from your script.",
    ),
    Unsupported("RemoteDebugConfig", "remote debugging is not supported; leave it out.", enabled("EnableRemoteDebug")),
    Unsupported("ServerlessJobConfig", "serverless jobs are not supported; give an AlgorithmSpecification."),
    Unsupported("MlflowConfig", "MLflow tracking is not supported yet; leave it out."),
    Unsupported("ModelPackageConfig", "registering the model with the training job is not supported; leave it out."),
)


class TrainingOperations:
    store: SqlStore
    clock: Callable[[], dt.datetime]
    training: training.TrainingEngine
    quotas: QuotaChecks
    _require_role: Callable[[RequestContext, str], None]

    async def create_training_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        import asyncio

        self._check_training_request(request)
        await asyncio.to_thread(self._require_role, ctx, request["RoleArn"])
        await asyncio.to_thread(self.quotas.job, training.KIND, request)
        spec = TrainingJobSpec.from_request(request)
        arn = ctx.arn("sagemaker", f"training-job/{spec.name.lower()}")
        try:
            await self.training.create(spec, arn)
        except AlreadyExists as exc:
            raise resource_in_use(
                f"Training job names must be unique within an AWS account and region, and a training job with this "
                f"name already exists ({arn})"
            ) from exc
        return {"TrainingJobArn": arn}

    @staticmethod
    def _check_training_request(request: dict[str, Any]) -> None:
        refuse(request, UNSUPPORTED)
        algo = request.get("AlgorithmSpecification")
        if algo is None:  # optional in the model (for recipes), which OpenSage does not run
            raise validation_error(
                "AlgorithmSpecification is required: name a TrainingImage (e.g. from sagemaker.image_uris.retrieve)."
            )
        count = (request.get("ResourceConfig") or {}).get("InstanceCount", 1)
        if count < 1:
            raise validation_error(f"ResourceConfig.InstanceCount must be at least 1 (got {count}).")
        refuse_nul(request, _PROCESS_MEMBERS)
        if not algo.get("TrainingImage") and not algo.get("AlgorithmName"):
            raise validation_error("AlgorithmSpecification must name a TrainingImage (or an AlgorithmName).")
        if algo.get("AlgorithmName") and not algo.get("TrainingImage"):
            raise validation_error(
                f"AlgorithmName '{algo['AlgorithmName']}' names a marketplace algorithm, which OpenSage does not have; "
                "pass a TrainingImage URI (e.g. from sagemaker.image_uris.retrieve)."
            )
        if not request["OutputDataConfig"]["S3OutputPath"].startswith("s3://"):
            raise validation_error("OutputDataConfig.S3OutputPath must be an S3 URI (s3://bucket/prefix).")
        names = [c["ChannelName"] for c in request.get("InputDataConfig") or []]
        if len(names) != len(set(names)):
            raise validation_error(f"Channel names must be unique; got {names}.")
        for channel in request.get("InputDataConfig") or []:
            if "S3DataSource" not in channel["DataSource"]:
                raise validation_error(
                    f"Channel '{channel['ChannelName']}' needs an S3DataSource; OpenSage reads training data from S3."
                )

    def describe_training_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self.store.get_resource(training.KIND, request["TrainingJobName"])
        if row is None:
            raise not_found(
                f'Could not find training job "{request["TrainingJobName"]}". Requested resource not found.'
            )
        out = {k: v for k, v in row.data.items() if k not in _DESCRIBE_DROP}
        if not out.get("ModelArtifacts", {}).get("S3ModelArtifacts"):
            out.pop("ModelArtifacts", None)
        return out

    def stop_training_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["TrainingJobName"]
        to_stopping(
            self.store,
            self.clock,
            training.KIND,
            name,
            missing=f'Could not find training job "{name}". Requested resource not found.',
            refused="The request was rejected because the training job is in status {status}.",
        )
        self.training.request_stop(name)
        return {}

    def list_training_jobs(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return list_jobs(
            self.store,
            training.KIND,
            request,
            "TrainingJob",
            ("CreationTime", "TrainingEndTime", "LastModifiedTime", "SecondaryStatus"),
        )
