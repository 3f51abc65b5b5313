"""Amazon CloudWatch, read side: the endpoint invocation metrics (namespace AWS/SageMaker).

LIMITATIONS: only the metrics OpenSage records (Invocations, Invocation4XXErrors,
Invocation5XXErrors, ModelLatency, OverheadLatency per EndpointName and VariantName), kept in memory
for a day and lost on restart; statistics SampleCount, Sum, Average, Minimum, Maximum at a period
that is a multiple of 60 s; GetMetricData takes MetricStat queries (no expressions); no PutMetricData
and no alarms.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import ServiceError
from opensage.serving.metrics import NAMESPACE, UNITS, Bucket, InvocationMetrics

_STATS = ("SampleCount", "Sum", "Average", "Minimum", "Maximum")


def _value(stat: str, b: Bucket) -> float:
    return {
        "SampleCount": b.count,
        "Sum": b.total,
        "Average": b.total / b.count if b.count else 0.0,
        "Minimum": b.low,
        "Maximum": b.high,
    }[stat]


def _merge(buckets: list[Bucket]) -> Bucket:
    out = Bucket()
    for b in buckets:
        out.count += b.count
        out.total += b.total
        out.low = min(out.low, b.low)
        out.high = max(out.high, b.high)
    return out


def _ts(value: Any) -> float:
    return value.timestamp() if isinstance(value, dt.datetime) else float(value)


class CloudWatchProvider:
    def __init__(self, metrics: InvocationMetrics) -> None:
        self.metrics = metrics

    def _key(self, namespace: str, name: str, dimensions: list[dict[str, str]]) -> tuple[str, str, str] | None:
        dims = {d["Name"]: d["Value"] for d in dimensions or []}
        if namespace != NAMESPACE or set(dims) != {"EndpointName", "VariantName"}:
            return None
        return dims["EndpointName"], dims["VariantName"], name

    def _periods(
        self, key: tuple[str, str, str] | None, start: float, end: float, period: int
    ) -> list[tuple[int, Bucket]]:
        if period <= 0 or period % 60:
            raise ServiceError("InvalidParameterValue", f"The parameter Period must be a multiple of 60; got {period}.")
        if key is None:
            return []
        grouped: dict[int, list[Bucket]] = {}
        for minute, bucket in self.metrics.buckets(key, start, end):
            slot = int(start + ((minute - start) // period) * period)
            grouped.setdefault(slot, []).append(bucket)
        return sorted((slot, _merge(bs)) for slot, bs in grouped.items())

    def list_metrics(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        namespace, name = request.get("Namespace"), request.get("MetricName")
        wanted = {d["Name"]: d.get("Value") for d in request.get("Dimensions") or []}
        metrics = []
        for endpoint, variant, metric in sorted(self.metrics.series()):
            dims = {"EndpointName": endpoint, "VariantName": variant}
            if namespace not in (None, NAMESPACE) or name not in (None, metric):
                continue
            if any(k not in dims or (v is not None and dims[k] != v) for k, v in wanted.items()):
                continue
            metrics.append(
                {
                    "Namespace": NAMESPACE,
                    "MetricName": metric,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                }
            )
        return {"Metrics": metrics}

    def get_metric_statistics(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        stats = request.get("Statistics") or []
        if not stats:
            raise ServiceError("InvalidParameterCombination", "Statistics (or ExtendedStatistics) must be given.")
        key = self._key(request["Namespace"], request["MetricName"], request.get("Dimensions") or [])
        periods = self._periods(key, _ts(request["StartTime"]), _ts(request["EndTime"]), request["Period"])
        unit = UNITS.get(request["MetricName"], "None")
        points = [{"Timestamp": slot, "Unit": unit, **{s: _value(s, b) for s in stats}} for slot, b in periods]
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
            key = self._key(metric.get("Namespace", ""), metric.get("MetricName", ""), metric.get("Dimensions") or [])
            periods = self._periods(key, start, end, stat["Period"])
            if request.get("ScanBy", "TimestampDescending") == "TimestampDescending":
                periods.reverse()
            results.append(
                {
                    "Id": query["Id"],
                    "Label": query.get("Label", metric.get("MetricName", "")),
                    "Timestamps": [slot for slot, _ in periods],
                    "Values": [_value(stat["Stat"], b) for _, b in periods],
                    "StatusCode": "Complete",
                }
            )
        return {"MetricDataResults": results, "Messages": []}
