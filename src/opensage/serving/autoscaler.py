"""Endpoint autoscaling: Application Auto Scaling's target tracking over endpoint variants.

A scalable target (``endpoint/<endpoint>/variant/<variant>``, dimension
``sagemaker:variant:DesiredInstanceCount``) bounds a variant's instance count; a target-tracking
policy keeps a metric near its target value. Every evaluation (``interval_s``; a minute by default,
as CloudWatch's datapoints) the autoscaler reads the metric and :func:`decide` says the new count:

* ``SageMakerVariantInvocationsPerInstance`` is the variant's requests per minute per instance,
  counted by the router since the last evaluation;
* a desired count is ``ceil(count * metric / target)``, kept within [MinCapacity, MaxCapacity];
* scale-out happens at once, unless the last scale-out is more recent than ``ScaleOutCooldown``;
* scale-in needs the metric low for ``SCALE_IN_EVALUATIONS`` evaluations in a row (AWS's low alarm
  waits 15 datapoints) and no scaling within ``ScaleInCooldown`` (300 s by default for SageMaker),
  and never happens with ``DisableScaleIn``.

A decision changes the variant's count in place (the endpoint is Updating meanwhile, as with
UpdateEndpointWeightsAndCapacities) and is recorded as a scaling activity.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opensage import states
from opensage.controller import Controller
from opensage.errors import NotFound
from opensage.serving.endpoints import ENDPOINT, EndpointEngine
from opensage.serving.metrics import InvocationMetrics
from opensage.states import EndpointStatus
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch

log = logging.getLogger(__name__)
TARGET, POLICY, ACTIVITY = "scalable-target", "scaling-policy", "scaling-activity"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
INVOCATIONS_PER_INSTANCE = "SageMakerVariantInvocationsPerInstance"
DEFAULT_SCALE_IN_COOLDOWN_S = 300.0
DEFAULT_SCALE_OUT_COOLDOWN_S = 300.0
SCALE_IN_EVALUATIONS = 15


@dataclass(slots=True)
class PolicyState:
    """What the autoscaler remembers of one policy between evaluations."""

    last_scale_out: float = -math.inf
    last_scale_in: float = -math.inf
    low_in_a_row: int = 0


@dataclass(frozen=True, slots=True)
class Tracking:
    target: float
    min_capacity: int
    max_capacity: int
    scale_out_cooldown_s: float = DEFAULT_SCALE_OUT_COOLDOWN_S
    scale_in_cooldown_s: float = DEFAULT_SCALE_IN_COOLDOWN_S
    disable_scale_in: bool = False
    scale_in_evaluations: int = SCALE_IN_EVALUATIONS


def decide(policy: Tracking, capacity: int, metric: float, now: float, state: PolicyState) -> int | None:
    """The new instance count for one evaluation of a target-tracking policy (None: leave it); updates ``state``."""
    low, high = policy.min_capacity, max(policy.min_capacity, policy.max_capacity)
    if capacity < low or capacity > high:  # the bounds changed: come back inside them
        state.low_in_a_row = 0
        return min(max(capacity, low), high)
    wanted = min(max(math.ceil(capacity * metric / policy.target) if policy.target > 0 else capacity, low), high)
    if wanted > capacity:
        state.low_in_a_row = 0
        if now - state.last_scale_out < policy.scale_out_cooldown_s:
            return None
        state.last_scale_out = now
        return wanted
    if wanted < capacity and not policy.disable_scale_in:
        state.low_in_a_row += 1
        recent = max(state.last_scale_in, state.last_scale_out)
        if state.low_in_a_row < policy.scale_in_evaluations or now - recent < policy.scale_in_cooldown_s:
            return None
        state.low_in_a_row = 0
        state.last_scale_in = now
        return wanted
    state.low_in_a_row = 0
    return None


def tracking_of(target: dict[str, Any], config: dict[str, Any]) -> Tracking:
    return Tracking(
        float(config["TargetValue"]),
        int(target["MinCapacity"]),
        int(target["MaxCapacity"]),
        float(config.get("ScaleOutCooldown", DEFAULT_SCALE_OUT_COOLDOWN_S)),
        float(config.get("ScaleInCooldown", DEFAULT_SCALE_IN_COOLDOWN_S)),
        bool(config.get("DisableScaleIn", False)),
    )


def variant_of(resource_id: str) -> tuple[str, str]:
    """``endpoint/<endpoint>/variant/<variant>`` -> (endpoint, variant); ValueError otherwise."""
    parts = resource_id.split("/")
    if len(parts) != 4 or parts[0] != "endpoint" or parts[2] != "variant" or not parts[1] or not parts[3]:
        raise ValueError(resource_id)
    return parts[1], parts[3]


@dataclass(slots=True)
class _Counter:
    at: float
    total: int


class Autoscaler(Controller):
    """Evaluates every target-tracking policy each ``interval_s`` and scales endpoint variants."""

    KIND = POLICY

    def __init__(
        self,
        store: SqlStore,
        clock: Callable[[], dt.datetime],
        endpoints: EndpointEngine,
        metrics: InvocationMetrics,
        interval_s: float = 60.0,
    ) -> None:
        super().__init__(store, clock)
        self.endpoints = endpoints
        self.metrics = metrics
        self.interval_s = interval_s
        self._states: dict[str, PolicyState] = {}
        self._counters: dict[str, _Counter] = {}

    def start(self) -> None:
        self._spawn(self._loop_forever(), "autoscaler")

    async def _loop_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.evaluate()
            except Exception:
                log.exception("the autoscaler's evaluation failed; it runs again in %.0f s", self.interval_s)

    async def evaluate(self) -> None:
        """One evaluation of every policy."""
        now = self.clock().timestamp()
        for policy in await asyncio.to_thread(self.store.list_resources, POLICY):
            if policy.data.get("PolicyType") != "TargetTrackingScaling":
                continue
            target = await asyncio.to_thread(self.store.get_resource, TARGET, policy.data["ResourceId"])
            if target is None or (target.data.get("SuspendedState") or {}).get("DynamicScalingOutSuspended"):
                continue
            await self._evaluate(policy, target, now)

    async def _evaluate(self, policy: Resource, target: Resource, now: float) -> None:
        endpoint, variant = variant_of(policy.data["ResourceId"])
        row = await asyncio.to_thread(self.store.get_resource, ENDPOINT, endpoint)
        if row is None or row.status != EndpointStatus.IN_SERVICE or not self.endpoints.is_serving(endpoint):
            return
        current = next((v for v in row.data.get("ProductionVariants", []) if v["VariantName"] == variant), None)
        if current is None:
            return
        capacity = int(current.get("CurrentInstanceCount", current.get("DesiredInstanceCount", 1)))
        metric = self._per_instance_per_minute(policy.arn, endpoint, variant, capacity, now)
        if metric is None:
            return
        config = policy.data["TargetTrackingScalingPolicyConfiguration"]
        state = self._states.setdefault(policy.arn, PolicyState())
        wanted = decide(tracking_of(target.data, config), capacity, metric, now, state)
        if wanted is not None and wanted != capacity:
            await self._scale(policy, row, variant, capacity, wanted, metric, float(config["TargetValue"]))

    def _per_instance_per_minute(
        self, key: str, endpoint: str, variant: str, capacity: int, now: float
    ) -> float | None:
        """Requests per minute per instance since the last evaluation (None at the first one)."""
        total = self.metrics.invocations(endpoint, variant)
        last = self._counters.get(key)
        self._counters[key] = _Counter(now, total)
        if last is None or now <= last.at:
            return None
        return (total - last.total) / (now - last.at) * 60.0 / max(capacity, 1)

    async def _scale(
        self, policy: Resource, row: Resource, variant: str, capacity: int, wanted: int, metric: float, goal: float
    ) -> None:
        change = states.transition(
            ENDPOINT, EndpointStatus.UPDATING, self.clock(), only_from=frozenset({EndpointStatus.IN_SERVICE})
        )
        try:
            await asyncio.to_thread(self.store.modify_resource, ENDPOINT, row.name, change, now=self.clock())
        except (states.IllegalTransition, NotFound):
            return  # it is being updated or deleted: the next evaluation looks again
        self.endpoints.launch_scale(row.name, {variant: wanted})
        verb = "increased" if wanted > capacity else "decreased"
        now = self.clock()
        activity = {
            "ActivityId": str(uuid.uuid4()),
            "ServiceNamespace": "sagemaker",
            "ResourceId": policy.data["ResourceId"],
            "ScalableDimension": DIMENSION,
            "Description": f"Setting desired instance count to {wanted}.",
            "Cause": (
                f"monitor alarm TargetTracking-{policy.data['ResourceId']} in state ALARM triggered policy "
                f"{policy.data['PolicyName']}: {INVOCATIONS_PER_INSTANCE} {metric:.1f} against the target "
                f"{goal:g}; {verb} the desired instance count from {capacity} to {wanted}"
            ),
            "StartTime": epoch(now),
            "EndTime": epoch(now),
            "StatusCode": "Successful",
            "StatusMessage": f"Successfully set desired instance count to {wanted}. Change successfully fulfilled.",
        }
        log.info("autoscaling %s/%s: %d -> %d instances", row.name, variant, capacity, wanted)
        with contextlib.suppress(Exception):
            arn = f"{ACTIVITY}/{activity['ActivityId']}"
            record = Resource(ACTIVITY, activity["ActivityId"], arn, "Successful", now, now, activity)
            await asyncio.to_thread(self.store.create_resource, record)
