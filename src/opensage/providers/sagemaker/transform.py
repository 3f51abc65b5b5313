"""SageMaker batch transform jobs: Create, Describe, List, Stop.

LIMITATIONS: S3 input (S3Prefix, ManifestFile) with SplitType None or Line (RecordIO and TFRecord
are not split); InputFilter/OutputFilter accept the JSONPath forms $, $[i], $[i,j,...] and $[a:b]
on CSV records; JoinSource Input joins CSV records. Accepted and recorded: ``ExperimentConfig``,
``TransformResources.VolumeKmsKeyId``. Refused with a ValidationException: ``DataCaptureConfig``
(the job's inputs and answers are not captured).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage import states
from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, Conflict, not_found, resource_in_use, validation_error
from opensage.jobs.specs import TransformJobSpec
from opensage.jobs.transform import KIND, TransformEngine
from opensage.providers.sagemaker.listing import list_jobs
from opensage.providers.sagemaker.quotas import QuotaChecks
from opensage.providers.sagemaker.stopping import to_stopping
from opensage.providers.sagemaker.unsupported import Unsupported, refuse, refuse_nul
from opensage.serving.endpoints import MODEL
from opensage.store.sql import SqlStore

UNSUPPORTED = (Unsupported("DataCaptureConfig", "data capture of transform jobs is not supported; leave it out."),)


class TransformOperations:
    store: SqlStore
    clock: Callable[[], dt.datetime]
    transforms: TransformEngine
    quotas: QuotaChecks

    async def create_transform_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["TransformJobName"]
        refuse(request, UNSUPPORTED)
        refuse_nul(request, ("Environment",))
        if await asyncio.to_thread(self.store.get_resource, MODEL, request["ModelName"]) is None:
            raise not_found(f'Could not find model "{ctx.arn("sagemaker", "model/" + request["ModelName"].lower())}".')
        if "S3DataSource" not in request["TransformInput"]["DataSource"]:
            raise validation_error("TransformInput.DataSource needs an S3DataSource.")
        if request["TransformInput"].get("SplitType", "None") not in ("None", "Line"):
            raise validation_error(
                f"SplitType {request['TransformInput']['SplitType']} is not supported; use None or Line."
            )
        await asyncio.to_thread(self.quotas.job, KIND, request)
        arn = ctx.arn("sagemaker", f"transform-job/{name.lower()}")
        try:
            await self.transforms.create(TransformJobSpec.from_request(request), arn)
        except AlreadyExists as exc:
            raise resource_in_use(
                f"Job name must be unique within an AWS account and region, and a job with this "
                f"name already exists ({arn})"
            ) from exc
        return {"TransformJobArn": arn}

    def describe_transform_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self.store.get_resource(KIND, request["TransformJobName"])
        if row is None:
            raise not_found(f'Could not find transform job "{request["TransformJobName"]}".')
        return row.data

    def list_transform_jobs(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return list_jobs(
            self.store,
            KIND,
            request,
            "TransformJob",
            ("CreationTime", "TransformEndTime", "LastModifiedTime", "FailureReason"),
        )

    def stop_transform_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["TransformJobName"]
        to_stopping(
            self.store,
            self.clock,
            KIND,
            name,
            missing=f'Could not find transform job "{name}".',
            refused="The request was rejected because the transform job is in status {status}.",
        )
        if not self.transforms.request_stop(name):  # no task of this server runs it: nothing to wait for
            now = self.clock()
            with contextlib.suppress(Conflict):
                self.store.modify_resource(KIND, name, states.transition(KIND, states.JobStatus.STOPPED, now), now=now)
        return {}
