"""Application Auto Scaling for SageMaker endpoint variants: scalable targets, policies, scheduled actions.

Target tracking (``SageMakerVariantInvocationsPerInstance`` or a customized metric) creates the two
CloudWatch alarms AWS creates (``TargetTracking-<resource>-AlarmHigh-<uuid>`` and, unless scale-in is
disabled, ``...-AlarmLow-<uuid>``), real alarms that DescribeAlarms shows and the autoscaler
evaluates; StepScaling policies act when an alarm that names them in ``AlarmActions`` is in ALARM;
scheduled actions (:mod:`opensage.providers.autoscaling_schedules`) change a target's bounds on time.

MinCapacity 0 is accepted for asynchronous endpoints only, as on AWS.

LIMITATIONS: the ``sagemaker`` namespace and the ``sagemaker:variant:DesiredInstanceCount``
dimension only; no predictive scaling; customized metrics name one metric (no metric math
``Metrics``); a step policy's metric is its alarm's statistic (``MetricAggregationType`` is kept,
not applied).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, NotFound, ServiceError, validation_error
from opensage.providers.autoscaling_schedules import ScheduledActions, missing_target
from opensage.providers.cloudwatch_alarms import put_alarm
from opensage.serving import alarms, scaling
from opensage.serving.autoscaler import (
    ACTIVITY,
    DIMENSION,
    INVOCATIONS_PER_INSTANCE,
    POLICY,
    SCHEDULED,
    TARGET,
    Autoscaler,
    variant_of,
)
from opensage.serving.endpoints import CONFIG, ENDPOINT
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch


def _missing(message: str) -> ServiceError:
    return ServiceError("ObjectNotFoundException", message)


class AutoscalingProvider(ScheduledActions):
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
            raise validation_error(f"Unsupported scalable dimension {request['ScalableDimension']}; use {DIMENSION}.")
        try:
            return variant_of(request["ResourceId"])
        except ValueError as exc:
            raise validation_error(
                f"Unsupported resource ID {request['ResourceId']}; use endpoint/<endpoint name>/variant/<variant name>."
            ) from exc

    def _asynchronous(self, config_name: str) -> bool:
        """Whether the endpoint config has an AsyncInferenceConfig (its variants may scale to zero)."""
        config = self.store.get_resource(CONFIG, config_name)
        return config is not None and config.data.get("AsyncInferenceConfig") is not None

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
        if int(data["MinCapacity"]) < 1 and not self._asynchronous(row.data.get("EndpointConfigName", "")):
            raise validation_error(
                "MinCapacity must be at least 1 for an endpoint variant with instances (0 is for asynchronous "
                "endpoints, whose requests wait in their queue)."
            )
        now = self.clock()
        arn = existing.arn if existing else ctx.arn("application-autoscaling", f"scalable-target/{uuid.uuid4().hex}")
        data.update(
            ServiceNamespace="sagemaker",
            ResourceId=resource_id,
            ScalableDimension=DIMENSION,
            ScalableTargetARN=arn,
            RoleARN=data.get("RoleARN")
            or f"arn:aws:iam::{ctx.account_id}:role/aws-service-role/"
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
                self._drop_alarms(policy.data)
                self.store.delete_resource(POLICY, policy.name)
        for action in self.store.list_resources(SCHEDULED):
            if action.data["ResourceId"] == request["ResourceId"]:
                self.store.delete_resource(SCHEDULED, action.name)
        return {}

    # --- policies -----------------------------------------------------------------------------------

    def put_scaling_policy(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._check_target(request)
        resource_id = request["ResourceId"]
        if self.store.get_resource(TARGET, resource_id) is None:
            raise missing_target(resource_id)
        kind = request.get("PolicyType", "StepScaling")
        if kind == "TargetTrackingScaling":
            config = _tracking_config(request.get("TargetTrackingScalingPolicyConfiguration"))
        elif kind == "StepScaling":
            config = _step_config(request.get("StepScalingPolicyConfiguration"))
        else:
            raise validation_error(
                f"PolicyType {kind} is not supported in OpenSage; use TargetTrackingScaling or StepScaling."
            )
        name = f"{resource_id}:{request['PolicyName']}"
        existing = self.store.get_resource(POLICY, name)
        now = self.clock()
        policy_id = existing.arn.rsplit(":", 3)[-3] if existing else str(uuid.uuid4())
        arn = ctx.arn(
            "autoscaling",
            f"scalingPolicy:{policy_id}:resource/sagemaker/{resource_id}:policyName/{request['PolicyName']}",
        )
        data: dict[str, Any] = {
            "PolicyARN": arn,
            "PolicyName": request["PolicyName"],
            "ServiceNamespace": "sagemaker",
            "ResourceId": resource_id,
            "ScalableDimension": DIMENSION,
            "PolicyType": kind,
            f"{kind}PolicyConfiguration": config,
            "Alarms": [],
            "CreationTime": existing.data["CreationTime"] if existing else epoch(now),
        }
        if existing:
            self._drop_alarms(existing.data)
        if kind == "TargetTrackingScaling":
            data["Alarms"] = self._tracking_alarms(ctx, resource_id, arn, config, now)
        if existing:
            self.store.update_resource(POLICY, name, data=data, now=now)
        else:
            try:
                self.store.create_resource(Resource(POLICY, name, arn, "", now, now, data))
            except AlreadyExists:  # created meanwhile: this put wins
                self.store.update_resource(POLICY, name, data=data, now=now)
        return {"PolicyARN": arn, "Alarms": data["Alarms"]}

    def _tracking_alarms(
        self, ctx: RequestContext, resource_id: str, arn: str, config: dict[str, Any], now: dt.datetime
    ) -> list[dict[str, str]]:
        """The CloudWatch alarms AWS makes for a target-tracking policy: high (3 of 3 minutes over the
        target) and, unless DisableScaleIn, low (15 of 15 minutes under 90 % of it)."""
        endpoint, variant = variant_of(resource_id)
        custom = config.get("CustomizedMetricSpecification")
        metric = (
            {k: custom[k] for k in ("MetricName", "Namespace", "Dimensions", "Statistic", "Unit") if k in custom}
            if custom
            else {
                "MetricName": alarms.PER_INSTANCE,
                "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}],
                "Statistic": "Sum",
            }
        )
        metric.setdefault("Statistic", "Average")
        target = float(config["TargetValue"])
        sides = [("High", 3, target, "GreaterThanThreshold")]
        if not config.get("DisableScaleIn"):
            sides.append(("Low", 15, target * 0.9, "LessThanThreshold"))
        made = []
        for side, periods, threshold, comparison in sides:
            name = f"TargetTracking-{resource_id}-Alarm{side}-{uuid.uuid4()}"
            request = {
                "AlarmName": name,
                "AlarmDescription": f"DO NOT EDIT OR DELETE. For TargetTrackingScaling policy {arn}.",
                "AlarmActions": [arn],
                "Period": 60,
                "EvaluationPeriods": periods,
                "DatapointsToAlarm": periods,
                "Threshold": threshold,
                "ComparisonOperator": comparison,
                **metric,
            }
            doc = put_alarm(self.store, ctx, request, now)
            made.append({"AlarmName": name, "AlarmARN": doc["AlarmArn"]})
        return made

    def _drop_alarms(self, policy: dict[str, Any]) -> None:
        """Remove the alarms a target-tracking policy made (a step policy's alarms are the user's)."""
        if policy.get("PolicyType") != "TargetTrackingScaling":
            return
        for alarm in policy.get("Alarms") or []:
            with contextlib.suppress(NotFound):
                self.store.delete_resource(alarms.KIND, alarm["AlarmName"])

    def describe_scaling_policies(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        names = set(request.get("PolicyNames") or [])
        rows = [
            r.data
            for r in self.store.list_resources(POLICY)
            if (not names or r.data["PolicyName"] in names)
            and request.get("ResourceId") in (None, r.data["ResourceId"])
        ]
        if any(r["PolicyType"] == "StepScaling" for r in rows):  # a step policy's alarms: those that name it
            named = [a.data for a in self.store.list_resources(alarms.KIND)]
            for r in rows:
                if r["PolicyType"] == "StepScaling":
                    r["Alarms"] = [
                        {"AlarmName": a["AlarmName"], "AlarmARN": a["AlarmArn"]}
                        for a in named
                        if r["PolicyARN"] in (a.get("AlarmActions") or [])
                    ]
        return {"ScalingPolicies": rows}

    def delete_scaling_policy(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._check_target(request)
        name = f"{request['ResourceId']}:{request['PolicyName']}"
        row = self.store.get_resource(POLICY, name)
        if row is not None:
            self._drop_alarms(row.data)
        try:
            self.store.delete_resource(POLICY, name)
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


def _tracking_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """A TargetTrackingScalingPolicyConfiguration OpenSage can act on, or the ValidationException."""
    if not config:
        raise validation_error("TargetTrackingScalingPolicyConfiguration is required for TargetTrackingScaling.")
    predefined = (config.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType")
    custom = config.get("CustomizedMetricSpecification")
    if bool(predefined) == bool(custom):
        raise validation_error("Give exactly one of PredefinedMetricSpecification and CustomizedMetricSpecification.")
    if predefined and predefined != INVOCATIONS_PER_INSTANCE:
        raise validation_error(
            f"Predefined metric {predefined} does not apply to instance-based endpoint variants; use "
            f"{INVOCATIONS_PER_INSTANCE} or a CustomizedMetricSpecification."
        )
    if custom:
        if custom.get("Metrics"):
            raise validation_error(
                "CustomizedMetricSpecification.Metrics (metric math) is not supported in OpenSage; name one metric "
                "with MetricName, Namespace, Dimensions and Statistic."
            )
        if not custom.get("MetricName") or not custom.get("Namespace"):
            raise validation_error("CustomizedMetricSpecification needs MetricName and Namespace.")
        if custom.get("Statistic", "Average") not in alarms.STATISTICS:
            raise validation_error(f"Statistic must be one of {', '.join(alarms.STATISTICS)}.")
    if float(config["TargetValue"]) <= 0:
        raise validation_error("TargetValue must be greater than 0.")
    return config


def _step_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """A StepScalingPolicyConfiguration whose steps neither overlap nor leave gaps, or the ValidationException."""
    if not config:
        raise validation_error("StepScalingPolicyConfiguration is required for StepScaling.")
    kind = config.get("AdjustmentType")
    if kind not in scaling.ADJUSTMENT_TYPES:
        raise validation_error(f"AdjustmentType must be one of {', '.join(scaling.ADJUSTMENT_TYPES)}.")
    if config.get("MinAdjustmentMagnitude") is not None and kind != "PercentChangeInCapacity":
        raise validation_error("MinAdjustmentMagnitude applies to the PercentChangeInCapacity adjustment type only.")
    steps = config.get("StepAdjustments") or []
    if not steps:
        raise validation_error("StepAdjustments must contain at least one step adjustment.")
    low = -float("inf")
    ordered = sorted(
        steps,
        key=lambda a: -float("inf") if a.get("MetricIntervalLowerBound") is None else a["MetricIntervalLowerBound"],
    )
    for i, step in enumerate(ordered):
        lower = step.get("MetricIntervalLowerBound")
        upper = step.get("MetricIntervalUpperBound")
        lower_f = -float("inf") if lower is None else float(lower)
        upper_f = float("inf") if upper is None else float(upper)
        if lower is None and upper is None:
            raise validation_error("A step adjustment needs MetricIntervalLowerBound or MetricIntervalUpperBound.")
        if upper_f <= lower_f:
            raise validation_error("A step adjustment's MetricIntervalUpperBound must be greater than its lower bound.")
        if i and lower_f != low:
            raise validation_error("The step adjustments' intervals must not overlap or leave gaps between them.")
        low = upper_f
    if kind == "ExactCapacity" and any(int(a["ScalingAdjustment"]) < 0 for a in steps):
        raise validation_error("With ExactCapacity, ScalingAdjustment is the new capacity and cannot be negative.")
    if "Cooldown" in config and int(config["Cooldown"]) < 0:
        raise validation_error("Cooldown must not be negative.")
    return config
