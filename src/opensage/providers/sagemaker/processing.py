"""SageMaker processing-job operations: Create, Describe, List, Stop.

LIMITATIONS: inputs come from S3 (``S3Input``; ``DatasetDefinition`` is refused), Pipe mode is
downloaded as File; ``NetworkConfig`` VPC settings and ``KmsKeyId`` are recorded but have no effect.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.compute import instances
from opensage.errors import AlreadyExists, not_found, resource_in_use, validation_error
from opensage.jobs import processing
from opensage.jobs.specs import ProcessingJobSpec
from opensage.providers.sagemaker.listing import list_jobs
from opensage.providers.sagemaker.quotas import QuotaChecks
from opensage.providers.sagemaker.stopping import to_stopping
from opensage.providers.sagemaker.unsupported import refuse_nul
from opensage.store.sql import SqlStore

_LOCAL_ROOT = "/opt/ml/processing/"


class ProcessingOperations:
    store: SqlStore
    clock: Callable[[], dt.datetime]
    processing: processing.ProcessingEngine
    quotas: QuotaChecks
    _require_role: Callable[[RequestContext, str], None]

    async def create_processing_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        _check_processing_request(request)
        await asyncio.to_thread(self._require_role, ctx, request["RoleArn"])
        await asyncio.to_thread(self.quotas.job, processing.KIND, request)
        spec = ProcessingJobSpec.from_request(request)
        arn = ctx.arn("sagemaker", f"processing-job/{spec.name.lower()}")
        try:
            await self.processing.create(spec, arn)
        except AlreadyExists as exc:
            raise resource_in_use(
                f"Processing job names must be unique within an AWS account and region, and a processing job with "
                f"this name already exists ({arn})"
            ) from exc
        return {"ProcessingJobArn": arn}

    def describe_processing_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self.store.get_resource(processing.KIND, request["ProcessingJobName"])
        if row is None:
            raise not_found(f"Processing job {request['ProcessingJobName']} does not exist.")
        return {k: v for k, v in row.data.items() if not k.startswith("_")}

    def stop_processing_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["ProcessingJobName"]
        to_stopping(
            self.store,
            self.clock,
            processing.KIND,
            name,
            missing=f"Processing job {name} does not exist.",
            refused=f"The processing job {name} is in status {{status}} and cannot be stopped.",
        )
        self.processing.request_stop(name)
        return {}

    def list_processing_jobs(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return list_jobs(
            self.store,
            processing.KIND,
            request,
            "ProcessingJob",
            ("CreationTime", "ProcessingEndTime", "LastModifiedTime", "FailureReason", "ExitMessage"),
        )


def _check_processing_request(request: dict[str, Any]) -> None:
    refuse_nul(request, ("Environment", "AppSpecification.ContainerEntrypoint", "AppSpecification.ContainerArguments"))
    cluster = request["ProcessingResources"]["ClusterConfig"]
    if instances.lookup(cluster["InstanceType"]) is None:
        raise validation_error(f"Instance type {cluster['InstanceType']} is not one OpenSage knows.")
    inputs = request.get("ProcessingInputs") or []
    outputs = (request.get("ProcessingOutputConfig") or {}).get("Outputs") or []
    names = [i["InputName"] for i in inputs] + [o["OutputName"] for o in outputs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise validation_error(f"Input and output names must be unique; repeated: {', '.join(duplicates)}.")
    paths = []
    for item in inputs:
        source = item.get("S3Input")
        if source is None:
            if item.get("DatasetDefinition"):
                raise validation_error(
                    f"Input '{item['InputName']}': DatasetDefinition (Athena, Redshift) is not available in OpenSage; "
                    "use an S3Input."
                )
            raise validation_error(f"Input '{item['InputName']}' needs an S3Input.")
        if source.get("S3CompressionType") == "Gzip" and source.get("S3InputMode", "File") != "Pipe":
            raise validation_error(
                f"Input '{item['InputName']}': S3CompressionType Gzip can only be used when S3InputMode is Pipe."
            )
        paths.append((item["InputName"], source["LocalPath"]))
    for output in outputs:
        if "S3Output" in output:
            if not output["S3Output"]["S3Uri"].startswith("s3://"):
                raise validation_error(f"Output '{output['OutputName']}': S3Uri must be an S3 URI (s3://bucket/key).")
            paths.append((output["OutputName"], output["S3Output"]["LocalPath"]))
    for name, path in paths:
        if not path.startswith(_LOCAL_ROOT):
            raise validation_error(f"LocalPath '{path}' of '{name}' must begin with {_LOCAL_ROOT}.")
