"""The durable metric store: CloudWatch statistic sets per metric series and minute, in the metadata database.

A series is a namespace, a metric name and a set of dimensions (CloudWatch's identity of a
metric). Each minute keeps SampleCount, Sum, Minimum and Maximum, so every CloudWatch statistic
over any period that is a whole number of minutes can be answered from it. Writers either *add*
samples to a minute (user ``PutMetricData``, training metrics as the job logs them) or *replace* a
minute with an aggregate they keep themselves (the endpoint invocation counters, flushed every few
seconds). Minutes older than the retention are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from opensage.store.sql import SqlStore
from opensage.store.tables import MetricRow

Dimensions = tuple[tuple[str, str], ...]  # sorted (name, value) pairs
SeriesKey = tuple[str, str, Dimensions]  # namespace, metric name, dimensions
RETENTION_S = 15 * 24 * 3600  # CloudWatch keeps one-minute data for 15 days
_KEY_COLUMNS = ["namespace", "name", "dimensions", "minute"]
_STATISTICS = ("unit", "sample_count", "total", "minimum", "maximum")


@dataclass(frozen=True, slots=True)
class Stats:
    """A statistic set: how many samples, their sum, the smallest and the largest."""

    count: float
    total: float
    low: float
    high: float

    @staticmethod
    def of(values: Iterable[float]) -> Stats:
        values = list(values)
        return Stats(float(len(values)), float(sum(values)), min(values), max(values))


@dataclass(frozen=True, slots=True)
class Point:
    key: SeriesKey
    minute: int  # epoch seconds, a multiple of 60
    unit: str
    stats: Stats


def dimensions(items: Iterable[Any]) -> Dimensions:
    """``[{"Name": .., "Value": ..}]`` (or pairs) as the sorted tuple that identifies a series."""
    pairs = [(d["Name"], d["Value"]) if isinstance(d, dict) else (d[0], d[1]) for d in items]
    return tuple(sorted(pairs))


def _dims_text(dims: Dimensions) -> str:
    return json.dumps(list(dims), separators=(",", ":"))


class MetricStore:
    """Metric series in the platform's SQL database (SQLite or PostgreSQL)."""

    def __init__(self, store: SqlStore, retention_s: int = RETENTION_S) -> None:
        self.store = store
        self.retention_s = retention_s

    def _insert(self) -> Any:
        dialect = self.store.engine.dialect.name
        return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(MetricRow)

    @staticmethod
    def _values(point: Point) -> dict[str, Any]:
        namespace, name, dims = point.key
        return {
            "namespace": namespace,
            "name": name,
            "dimensions": _dims_text(dims),
            "minute": point.minute,
            "unit": point.unit,
            "sample_count": point.stats.count,
            "total": point.stats.total,
            "minimum": point.stats.low,
            "maximum": point.stats.high,
        }

    def add(self, points: Iterable[Point]) -> None:
        """Merge samples into their minutes (counts and sums add up, the extremes widen)."""
        table = MetricRow.__table__

        def merged(new: Any) -> dict[str, Any]:
            return {
                "sample_count": table.c.sample_count + new.sample_count,
                "total": table.c.total + new.total,
                "minimum": case((new.minimum < table.c.minimum, new.minimum), else_=table.c.minimum),
                "maximum": case((new.maximum > table.c.maximum, new.maximum), else_=table.c.maximum),
                "unit": case((new.unit == "None", table.c.unit), else_=new.unit),  # a datum without one
            }

        self._upsert(points, merged)

    def replace(self, points: Iterable[Point]) -> None:
        """Write minutes whose whole aggregate the caller keeps (the last write of a minute wins)."""
        self._upsert(points, lambda new: {c: getattr(new, c) for c in _STATISTICS})

    def _upsert(self, points: Iterable[Point], on_conflict: Any) -> None:
        """One INSERT ... ON CONFLICT statement, executed for every point in one round trip."""
        rows = [self._values(p) for p in points]
        if not rows:
            return
        stmt = self._insert()
        stmt = stmt.on_conflict_do_update(index_elements=_KEY_COLUMNS, set_=on_conflict(stmt.excluded))
        with self.store.session() as s:
            s.execute(stmt, rows)

    def series(self, namespace: str | None = None, name: str | None = None) -> list[SeriesKey]:
        q = select(MetricRow.namespace, MetricRow.name, MetricRow.dimensions).distinct()
        if namespace is not None:
            q = q.where(MetricRow.namespace == namespace)
        if name is not None:
            q = q.where(MetricRow.name == name)
        with self.store.session() as s:
            rows = s.execute(q).all()
        return sorted((ns, n, tuple((k, v) for k, v in json.loads(d))) for ns, n, d in rows)

    def points(
        self, start: float, end: float, key: SeriesKey | None = None, namespace: str | None = None
    ) -> list[Point]:
        """The minutes in ``[start, end)`` of one series, or of every series of ``namespace``, oldest first."""
        q = select(MetricRow).where(MetricRow.minute >= int(start), MetricRow.minute < end)
        if key is not None:
            q = q.where(
                and_(
                    MetricRow.namespace == key[0], MetricRow.name == key[1], MetricRow.dimensions == _dims_text(key[2])
                )
            )
        elif namespace is not None:
            q = q.where(MetricRow.namespace == namespace)
        with self.store.session() as s:
            rows = s.scalars(q.order_by(MetricRow.minute)).all()
        return [
            Point(
                (r.namespace, r.name, tuple((k, v) for k, v in json.loads(r.dimensions))),
                int(r.minute),
                r.unit,
                Stats(r.sample_count, r.total, r.minimum, r.maximum),
            )
            for r in rows
        ]

    def expire(self, now: float) -> int:
        """Drop the minutes older than the retention; returns how many."""
        with self.store.session() as s:
            result = s.execute(delete(MetricRow).where(MetricRow.minute < now - self.retention_s))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]
