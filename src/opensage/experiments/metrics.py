"""The values runs log (``sagemaker-metrics`` BatchPutMetrics): kept one row each, summarized on read.

A trial component's ``Metrics`` (Min, Max, Avg, StdDev, Last, Count and the time of the last value,
per metric) are computed from its rows; BatchGetMetrics answers series of them, by step or by time
period. Values are finite numbers: NaN and infinities are refused per value, as SageMaker refuses them.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select

from opensage.store.sql import SqlStore
from opensage.store.tables import TrialMetricRow

STATISTICS = ("Min", "Max", "Avg", "Count", "StdDev", "Last")
PERIOD_S = {"OneMinute": 60, "FiveMinute": 300, "OneHour": 3600}
MAX_POINTS = 1000  # a BatchGetMetrics series longer than this is Truncated (its first MAX_POINTS)


@dataclass(frozen=True, slots=True)
class Value:
    metric: str
    timestamp: float
    step: int | None
    value: float


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def summary(values: list[Value], source_arn: str | None = None) -> dict[str, Any]:
    """One TrialComponentMetricSummary of ``values`` (one metric, oldest first)."""
    numbers = [v.value for v in values]
    out: dict[str, Any] = {
        "MetricName": values[0].metric,
        "TimeStamp": values[-1].timestamp,
        "Max": max(numbers),
        "Min": min(numbers),
        "Last": numbers[-1],
        "Count": len(numbers),
        "Avg": statistics.fmean(numbers),
        "StdDev": statistics.stdev(numbers) if len(numbers) > 1 else 0.0,
    }
    if source_arn:
        out["SourceArn"] = source_arn
    return out


def statistic(stat: str, numbers: list[float]) -> float:
    if stat == "Min":
        return min(numbers)
    if stat == "Max":
        return max(numbers)
    if stat == "Count":
        return float(len(numbers))
    if stat == "Last":
        return numbers[-1]
    if stat == "StdDev":
        return statistics.stdev(numbers) if len(numbers) > 1 else 0.0
    return statistics.fmean(numbers)


class TrialMetrics:
    """The logged values of every trial component, in the platform's SQL database."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def add(self, component: str, values: Iterable[Value]) -> None:
        rows = [
            {
                "trial_component": component,
                "metric_name": v.metric,
                "timestamp": v.timestamp,
                "step": v.step,
                "value": float(v.value),
            }
            for v in values
        ]
        if rows:
            with self.store.session() as s:
                s.execute(insert(TrialMetricRow), rows)

    def values(self, component: str, metric: str | None = None) -> list[Value]:
        """``component``'s values (of ``metric`` only, when given), oldest first (by time, then as logged)."""
        q = select(TrialMetricRow).where(TrialMetricRow.trial_component == component)
        if metric is not None:
            q = q.where(TrialMetricRow.metric_name == metric)
        with self.store.session() as s:
            rows = s.scalars(q.order_by(TrialMetricRow.timestamp, TrialMetricRow.id)).all()
            return [Value(r.metric_name, r.timestamp, r.step, r.value) for r in rows]

    def summaries(self, component: str, source_arn: str | None = None) -> list[dict[str, Any]]:
        """The ``Metrics`` of a trial component's description, one per metric, by name."""
        by_name: dict[str, list[Value]] = defaultdict(list)
        for v in self.values(component):
            by_name[v.metric].append(v)
        return [summary(by_name[name], source_arn) for name in sorted(by_name)]

    def drop(self, component: str) -> None:
        with self.store.session() as s:
            s.execute(delete(TrialMetricRow).where(TrialMetricRow.trial_component == component))

    def query(self, component: str, q: Mapping[str, Any]) -> dict[str, Any]:
        """One MetricQueryResult: ``q``'s statistic per step (Period IterationNumber) or per time period."""
        values = self.values(component, q["MetricName"])
        start, end = q.get("Start"), q.get("End")
        values = [v for v in values if (start is None or v.timestamp >= start) and (end is None or v.timestamp < end)]
        groups: dict[float, list[float]] = defaultdict(list)
        if q["Period"] == "IterationNumber":
            for v in values:
                if v.step is not None:
                    groups[float(v.step)].append(v.value)
        else:
            width = PERIOD_S[q["Period"]]
            for v in values:
                groups[float(int(v.timestamp // width) * width)].append(v.value)
        xs = sorted(groups)
        truncated = len(xs) > MAX_POINTS
        xs = xs[:MAX_POINTS]
        result: dict[str, Any] = {
            "Status": "Truncated" if truncated else "Complete",
            "XAxisValues": [int(x) for x in xs],
            "MetricValues": [statistic(q["MetricStat"], groups[x]) for x in xs],
        }
        if truncated:
            result["Message"] = f"Only the first {MAX_POINTS} points are returned; narrow Start and End."
        return result
