"""The durable metric store over every database backend, and the invocation counters' flush and restore."""

from __future__ import annotations

from opensage.serving.metrics import InvocationMetrics
from opensage.store.metrics import MetricStore, Point, Stats, dimensions
from opensage.store.sql import SqlStore

T0 = 1_790_000_040  # a minute boundary
KEY = ("Custom/App", "latency", dimensions([{"Name": "Service", "Value": "a"}, {"Name": "Env", "Value": "b"}]))


def test_samples_add_up_per_minute(store: SqlStore) -> None:
    metrics = MetricStore(store)
    metrics.add([Point(KEY, T0, "Milliseconds", Stats.of([5.0, 7.0]))])
    metrics.add([Point(KEY, T0, "Milliseconds", Stats.of([1.0])), Point(KEY, T0 + 60, "Milliseconds", Stats.of([9.0]))])
    (first, second) = metrics.points(T0, T0 + 120, key=KEY)
    assert first.stats == Stats(3.0, 13.0, 1.0, 7.0) and first.unit == "Milliseconds"
    assert second.minute == T0 + 60 and second.stats == Stats(1.0, 9.0, 9.0, 9.0)
    assert metrics.points(T0 + 60, T0 + 120, key=KEY) == [second]
    assert KEY[2] == (("Env", "b"), ("Service", "a"))  # dimension order does not make another series
    assert metrics.series() == [KEY] and metrics.series(namespace="Other") == []


def test_replaced_minutes_take_the_last_aggregate_and_old_ones_expire(store: SqlStore) -> None:
    metrics = MetricStore(store, retention_s=3600)
    metrics.replace([Point(KEY, T0, "Count", Stats(1, 1, 1, 1))])
    metrics.replace([Point(KEY, T0, "Count", Stats(4, 4, 1, 1))])
    assert [p.stats.count for p in metrics.points(0, T0 + 60, key=KEY)] == [4.0]
    metrics.add([Point(KEY, T0 + 7200, "Count", Stats.of([1.0]))])
    assert metrics.expire(T0 + 7200) == 1
    assert [p.minute for p in metrics.points(0, T0 + 10_000, namespace="Custom/App")] == [T0 + 7200]


def test_invocation_counters_survive_a_restart(store: SqlStore) -> None:
    """Flush, then a new process restores: the same buckets and totals, and recording goes on from them."""
    before = InvocationMetrics()
    for status, model in ((200, 1000.0), (200, 3000.0), (400, 500.0), (500, 800.0)):
        before.record("ep", "AllTraffic", status, model, 100.0, now=T0 + 10)
    before.record("ep", "AllTraffic", 200, 2000.0, 50.0, now=T0 + 70)
    metrics = MetricStore(store)
    assert before.flush(metrics) == 10  # two minutes, five metrics each
    assert before.flush(metrics) == 5  # the newest minute again (it may still grow), nothing older
    after = InvocationMetrics()
    after.restore(metrics, now=T0 + 120)
    for metric in ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors", "ModelLatency", "OverheadLatency"):
        key = ("ep", "AllTraffic", metric)
        assert after.buckets(key, 0, T0 + 600) == before.buckets(key, 0, T0 + 600), metric
    assert after.prometheus() == before.prometheus()
    after.record("ep", "AllTraffic", 200, 1000.0, 10.0, now=T0 + 75)
    after.flush(metrics)
    (minute,) = [p for p in metrics.points(T0 + 60, T0 + 120, namespace="AWS/SageMaker") if p.key[1] == "Invocations"]
    assert minute.stats.count == 2


def test_an_empty_flush_writes_nothing(store: SqlStore) -> None:
    assert InvocationMetrics().flush(MetricStore(store)) == 0
    assert MetricStore(store).series() == []
