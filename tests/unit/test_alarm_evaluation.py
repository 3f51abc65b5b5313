"""CloudWatch alarms evaluated over the durable metric store and the endpoint metrics, on a clock the test sets."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from opensage.serving.alarms import KIND, AlarmEvaluator, MetricReader, alarm_document, alarm_resource
from opensage.serving.metrics import InvocationMetrics
from opensage.store.metrics import MetricStore, Point, Stats, dimensions
from opensage.store.sql import SqlStore, open_store

T0 = dt.datetime(2026, 12, 1, 12, 0, 30, tzinfo=dt.UTC)
DIMS = [{"Name": "Queue", "Value": "orders"}]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    s = open_store(f"sqlite:///{tmp_path / 'db'}", tmp_path / "master.key")
    yield s
    s.engine.dispose()


def _alarm(store: SqlStore, clock: Clock, **changes: object) -> None:
    request = {
        "AlarmName": "backlog",
        "Namespace": "Custom/Queue",
        "MetricName": "Backlog",
        "Dimensions": DIMS,
        "Statistic": "Maximum",
        "Period": 60,
        "EvaluationPeriods": 2,
        "DatapointsToAlarm": 2,
        "Threshold": 10.0,
        "ComparisonOperator": "GreaterThanThreshold",
        "AlarmActions": ["arn:policy"],
        **changes,
    }
    store.create_resource(alarm_resource(alarm_document(request, "arn:alarm:backlog", clock(), None), clock()))


def _put(metrics: MetricStore, at: dt.datetime, value: float) -> None:
    minute = int(at.timestamp() // 60) * 60
    metrics.add([Point(("Custom/Queue", "Backlog", dimensions(DIMS)), minute, "Count", Stats.of([value]))])


def test_an_alarm_goes_to_alarm_when_enough_periods_breach_and_back_to_ok(store: SqlStore) -> None:
    clock, metrics = Clock(), MetricStore(store)
    evaluator = AlarmEvaluator(store, MetricReader(InvocationMetrics(), metrics), clock)
    _alarm(store, clock)
    assert evaluator.evaluate()["backlog"].state == "INSUFFICIENT_DATA"
    _put(metrics, clock.now, 50)
    assert evaluator.evaluate()["backlog"].state == "OK"  # one of the two periods breaches
    clock.now += dt.timedelta(minutes=1)
    _put(metrics, clock.now, 30)
    result = evaluator.evaluate()["backlog"]
    assert (result.state, result.latest, result.actions) == ("ALARM", 30.0, ("arn:policy",))
    doc = store.get_resource(KIND, "backlog")
    assert doc is not None and doc.data["StateValue"] == "ALARM"
    assert "2 out of the last 2 datapoints [50" in doc.data["StateReason"]
    clock.now += dt.timedelta(minutes=1)
    _put(metrics, clock.now, 5)
    assert evaluator.evaluate()["backlog"].state == "OK"


def test_a_datapoint_put_at_the_end_of_a_period_is_seen_when_the_next_one_has_just_begun(store: SqlStore) -> None:
    clock, metrics = Clock(), MetricStore(store)
    evaluator = AlarmEvaluator(store, MetricReader(InvocationMetrics(), metrics), clock)
    _alarm(store, clock, EvaluationPeriods=1, DatapointsToAlarm=1)
    clock.now = T0.replace(second=59)
    _put(metrics, clock.now, 50)
    clock.now = T0.replace(minute=1, second=0, microsecond=500_000)
    assert evaluator.evaluate()["backlog"].state == "ALARM"
    _put(metrics, clock.now, 5)  # once the new period has data, it is the one evaluated
    assert evaluator.evaluate()["backlog"].state == "OK"


def test_missing_data_and_disabled_actions(store: SqlStore) -> None:
    clock = Clock()
    evaluator = AlarmEvaluator(store, MetricReader(InvocationMetrics(), MetricStore(store)), clock)
    _alarm(store, clock, TreatMissingData="breaching", ActionsEnabled=False)
    result = evaluator.evaluate()["backlog"]
    assert result.state == "ALARM" and result.latest is None and result.actions == ()


def test_invocations_per_instance_is_the_variants_invocations_over_its_count(store: SqlStore) -> None:
    invocations = InvocationMetrics()
    for _ in range(30):
        invocations.record("ep", "AllTraffic", 200, 1000.0, 100.0, now=T0.timestamp())
    reader = MetricReader(invocations, MetricStore(store), lambda endpoint, variant: 3)
    dims = [{"Name": "EndpointName", "Value": "ep"}, {"Name": "VariantName", "Value": "AllTraffic"}]
    periods = reader.periods(
        ("AWS/SageMaker", "InvocationsPerInstance", dims), T0.timestamp() - 60, T0.timestamp() + 60, 60
    )
    assert [b.total for _, b in periods] == [10.0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"Period": 30}, "multiple of 60"),
        ({"DatapointsToAlarm": 3}, "between 1 and EvaluationPeriods"),
        ({"ComparisonOperator": "LessThanLowerOrGreaterThanUpperThreshold"}, "anomaly detection"),
        ({"Metrics": [{"Id": "m1"}]}, "metric math"),
        ({"TreatMissingData": "sometimes"}, "TreatMissingData"),
    ],
)
def test_alarms_that_cannot_be_evaluated_are_refused(store: SqlStore, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _alarm(store, Clock(), **change)
