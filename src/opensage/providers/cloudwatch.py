"""Amazon CloudWatch metrics: the endpoint invocation metrics, training metrics, and users' own.

Endpoint invocation metrics (namespace AWS/SageMaker, per EndpointName and VariantName) are read
from the platform's in-memory counters, which are flushed to and restored from the durable metric
store; every other series (training jobs' metrics under ``/aws/sagemaker/TrainingJobs``, whatever
``PutMetricData`` wrote) is read from the metric store itself.

LIMITATIONS: one-minute resolution (StorageResolution 1 is stored per minute), kept 15 days;
statistics SampleCount, Sum, Average, Minimum, Maximum at a period that is a multiple of 60 s (no
ExtendedStatistics percentiles); GetMetricData takes MetricStat queries (no expressions); metric
alarms as :mod:`opensage.providers.cloudwatch_alarms` says, no dashboards or metric streams;
EntityMetricData is refused. ``AWS/SageMaker`` ``InvocationsPerInstance`` is derived from the
variant's Invocations and its current instance count.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import ServiceError
from opensage.providers.cloudwatch_alarms import AlarmOperations
from opensage.serving.alarms import MetricReader, merge, value_of, variant_count
from opensage.serving.metrics import NAMESPACE, UNITS, Bucket, InvocationMetrics
from opensage.store.metrics import MetricStore, Point, Stats, dimensions

_STATS = ("SampleCount", "Sum", "Average", "Minimum", "Maximum")


def _ts(value: Any) -> float:
    return value.timestamp() if isinstance(value, dt.datetime) else float(value)


def _endpoint_key(namespace: str, name: str, dims: list[dict[str, str]]) -> tuple[str, str, str] | None:
    """The in-memory series of an endpoint invocation metric, or None for any other series."""
    named = {d["Name"]: d["Value"] for d in dims or []}
    if namespace != NAMESPACE or set(named) != {"EndpointName", "VariantName"} or name not in UNITS:
        return None
    return named["EndpointName"], named["VariantName"], name


class CloudWatchProvider(AlarmOperations):
    def __init__(self, metrics: InvocationMetrics, store: MetricStore, clock: Any = None) -> None:
        self.metrics = metrics
        self.store = store
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.reader = MetricReader(metrics, store, lambda e, v: variant_count(store.store, e, v))

    def _minutes(self, namespace: str, name: str, dims: list[dict[str, str]], start: float, end: float) -> Any:
        return self.reader.minutes(namespace, name, dims, start, end)

    def _unit(self, namespace: str, name: str, dims: list[dict[str, str]], start: float, end: float) -> str:
        if _endpoint_key(namespace, name, dims) is not None:
            return UNITS[name]
        points = self.store.points(start, end, key=(namespace, name, dimensions(dims)))
        return points[-1].unit if points else "None"

    def _periods(
        self, query: tuple[str, str, list[dict[str, str]]], start: float, end: float, period: int
    ) -> list[tuple[int, Bucket]]:
        if period <= 0 or period % 60:
            raise ServiceError("InvalidParameterValue", f"The parameter Period must be a multiple of 60; got {period}.")
        # As CloudWatch does for recent data: the start rounds down to the minute (periods under 5 min),
        # to 5 minutes (under an hour), else to the hour; datapoints fall on start + k * period.
        grain = 60 if period < 300 else 300 if period < 3600 else 3600
        start = float(int(start // grain) * grain)
        grouped: dict[int, list[Bucket]] = {}
        for minute, bucket in self._minutes(*query, start, end):
            slot = int(start + ((minute - start) // period) * period)
            grouped.setdefault(slot, []).append(bucket)
        return sorted((slot, merge(bs)) for slot, bs in grouped.items())

    def list_metrics(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        namespace, name = request.get("Namespace"), request.get("MetricName")
        wanted = {d["Name"]: d.get("Value") for d in request.get("Dimensions") or []}
        known = {
            (NAMESPACE, metric, dimensions([("EndpointName", endpoint), ("VariantName", variant)]))
            for endpoint, variant, metric in self.metrics.series()
        }
        known.update(self.store.series())
        metrics = []
        for ns, metric, dims in sorted(known):
            named = dict(dims)
            if namespace not in (None, ns) or name not in (None, metric):
                continue
            if any(k not in named or (v is not None and named[k] != v) for k, v in wanted.items()):
                continue
            metrics.append(
                {"Namespace": ns, "MetricName": metric, "Dimensions": [{"Name": k, "Value": v} for k, v in dims]}
            )
        return {"Metrics": metrics}

    def put_metric_data(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        """User metrics, one statistic set per datum and minute (Value, Values with Counts, or StatisticValues)."""
        namespace = request["Namespace"]
        if namespace.startswith("AWS/"):
            raise ServiceError("InvalidParameterValue", f"The value {namespace} for parameter Namespace is invalid.")
        if request.get("EntityMetricData"):
            raise ServiceError("InvalidParameterValue", "EntityMetricData is not supported; use MetricData.")
        now = self.clock().timestamp()
        points = [self._point(namespace, i, datum, now) for i, datum in enumerate(request.get("MetricData") or [])]
        self.store.add(points)
        return {}

    @staticmethod
    def _point(namespace: str, index: int, datum: dict[str, Any], now: float) -> Point:
        where = f"MetricData.member.{index + 1}"
        given = [k for k in ("Value", "StatisticValues", "Values") if datum.get(k) is not None]
        if len(given) != 1:
            raise ServiceError(
                "InvalidParameterCombination", f"{where}: give exactly one of Value, StatisticValues and Values."
            )
        if datum.get("Value") is not None:
            stats = Stats.of([float(datum["Value"])])
        elif datum.get("StatisticValues") is not None:
            sv = datum["StatisticValues"]
            stats = Stats(float(sv["SampleCount"]), float(sv["Sum"]), float(sv["Minimum"]), float(sv["Maximum"]))
        else:
            values = [float(v) for v in datum["Values"]]
            counts = [float(c) for c in datum.get("Counts") or [1.0] * len(values)]
            if len(counts) != len(values) or not values:
                raise ServiceError(
                    "InvalidParameterValue", f"{where}: Values and Counts must be as long as each other."
                )
            stats = Stats(
                sum(counts), sum(v * c for v, c in zip(values, counts, strict=True)), min(values), max(values)
            )
        when = _ts(datum["Timestamp"]) if datum.get("Timestamp") is not None else now
        if when > now + 7200 or when < now - 14 * 24 * 3600:
            raise ServiceError(
                "InvalidParameterValue",
                f"{where}: the timestamp must be within the last two weeks and at most 2 h ahead.",
            )
        key = (namespace, datum["MetricName"], dimensions(datum.get("Dimensions") or []))
        return Point(key, int(when // 60) * 60, datum.get("Unit") or "None", stats)

    def get_metric_statistics(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        stats = request.get("Statistics") or []
        if not stats:
            raise ServiceError("InvalidParameterCombination", "Statistics (or ExtendedStatistics) must be given.")
        query = (request["Namespace"], request["MetricName"], request.get("Dimensions") or [])
        start, end = _ts(request["StartTime"]), _ts(request["EndTime"])
        periods = self._periods(query, start, end, request["Period"])
        unit = request.get("Unit") or self._unit(*query, start, end)
        points = [{"Timestamp": slot, "Unit": unit, **{s: value_of(s, b) for s in stats}} for slot, b in periods]
        return {"Label": request["MetricName"], "Datapoints": points}

    def get_metric_data(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        start, end = _ts(request["StartTime"]), _ts(request["EndTime"])
        results = []
        for query in request["MetricDataQueries"]:
            stat = query.get("MetricStat")
            if stat is None:
                raise ServiceError("ValidationError", f"Query {query['Id']}: only MetricStat queries are supported.")
            if stat["Stat"] not in _STATS:
                raise ServiceError(
                    "ValidationError",
                    f"Query {query['Id']}: statistic {stat['Stat']} is not one of {', '.join(_STATS)}.",
                )
            metric = stat["Metric"]
            series = (metric.get("Namespace", ""), metric.get("MetricName", ""), metric.get("Dimensions") or [])
            periods = self._periods(series, start, end, stat["Period"])
            if request.get("ScanBy", "TimestampDescending") == "TimestampDescending":
                periods.reverse()
            results.append(
                {
                    "Id": query["Id"],
                    "Label": query.get("Label", metric.get("MetricName", "")),
                    "Timestamps": [slot for slot, _ in periods],
                    "Values": [value_of(stat["Stat"], b) for _, b in periods],
                    "StatusCode": "Complete",
                }
            )
        return {"MetricDataResults": results, "Messages": []}
