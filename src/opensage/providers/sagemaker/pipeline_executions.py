"""SageMaker Pipelines operations on executions: Start, Describe, List, ListSteps, ListParameters,
DescribeDefinitionFor, Stop, Retry, Update, and the callback steps' SendPipelineExecutionStep*.

StartPipelineExecution checks everything before anything starts: parameters are strings on the
wire and must parse as their declared type (an unknown name, a wrong type or a missing value without
default is a ValidationException naming the parameter); a repeated ClientRequestToken answers the
execution it started. A SelectiveExecutionConfig runs only the selected steps, the others showing
the source execution's results (``SelectiveExecutionResult``).

LIMITATIONS: an execution's steps run on this platform's engines, with their limitations;
``PipelineVersionId`` selects a stored version of the definition.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import string
from collections.abc import Callable
from typing import Any

from opensage import states
from opensage.aws.context import RequestContext
from opensage.aws.pagination import decode_token, encode_token, invalid_token
from opensage.errors import Conflict, NotFound, ServiceError, resource_not_found, validation_error
from opensage.pipelines import definition as pd
from opensage.pipelines import expressions as ex
from opensage.pipelines.controller import CALLBACK_KIND, KIND, WAITING, ExecutionController, public
from opensage.providers.sagemaker.pipeline_steps import context
from opensage.providers.sagemaker.pipelines import KIND as PIPELINE_KIND
from opensage.providers.sagemaker.pipelines import missing_pipeline, pipeline_name
from opensage.states import PipelineExecutionStatus as Status
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch

_PUBLIC_DROP = ("Tags",)
_ID_CHARS = string.ascii_lowercase + string.digits


def execution_id(arn: str) -> str:
    return arn.rsplit("/execution/", 1)[-1]


def _page(items: list[Any], request: dict[str, Any], kind: str) -> tuple[list[Any], str | None]:
    start = 0
    if request.get("NextToken"):
        try:
            start = int(decode_token(request["NextToken"], kind))
        except ValueError as exc:
            raise invalid_token(request["NextToken"]) from exc
    size = int(request.get("MaxResults") or 50)
    end = start + size
    return items[start:end], encode_token(kind, str(end)) if end < len(items) else None


class PipelineExecutionOperations:
    store: SqlStore
    clock: Callable[[], dt.datetime]
    pipelines: ExecutionController

    def _require_execution(self, arn: str) -> Resource:
        row = self.store.get_resource(KIND, execution_id(arn))
        if row is None or row.arn != arn:
            raise resource_not_found(f"Pipeline execution '{arn}' does not exist.")
        return row

    async def start_pipeline_execution(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = pipeline_name(request["PipelineName"])
        pipeline = await asyncio.to_thread(self.store.get_resource, PIPELINE_KIND, name)
        if pipeline is None:
            raise missing_pipeline(ctx, name)
        token = request.get("ClientRequestToken")
        if token and token in (pipeline.data.get("_StartTokens") or {}):
            return {"PipelineExecutionArn": pipeline.data["_StartTokens"][token]}
        text, version = self._version(pipeline, request.get("PipelineVersionId"))
        definition = pd.parse(text)
        values, listed = _parameters(definition, request.get("PipelineParameters") or [])
        eid = "".join(secrets.choice(_ID_CHARS) for _ in range(12))
        arn = f"{pipeline.arn}/execution/{eid}"
        now = self.clock()
        data: dict[str, Any] = {
            "PipelineArn": pipeline.arn,
            "PipelineExecutionArn": arn,
            "PipelineExecutionDisplayName": request.get("PipelineExecutionDisplayName") or f"execution-{eid}",
            "PipelineExecutionStatus": Status.EXECUTING,
            "CreationTime": epoch(now),
            "LastModifiedTime": epoch(now),
            "CreatedBy": pipeline.data.get("CreatedBy", {}),
            "LastModifiedBy": pipeline.data.get("CreatedBy", {}),
            "PipelineVersionId": version,
            "_Name": eid,
            "_Definition": text,
            "_Parameters": values,
            "_ParameterList": listed,
            "_Context": context(ctx),
            "_Variables": {
                "PipelineName": name,
                "PipelineArn": pipeline.arn,
                "PipelineExecutionId": eid,
                "PipelineExecutionArn": arn,
                "StartDateTime": now.isoformat(),
            },
            "_Steps": {},
        }
        for key in ("PipelineExecutionDescription", "SelectiveExecutionConfig"):
            if request.get(key):
                data[key] = request[key]
        parallelism = request.get("ParallelismConfiguration") or pipeline.data.get("ParallelismConfiguration")
        if parallelism:
            data["ParallelismConfiguration"] = parallelism
        if definition.experiment:
            scope = ex.Scope(values, data["_Variables"], lambda s: {})
            data["PipelineExperimentConfig"] = ex.evaluate(definition.experiment, scope)
        if request.get("SelectiveExecutionConfig"):
            await asyncio.to_thread(self._selective, pipeline, definition, request["SelectiveExecutionConfig"], data)
        row = Resource(KIND, eid, arn, Status.EXECUTING, now, now, data, parent_arn=pipeline.arn)
        await asyncio.to_thread(self.store.create_resource, row)
        await asyncio.to_thread(self._started, pipeline.name, token, arn, now)
        self.pipelines.launch(eid)
        return {"PipelineExecutionArn": arn}

    def _version(self, pipeline: Resource, wanted: int | None) -> tuple[str, int]:
        if wanted is None:
            return pipeline.data["PipelineDefinition"], int(pipeline.data.get("PipelineVersionId", 1))
        for v in pipeline.data.get("_Versions", []):
            if v["PipelineVersionId"] == wanted:
                return v["PipelineDefinition"], wanted
        raise validation_error(f"Pipeline {pipeline.name} has no version {wanted}.")

    def _started(self, name: str, token: str | None, arn: str, now: dt.datetime) -> None:
        def change(current: Resource) -> tuple[dict[str, Any], str | None]:
            data = dict(current.data)
            data["LastExecutionTime"] = data["LastRunTime"] = epoch(now)
            if token:
                tokens = dict(data.get("_StartTokens") or {})
                tokens[token] = arn
                data["_StartTokens"] = dict(list(tokens.items())[-100:])
            return data, None

        self.store.modify_resource(PIPELINE_KIND, name, change, now=now)

    def _selective(
        self, pipeline: Resource, definition: pd.Definition, config: dict[str, Any], data: dict[str, Any]
    ) -> None:
        source_arn = config["SourcePipelineExecutionArn"]
        source = self.store.get_resource(KIND, execution_id(source_arn))
        if source is None or source.parent_arn != pipeline.arn:
            raise validation_error(f"SourcePipelineExecutionArn {source_arn} is not an execution of {pipeline.name}.")
        selected = [s["StepName"] for s in config.get("SelectedSteps") or []]
        unknown = [s for s in selected if s not in definition.steps]
        if not selected or unknown:
            raise validation_error(
                f"SelectedSteps must name steps of the pipeline; unknown: {unknown or 'none given'}."
            )
        copied: dict[str, Any] = {}
        for step_name, rec in (source.data.get("_Steps") or {}).items():
            if step_name not in selected and rec.get("StepStatus") == pd.SUCCEEDED:
                copied[step_name] = {**rec, "SelectiveExecutionResult": {"SourcePipelineExecutionArn": source_arn}}
        data["_Steps"] = copied
        data["_Excluded"] = [s for s in definition.steps if s not in selected]

    def describe_pipeline_execution(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._require_execution(request["PipelineExecutionArn"])
        return {k: v for k, v in public(row.data).items() if k not in _PUBLIC_DROP}

    def describe_pipeline_definition_for_execution(
        self, ctx: RequestContext, request: dict[str, Any]
    ) -> dict[str, Any]:
        row = self._require_execution(request["PipelineExecutionArn"])
        return {"PipelineDefinition": row.data["_Definition"], "CreationTime": row.data["CreationTime"]}

    def list_pipeline_executions(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = pipeline_name(request["PipelineName"])
        pipeline = self.store.get_resource(PIPELINE_KIND, name)
        if pipeline is None:
            raise missing_pipeline(ctx, name)
        rows = self.store.list_resources(
            KIND,
            parent_arn=pipeline.arn,
            created_after=request.get("CreatedAfter"),
            created_before=request.get("CreatedBefore"),
            descending=request.get("SortOrder", "Descending") == "Descending",
        )
        if request.get("SortBy") == "PipelineExecutionArn":
            rows.sort(key=lambda r: r.arn, reverse=request.get("SortOrder", "Descending") == "Descending")
        page, token = _page(rows, request, "executions")
        out = []
        for r in page:
            item = {
                "PipelineExecutionArn": r.arn,
                "StartTime": r.data["CreationTime"],
                "PipelineExecutionStatus": r.status,
                "PipelineExecutionDisplayName": r.data.get("PipelineExecutionDisplayName"),
            }
            if r.data.get("PipelineExecutionDescription"):
                item["PipelineExecutionDescription"] = r.data["PipelineExecutionDescription"]
            if r.data.get("FailureReason"):
                item["PipelineExecutionFailureReason"] = r.data["FailureReason"]
            out.append(item)
        return {"PipelineExecutionSummaries": out, "NextToken": token}

    def list_pipeline_execution_steps(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        if not request.get("PipelineExecutionArn"):  # optional in the service model, needed here
            raise validation_error("ListPipelineExecutionSteps needs a PipelineExecutionArn (the execution to list).")
        row = self._require_execution(request["PipelineExecutionArn"])
        records = list((row.data.get("_Steps") or {}).values())
        records.sort(
            key=lambda r: r.get("StartTime") or 0, reverse=request.get("SortOrder", "Descending") == "Descending"
        )
        page, token = _page([public(r) for r in records], request, "steps")
        return {"PipelineExecutionSteps": page, "NextToken": token}

    def list_pipeline_parameters_for_execution(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._require_execution(request["PipelineExecutionArn"])
        page, token = _page(row.data.get("_ParameterList") or [], request, "parameters")
        return {"PipelineParameters": page, "NextToken": token}

    def _stop_execution(self, row: Resource) -> None:
        now = self.clock()
        change = states.transition(KIND, Status.STOPPING, now, only_from=frozenset({Status.EXECUTING}))
        try:
            self.store.modify_resource(KIND, row.name, change, now=now)
        except states.IllegalTransition as exc:
            raise validation_error(
                f"Pipeline execution {row.arn} is {exc.current}; only an Executing execution can be stopped."
            ) from exc
        self.pipelines.request_stop(row.name)

    def stop_pipeline_execution(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._require_execution(request["PipelineExecutionArn"])
        if row.status != Status.STOPPING:
            self._stop_execution(row)
        return {"PipelineExecutionArn": row.arn}

    async def retry_pipeline_execution(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = await asyncio.to_thread(self._require_execution, request["PipelineExecutionArn"])
        now = self.clock()

        def edit(data: dict[str, Any]) -> None:
            steps = dict(data.get("_Steps") or {})
            attempts = dict(data.get("_Attempts") or {})
            for name, rec in list(steps.items()):
                if rec.get("StepStatus") in (pd.FAILED, pd.STOPPED):
                    attempts[name] = int(rec.get("AttemptCount", 1))
                    del steps[name]
            data.update(_Steps=steps, _Attempts=attempts)
            data.pop("FailureReason", None)
            if request.get("ParallelismConfiguration"):
                data["ParallelismConfiguration"] = request["ParallelismConfiguration"]

        change = states.transition(
            KIND, Status.EXECUTING, now, edit=edit, only_from=frozenset({Status.FAILED, Status.STOPPED})
        )
        try:
            await asyncio.to_thread(self.store.modify_resource, KIND, row.name, change, now=now)
        except states.IllegalTransition as exc:
            raise validation_error(
                f"Pipeline execution {row.arn} is {exc.current}; only a Failed or Stopped execution can be retried."
            ) from exc
        self.pipelines.launch(row.name)
        return {"PipelineExecutionArn": row.arn}

    def update_pipeline_execution(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._require_execution(request["PipelineExecutionArn"])
        fields = {
            k: request[k]
            for k in ("PipelineExecutionDescription", "PipelineExecutionDisplayName", "ParallelismConfiguration")
            if request.get(k) is not None
        }
        self.store.modify_resource(
            KIND, row.name, states.transition(KIND, None, self.clock(), fields=fields), now=self.clock()
        )
        return {"PipelineExecutionArn": row.arn}

    def send_pipeline_execution_step_success(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        outputs = [{"Name": o["Name"], "Value": o.get("Value", "")} for o in request.get("OutputParameters") or []]
        return self._callback(request["CallbackToken"], pd.SUCCEEDED, {"OutputParameters": outputs})

    def send_pipeline_execution_step_failure(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        reason = request.get("FailureReason") or "The callback reported a failure."
        return self._callback(request["CallbackToken"], pd.FAILED, {"FailureReason": reason})

    def _callback(self, token: str, status: str, fields: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()

        def change(current: Resource) -> tuple[dict[str, Any], str | None]:
            if current.status != WAITING:
                raise Conflict(current.status)
            return {**current.data, **fields}, status

        try:
            row = self.store.modify_resource(CALLBACK_KIND, token, change, now=now)
        except NotFound as exc:
            raise validation_error(f"The callback token {token} belongs to no waiting Callback step.") from exc
        except Conflict as exc:
            raise validation_error(f"The Callback step of token {token} has already been answered.") from exc
        return {"PipelineExecutionArn": row.data["PipelineExecutionArn"]}


def _parameters(definition: pd.Definition, given: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Typed values of every parameter and the list ListPipelineParametersForExecution answers."""
    values: dict[str, Any] = {}
    for p in given:
        name = p["Name"]
        if name not in definition.parameters:
            known = ", ".join(definition.parameters) or "none"
            raise validation_error(f"PipelineParameters: the pipeline has no parameter '{name}' (it has: {known}).")
        try:
            values[name] = ex.coerce_parameter(definition.parameters[name].type, p["Value"], name)
        except ex.ExpressionError as exc:
            raise validation_error(f"PipelineParameters: {exc}.") from exc
    for name, param in definition.parameters.items():
        if name not in values:
            if not param.has_default:
                raise validation_error(f"PipelineParameters: parameter '{name}' has no default value; give it a Value.")
            values[name] = param.default
    return values, [{"Name": n, "Value": ex.to_text(v)} for n, v in values.items()]


del ServiceError
