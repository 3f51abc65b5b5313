"""Application Auto Scaling for SageMaker endpoint variants: scalable targets, target-tracking policies.

LIMITATIONS: the ``sagemaker`` namespace and the ``sagemaker:variant:DesiredInstanceCount``
dimension only; TargetTrackingScaling with ``SageMakerVariantInvocationsPerInstance`` (StepScaling,
predictive scaling and customized metrics are refused with a ValidationException: they need
CloudWatch alarms or metric math OpenSage does not evaluate); no scheduled actions. The policies'
alarms are named in the answers as AWS names them, but are not CloudWatch alarms one can describe.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, NotFound, ServiceError, validation_error
from opensage.serving.autoscaler import (
    ACTIVITY,
    DIMENSION,
    INVOCATIONS_PER_INSTANCE,
    POLICY,
    TARGET,
    Autoscaler,
    variant_of,
)
from opensage.serving.endpoints import ENDPOINT
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch


def _missing(message: str) -> ServiceError:
    return ServiceError("ObjectNotFoundException", message)


class AutoscalingProvider:
    def __init__(self, store: SqlStore, clock: Callable[[], dt.datetime], autoscaler: Autoscaler) -> None:
        self.store = store
        self.clock = clock
        self.autoscaler = autoscaler

    # --- scalable targets ---------------------------------------------------------------------------

    def _check_target(self, request: dict[str, Any]) -> tuple[str, str]:
        if request["ServiceNamespace"] != "sagemaker":
            raise validation_error(
                f"Unsupported service namespace {request['ServiceNamespace']}; OpenSage scales SageMaker endpoint "
                "variants (ServiceNamespace sagemaker)."
            )
        if request["ScalableDimension"] != DIMENSION:
            raise validation_error(
                f"Unsupported scalable dimension {request['ScalableDimension']}; use {DIMENSION}."
            )
        try:
            return variant_of(request["ResourceId"])
        except ValueError as exc:
            raise validation_error(
                f"Unsupported resource ID {request['ResourceId']}; use endpoint/<endpoint name>/variant/<variant name>."
            ) from exc

    def register_scalable_target(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        endpoint, variant = self._check_target(request)
        row = self.store.get_resource(ENDPOINT, endpoint)
        variants = [v["VariantName"] for v in (row.data.get("ProductionVariants") or [])] if row else []
        if row is None or variant not in variants:
            raise validation_error(
                f"The endpoint variant {request['ResourceId']} does not exist"
                + (f" (the endpoint's variants: {', '.join(variants)})." if row else ".")
            )
        resource_id = request["ResourceId"]
        existing = self.store.get_resource(TARGET, resource_id)
        data = dict(existing.data) if existing else {}
        for key in ("MinCapacity", "MaxCapacity", "SuspendedState", "RoleARN"):
            if key in request:
                data[key] = request[key]
        if "MinCapacity" not in data or "MaxCapacity" not in data:
            raise validation_error("MinCapacity and MaxCapacity are required to register a new scalable target.")
        if int(data["MinCapacity"]) > int(data["MaxCapacity"]):
            raise validation_error(
                f"MinCapacity ({data['MinCapacity']}) must not be greater than MaxCapacity ({data['MaxCapacity']})."
            )
        if int(data["MinCapacity"]) < 1:
            raise validation_error("MinCapacity must be at least 1 for an endpoint variant with instances.")
        now = self.clock()
        arn = existing.arn if existing else ctx.arn("application-autoscaling", f"scalable-target/{uuid.uuid4().hex}")
        data.update(
            ServiceNamespace="sagemaker",
            ResourceId=resource_id,
            ScalableDimension=DIMENSION,
            ScalableTargetARN=arn,
            RoleARN=data.get("RoleARN") or f"arn:aws:iam::{ctx.account_id}:role/aws-service-role/"
            "sagemaker.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
        )
        data.setdefault("CreationTime", epoch(now))
        if existing:
            self.store.update_resource(TARGET, resource_id, data=data, now=now)
        else:
            self.store.create_resource(Resource(TARGET, resource_id, arn, "", now, now, data))
        return {"ScalableTargetARN": arn}

    def describe_scalable_targets(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        wanted = set(request.get("ResourceIds") or [])
        rows = [
            r.data
            for r in self.store.list_resources(TARGET)
            if request["ServiceNamespace"] == "sagemaker"
            and (not wanted or r.name in wanted)
            and request.get("ScalableDimension", DIMENSION) == DIMENSION
        ]
        return {"ScalableTargets": rows}

    def deregister_scalable_target(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._check_target(request)
        try:
            self.store.delete_resource(TARGET, request["ResourceId"])
        except NotFound as exc:
            raise _missing(
                f"No scalable target registered for service namespace: sagemaker, resource ID: "
                f"{request['ResourceId']}, scalable dimension: {DIMENSION}"
            ) from exc
        for policy in self.store.list_resources(POLICY):
            if policy.data["ResourceId"] == request["ResourceId"]:
                self.store.delete_resource(POLICY, policy.name)
        return {}

    # --- policies -----------------------------------------------------------------------------------

    def put_scaling_policy(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._check_target(request)
        resource_id = request["ResourceId"]
        if self.store.get_resource(TARGET, resource_id) is None:
            raise _missing(
                f"No scalable target registered for service namespace: sagemaker, resource ID: {resource_id}, "
                f"scalable dimension: {DIMENSION}"
            )
        kind = request.get("PolicyType", "StepScaling")
        if kind != "TargetTrackingScaling":
            raise validation_error(
                f"PolicyType {kind} is not supported in OpenSage; use TargetTrackingScaling with "
                f"{INVOCATIONS_PER_INSTANCE}."
            )
        config = request.get("TargetTrackingScalingPolicyConfiguration")
        if not config:
            raise validation_error("TargetTrackingScalingPolicyConfiguration is required for TargetTrackingScaling.")
        predefined = (config.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType")
        if config.get("CustomizedMetricSpecification") or predefined != INVOCATIONS_PER_INSTANCE:
            raise validation_error(
                f"OpenSage tracks the predefined metric {INVOCATIONS_PER_INSTANCE}; customized metrics and "
                f"{predefined or 'other metrics'} are not supported."
            )
        if float(config["TargetValue"]) <= 0:
            raise validation_error("TargetValue must be greater than 0.")
        name = f"{resource_id}:{request['PolicyName']}"
        existing = self.store.get_resource(POLICY, name)
        now = self.clock()
        policy_id = existing.arn.rsplit(":", 3)[-3] if existing else uuid.uuid4().hex
        arn = ctx.arn(
            "autoscaling",
            f"scalingPolicy:{policy_id}:resource/sagemaker/{resource_id}:policyName/{request['PolicyName']}",
        )
        alarms = [
            {
                "AlarmName": f"TargetTracking-{resource_id}-Alarm{side}-{policy_id[:8]}",
                "AlarmARN": ctx.arn("cloudwatch", f"alarm:TargetTracking-{resource_id}-Alarm{side}-{policy_id[:8]}"),
            }
            for side in ("High", "Low")
        ]
        data = {
            "PolicyARN": arn,
            "PolicyName": request["PolicyName"],
            "ServiceNamespace": "sagemaker",
            "ResourceId": resource_id,
            "ScalableDimension": DIMENSION,
            "PolicyType": kind,
            "TargetTrackingScalingPolicyConfiguration": config,
            "Alarms": alarms,
            "CreationTime": existing.data["CreationTime"] if existing else epoch(now),
        }
        if existing:
            self.store.update_resource(POLICY, name, data=data, now=now)
        else:
            try:
                self.store.create_resource(Resource(POLICY, name, arn, "", now, now, data))
            except AlreadyExists:  # created meanwhile: this put wins
                self.store.update_resource(POLICY, name, data=data, now=now)
        return {"PolicyARN": arn, "Alarms": alarms}

    def describe_scaling_policies(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        names = set(request.get("PolicyNames") or [])
        rows = [
            r.data
            for r in self.store.list_resources(POLICY)
            if (not names or r.data["PolicyName"] in names)
            and request.get("ResourceId") in (None, r.data["ResourceId"])
        ]
        return {"ScalingPolicies": rows}

    def delete_scaling_policy(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._check_target(request)
        try:
            self.store.delete_resource(POLICY, f"{request['ResourceId']}:{request['PolicyName']}")
        except NotFound as exc:
            raise _missing(
                f"No scaling policy found for service namespace: sagemaker, resource ID: {request['ResourceId']}, "
                f"scalable dimension: {DIMENSION}, policy name: {request['PolicyName']}"
            ) from exc
        return {}

    async def describe_scaling_activities(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows = await asyncio.to_thread(self.store.list_resources, ACTIVITY, descending=True)
        wanted = request.get("ResourceId")
        return {"ScalingActivities": [r.data for r in rows if wanted in (None, r.data["ResourceId"])]}
