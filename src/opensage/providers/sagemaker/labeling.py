"""SageMaker Ground Truth labeling jobs: Create, Describe, List, ListForWorkteam, Stop.

The job runs in :mod:`opensage.labeling.jobs`; its built-in task types are those of
:mod:`opensage.labeling.tasktypes`, its automated labeling :mod:`opensage.labeling.autolabel`.

LIMITATIONS: the input is a manifest (``SnsDataSource`` streaming jobs are refused); custom
pre-annotation and consolidation Lambda functions cannot run (a custom worker template's header and
instructions are shown with the built-in task UI); ``TaskAvailabilityLifetimeInSeconds``,
``TaskKeywords``, ``PublicWorkforceTaskPrice``, ``OutputConfig.KmsKeyId``/``SnsTopicArn`` and
``DataAttributes`` are recorded only; ``JobReferenceCode`` is the job's own ARN suffix.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, ServiceError, resource_not_found, validation_error
from opensage.labeling import autolabel, tasktypes
from opensage.labeling import jobs as lj
from opensage.providers.sagemaker.listing import list_page
from opensage.providers.sagemaker.pipeline_steps import context
from opensage.store import tags
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

_DESCRIBED = (
    "LabelingJobName", "LabelingJobArn", "LabelAttributeName", "InputConfig", "OutputConfig", "RoleArn",
    "LabelCategoryConfigS3Uri", "StoppingConditions", "LabelingJobAlgorithmsConfig", "HumanTaskConfig",
    "LabelCounters", "LabelingJobOutput", "FailureReason", "JobReferenceCode",
)  # fmt: skip
_ZERO = {"TotalLabeled": 0, "HumanLabeled": 0, "MachineLabeled": 0, "FailedNonRetryableError": 0, "Unlabeled": 0}


class LabelingOperations:
    store: SqlStore
    clock: Callable[[], dt.datetime]
    labeling: lj.LabelingJobs
    _require_role: Callable[[RequestContext, str], None]

    def _labeling_job(self, name: str) -> Resource:
        row = self.store.get_resource(lj.KIND, name)
        if row is None:
            raise resource_not_found(f"Labeling job {name} does not exist (see ListLabelingJobs).")
        return row

    def _check_labeling_request(self, request: dict[str, Any]) -> tasktypes.TaskType:
        attribute = request["LabelAttributeName"]
        if attribute.endswith("-metadata") or attribute in ("source", "source-ref"):
            raise validation_error(
                f"LabelAttributeName {attribute} is taken by the manifest: pick a name that is not 'source', "
                "'source-ref' and does not end with '-metadata'."
            )
        source = request["InputConfig"]["DataSource"]
        if source.get("SnsDataSource") or not (source.get("S3DataSource") or {}).get("ManifestS3Uri"):
            raise validation_error(
                "InputConfig.DataSource needs S3DataSource.ManifestS3Uri: streaming labeling jobs (SnsDataSource) "
                "are not supported."
            )
        human = request["HumanTaskConfig"]
        try:
            task = tasktypes.from_config(human)
        except ValueError as exc:
            raise validation_error(str(exc)) from None
        if not any(t.arn == human["WorkteamArn"] for t in self.store.list_resources(lj.WORKTEAM_KIND)):
            raise validation_error(
                f"Workteam {human['WorkteamArn']} does not exist: create a private work team with CreateWorkteam "
                "and give its WorkteamArn."
            )
        if not request.get("LabelCategoryConfigS3Uri"):
            raise validation_error(f"{task.title} needs LabelCategoryConfigS3Uri (a JSON file of the labels in S3).")
        for uri in (request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"],
                    request["OutputConfig"]["S3OutputPath"], request["LabelCategoryConfigS3Uri"]):  # fmt: skip
            if not uri.startswith("s3://") or len(uri) < 6:
                raise validation_error(f"{uri} is not an S3 URI (s3://bucket/key).")
        algorithms = request.get("LabelingJobAlgorithmsConfig")
        if algorithms:
            arn = algorithms["LabelingJobAlgorithmSpecificationArn"]
            kind = arn.rsplit("/", 1)[-1]
            if ":labeling-job-algorithm-specification/" not in arn or kind not in autolabel.SUPPORTED:
                raise validation_error(
                    f"Automated labeling with {arn} is not available here: OpenSage labels text and image "
                    "classification jobs automatically (.../labeling-job-algorithm-specification/text-classification "
                    "or image-classification)."
                )
            if task.key not in tasktypes.AUTO_LABELING[kind]:
                raise validation_error(f"{kind} automated labeling does not fit the task type {task.title}.")
            if algorithms.get("InitialActiveLearningModelArn"):
                raise validation_error("InitialActiveLearningModelArn is not supported: leave it out.")
        return task

    async def create_labeling_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        import asyncio

        name = request["LabelingJobName"]
        task = await asyncio.to_thread(self._check_labeling_request, request)
        await asyncio.to_thread(self._require_role, ctx, request["RoleArn"])
        arn = ctx.arn("sagemaker", f"labeling-job/{name.lower()}")
        now = self.clock()
        data = {k: request[k] for k in _DESCRIBED if k in request}
        data.update(
            LabelingJobArn=arn,
            LabelCounters=dict(_ZERO),
            JobReferenceCode=arn.rsplit(":", 1)[0].rsplit(":", 1)[-1] + "-" + name.lower(),
            _TaskType=task.key,
            _Auto=bool(request.get("LabelingJobAlgorithmsConfig")),
            _Context=context(ctx),
        )
        try:
            await asyncio.to_thread(
                self.store.create_resource, Resource(lj.KIND, name, arn, lj.INITIALIZING, now, now, data)
            )
        except AlreadyExists:
            raise ServiceError("ResourceInUse", f"Labeling job {name} exists already: choose another name.") from None
        if request.get("Tags"):
            await asyncio.to_thread(tags.put_tags, self.store, arn, request["Tags"], now)
        self.labeling.launch(name)
        return {"LabelingJobArn": arn}

    def describe_labeling_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._labeling_job(request["LabelingJobName"])
        out = {k: row.data[k] for k in _DESCRIBED if k in row.data}
        out.update(LabelingJobName=row.name, LabelingJobStatus=row.status, CreationTime=row.created_at,
                   LastModifiedTime=row.updated_at, Tags=tags.get_tags(self.store, row.arn))  # fmt: skip
        return out

    def list_labeling_jobs(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        summaries = []
        rows, token = list_page(self.store, lj.KIND, {"SortOrder": "Ascending", **request})  # AWS's default order
        for row in rows:
            human = row.data["HumanTaskConfig"]
            summary = {
                "LabelingJobName": row.name, "LabelingJobArn": row.arn, "CreationTime": row.created_at,
                "LastModifiedTime": row.updated_at, "LabelingJobStatus": row.status,
                "LabelCounters": row.data.get("LabelCounters") or dict(_ZERO), "WorkteamArn": human["WorkteamArn"],
                "PreHumanTaskLambdaArn": human.get("PreHumanTaskLambdaArn"), "InputConfig": row.data["InputConfig"],
                "AnnotationConsolidationLambdaArn":
                    (human.get("AnnotationConsolidationConfig") or {}).get("AnnotationConsolidationLambdaArn"),
                "FailureReason": row.data.get("FailureReason"), "LabelingJobOutput": row.data.get("LabelingJobOutput"),
            }  # fmt: skip
            summaries.append({k: v for k, v in summary.items() if v is not None})
        return {"LabelingJobSummaryList": summaries, "NextToken": token}

    def list_labeling_jobs_for_workteam(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        team = request["WorkteamArn"]
        if not any(t.arn == team for t in self.store.list_resources(lj.WORKTEAM_KIND)):
            raise resource_not_found(f"Workteam {team} does not exist (see ListWorkteams).")
        code = request.get("JobReferenceCodeContains")
        rows = self.store.list_resources(  # every one: the team is no column, the gateway pages the answer
            lj.KIND,
            created_after=request.get("CreationTimeAfter"),
            created_before=request.get("CreationTimeBefore"),
            descending=(request.get("SortOrder") or "Ascending") == "Descending",
        )
        summaries = []
        for row in rows:
            if row.data["HumanTaskConfig"]["WorkteamArn"] != team or (
                code and code not in row.data["JobReferenceCode"]
            ):
                continue
            counters = row.data.get("LabelCounters") or dict(_ZERO)
            summaries.append({
                "LabelingJobName": row.name, "JobReferenceCode": row.data["JobReferenceCode"],
                "WorkRequesterAccountId": ctx.account_id, "CreationTime": row.created_at,
                "LabelCounters": {"HumanLabeled": counters["HumanLabeled"],
                                  "PendingHuman": counters["Unlabeled"] if row.status in lj.ACTIVE else 0,
                                  "Total": counters["TotalLabeled"] + counters["Unlabeled"]},
                "NumberOfHumanWorkersPerDataObject": row.data["HumanTaskConfig"]["NumberOfHumanWorkersPerDataObject"],
            })  # fmt: skip
        return {"LabelingJobSummaryList": summaries}

    def stop_labeling_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._labeling_job(request["LabelingJobName"])
        if row.status in (lj.STOPPING, lj.STOPPED):
            return {}
        if row.status not in lj.ACTIVE:
            raise validation_error(f"Labeling job {row.name} is {row.status}: only a job in progress can be stopped.")

        def stopping(current: Resource) -> tuple[dict[str, Any], str] | None:
            return ({**current.data}, lj.STOPPING) if current.status in lj.ACTIVE else None

        self.store.modify_resource(lj.KIND, row.name, stopping, now=self.clock())
        self.labeling.request_stop(row.name)
        return {}
