"""SageMaker Pipelines operations on pipelines: Create, Update, Describe, List, Delete (and versions).

The definition is validated whole at Create and Update (:func:`opensage.pipelines.definition.parse`):
a reference to a missing step, parameter or property file, a cycle, an unknown step type or a
condition comparing incompatible types is a ValidationException naming the step and field. A
definition may come inline or from S3 (``PipelineDefinitionS3Location``, as the SDK sends those of
100 KB and more). A second CreatePipeline of a name answers ValidationException "... already exists"
(``Pipeline.upsert`` relies on it) unless it carries the first one's ClientRequestToken.

LIMITATIONS: Lambda, QualityCheck, ClarifyCheck, EMR, AutoML and InferenceComponent steps are
refused at Create (the message says what to use instead); Callback steps send no SQS message:
their token is in ListPipelineExecutionSteps' ``Metadata.Callback.CallbackToken``. An Endpoint step
succeeds when its endpoint is InService. Once a step fails, no further step starts (the running
ones end, then the execution fails). Cache keys are AWS's documented members of a step's
resolved arguments, compared over the pipeline's last 100 executions.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, ServiceError, resource_not_found, validation_error
from opensage.pipelines import definition as pd
from opensage.pipelines.controller import KIND as EXECUTION_KIND
from opensage.pipelines.controller import ExecutionController
from opensage.providers.sagemaker.listing import list_page
from opensage.providers.sagemaker.pipeline_steps import check_arguments
from opensage.states import PipelineExecutionStatus as Status
from opensage.store import tags
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch

KIND = "pipeline"
_SUMMARY = (
    "PipelineArn",
    "PipelineName",
    "PipelineDisplayName",
    "PipelineDescription",
    "RoleArn",
    "CreationTime",
    "LastModifiedTime",
    "LastExecutionTime",
)


def pipeline_name(value: str) -> str:
    """A PipelineName member may be the name or the pipeline's ARN."""
    return value.split(":pipeline/", 1)[1].split("/", 1)[0] if ":pipeline/" in value else value


def missing_pipeline(ctx: RequestContext, name: str) -> ServiceError:
    return resource_not_found(f"Pipeline '{ctx.arn('sagemaker', 'pipeline/' + name.lower())}' does not exist.")


class PipelineOperations:
    store: SqlStore
    clock: Callable[[], dt.datetime]
    pipelines: ExecutionController
    training: Any
    _require_role: Callable[[RequestContext, str], None]
    _stop_execution: Callable[[Resource], None]

    def _definition_text(self, request: dict[str, Any]) -> str:
        if request.get("PipelineDefinition"):
            text = request["PipelineDefinition"]
        elif request.get("PipelineDefinitionS3Location"):
            loc = request["PipelineDefinitionS3Location"]
            extra = {"VersionId": loc["VersionId"]} if loc.get("VersionId") else {}
            try:
                obj = self.training.s3.get_object(Bucket=loc["Bucket"], Key=loc["ObjectKey"], **extra)
            except Exception as exc:
                raise validation_error(
                    f"Could not read the pipeline definition at s3://{loc['Bucket']}/{loc['ObjectKey']}: {exc}"
                ) from exc
            text = obj["Body"].read().decode("utf-8")
        else:
            raise validation_error("Give a PipelineDefinition or a PipelineDefinitionS3Location.")
        try:
            definition = pd.parse(text)
        except pd.InvalidDefinition as exc:
            raise validation_error(f"Invalid pipeline definition: {exc}") from exc
        check_arguments(definition.steps)
        return text

    def _require_pipeline(self, ctx: RequestContext, value: str) -> Resource:
        row = self.store.get_resource(KIND, pipeline_name(value))
        if row is None:
            raise missing_pipeline(ctx, pipeline_name(value))
        return row

    def create_pipeline(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["PipelineName"]
        arn = ctx.arn("sagemaker", f"pipeline/{name.lower()}")
        existing = self.store.get_resource(KIND, name)
        token = request.get("ClientRequestToken")
        if existing is not None and token and existing.data.get("_Token") == token:
            return {"PipelineArn": existing.arn}
        text = self._definition_text(request)
        self._require_role(ctx, request["RoleArn"])
        now = self.clock()
        data = {
            "PipelineArn": arn,
            "PipelineName": name,
            "PipelineDisplayName": request.get("PipelineDisplayName") or name,
            "PipelineDefinition": text,
            "RoleArn": request["RoleArn"],
            "PipelineStatus": "Active",
            "CreationTime": epoch(now),
            "LastModifiedTime": epoch(now),
            "CreatedBy": {"UserProfileName": ctx.principal_arn.rsplit("/", 1)[-1]},
            "LastModifiedBy": {"UserProfileName": ctx.principal_arn.rsplit("/", 1)[-1]},
            "PipelineVersionId": 1,
            "_Versions": [{"PipelineVersionId": 1, "CreationTime": epoch(now), "PipelineDefinition": text}],
            "_Token": token,
        }
        for key in ("PipelineDescription", "ParallelismConfiguration"):
            if request.get(key):
                data[key] = request[key]
        try:
            self.store.create_resource(Resource(KIND, name, arn, "Active", now, now, data))
        except AlreadyExists as exc:
            raise validation_error(
                f"Pipeline names must be unique within an AWS account and region. Pipeline with name ({name}) "
                "already exists."
            ) from exc
        if request.get("Tags"):
            tags.put_tags(self.store, arn, request["Tags"], now)
        return {"PipelineArn": arn}

    def update_pipeline(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._require_pipeline(ctx, request["PipelineName"])
        text = (
            self._definition_text(request)
            if request.get("PipelineDefinition") or request.get("PipelineDefinitionS3Location")
            else None
        )
        if request.get("RoleArn"):
            self._require_role(ctx, request["RoleArn"])
        now = self.clock()

        def change(current: Resource) -> tuple[dict[str, Any], str | None]:
            data = dict(current.data)
            for key in ("PipelineDisplayName", "PipelineDescription", "RoleArn", "ParallelismConfiguration"):
                if request.get(key):
                    data[key] = request[key]
            if text is not None and text != data["PipelineDefinition"]:
                version = int(data.get("PipelineVersionId", 1)) + 1
                data.update(PipelineDefinition=text, PipelineVersionId=version)
                versions = [
                    *data.get("_Versions", []),
                    {"PipelineVersionId": version, "CreationTime": epoch(now), "PipelineDefinition": text},
                ]
                data["_Versions"] = versions[-50:]
            data["LastModifiedTime"] = epoch(now)
            return data, None

        updated = self.store.modify_resource(KIND, row.name, change, now=now)
        return {"PipelineArn": row.arn, "PipelineVersionId": updated.data.get("PipelineVersionId", 1)}

    def describe_pipeline(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._require_pipeline(ctx, request["PipelineName"])
        out = {k: v for k, v in row.data.items() if not k.startswith("_")}
        wanted = request.get("PipelineVersionId")
        if wanted is not None:
            versions = {v["PipelineVersionId"]: v for v in row.data.get("_Versions", [])}
            if wanted not in versions:
                raise resource_not_found(f"Pipeline {row.name} has no version {wanted}.")
            out.update(PipelineDefinition=versions[wanted]["PipelineDefinition"], PipelineVersionId=wanted)
        return out

    def list_pipelines(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        paged = {
            **{k: v for k, v in request.items() if k in ("SortBy", "SortOrder", "NextToken", "MaxResults")},
            "NameContains": request.get("PipelineNamePrefix"),
            "CreationTimeAfter": request.get("CreatedAfter"),
            "CreationTimeBefore": request.get("CreatedBefore"),
        }
        rows, token = list_page(self.store, KIND, paged)
        prefix = request.get("PipelineNamePrefix") or ""
        summaries = [
            {k: r.data[k] for k in _SUMMARY if r.data.get(k) is not None} for r in rows if r.name.startswith(prefix)
        ]
        return {"PipelineSummaries": summaries, "NextToken": token}

    def list_pipeline_versions(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._require_pipeline(ctx, request["PipelineName"])
        versions = sorted(
            row.data.get("_Versions", []),
            key=lambda v: v["PipelineVersionId"],
            reverse=request.get("SortOrder", "Descending") == "Descending",
        )
        return {
            "PipelineVersionSummaries": [
                {"PipelineArn": row.arn, "PipelineVersionId": v["PipelineVersionId"], "CreationTime": v["CreationTime"]}
                for v in versions
            ]
        }

    async def delete_pipeline(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = await asyncio.to_thread(self._require_pipeline, ctx, request["PipelineName"])
        executing = await asyncio.to_thread(
            self.store.list_resources, EXECUTION_KIND, parent_arn=row.arn, status=Status.EXECUTING
        )
        for execution in executing:  # its running executions stop
            with contextlib.suppress(ServiceError):  # it ended meanwhile
                await asyncio.to_thread(self._stop_execution, execution)
        await asyncio.to_thread(self.store.delete_resource, KIND, row.name)
        await asyncio.to_thread(tags.drop_tags, self.store, row.arn)
        return {"PipelineArn": row.arn}
