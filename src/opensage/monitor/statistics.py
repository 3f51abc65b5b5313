"""``statistics.json`` and ``constraints.json`` in SageMaker's shapes, from an Arrow table.

Per feature: the inferred type (Integral, Fractional, String, or Unknown when every value is
missing), present and missing counts; for numbers the mean, sum, population standard deviation, min,
max, ten equal-width buckets between min and max, and a KLL sketch (Apache DataSketches, k = 2048)
whose retained items are written level by level as the ``sketch.data`` lists; for strings the
distinct count and the counts of the most frequent values. Suggested constraints: the type, the
completeness, ``is_non_negative`` for numbers, the domain of a string feature of small cardinality,
and the default ``monitoring_config``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasketches import kll_doubles_sketch

INTEGRAL, FRACTIONAL, STRING, UNKNOWN = "Integral", "Fractional", "String", "Unknown"
KLL_K = 2048
KLL_C = 0.64
BUCKETS = 10
TOP_VALUES = 10
DOMAIN_MAX_VALUES = 20  # a string feature with at most this many distinct values gets a domain constraint


@dataclass(slots=True)
class Column:
    """One feature's values as the analyzer sees them."""

    name: str
    inferred_type: str
    present: int
    missing: int
    numbers: np.ndarray | None  # the present values, for Integral and Fractional
    strings: pa.Array | None  # the present values as text, for String
    integral: int = 0  # how many present values are integers
    numeric: int = 0  # how many present values are numbers


def column(name: str, values: pa.ChunkedArray | pa.Array) -> Column:
    """Types and values of one column (text that reads as numbers counts as numbers)."""
    present_values = pc.drop_null(values)
    present, missing = len(present_values), len(values) - len(present_values)
    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        numbers = np.asarray(present_values.cast(pa.int64()).to_numpy(), dtype=np.float64)
        return Column(name, INTEGRAL if present else UNKNOWN, present, missing, numbers, None, present, present)
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        numbers = np.asarray(present_values.cast(pa.float64()).to_numpy(), dtype=np.float64)
        return Column(name, FRACTIONAL if present else UNKNOWN, present, missing, numbers, None, 0, present)
    text = present_values.cast(pa.string())
    if not present:
        return Column(name, UNKNOWN, 0, missing, None, None)
    parsed = _parse_numbers(text)
    numeric = int(np.count_nonzero(~np.isnan(parsed)))
    integral = int(np.count_nonzero(_is_integer_text(text)))
    if numeric == present:
        kind_name = INTEGRAL if integral == present else FRACTIONAL
        return Column(name, kind_name, present, missing, parsed, None, integral, numeric)
    return Column(name, STRING, present, missing, None, text, integral, numeric)


def _parse_numbers(text: pa.ChunkedArray | pa.Array) -> np.ndarray:
    stripped = pc.utf8_trim_whitespace(text)
    ok = pc.match_substring_regex(stripped, r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
    cleaned = pc.if_else(ok, stripped, pa.scalar(None, pa.string()))
    return np.asarray(pc.cast(cleaned, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _is_integer_text(text: pa.ChunkedArray | pa.Array) -> np.ndarray:
    matched = pc.match_substring_regex(pc.utf8_trim_whitespace(text), r"^[+-]?\d+$")
    return np.asarray(matched.to_numpy(zero_copy_only=False), dtype=bool)


def sketch_of(numbers: np.ndarray) -> kll_doubles_sketch:
    sketch = kll_doubles_sketch(KLL_K)
    if len(numbers):  # the binding takes a contiguous, writable float64 array
        sketch.update(numbers if numbers.flags.writeable and numbers.flags.c_contiguous else numbers.copy())
    return sketch


def sketch_levels(sketch: kll_doubles_sketch) -> list[list[float]]:
    """The sketch's retained items by level (an item of level ``i`` stands for ``2**i`` values)."""
    levels: dict[int, list[float]] = {}
    for item, weight in sketch:
        levels.setdefault(int(weight).bit_length() - 1, []).append(float(item))
    return [sorted(levels.get(i, [])) for i in range(max(levels) + 1)] if levels else [[]]


def _buckets(numbers: np.ndarray, low: float, high: float) -> list[dict[str, float]]:
    if not len(numbers):
        return []
    if high == low:
        return [{"lower_bound": low, "upper_bound": high, "count": float(len(numbers))}]
    counts, edges = np.histogram(numbers, bins=BUCKETS, range=(low, high))
    return [
        {"lower_bound": float(edges[i]), "upper_bound": float(edges[i + 1]), "count": float(counts[i])}
        for i in range(BUCKETS)
    ]


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


def feature_statistics(col: Column) -> dict[str, Any]:
    common = {"num_present": col.present, "num_missing": col.missing}
    feature: dict[str, Any] = {"name": col.name, "inferred_type": col.inferred_type}
    if col.numbers is not None and col.inferred_type in (INTEGRAL, FRACTIONAL):
        numbers = col.numbers
        low, high = (float(numbers.min()), float(numbers.max())) if len(numbers) else (0.0, 0.0)
        sketch = sketch_of(numbers)
        feature["numerical_statistics"] = {
            "common": common,
            "mean": _finite(float(numbers.mean())) if len(numbers) else 0.0,
            "sum": _finite(float(numbers.sum())),
            "std_dev": _finite(float(numbers.std())) if len(numbers) else 0.0,
            "min": low,
            "max": high,
            "distribution": {
                "kll": {
                    "buckets": _buckets(numbers, low, high),
                    "sketch": {"parameters": {"c": KLL_C, "k": float(KLL_K)}, "data": sketch_levels(sketch)},
                }
            },
        }
    elif col.strings is not None:
        counts = pc.value_counts(col.strings)
        values = counts.field("values").to_pylist()
        numbers = counts.field("counts").to_numpy()
        order = np.argsort(-numbers, kind="stable")
        feature["string_statistics"] = {
            "common": common,
            "distinct_count": float(len(values)),
            "distribution": {
                "categorical": {"buckets": [{"value": values[i], "count": int(numbers[i])} for i in order[:TOP_VALUES]]}
            },
        }
    else:
        feature["string_statistics"] = {"common": common, "distinct_count": 0.0}
    return feature


def columns_of(table: pa.Table) -> list[Column]:
    return [column(name, table.column(name)) for name in table.column_names]


def statistics(columns: list[Column], item_count: int) -> dict[str, Any]:
    """``statistics.json``."""
    return {
        "version": 0.0,
        "dataset": {"item_count": item_count},
        "features": [feature_statistics(c) for c in columns],
    }


def default_monitoring_config(categorical_drift_method: str | None = None) -> dict[str, Any]:
    return {
        "evaluate_constraints": "Enabled",
        "emit_metrics": "Enabled",
        "datatype_check_threshold": 1.0,
        "domain_content_threshold": 1.0,
        "distribution_constraints": {
            "perform_comparison": "Enabled",
            "comparison_threshold": 0.1,
            "comparison_method": "Robust",
            "categorical_comparison_threshold": 0.1,
            "categorical_drift_method": categorical_drift_method or "LInfinity",
        },
    }


def constraints(columns: list[Column], categorical_drift_method: str | None = None) -> dict[str, Any]:
    """``constraints.json`` suggested for the baseline ``columns``."""
    features = []
    for col in columns:
        total = col.present + col.missing
        feature: dict[str, Any] = {
            "name": col.name,
            "inferred_type": col.inferred_type,
            "completeness": col.present / total if total else 0.0,
        }
        if col.numbers is not None and col.inferred_type in (INTEGRAL, FRACTIONAL):
            feature["num_constraints"] = {"is_non_negative": bool(len(col.numbers) and col.numbers.min() >= 0)}
        elif col.strings is not None:
            distinct = pc.unique(col.strings).to_pylist()
            if len(distinct) <= DOMAIN_MAX_VALUES:
                feature["string_constraints"] = {"domains": sorted(str(v) for v in distinct)}
        features.append(feature)
    return {
        "version": 0.0,
        "features": features,
        "monitoring_config": default_monitoring_config(categorical_drift_method),
    }
