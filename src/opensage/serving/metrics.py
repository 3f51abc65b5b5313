"""Endpoint invocation metrics, as AWS/SageMaker publishes them, per endpoint and variant.

Each metric keeps one-minute buckets (SampleCount, Sum, Minimum, Maximum) for the last
``retention_minutes``, which the CloudWatch API reads, plus running totals for Prometheus.
Latencies are in microseconds, as AWS reports ``ModelLatency`` and ``OverheadLatency``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

NAMESPACE = "AWS/SageMaker"
METRICS = ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors", "ModelLatency", "OverheadLatency")
UNITS = {
    "Invocations": "None",
    "Invocation4XXErrors": "None",
    "Invocation5XXErrors": "None",
    "ModelLatency": "Microseconds",
    "OverheadLatency": "Microseconds",
}


@dataclass(slots=True)
class Bucket:
    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)


Key = tuple[str, str, str]  # endpoint, variant, metric
_BINS_PER_DOUBLING = 8  # latency histogram resolution: each bin spans about 9%


class InvocationMetrics:
    def __init__(self, retention_minutes: int = 24 * 60) -> None:
        self.retention = retention_minutes * 60
        self._buckets: dict[Key, dict[int, Bucket]] = defaultdict(dict)
        self._totals: dict[Key, Bucket] = defaultdict(Bucket)
        # (endpoint, variant) -> minute -> log-spaced bin -> count, of model + overhead latency
        self._latency: dict[tuple[str, str], dict[int, Counter[int]]] = defaultdict(dict)
        self._lock = threading.Lock()

    def _add(self, key: Key, value: float, now: float) -> None:
        minute = int(now // 60) * 60
        buckets = self._buckets[key]
        bucket = buckets.get(minute)
        if bucket is None:
            bucket = buckets[minute] = Bucket()
            for old in [m for m in buckets if m < minute - self.retention]:
                del buckets[old]
        bucket.add(value)
        self._totals[key].add(value)

    def record(
        self, endpoint: str, variant: str, status: int, model_us: float, overhead_us: float, now: float | None = None
    ) -> None:
        """One invocation: its HTTP status towards the caller and its two latencies."""
        now = time.time() if now is None else now
        with self._lock:
            self._add((endpoint, variant, "Invocations"), 1, now)
            self._add((endpoint, variant, "Invocation4XXErrors"), 1 if 400 <= status < 500 else 0, now)
            self._add((endpoint, variant, "Invocation5XXErrors"), 1 if status >= 500 else 0, now)
            self._add((endpoint, variant, "ModelLatency"), model_us, now)
            self._add((endpoint, variant, "OverheadLatency"), overhead_us, now)
            self._add_latency((endpoint, variant), model_us + overhead_us, now)

    def _add_latency(self, key: tuple[str, str], micros: float, now: float) -> None:
        minute = int(now // 60) * 60
        minutes = self._latency[key]
        if minute not in minutes:
            minutes[minute] = Counter()
            for old in [m for m in minutes if m < minute - self.retention]:
                del minutes[old]
        minutes[minute][round(math.log2(max(micros, 1.0)) * _BINS_PER_DOUBLING)] += 1

    def latency_percentiles(
        self, endpoint: str, minute: int, quantiles: tuple[float, ...] = (0.5, 0.99)
    ) -> list[float] | None:
        """Approximate percentiles (microseconds, within ~5%) of one minute's invocation latency, all variants."""
        with self._lock:
            merged: Counter[int] = Counter()
            for (name, _), minutes in self._latency.items():
                if name == endpoint and minute in minutes:
                    merged.update(minutes[minute])
        total = sum(merged.values())
        if not total:
            return None
        out, bins = [], sorted(merged.items())
        for q in quantiles:
            seen, rank = 0, q * total
            for b, n in bins:
                seen += n
                if seen >= rank:
                    out.append(2 ** (b / _BINS_PER_DOUBLING))
                    break
        return out

    def series(self) -> list[Key]:
        with self._lock:
            return list(self._buckets)

    def buckets(self, key: Key, start: float, end: float) -> list[tuple[int, Bucket]]:
        with self._lock:
            return sorted((m, b) for m, b in self._buckets.get(key, {}).items() if start <= m < end)

    def prometheus(self) -> str:
        """Prometheus text exposition of the running totals."""
        lines = []
        with self._lock:
            items = sorted(self._totals.items())
        for metric in METRICS:
            name = "opensage_endpoint_" + "".join("_" + c.lower() if c.isupper() else c for c in metric).lstrip("_")
            rows = [(k, b) for k, b in items if k[2] == metric]
            if not rows:
                continue
            if metric in ("ModelLatency", "OverheadLatency"):
                lines.append(f"# TYPE {name}_microseconds summary")
                for (endpoint, variant, _), b in rows:
                    labels = f'endpoint="{endpoint}",variant="{variant}"'
                    lines.append(f"{name}_microseconds_sum{{{labels}}} {b.total}")
                    lines.append(f"{name}_microseconds_count{{{labels}}} {b.count}")
            else:
                lines.append(f"# TYPE {name}_total counter")
                for (endpoint, variant, _), b in rows:
                    lines.append(f'{name}_total{{endpoint="{endpoint}",variant="{variant}"}} {b.total}')
        return "\n".join(lines) + "\n"
