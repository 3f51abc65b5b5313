"""The ``sagemaker-metrics`` service: the values SageMaker Experiments runs log, and their series.

BatchPutMetrics records up to 10 values for a trial component (``Run.log_metric`` sends them from a
background thread); a value that cannot be kept (not a finite number, a negative step) is answered
in ``Errors`` with its index, the others are kept. BatchGetMetrics answers a statistic of one
metric per step or per period.

LIMITATIONS: a series answers at most 1,000 points (``Truncated`` past them).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import validation_error
from opensage.experiments import records as rec
from opensage.experiments.metrics import TrialMetrics, Value, finite
from opensage.store.sql import SqlStore


def _seconds(value: Any) -> float:
    return value.timestamp() if isinstance(value, dt.datetime) else float(value)


class SageMakerMetricsProvider:
    def __init__(self, store: SqlStore, metrics: TrialMetrics) -> None:
        self.store = store
        self.metrics = metrics

    def batch_put_metrics(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        component = rec.get(self.store, rec.COMPONENT, request["TrialComponentName"])
        kept: list[Value] = []
        errors: list[dict[str, Any]] = []
        for i, datum in enumerate(request["MetricData"]):
            step = datum.get("Step")
            if not finite(datum.get("Value")) or (step is not None and step < 0):
                errors.append({"Code": "VALIDATION_ERROR", "MetricIndex": i})
                continue
            kept.append(Value(datum["MetricName"], _seconds(datum["Timestamp"]), step, float(datum["Value"])))
        self.metrics.add(component.name, kept)
        return {"Errors": errors} if errors else {}

    def batch_get_metrics(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        results = []
        for q in request["MetricQueries"]:
            arn = q["ResourceArn"]
            if ":experiment-trial-component/" not in arn:
                results.append(_invalid(f"ResourceArn {arn} is not a trial component's ARN."))
                continue
            row = self.store.get_resource(rec.COMPONENT, rec.key(arn))
            if row is None:
                results.append(_invalid(f"Trial component {arn} does not exist."))
                continue
            results.append(self.metrics.query(row.name, q))
        if not results:
            raise validation_error("MetricQueries needs at least one query.")
        return {"MetricQueryResults": results}


def _invalid(message: str) -> dict[str, Any]:
    return {"Status": "ValidationError", "Message": message, "XAxisValues": [], "MetricValues": []}
