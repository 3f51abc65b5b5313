"""Multi-model endpoint metrics, as AWS/SageMaker publishes them, per endpoint and variant.

Per invocation: ``ModelCacheHit`` (1 when the target model was loaded already, else 0: its Average
is the hit ratio) and, on a miss, ``ModelLoadingWaitTime`` (how long the request waited for the
model to be downloaded and loaded). Per model load: ``ModelDownloadingTime``, ``ModelLoadingTime``,
per unload ``ModelUnloadingTime`` (all in microseconds). ``LoadedModelCount`` is emitted per
instance: each minute holds one sample per instance (the number of models it holds), so its
Average is the models per instance and its Sum the variant's total.

Samples are aggregated in memory and written to the metric store when the platform flushes the
invocation metrics (every few seconds), so recording stays off the database.
"""

from __future__ import annotations

import threading
import time

from opensage.store.metrics import MetricStore, Point, Stats, dimensions

NAMESPACE = "AWS/SageMaker"
UNITS = {
    "ModelCacheHit": "None",
    "ModelLoadingWaitTime": "Microseconds",
    "ModelDownloadingTime": "Microseconds",
    "ModelLoadingTime": "Microseconds",
    "ModelUnloadingTime": "Microseconds",
    "LoadedModelCount": "None",
}
GAUGE_TTL_S = 120.0  # a gauge nobody refreshed for this long (its endpoint is gone) is no longer written

_Key = tuple[str, str, str]  # endpoint, variant, metric


def _stats(values: list[float]) -> Stats:
    return Stats(float(len(values)), float(sum(values)), min(values), max(values))


class ModelMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[_Key, int], list[float]] = {}
        self._gauges: dict[_Key, dict[str, float]] = {}  # the latest value per instance
        self._refreshed: dict[_Key, float] = {}

    def observe(self, endpoint: str, variant: str, metric: str, value: float, now: float | None = None) -> None:
        """One sample of ``metric`` (added to its minute)."""
        minute = int((time.time() if now is None else now) // 60) * 60
        with self._lock:
            self._pending.setdefault(((endpoint, variant, metric), minute), []).append(float(value))

    def gauge(
        self, endpoint: str, variant: str, instance: str, metric: str, value: float, now: float | None = None
    ) -> None:
        """The current value of a per-instance ``metric``; every minute gets one sample per instance."""
        key = (endpoint, variant, metric)
        with self._lock:
            self._gauges.setdefault(key, {})[instance] = float(value)
            self._refreshed[key] = time.time() if now is None else now

    def drop(self, endpoint: str, variant: str, instance: str, metric: str) -> None:
        """The instance left: its gauge is no longer sampled."""
        with self._lock:
            self._gauges.get((endpoint, variant, metric), {}).pop(instance, None)

    def points(self, now: float | None = None) -> tuple[list[Point], list[Point]]:
        """The samples recorded since the last call (to add) and the gauges' current minutes (to replace)."""
        now = time.time() if now is None else now
        minute = int(now // 60) * 60
        with self._lock:
            pending, self._pending = self._pending, {}
            gauges = {
                key: list(values.values())
                for key, values in self._gauges.items()
                if values and now - self._refreshed.get(key, 0.0) <= GAUGE_TTL_S
            }
        added = [_point(key, m, _stats(values)) for (key, m), values in pending.items()]
        replaced = [_point(key, minute, _stats(values)) for key, values in gauges.items()]
        return added, replaced

    def flush(self, store: MetricStore, now: float | None = None) -> int:
        added, replaced = self.points(now)
        store.add(added)
        store.replace(replaced)
        return len(added) + len(replaced)


def _point(key: _Key, minute: int, stats: Stats) -> Point:
    endpoint, variant, metric = key
    dims = dimensions([("EndpointName", endpoint), ("VariantName", variant)])
    return Point((NAMESPACE, metric, dims), minute, UNITS[metric], stats)
