"""Endpoint invocation metrics, as AWS/SageMaker publishes them, per endpoint and variant.

Each metric keeps one-minute buckets (SampleCount, Sum, Minimum, Maximum) for the last
``retention_minutes``, which the CloudWatch API reads, plus running totals for Prometheus, plus a
per-minute latency histogram per endpoint (log-spaced bins, about 4 % wide) for percentiles.
Latencies are in microseconds, as AWS reports ``ModelLatency`` and ``OverheadLatency``.
Recording is O(1): one lock, one dictionary lookup, a handful of additions.

The minutes are durable: :meth:`InvocationMetrics.flush` writes the minutes that changed since the
last flush to the metric store (the platform calls it every few seconds and at shutdown), and
:meth:`InvocationMetrics.restore` loads them back at start-up, so CloudWatch answers the same
after a restart. The latency histograms behind the percentiles are not kept.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

from opensage.serving.modelmetrics import ModelMetrics
from opensage.store.metrics import MetricStore, Point, Stats, dimensions

NAMESPACE = "AWS/SageMaker"
METRICS = ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors", "ModelLatency", "OverheadLatency")
UNITS = {
    "Invocations": "None",
    "Invocation4XXErrors": "None",
    "Invocation5XXErrors": "None",
    "ModelLatency": "Microseconds",
    "OverheadLatency": "Microseconds",
}
_BINS_PER_OCTAVE = 16


@dataclass(slots=True)
class Bucket:
    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value < self.low:
            self.low = value
        if value > self.high:
            self.high = value


@dataclass(slots=True)
class _Minute:
    """One minute of one endpoint variant, kept as plain numbers (recording stays a few additions).

    Invocations and the two error counts get one sample per request, so their buckets follow from
    the request count; the two latencies keep their own sum, minimum and maximum.
    """

    count: int = 0
    client_errors: int = 0
    server_errors: int = 0
    model_sum: float = 0.0
    model_low: float = float("inf")
    model_high: float = float("-inf")
    overhead_sum: float = 0.0
    overhead_low: float = float("inf")
    overhead_high: float = float("-inf")

    def add(self, status: int, model_us: float, overhead_us: float) -> None:
        self.count += 1
        if status >= 400:
            if status >= 500:
                self.server_errors += 1
            else:
                self.client_errors += 1
        self.model_sum += model_us
        if model_us < self.model_low:
            self.model_low = model_us
        if model_us > self.model_high:
            self.model_high = model_us
        self.overhead_sum += overhead_us
        if overhead_us < self.overhead_low:
            self.overhead_low = overhead_us
        if overhead_us > self.overhead_high:
            self.overhead_high = overhead_us

    def bucket(self, metric: str) -> Bucket:
        n = self.count
        if metric == "Invocations":
            return Bucket(n, float(n), 1.0, 1.0)
        if metric in ("Invocation4XXErrors", "Invocation5XXErrors"):
            errors = self.client_errors if metric == "Invocation4XXErrors" else self.server_errors
            return Bucket(n, float(errors), 0.0 if errors < n else 1.0, 1.0 if errors else 0.0)
        if metric == "ModelLatency":
            return Bucket(n, self.model_sum, self.model_low, self.model_high)
        return Bucket(n, self.overhead_sum, self.overhead_low, self.overhead_high)


@dataclass(slots=True)
class _Series:
    """One endpoint and variant: its minutes, its running totals, and the minute being written."""

    minutes: dict[int, _Minute] = field(default_factory=dict)
    totals: _Minute = field(default_factory=_Minute)
    minute: int = -1
    current: _Minute = field(default_factory=_Minute)


Key = tuple[str, str, str]  # endpoint, variant, metric


def _bin(us: float) -> int:
    return int(math.log2(us) * _BINS_PER_OCTAVE) if us >= 1.0 else 0


def _bin_value(index: int) -> float:
    return float(2 ** ((index + 0.5) / _BINS_PER_OCTAVE))


class InvocationMetrics:
    def __init__(self, retention_minutes: int = 24 * 60) -> None:
        self.retention = retention_minutes * 60
        self._series: dict[tuple[str, str], _Series] = {}
        self._latency: dict[str, dict[int, dict[int, int]]] = {}  # endpoint -> minute -> bin -> count
        self._lock = threading.Lock()
        self._flushed = -1  # the newest minute the last flush wrote (it is written again: it may have grown)
        self.models = ModelMetrics()  # multi-model endpoints' load and cache metrics, flushed with these

    def record(
        self, endpoint: str, variant: str, status: int, model_us: float, overhead_us: float, now: float | None = None
    ) -> None:
        """One invocation: its HTTP status towards the caller and its two latencies."""
        now = time.time() if now is None else now
        minute = int(now // 60) * 60
        with self._lock:
            series = self._series.get((endpoint, variant))
            if series is None:
                series = self._series[(endpoint, variant)] = _Series()
            if series.minute != minute:
                self._roll(series, minute)
            series.current.add(status, model_us, overhead_us)
            series.totals.add(status, model_us, overhead_us)
            minutes = self._latency.get(endpoint)
            if minutes is None:
                minutes = self._latency[endpoint] = {}
            histogram = minutes.get(minute)
            if histogram is None:
                histogram = minutes[minute] = {}
                for old in [m for m in minutes if m < minute - self.retention]:
                    del minutes[old]
            index = _bin(model_us + overhead_us)
            histogram[index] = histogram.get(index, 0) + 1

    def _roll(self, series: _Series, minute: int) -> None:
        current = series.minutes.get(minute)
        if current is None:
            current = series.minutes[minute] = _Minute()
            for old in [m for m in series.minutes if m < minute - self.retention]:
                del series.minutes[old]
        series.minute, series.current = minute, current

    # --- durability -----------------------------------------------------------------------------

    def flush(self, store: MetricStore) -> int:
        """Write every minute recorded into since the last flush; returns how many points."""
        with self._lock:
            since = self._flushed
            changed = [
                (endpoint, variant, minute, _copy(m))
                for (endpoint, variant), series in self._series.items()
                for minute, m in series.minutes.items()
                if minute >= since
            ]
            self._flushed = max((c[2] for c in changed), default=since)
        points = [
            Point(
                (NAMESPACE, metric, dimensions([("EndpointName", endpoint), ("VariantName", variant)])),
                minute,
                UNITS[metric],
                _stats(m.bucket(metric)),
            )
            for endpoint, variant, minute, m in changed
            for metric in METRICS
        ]
        store.replace(points)
        return len(points) + self.models.flush(store)

    def restore(self, store: MetricStore, now: float | None = None) -> None:
        """Load the stored minutes of the retention window (at start-up, before any invocation)."""
        now = time.time() if now is None else now
        loaded: dict[tuple[str, str, int], dict[str, Stats]] = {}
        for point in store.points(now - self.retention, now + 60, namespace=NAMESPACE):
            dims = dict(point.key[2])
            if set(dims) == {"EndpointName", "VariantName"} and point.key[1] in METRICS:
                loaded.setdefault((dims["EndpointName"], dims["VariantName"], point.minute), {})[point.key[1]] = (
                    point.stats
                )
        with self._lock:
            for (endpoint, variant, minute), stats in loaded.items():
                series = self._series.setdefault((endpoint, variant), _Series())
                m = series.minutes[minute] = _minute_from(stats)
                _merge_into(series.totals, m)
            self._flushed = max((k[2] for k in loaded), default=-1)

    def series(self) -> list[Key]:
        with self._lock:
            return [(endpoint, variant, metric) for (endpoint, variant) in self._series for metric in METRICS]

    def invocations(self, endpoint: str, variant: str) -> int:
        """How many requests the variant has answered since this server started (the autoscaler's counter)."""
        with self._lock:
            series = self._series.get((endpoint, variant))
            return series.totals.count if series is not None else 0

    def buckets(self, key: Key, start: float, end: float) -> list[tuple[int, Bucket]]:
        with self._lock:
            series = self._series.get((key[0], key[1]))
            if series is None or key[2] not in METRICS:
                return []
            return sorted((m, b.bucket(key[2])) for m, b in series.minutes.items() if start <= m < end)

    def latency_percentiles(
        self, endpoint: str, minute: int, quantiles: tuple[float, ...] = (0.5, 0.99)
    ) -> tuple[float, ...] | None:
        """Invocation latency (model + overhead, microseconds) at ``quantiles`` over one minute of an
        endpoint (all variants), or None when it had no invocations then."""
        with self._lock:
            histogram = dict(self._latency.get(endpoint, {}).get(int(minute // 60) * 60, {}))
        total = sum(histogram.values())
        if not total:
            return None
        ordered = sorted(histogram.items())
        out = []
        for q in quantiles:
            rank, seen = q * total, 0
            for index, count in ordered:
                seen += count
                if seen >= rank:
                    out.append(_bin_value(index))
                    break
        return tuple(out)

    def prometheus(self) -> str:
        """Prometheus text exposition of the running totals."""
        lines = []
        with self._lock:
            items = sorted((key, {m: s.totals.bucket(m) for m in METRICS}) for key, s in self._series.items())
        for metric in METRICS:
            name = "opensage_endpoint_" + "".join("_" + c.lower() if c.isupper() else c for c in metric).lstrip("_")
            if not items:
                continue
            if metric in ("ModelLatency", "OverheadLatency"):
                lines.append(f"# TYPE {name}_microseconds summary")
                for (endpoint, variant), totals in items:
                    labels = f'endpoint="{endpoint}",variant="{variant}"'
                    lines.append(f"{name}_microseconds_sum{{{labels}}} {totals[metric].total}")
                    lines.append(f"{name}_microseconds_count{{{labels}}} {totals[metric].count}")
            else:
                lines.append(f"# TYPE {name}_total counter")
                for (endpoint, variant), totals in items:
                    lines.append(f'{name}_total{{endpoint="{endpoint}",variant="{variant}"}} {totals[metric].total}')
        return "\n".join(lines) + "\n"


def _stats(b: Bucket) -> Stats:
    return Stats(float(b.count), b.total, b.low, b.high)


def _copy(m: _Minute) -> _Minute:
    return _Minute(
        m.count,
        m.client_errors,
        m.server_errors,
        m.model_sum,
        m.model_low,
        m.model_high,
        m.overhead_sum,
        m.overhead_low,
        m.overhead_high,
    )


def _minute_from(stats: dict[str, Stats]) -> _Minute:
    """A minute back from its five stored statistic sets."""
    calls = stats.get("Invocations", Stats(0, 0, 0, 0))
    model = stats.get("ModelLatency", Stats(0, 0.0, float("inf"), float("-inf")))
    overhead = stats.get("OverheadLatency", Stats(0, 0.0, float("inf"), float("-inf")))
    return _Minute(
        int(calls.count),
        int(stats.get("Invocation4XXErrors", Stats(0, 0, 0, 0)).total),
        int(stats.get("Invocation5XXErrors", Stats(0, 0, 0, 0)).total),
        model.total,
        model.low,
        model.high,
        overhead.total,
        overhead.low,
        overhead.high,
    )


def _merge_into(total: _Minute, m: _Minute) -> None:
    total.count += m.count
    total.client_errors += m.client_errors
    total.server_errors += m.server_errors
    total.model_sum += m.model_sum
    total.model_low = min(total.model_low, m.model_low)
    total.model_high = max(total.model_high, m.model_high)
    total.overhead_sum += m.overhead_sum
    total.overhead_low = min(total.overhead_low, m.overhead_low)
    total.overhead_high = max(total.overhead_high, m.overhead_high)
