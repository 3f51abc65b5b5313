"""Endpoint autoscaling: Application Auto Scaling's policies and scheduled actions over endpoint variants.

A scalable target (``endpoint/<endpoint>/variant/<variant>``, dimension
``sagemaker:variant:DesiredInstanceCount``) bounds a variant's instance count. Every evaluation
(``interval_s``; a minute by default, as CloudWatch's datapoints) the autoscaler, in this order:

1. runs the scheduled actions due since the last evaluation (``at``, ``rate``, ``cron``): each sets the
   target's MinCapacity and/or MaxCapacity (:mod:`opensage.serving.scaling` parses the schedules);
2. evaluates every CloudWatch metric alarm (:mod:`opensage.serving.alarms`);
3. brings a variant whose count is outside its target's bounds back inside them;
4. runs each target-tracking policy: :func:`decide` says the new count from the metric —
   ``SageMakerVariantInvocationsPerInstance`` (the variant's requests per minute per instance, counted by
   the router since the last evaluation) or a customized metric's latest one-minute statistic;

   * a desired count is ``ceil(count * metric / target)``, kept within [MinCapacity, MaxCapacity];
   * scale-out happens at once, unless the last scale-out is more recent than ``ScaleOutCooldown``;
   * scale-in needs the metric low for ``SCALE_IN_EVALUATIONS`` evaluations in a row (AWS's low alarm
     waits 15 datapoints) and no scaling within ``ScaleInCooldown`` (300 s by default for SageMaker),
     and never happens with ``DisableScaleIn``;
5. runs each StepScaling policy whose alarm (one naming the policy's ARN in ``AlarmActions``) is in
   ALARM, with the alarm's newest datapoint (:func:`opensage.serving.scaling.step_decide`).

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
from opensage.serving import scaling
from opensage.serving.alarms import AlarmEvaluator, Evaluated, MetricReader, value_of, variant_count
from opensage.serving.endpoints import ENDPOINT, EndpointEngine
from opensage.serving.metrics import InvocationMetrics
from opensage.states import EndpointStatus
from opensage.store.entities import Resource
from opensage.store.metrics import MetricStore
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch

log = logging.getLogger(__name__)
TARGET, POLICY, ACTIVITY = "scalable-target", "scaling-policy", "scaling-activity"
SCHEDULED = "scheduled-action"
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


def step_policy_of(target: dict[str, Any], config: dict[str, Any]) -> scaling.StepPolicy:
    steps = tuple(
        scaling.Step(
            None if a.get("MetricIntervalLowerBound") is None else float(a["MetricIntervalLowerBound"]),
            None if a.get("MetricIntervalUpperBound") is None else float(a["MetricIntervalUpperBound"]),
            int(a["ScalingAdjustment"]),
        )
        for a in config.get("StepAdjustments") or []
    )
    magnitude = config.get("MinAdjustmentMagnitude")
    return scaling.StepPolicy(
        config.get("AdjustmentType", "ChangeInCapacity"),
        steps,
        int(target["MinCapacity"]),
        int(target["MaxCapacity"]),
        float(config.get("Cooldown", scaling.DEFAULT_STEP_COOLDOWN_S)),
        int(magnitude) if magnitude is not None else None,
    )


@dataclass(slots=True)
class _Counter:
    at: float
    total: int


class Autoscaler(Controller):
    """Runs every policy and scheduled action each ``interval_s`` and scales endpoint variants."""

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
        self.reader = MetricReader(metrics, MetricStore(store), lambda e, v: variant_count(store, e, v))
        self.alarms = AlarmEvaluator(store, self.reader, clock)
        self._states: dict[str, PolicyState] = {}
        self._steps: dict[str, scaling.StepState] = {}
        self._counters: dict[str, _Counter] = {}
        self._last_evaluation: dt.datetime | None = None

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
        """One evaluation: scheduled actions, alarms, bounds, target tracking, step scaling."""
        moment = self.clock()
        now = moment.timestamp()
        since = self._last_evaluation or moment - dt.timedelta(seconds=self.interval_s)
        self._last_evaluation = moment
        await self._run_schedules(since, moment)
        alarms = await asyncio.to_thread(self.alarms.evaluate)
        targets = {t.name: t for t in await asyncio.to_thread(self.store.list_resources, TARGET)}
        scaled: set[str] = set()
        for target in targets.values():
            if await self._clamp(target):
                scaled.add(target.name)
        for policy in await asyncio.to_thread(self.store.list_resources, POLICY):
            bounds = targets.get(policy.data["ResourceId"])
            if bounds is None or bounds.name in scaled:
                continue
            if (bounds.data.get("SuspendedState") or {}).get("DynamicScalingOutSuspended"):
                continue
            if policy.data.get("PolicyType") == "StepScaling":
                acted = await self._step(policy, bounds, alarms, now)
            else:
                acted = await self._evaluate(policy, bounds, now)
            if acted:
                scaled.add(bounds.name)

    async def _variant(self, resource_id: str) -> tuple[Resource, str, int] | None:
        """The endpoint's record, the variant and its count, when the endpoint serves and can change now."""
        endpoint, variant = variant_of(resource_id)
        row = await asyncio.to_thread(self.store.get_resource, ENDPOINT, endpoint)
        if row is None or row.status != EndpointStatus.IN_SERVICE or not self.endpoints.is_serving(endpoint):
            return None
        current = next((v for v in row.data.get("ProductionVariants", []) if v["VariantName"] == variant), None)
        if current is None:
            return None
        return row, variant, int(current.get("CurrentInstanceCount", current.get("DesiredInstanceCount", 1)))

    async def _clamp(self, target: Resource) -> bool:
        """A variant outside its target's bounds (they changed) comes back inside them."""
        found = await self._variant(target.name)
        if found is None:
            return False
        row, variant, capacity = found
        low, high = int(target.data["MinCapacity"]), int(target.data["MaxCapacity"])
        wanted = min(max(capacity, low), max(low, high))
        if wanted == capacity:
            return False
        bound = "minimum" if wanted > capacity else "maximum"
        cause = f"{bound} capacity was set to {low if bound == 'minimum' else high}"
        return await self._scale(target.name, row, variant, capacity, wanted, cause)

    async def _evaluate(self, policy: Resource, target: Resource, now: float) -> bool:
        found = await self._variant(policy.data["ResourceId"])
        if found is None:
            return False
        row, variant, capacity = found
        config = policy.data["TargetTrackingScalingPolicyConfiguration"]
        custom = config.get("CustomizedMetricSpecification")
        if custom:
            metric = await asyncio.to_thread(self._customized, custom, now)
            name = custom["MetricName"]
        else:
            metric = self._per_instance_per_minute(policy.arn, row.name, variant, capacity, now)
            name = INVOCATIONS_PER_INSTANCE
        if metric is None:
            return False
        state = self._states.setdefault(policy.arn, PolicyState())
        wanted = decide(tracking_of(target.data, config), capacity, metric, now, state)
        if wanted is None or wanted == capacity:
            return False
        alarm = next(
            (
                a["AlarmName"]
                for a in policy.data.get("Alarms") or []
                if ("High" if wanted > capacity else "Low") in a["AlarmName"]
            ),
            "",
        )
        cause = (
            f"monitor alarm {alarm or 'TargetTracking-' + policy.data['ResourceId']} in state ALARM triggered policy "
            f"{policy.data['PolicyName']}: {name} {metric:.1f} against the target {float(config['TargetValue']):g}"
        )
        return await self._scale(policy.data["ResourceId"], row, variant, capacity, wanted, cause)

    def _customized(self, spec: dict[str, Any], now: float) -> float | None:
        """A customized metric's statistic over the latest minute that has data (the current one or the last)."""
        query = (spec["Namespace"], spec["MetricName"], spec.get("Dimensions") or [])
        periods = [(slot, b) for slot, b in self.reader.periods(query, now - 120, now + 1, 60) if b.count]
        return value_of(spec.get("Statistic", "Average"), periods[-1][1]) if periods else None

    async def _step(self, policy: Resource, target: Resource, alarms: dict[str, Evaluated], now: float) -> bool:
        firing = [a for a in alarms.values() if a.state == scaling.ALARM and policy.arn in a.actions]
        firing = [a for a in firing if a.latest is not None]
        if not firing:
            return False
        found = await self._variant(policy.data["ResourceId"])
        if found is None:
            return False
        row, variant, capacity = found
        alarm = firing[0]
        assert alarm.latest is not None
        config = policy.data["StepScalingPolicyConfiguration"]
        state = self._steps.setdefault(policy.arn, scaling.StepState())
        wanted = scaling.step_decide(
            step_policy_of(target.data, config), capacity, alarm.latest - alarm.threshold, now, state
        )
        if wanted is None or wanted == capacity:
            return False
        cause = f"monitor alarm {alarm.name} in state ALARM triggered policy {policy.data['PolicyName']}"
        return await self._scale(policy.data["ResourceId"], row, variant, capacity, wanted, cause)

    async def _run_schedules(self, since: dt.datetime, until: dt.datetime) -> None:
        for action in await asyncio.to_thread(self.store.list_resources, SCHEDULED):
            doc = action.data
            start, end = doc.get("StartTime"), doc.get("EndTime")
            if (start is not None and until.timestamp() < start) or (end is not None and until.timestamp() > end):
                continue
            try:
                schedule = scaling.parse_schedule(doc["Schedule"], doc.get("Timezone"))
            except ValueError:
                continue  # refused at PutScheduledAction; a stored one that no longer parses is skipped
            anchor = dt.datetime.fromtimestamp(start if start is not None else doc["CreationTime"], dt.UTC)
            if schedule.fires(since, until, anchor):
                await self._apply_schedule(doc)

    async def _apply_schedule(self, doc: dict[str, Any]) -> None:
        target = await asyncio.to_thread(self.store.get_resource, TARGET, doc["ResourceId"])
        if target is None or (target.data.get("SuspendedState") or {}).get("ScheduledScalingSuspended"):
            return
        action = doc.get("ScalableTargetAction") or {}
        data = dict(target.data)
        for key in ("MinCapacity", "MaxCapacity"):
            if action.get(key) is not None:
                data[key] = int(action[key])
        if data["MinCapacity"] > data["MaxCapacity"]:  # one bound moved past the other: the given one wins
            other = "MaxCapacity" if action.get("MinCapacity") is not None else "MinCapacity"
            data[other] = data["MinCapacity" if other == "MaxCapacity" else "MaxCapacity"]
        await asyncio.to_thread(self.store.update_resource, TARGET, target.name, data=data, now=self.clock())
        parts = [
            f"{k[:3].lower()} capacity to {data[k]}"
            for k in ("MinCapacity", "MaxCapacity")
            if action.get(k) is not None
        ]
        log.info("scheduled action %s: %s", doc["ScheduledActionName"], ", ".join(parts))
        await self._record(
            doc["ResourceId"],
            f"Setting {' and '.join(parts)}",
            f"scheduled action name {doc['ScheduledActionName']} was triggered",
            f"Successfully set {' and '.join(parts)}. Change successfully fulfilled.",
        )

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
        self, resource_id: str, row: Resource, variant: str, capacity: int, wanted: int, cause: str
    ) -> bool:
        change = states.transition(
            ENDPOINT, EndpointStatus.UPDATING, self.clock(), only_from=frozenset({EndpointStatus.IN_SERVICE})
        )
        try:
            await asyncio.to_thread(self.store.modify_resource, ENDPOINT, row.name, change, now=self.clock())
        except (states.IllegalTransition, NotFound):
            return False  # it is being updated or deleted: the next evaluation looks again
        self.endpoints.launch_scale(row.name, {variant: wanted})
        verb = "increased" if wanted > capacity else "decreased"
        log.info("autoscaling %s/%s: %d -> %d instances", row.name, variant, capacity, wanted)
        await self._record(
            resource_id,
            f"Setting desired instance count to {wanted}.",
            f"{cause}; {verb} the desired instance count from {capacity} to {wanted}",
            f"Successfully set desired instance count to {wanted}. Change successfully fulfilled.",
        )
        return True

    async def _record(self, resource_id: str, description: str, cause: str, message: str) -> None:
        """A scaling activity, as DescribeScalingActivities answers it."""
        now = self.clock()
        activity: dict[str, Any] = {
            "ActivityId": str(uuid.uuid4()),
            "ServiceNamespace": "sagemaker",
            "ResourceId": resource_id,
            "ScalableDimension": DIMENSION,
            "Description": description,
            "Cause": cause,
            "StartTime": epoch(now),
            "EndTime": epoch(now),
            "StatusCode": "Successful",
            "StatusMessage": message,
        }
        with contextlib.suppress(Exception):
            arn = f"{ACTIVITY}/{activity['ActivityId']}"
            record = Resource(ACTIVITY, activity["ActivityId"], arn, "Successful", now, now, activity)
            await asyncio.to_thread(self.store.create_resource, record)
