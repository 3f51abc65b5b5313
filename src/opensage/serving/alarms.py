"""CloudWatch metric alarms: their documents, the metric datapoints they read, and their evaluation.

An alarm is a resource of kind ``metric-alarm`` whose document is what DescribeAlarms answers
(``MetricAlarms[]``). The autoscaler evaluates every alarm each interval
(:meth:`AlarmEvaluator.evaluate`): the last ``EvaluationPeriods`` periods of the alarm's metric, up to
now, read by :class:`MetricReader` from the same series CloudWatch serves (the endpoints' invocation
metrics, the durable metric store), and :func:`opensage.serving.scaling.alarm_state` says the state.
A change of state is written with its reason. What an alarm in ALARM does is up to its actions'
owner: the autoscaler runs the StepScaling policies an alarm names in ``AlarmActions``.

``AWS/SageMaker`` ``InvocationsPerInstance`` (what target tracking's alarms watch) is derived as
AWS publishes it: the variant's Invocations per minute divided by its current instance count.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opensage import states
from opensage.errors import NotFound
from opensage.serving import scaling
from opensage.serving.metrics import NAMESPACE, UNITS, Bucket, InvocationMetrics
from opensage.store.entities import Resource
from opensage.store.metrics import MetricStore, dimensions
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch

log = logging.getLogger(__name__)
KIND = "metric-alarm"
STATISTICS = ("SampleCount", "Sum", "Average", "Minimum", "Maximum")
PER_INSTANCE = "InvocationsPerInstance"


def value_of(stat: str, b: Bucket) -> float:
    """A CloudWatch statistic of one period's bucket."""
    return {
        "SampleCount": float(b.count),
        "Sum": b.total,
        "Average": b.total / b.count if b.count else 0.0,
        "Minimum": b.low,
        "Maximum": b.high,
    }[stat]


def merge(buckets: list[Bucket]) -> Bucket:
    """One bucket of several (a period's samples from every series)."""
    out = Bucket()
    for b in buckets:
        out.count += b.count
        out.total += b.total
        out.low = min(out.low, b.low)
        out.high = max(out.high, b.high)
    return out


class MetricReader:
    """The one-minute buckets of any series CloudWatch serves, grouped into periods.

    ``instances(endpoint, variant)`` (the variant's current count, or None) lets it derive
    ``InvocationsPerInstance``."""

    def __init__(
        self,
        metrics: InvocationMetrics,
        store: MetricStore,
        instances: Callable[[str, str], int | None] | None = None,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.instances = instances

    def _endpoint(self, namespace: str, dims: list[dict[str, str]]) -> tuple[str, str] | None:
        named = {d["Name"]: d["Value"] for d in dims or []}
        if namespace != NAMESPACE or set(named) != {"EndpointName", "VariantName"}:
            return None
        return named["EndpointName"], named["VariantName"]

    def is_endpoint_metric(self, namespace: str, name: str, dims: list[dict[str, str]]) -> bool:
        return self._endpoint(namespace, dims) is not None and name in UNITS

    def minutes(
        self, namespace: str, name: str, dims: list[dict[str, str]], start: float, end: float
    ) -> list[tuple[int, Bucket]]:
        variant = self._endpoint(namespace, dims)
        if variant is not None and name in UNITS:
            return self.metrics.buckets((*variant, name), start, end)
        if variant is not None and name == PER_INSTANCE and self.instances is not None:
            count = self.instances(*variant) or 0
            out = []
            for minute, b in self.metrics.buckets((*variant, "Invocations"), start, end):
                if count:  # one sample per minute: the requests of that minute per instance
                    per = b.total / count
                    out.append((minute, Bucket(1, per, per, per)))
            return out
        return [
            (p.minute, Bucket(int(p.stats.count), p.stats.total, p.stats.low, p.stats.high))
            for p in self.store.points(start, end, key=(namespace, name, dimensions(dims)))
        ]

    def periods(
        self, query: tuple[str, str, list[dict[str, str]]], start: float, end: float, period: int
    ) -> list[tuple[int, Bucket]]:
        """Buckets per ``period`` (a multiple of 60) starting at ``start`` rounded as CloudWatch rounds it."""
        grain = 60 if period < 300 else 300 if period < 3600 else 3600
        start = float(int(start // grain) * grain)
        grouped: dict[int, list[Bucket]] = {}
        for minute, bucket in self.minutes(*query, start, end):
            slot = int(start + ((minute - start) // period) * period)
            grouped.setdefault(slot, []).append(bucket)
        return sorted((slot, merge(bs)) for slot, bs in grouped.items())


# --- documents ----------------------------------------------------------------------------------------


def alarm_document(request: dict[str, Any], arn: str, now: dt.datetime, old: dict[str, Any] | None) -> dict[str, Any]:
    """The MetricAlarm document of a PutMetricAlarm request (its state kept when it existed).

    Raises:
        ValueError: what OpenSage cannot evaluate, or a value out of range; the message says which.
    """
    if request.get("Metrics") or request.get("ThresholdMetricId") or request.get("EvaluationCriteria"):
        raise ValueError(
            "Alarms on metric math or PromQL (Metrics, ThresholdMetricId) are not supported; alarm on "
            "one metric with MetricName, Namespace, Statistic and Dimensions."
        )
    for key in ("MetricName", "Namespace", "Statistic", "Period", "EvaluationPeriods", "ComparisonOperator"):
        if request.get(key) in (None, ""):
            raise ValueError(f"{key} is required for an alarm on one metric.")
    if request.get("ExtendedStatistic"):
        raise ValueError("ExtendedStatistic (percentiles) is not supported; use Statistic.")
    if request.get("Threshold") is None:
        raise ValueError("Threshold is required.")
    if request["ComparisonOperator"] not in scaling.COMPARISONS:
        raise ValueError(
            f"ComparisonOperator {request['ComparisonOperator']} needs an anomaly detection band, which OpenSage "
            f"does not compute; use one of {', '.join(scaling.COMPARISONS)}."
        )
    period, periods = int(request["Period"]), int(request["EvaluationPeriods"])
    if period < 60 or period % 60:
        raise ValueError(f"Period must be a multiple of 60 seconds (OpenSage keeps one-minute data); got {period}.")
    to_alarm = int(request.get("DatapointsToAlarm") or periods)
    if not 1 <= to_alarm <= periods:
        raise ValueError(f"DatapointsToAlarm ({to_alarm}) must be between 1 and EvaluationPeriods ({periods}).")
    if period * periods > 86400:
        raise ValueError("Period times EvaluationPeriods must not exceed one day (86,400 seconds).")
    treat = request.get("TreatMissingData") or "missing"
    if treat not in scaling.TREAT_MISSING:
        raise ValueError(f"TreatMissingData must be one of {', '.join(scaling.TREAT_MISSING)}; got {treat}.")
    ts = epoch(now)
    state = {k: old[k] for k in old if k.startswith("State")} if old else {}
    doc = {
        "AlarmName": request["AlarmName"],
        "AlarmArn": arn,
        "AlarmConfigurationUpdatedTimestamp": ts,
        "ActionsEnabled": request.get("ActionsEnabled", True),
        "OKActions": list(request.get("OKActions") or []),
        "AlarmActions": list(request.get("AlarmActions") or []),
        "InsufficientDataActions": list(request.get("InsufficientDataActions") or []),
        "StateValue": scaling.INSUFFICIENT_DATA,
        "StateReason": "Unchecked: Initial alarm creation",
        "StateUpdatedTimestamp": ts,
        "StateTransitionedTimestamp": ts,
        "MetricName": request["MetricName"],
        "Namespace": request["Namespace"],
        "Statistic": request["Statistic"],
        "Dimensions": list(request.get("Dimensions") or []),
        "Period": period,
        "EvaluationPeriods": periods,
        "DatapointsToAlarm": to_alarm,
        "Threshold": float(request["Threshold"]),
        "ComparisonOperator": request["ComparisonOperator"],
        "TreatMissingData": treat,
        **state,
    }
    for key in ("AlarmDescription", "Unit"):
        if request.get(key):
            doc[key] = request[key]
    return doc


# --- evaluation ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evaluated:
    """One alarm after an evaluation: its state and the newest datapoint it saw."""

    name: str
    state: str
    latest: float | None
    threshold: float
    actions: tuple[str, ...]


def _rule(doc: dict[str, Any]) -> scaling.AlarmRule:
    return scaling.AlarmRule(
        float(doc["Threshold"]),
        doc["ComparisonOperator"],
        int(doc["EvaluationPeriods"]),
        int(doc.get("DatapointsToAlarm") or doc["EvaluationPeriods"]),
        doc.get("TreatMissingData") or "missing",
    )


def datapoints(reader: MetricReader, doc: dict[str, Any], now: float) -> list[tuple[int, float | None]]:
    """The alarm's last EvaluationPeriods periods up to ``now``, oldest first.

    The current period counts once it has data; until then (it has only begun) the window ends with
    the last complete period, so a datapoint put just before a period's end is not lost at its turn."""
    period, n = int(doc["Period"]), int(doc["EvaluationPeriods"])
    current = math.floor(now / period) * period
    query = (doc["Namespace"], doc["MetricName"], doc.get("Dimensions") or [])
    found = {slot: b for slot, b in reader.periods(query, current - n * period, now + 1, period) if b.count}
    last = current if current in found else current - period
    first = last - (n - 1) * period
    return [
        (s, value_of(doc["Statistic"], found[s]) if s in found else None)
        for s in range(first, last + period, period)
    ]


def _reason(doc: dict[str, Any], points: list[tuple[int, float | None]], state: str) -> tuple[str, str]:
    present = [(s, v) for s, v in points if v is not None]
    shown = ", ".join(f"{v:g} ({dt.datetime.fromtimestamp(s, dt.UTC):%d/%m/%y %H:%M:%S})" for s, v in present[-5:])
    words = {
        "GreaterThanOrEqualToThreshold": "greater than or equal to",
        "GreaterThanThreshold": "greater than",
        "LessThanThreshold": "less than",
        "LessThanOrEqualToThreshold": "less than or equal to",
    }[doc["ComparisonOperator"]]
    if not present:
        reason = f"Insufficient Data: {len(points)} datapoints were unknown."
    else:
        verb = "was" if state == scaling.ALARM else "was not"
        reason = (
            f"Threshold Crossed: {len(present)} out of the last {len(points)} datapoints [{shown}] {verb} {words} "
            f"the threshold ({doc['Threshold']:g})."
        )
    data = {
        "version": "1.0",
        "queryDate": dt.datetime.now(dt.UTC).isoformat(),
        "statistic": doc["Statistic"],
        "period": doc["Period"],
        "recentDatapoints": [v for _, v in present],
        "threshold": doc["Threshold"],
    }
    return reason, json.dumps(data)


class AlarmEvaluator:
    """Evaluates every metric alarm and records each change of state."""

    def __init__(self, store: SqlStore, reader: MetricReader, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.reader = reader
        self.clock = clock

    def evaluate(self) -> dict[str, Evaluated]:
        """Every alarm's state now (a blocking call: run it in a worker thread)."""
        now = self.clock()
        out: dict[str, Evaluated] = {}
        for row in self.store.list_resources(KIND):
            try:
                out[row.name] = self._one(row, now)
            except Exception:
                log.exception("alarm %s could not be evaluated", row.name)
        return out

    def _one(self, row: Resource, now: dt.datetime) -> Evaluated:
        doc = row.data
        points = datapoints(self.reader, doc, now.timestamp())
        state = scaling.alarm_state(
            _rule(doc), [v for _, v in points], doc.get("StateValue", scaling.INSUFFICIENT_DATA)
        )
        latest = next((v for _, v in reversed(points) if v is not None), None)
        if state != doc.get("StateValue"):
            reason, data = _reason(doc, points, state)
            ts = epoch(now)
            fields: dict[str, Any] = {"StateValue": state, "StateReason": reason, "StateReasonData": data}
            fields.update(StateUpdatedTimestamp=ts, StateTransitionedTimestamp=ts)
            with contextlib.suppress(NotFound):  # deleted meanwhile; a concurrent Put keeps its own settings
                self.store.modify_resource(KIND, row.name, states.transition(KIND, None, now, fields=fields), now=now)
            log.info("alarm %s: %s -> %s", row.name, doc.get("StateValue"), state)
        actions = tuple(doc.get("AlarmActions") or []) if doc.get("ActionsEnabled", True) else ()
        return Evaluated(row.name, state, latest, float(doc["Threshold"]), actions)


def variant_count(store: SqlStore, endpoint: str, variant: str) -> int | None:
    """The variant's current instance count, from its endpoint's record (None: no such variant)."""
    row = store.get_resource("endpoint", endpoint)
    for v in (row.data.get("ProductionVariants") or []) if row is not None else []:
        if v.get("VariantName") == variant:
            return int(v.get("CurrentInstanceCount", v.get("DesiredInstanceCount", 0)) or 0)
    return None


def alarm_resource(doc: dict[str, Any], now: dt.datetime) -> Resource:
    return Resource(KIND, doc["AlarmName"], doc["AlarmArn"], "", now, now, doc)
