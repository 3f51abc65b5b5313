"""How a pipeline step's resource is made, watched and stopped: the execution controller's
:class:`~opensage.pipelines.steps.StepLauncher` over this provider.

Training, processing and tuning jobs are created through their engines' domain call with the
execution's ARN as ``parent_arn``, after the checks the API makes (the request against the
service model, the role, the account's quotas); transform jobs, models, endpoint configs,
endpoints and model packages through this provider's own operations, in process. Every
request is validated against botocore's input shape of the matching ``Create*`` operation first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import botocore.session

from opensage.aws.context import RequestContext
from opensage.aws.validate import validate
from opensage.errors import AlreadyExists, ServiceError, validation_error
from opensage.jobs import processing, training, transform
from opensage.jobs.specs import ProcessingJobSpec, TrainingJobSpec
from opensage.pipelines.steps import FAILED, RESOURCES, RUNNING, STOPPED, SUCCEEDED, StepRejected
from opensage.providers.sagemaker.processing import _check_processing_request
from opensage.providers.sagemaker.stopping import to_stopping
from opensage.serving.endpoints import CONFIG, ENDPOINT, MODEL
from opensage.tuning import controller as tuning
from opensage.tuning.spec import InvalidTuningJob, from_request

_OPERATIONS = {
    "Training": "CreateTrainingJob",
    "Processing": "CreateProcessingJob",
    "Transform": "CreateTransformJob",
    "Tuning": "CreateHyperParameterTuningJob",
    "Model": "CreateModel",
    "RegisterModel": "CreateModelPackage",
    "EndpointConfig": "CreateEndpointConfig",
    "Endpoint": "CreateEndpoint",
}
_KINDS = {
    "Training": training.KIND,
    "Processing": processing.KIND,
    "Transform": transform.KIND,
    "Tuning": tuning.KIND,
    "Model": MODEL,
    "EndpointConfig": CONFIG,
    "Endpoint": ENDPOINT,
    "RegisterModel": "model-package",
}
_ALIASES = {"QualityCheck": "Processing"}  # the step runs a processing job
_JOB_STATES = {"InProgress": RUNNING, "Stopping": RUNNING, "Completed": SUCCEEDED, "Failed": FAILED, "Stopped": STOPPED}
_ENDPOINT_STATES = {"InService": SUCCEEDED, "Failed": FAILED, "OutOfService": FAILED}


@lru_cache(maxsize=1)
def _model() -> Any:
    return botocore.session.get_session().get_service_model("sagemaker")


def _is_expression(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("Get", "Std:Join", "Std:JsonGet")


def _check_shape(shape: Any, value: Any, where: str, problems: list[str]) -> None:
    """Required and unknown members of ``value`` against a botocore shape; expressions match anything."""
    if _is_expression(value) or value is None:
        return
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            problems.append(f"{where} must be an object")
            return
        for member in shape.required_members:
            if member not in value:
                problems.append(f"{where}.{member} is required")
        for key, item in value.items():
            if key not in shape.members:
                problems.append(f"{where}.{key} is not a member of {shape.name}")
            else:
                _check_shape(shape.members[key], item, f"{where}.{key}", problems)
    elif kind == "list":
        if not isinstance(value, list):
            problems.append(f"{where} must be a list")
            return
        for i, item in enumerate(value):
            _check_shape(shape.member, item, f"{where}[{i}]", problems)
    elif kind == "map" and isinstance(value, dict):
        for key, item in value.items():
            _check_shape(shape.value, item, f"{where}.{key}", problems)


def check_arguments(steps: Mapping[str, Any]) -> None:
    """Each step's Arguments against its Create* request shape (the member the platform fills in,
    the resource's name, may be left out).

    Raises:
        ServiceError: ValidationException naming the step and the member.
    """
    for step in steps.values():
        operation = _OPERATIONS.get(step.type)
        if operation is None or not isinstance(step.arguments, dict):
            continue
        shape = _model().operation_model(operation).input_shape
        named = RESOURCES[step.type][0]
        problems: list[str] = []
        _check_shape(shape, {named: "-", **step.arguments} if named else step.arguments, "Arguments", problems)
        if problems:
            raise validation_error(
                f"Invalid pipeline definition: Step '{step.name}' ({operation}): {'; '.join(problems[:5])}."
            )


def context(ctx: RequestContext) -> dict[str, str]:
    """What an execution keeps of the request that started it, to act in its name later."""
    return {
        "region": ctx.region,
        "account": ctx.account_id,
        "principal": ctx.principal_arn,
        "user": ctx.user_id,
        "key": ctx.access_key_id,
    }


def request_context(saved: Mapping[str, str], operation: str) -> RequestContext:
    return RequestContext(
        "sagemaker",
        operation,
        saved["region"],
        saved["account"],
        f"pipeline-{secrets.token_hex(8)}",
        saved.get("key", ""),
        saved.get("principal", ""),
        saved.get("user", ""),
    )


class PipelineSteps:
    """The :class:`~opensage.pipelines.steps.StepLauncher` of a SageMaker provider."""

    def __init__(self, provider: Any, s3: Any) -> None:
        self.p = provider
        self.s3 = s3

    async def start(
        self, step_type: str, name: str, request: dict[str, Any], context: Mapping[str, str], parent_arn: str
    ) -> tuple[str, str]:
        step_type = _ALIASES.get(step_type, step_type)
        operation = _OPERATIONS[step_type]
        ctx = request_context(context, operation)
        try:
            validate(_model().operation_model(operation).input_shape, request)
            return await self._create(step_type, name, request, ctx, parent_arn)
        except ServiceError as exc:
            raise StepRejected(exc.code, exc.message) from exc
        except AlreadyExists as exc:
            raise StepRejected("ResourceInUse", str(exc)) from exc
        except (InvalidTuningJob, KeyError, TypeError, ValueError) as exc:
            raise StepRejected("ValidationException", f"{type(exc).__name__}: {exc}") from exc

    async def _create(
        self, step_type: str, name: str, request: dict[str, Any], ctx: RequestContext, parent_arn: str
    ) -> tuple[str, str]:
        p = self.p
        if step_type == "Training":
            p._check_training_request(request)
            await asyncio.to_thread(p._require_role, ctx, request["RoleArn"])
            await asyncio.to_thread(p.quotas.job, training.KIND, request)
            arn = ctx.arn("sagemaker", f"training-job/{name.lower()}")
            await p.training.create(TrainingJobSpec.from_request(request), arn, parent_arn=parent_arn)
            return name, arn
        if step_type == "Processing":
            _check_processing_request(request)
            await asyncio.to_thread(p._require_role, ctx, request["RoleArn"])
            await asyncio.to_thread(p.quotas.job, processing.KIND, request)
            arn = ctx.arn("sagemaker", f"processing-job/{name.lower()}")
            await p.processing.create(ProcessingJobSpec.from_request(request), arn, parent_arn=parent_arn)
            return name, arn
        if step_type == "Tuning":
            spec = from_request(request)
            for d in spec.definitions:
                p._check_training_request(d.training_request(f"{spec.name}-001-00000000", {}))
                await asyncio.to_thread(p._require_role, ctx, d.document["RoleArn"])
            arn = ctx.arn("sagemaker", f"hyper-parameter-tuning-job/{name.lower()}")
            await p.tuning.create(spec, arn, parent_arn=parent_arn)
            return name, arn
        if step_type == "Transform":
            return name, (await p.create_transform_job(ctx, request))["TransformJobArn"]
        if step_type == "Model":
            return name, (await asyncio.to_thread(p.create_model, ctx, request))["ModelArn"]
        if step_type == "EndpointConfig":
            return name, (await asyncio.to_thread(p.create_endpoint_config, ctx, request))["EndpointConfigArn"]
        if step_type == "Endpoint":
            return name, (await p.create_endpoint(ctx, request))["EndpointArn"]
        if step_type == "RegisterModel":
            return await asyncio.to_thread(self._register, ctx, request)
        raise StepRejected("ValidationException", f"step type {step_type} creates no resource")

    def _register(self, ctx: RequestContext, request: dict[str, Any]) -> tuple[str, str]:
        """CreateModelPackage; its group is created first when it does not exist (as the step does in AWS)."""
        p = self.p
        group = request.get("ModelPackageGroupName")
        if group:
            try:
                p.describe_model_package_group(ctx, {"ModelPackageGroupName": group})
            except ServiceError:
                with contextlib.suppress(ServiceError):  # made meanwhile by another step
                    p.create_model_package_group(ctx, {"ModelPackageGroupName": group})
        arn = p.create_model_package(ctx, request)["ModelPackageArn"]
        return arn, arn

    def state(self, step_type: str, name: str) -> tuple[str | None, str | None]:
        step_type = _ALIASES.get(step_type, step_type)
        if step_type == "RegisterModel":
            try:
                answer = self.properties(step_type, name)
            except ServiceError:
                return None, None
            status = answer.get("ModelPackageStatus", "Completed")
            if status == "Failed":
                return FAILED, "The model package failed."
            return (SUCCEEDED, None) if status == "Completed" else (RUNNING, None)
        row = self.p.store.get_resource(_KINDS[step_type], name)
        if row is None:
            return None, None
        if step_type in ("Model", "EndpointConfig"):
            return SUCCEEDED, None
        if step_type == "Endpoint":
            state = _ENDPOINT_STATES.get(row.status, RUNNING)
        else:
            state = _JOB_STATES.get(row.status, RUNNING)
        return state, row.data.get("FailureReason") if state == FAILED else None

    def properties(self, step_type: str, name: str) -> dict[str, Any]:
        step_type = _ALIASES.get(step_type, step_type)
        ctx = request_context({"region": "", "account": ""}, "Describe")
        p = self.p
        if step_type == "Training":
            return p.describe_training_job(ctx, {"TrainingJobName": name})
        if step_type == "Processing":
            return p.describe_processing_job(ctx, {"ProcessingJobName": name})
        if step_type == "Transform":
            return p.describe_transform_job(ctx, {"TransformJobName": name})
        if step_type == "Tuning":
            return self._tuning(name)
        if step_type == "Model":
            return p.describe_model(ctx, {"ModelName": name})
        if step_type == "EndpointConfig":
            return p.describe_endpoint_config(ctx, {"EndpointConfigName": name})
        if step_type == "Endpoint":
            return p.describe_endpoint(ctx, {"EndpointName": name})
        if step_type == "RegisterModel":
            return p.describe_model_package(ctx, {"ModelPackageName": name})
        raise KeyError(step_type)

    def _tuning(self, name: str) -> dict[str, Any]:
        ctx = request_context({"region": "", "account": ""}, "Describe")
        answer = dict(self.p.describe_hyper_parameter_tuning_job(ctx, {"HyperParameterTuningJobName": name}))
        objective = answer["HyperParameterTuningJobConfig"].get("HyperParameterTuningJobObjective") or {}
        listed = self.p.list_training_jobs_for_hyper_parameter_tuning_job(
            ctx,
            {
                "HyperParameterTuningJobName": name,
                "SortBy": "FinalObjectiveMetricValue",
                "SortOrder": "Descending" if objective.get("Type") == "Maximize" else "Ascending",
            },
        )
        answer["TrainingJobSummaries"] = listed["TrainingJobSummaries"][:50]
        return answer

    def stop(self, step_type: str, name: str) -> None:
        step_type = _ALIASES.get(step_type, step_type)
        if step_type not in ("Training", "Processing", "Transform", "Tuning"):
            return
        kind = _KINDS[step_type]
        try:
            to_stopping(self.p.store, self.p.clock, kind, name, missing="", refused="")
        except ServiceError:
            return  # it ended meanwhile
        engine = {"Training": self.p.training, "Processing": self.p.processing, "Transform": self.p.transforms}
        (engine.get(step_type) or self.p.tuning).request_stop(name)

    def read_json(self, uri: str) -> Any:
        if not uri.startswith("s3://"):
            raise ValueError(f"{uri} is not an S3 URI")
        bucket, _, key = uri[5:].partition("/")
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return json.loads(body)
