"""``constraint_violations.json``: a window's statistics against the baseline's constraints and statistics.

The checks, by SageMaker's names: ``data_type_check`` (the share of values of the expected type
below ``datatype_check_threshold``), ``completeness_check`` (fewer values present than the baseline's
completeness), ``baseline_drift_check`` (the distance between the baseline's and the window's
distributions above ``comparison_threshold``), ``missing_column_check`` and ``extra_column_check``
(features of one dataset the other lacks), ``categorical_values_check`` (the share of a string
feature's values inside its baseline domain below ``domain_content_threshold``).

The distance of a numeric feature is the largest difference between the two cumulative
distributions, each read from its KLL sketch (every retained item weighs ``2**level``); of a
string feature, the largest difference between the shares of one value (``LInfinity``). With the
``Robust`` comparison method a distance must also exceed what two samples of those sizes differ by
by chance (the two-sample Kolmogorov-Smirnov bound at 5%: ``1.36 * sqrt((n + m) / (n * m))``), so a
small window does not report drift from noise alone; ``Simple`` compares with the threshold only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from opensage.monitor.statistics import FRACTIONAL, INTEGRAL, STRING, Column

KS_ALPHA_05 = 1.36


def _weighted(levels: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    items = np.concatenate([np.asarray(level, dtype=np.float64) for level in levels]) if levels else np.array([])
    weights = (
        np.concatenate([np.full(len(level), 2.0**i) for i, level in enumerate(levels)]) if levels else np.array([])
    )
    order = np.argsort(items, kind="stable")
    return items[order], weights[order]


def _cdf(items: np.ndarray, weights: np.ndarray, at: np.ndarray) -> np.ndarray:
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    total = cumulative[-1] or 1.0
    return cumulative[np.searchsorted(items, at, side="right")] / total


def numeric_distance(baseline: dict[str, Any], current: dict[str, Any]) -> float | None:
    """The L-infinity distance between two features' KLL distributions (None: one has no sketch)."""
    try:
        a = baseline["numerical_statistics"]["distribution"]["kll"]["sketch"]["data"]
        b = current["numerical_statistics"]["distribution"]["kll"]["sketch"]["data"]
    except (KeyError, TypeError):
        return None
    items_a, weights_a = _weighted(a)
    items_b, weights_b = _weighted(b)
    if not len(items_a) or not len(items_b):
        return None
    points = np.union1d(items_a, items_b)
    return float(np.max(np.abs(_cdf(items_a, weights_a, points) - _cdf(items_b, weights_b, points))))


def categorical_distance(baseline: dict[str, Any], current: dict[str, Any]) -> float | None:
    """The largest difference between the shares of one value in the two features' distributions."""
    shares = []
    for feature in (baseline, current):
        stats = feature.get("string_statistics") or {}
        buckets = ((stats.get("distribution") or {}).get("categorical") or {}).get("buckets") or []
        present = (stats.get("common") or {}).get("num_present") or sum(b["count"] for b in buckets)
        if not present:
            return None
        shares.append({str(b["value"]): b["count"] / present for b in buckets})
    values = set(shares[0]) | set(shares[1])
    return max((abs(shares[0].get(v, 0.0) - shares[1].get(v, 0.0)) for v in values), default=0.0)


def distance(baseline: dict[str, Any], current: dict[str, Any]) -> float | None:
    if "numerical_statistics" in baseline and "numerical_statistics" in current:
        return numeric_distance(baseline, current)
    if "string_statistics" in baseline and "string_statistics" in current:
        return categorical_distance(baseline, current)
    return None


def distances(baseline_statistics: dict[str, Any], current_statistics: dict[str, Any]) -> dict[str, float]:
    """Each feature both files describe -> its drift distance (what ``feature_baseline_drift_<name>`` reports)."""
    base = {f["name"]: f for f in baseline_statistics.get("features") or []}
    found = {}
    for feature in current_statistics.get("features") or []:
        if feature["name"] in base:
            value = distance(base[feature["name"]], feature)
            if value is not None:
                found[feature["name"]] = value
    return found


def _present(feature: dict[str, Any]) -> int:
    stats = feature.get("numerical_statistics") or feature.get("string_statistics") or {}
    return int((stats.get("common") or {}).get("num_present") or 0)


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def _violation(name: str, check: str, description: str) -> dict[str, str]:
    return {"feature_name": name, "constraint_check_type": check, "description": description}


def violations(
    constraints: dict[str, Any],
    baseline_statistics: dict[str, Any] | None,
    current_statistics: dict[str, Any],
    columns: list[Column],
) -> list[dict[str, str]]:
    """The violations of the window (``current_statistics`` of ``columns``) against the baseline."""
    config = constraints.get("monitoring_config") or {}
    if str(config.get("evaluate_constraints", "Enabled")) == "Disabled":
        return []
    expected = {f["name"]: f for f in constraints.get("features") or []}
    current = {c.name: c for c in columns}
    found: list[dict[str, str]] = []
    counts = f"Number of columns in current dataset: {len(current)}, Number of columns in baseline constraints: "
    for name in expected:
        if name not in current:
            found.append(
                _violation(
                    name,
                    "missing_column_check",
                    f"There are missing columns in current dataset. {counts}{len(expected)}",
                )
            )
    for name in current:
        if name not in expected:
            found.append(
                _violation(
                    name, "extra_column_check", f"There are extra columns in current dataset. {counts}{len(expected)}"
                )
            )
    for name, feature in expected.items():
        col = current.get(name)
        if col is not None:
            found.extend(
                _feature_violations(feature, col, {**config, **(feature.get("monitoringConfigOverrides") or {})})
            )
    found.extend(_drift(config, expected, baseline_statistics, current_statistics))
    return found


def _feature_violations(feature: dict[str, Any], col: Column, config: dict[str, Any]) -> list[dict[str, str]]:
    name, kind = feature["name"], feature.get("inferred_type")
    found = []
    if col.present and kind in (INTEGRAL, FRACTIONAL):
        matching = (col.integral if kind == INTEGRAL else col.numeric) / col.present
        threshold = float(config.get("datatype_check_threshold", 1.0))
        if matching < threshold:
            found.append(
                _violation(
                    name,
                    "data_type_check",
                    (
                        f"Data type match requirement is not met. Expected data type: {kind}, Expected match: "
                        f"{_pct(threshold)}. Observed: Only {_pct(matching)} of data is {kind}."
                    ),
                )
            )
    total = col.present + col.missing
    completeness = col.present / total if total else 0.0
    wanted = float(feature.get("completeness", 0.0))
    if completeness + 1e-9 < wanted:
        found.append(
            _violation(
                name,
                "completeness_check",
                (
                    f"Data completeness requirement is not met. Expected completeness: {_pct(wanted)}. "
                    f"Observed: Only {_pct(completeness)} of data is complete."
                ),
            )
        )
    domains = (feature.get("string_constraints") or {}).get("domains")
    if domains and kind == STRING and col.strings is not None and col.present:
        import pyarrow as pa
        import pyarrow.compute as pc

        inside = pc.sum(pc.is_in(col.strings, value_set=pa.array([str(d) for d in domains]))).as_py() or 0
        share = inside / col.present
        threshold = float(config.get("domain_content_threshold", 1.0))
        if share < threshold:
            found.append(
                _violation(
                    name,
                    "categorical_values_check",
                    (
                        f"Categorical value match requirement is not met. Expected match: {_pct(threshold)}. "
                        f"Observed: Only {_pct(share)} of data is within the baseline domain "
                        f"({', '.join(map(str, domains[:10]))}{'...' if len(domains) > 10 else ''})."
                    ),
                )
            )
    return found


def _drift(
    config: dict[str, Any],
    expected: dict[str, dict[str, Any]],
    baseline_statistics: dict[str, Any] | None,
    current_statistics: dict[str, Any],
) -> list[dict[str, str]]:
    rules = config.get("distribution_constraints") or {}
    if baseline_statistics is None or str(rules.get("perform_comparison", "Enabled")) == "Disabled":
        return []
    base = {f["name"]: f for f in baseline_statistics.get("features") or []}
    found = []
    for feature in current_statistics.get("features") or []:
        name = feature["name"]
        if name not in base or name not in expected:
            continue
        value = distance(base[name], feature)
        if value is None:
            continue
        overrides = {**rules, **(expected[name].get("monitoringConfigOverrides") or {})}
        numeric = "numerical_statistics" in feature
        key = "comparison_threshold" if numeric else "categorical_comparison_threshold"
        threshold = float(overrides.get(key, rules.get("comparison_threshold", 0.1)))
        bound = threshold
        n, m = _present(base[name]), _present(feature)
        if str(overrides.get("comparison_method", "Robust")) == "Robust" and n and m:
            bound = max(threshold, KS_ALPHA_05 * math.sqrt((n + m) / (n * m)))
        if value > bound:
            found.append(
                _violation(
                    name,
                    "baseline_drift_check",
                    (
                        f"Baseline drift distance: {value:.6g} exceeds threshold: {threshold:g}"
                        + (
                            f" (and {bound:.4g}, what samples of {n} and {m} values differ by by chance)"
                            if bound > threshold
                            else ""
                        )
                    ),
                )
            )
    return found
