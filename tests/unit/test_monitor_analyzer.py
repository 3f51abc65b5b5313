"""The model-monitor analyzer: statistics against pandas, suggested constraints, and each violation check."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opensage.monitor import analyzer, checks

DATASET_CSV = '{"csv": {"header": true, "output_columns_position": "START"}}'


def _frame(rows: int = 2000, seed: int = 0, missing: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.normal(50.0, 10.0, rows),
            "count": rng.integers(0, 9, rows),
            "ratio": rng.uniform(-1.0, 1.0, rows),
            "colour": rng.choice(["red", "green", "blue"], rows),
        }
    )
    if missing:
        frame.loc[[5, 17, 99], "ratio"] = np.nan
    return frame


def _baseline(tmp_path: Path, frame: pd.DataFrame, header: bool = True) -> tuple[dict, dict]:
    (tmp_path / "in").mkdir(exist_ok=True)
    frame.to_csv(tmp_path / "in" / "data.csv", index=False, header=header)
    env = {
        "dataset_format": json.dumps({"csv": {"header": header}}),
        "dataset_source": str(tmp_path / "in"),
        "output_path": str(tmp_path / "out"),
    }
    analyzer.run(env)
    return (
        json.loads((tmp_path / "out" / "statistics.json").read_text()),
        json.loads((tmp_path / "out" / "constraints.json").read_text()),
    )


def test_statistics_match_pandas(tmp_path: Path) -> None:
    frame = _frame()
    statistics, _ = _baseline(tmp_path, frame)
    assert statistics["dataset"] == {"item_count": len(frame)}
    features = {f["name"]: f for f in statistics["features"]}
    assert [f["name"] for f in statistics["features"]] == list(frame.columns)
    assert {n: f["inferred_type"] for n, f in features.items()} == {
        "amount": "Fractional",
        "count": "Integral",
        "ratio": "Fractional",
        "colour": "String",
    }
    for name in ("amount", "count", "ratio"):
        column = frame[name].dropna()
        numeric = features[name]["numerical_statistics"]
        assert numeric["common"] == {"num_present": len(column), "num_missing": int(frame[name].isna().sum())}
        assert numeric["mean"] == pytest.approx(column.mean())
        assert numeric["sum"] == pytest.approx(column.sum())
        assert numeric["std_dev"] == pytest.approx(column.std(ddof=0))
        assert (numeric["min"], numeric["max"]) == (column.min(), column.max())
        kll = numeric["distribution"]["kll"]
        assert len(kll["buckets"]) == 10 and sum(b["count"] for b in kll["buckets"]) == len(column)
        assert kll["buckets"][0]["lower_bound"] == column.min() and kll["buckets"][-1]["upper_bound"] == column.max()
        assert kll["sketch"]["parameters"] == {"c": 0.64, "k": 2048.0}
        items = sorted(v for level in kll["sketch"]["data"] for v in level)
        assert len(items) == len(column)  # fewer values than k: the sketch keeps every one, at level 0
        assert items == sorted(column.tolist())
    colour = features["colour"]["string_statistics"]
    assert colour["distinct_count"] == 3.0
    counts = frame["colour"].value_counts()
    assert {b["value"]: b["count"] for b in colour["distribution"]["categorical"]["buckets"]} == counts.to_dict()


def test_a_large_column_is_a_sketch_whose_quantiles_are_close(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.exponential(2.0, 200_000)})
    statistics, _ = _baseline(tmp_path, frame)
    data = statistics["features"][0]["numerical_statistics"]["distribution"]["kll"]["sketch"]["data"]
    assert len(data) > 1 and sum(len(level) for level in data) < 20_000
    items = np.concatenate([np.asarray(level) for level in data])
    weights = np.concatenate([np.full(len(level), 2.0**i) for i, level in enumerate(data)])
    assert weights.sum() == pytest.approx(len(frame), rel=0.01)
    order = np.argsort(items)
    cdf = np.cumsum(weights[order]) / weights.sum()
    median = items[order][np.searchsorted(cdf, 0.5)]
    assert median == pytest.approx(frame["x"].median(), rel=0.02)


def test_suggested_constraints(tmp_path: Path) -> None:
    _, constraints = _baseline(tmp_path, _frame())
    features = {f["name"]: f for f in constraints["features"]}
    assert features["count"]["num_constraints"] == {"is_non_negative": True}
    assert features["amount"]["completeness"] == 1.0
    assert features["ratio"]["completeness"] == pytest.approx(1 - 3 / 2000)
    assert features["colour"]["string_constraints"] == {"domains": ["blue", "green", "red"]}
    config = constraints["monitoring_config"]
    assert config["distribution_constraints"]["comparison_threshold"] == 0.1
    assert config["evaluate_constraints"] == "Enabled"


def test_a_csv_without_header_names_columns_as_sagemaker_does(tmp_path: Path) -> None:
    statistics, _ = _baseline(tmp_path, _frame(200), header=False)
    assert [f["name"] for f in statistics["features"]] == ["_c0", "_c1", "_c2", "_c3"]


def _capture(directory: Path, frame: pd.DataFrame, moment: dt.datetime, output: bool = True) -> None:
    hour = directory / "ep" / "AllTraffic" / moment.strftime("%Y/%m/%d/%H")
    hour.mkdir(parents=True, exist_ok=True)
    lines = []
    for row in frame.itertuples(index=False):
        data = ",".join("" if (isinstance(v, float) and np.isnan(v)) else str(v) for v in row)
        captured = {
            "endpointInput": {"observedContentType": "text/csv", "mode": "INPUT", "data": data, "encoding": "CSV"}
        }
        if output:
            captured["endpointOutput"] = {
                "observedContentType": "text/csv",
                "mode": "OUTPUT",
                "data": "0.5",
                "encoding": "CSV",
            }
        lines.append(
            json.dumps(
                {
                    "captureData": captured,
                    "eventMetadata": {"eventId": "e", "inferenceTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ")},
                    "eventVersion": "0",
                }
            )
        )
    (hour / "00-00-000-x.jsonl").write_text("\n".join(lines) + "\n")


def _monitor(tmp_path: Path, current: pd.DataFrame, start: str = "2026-01-01T10:00:00Z", output: bool = True) -> dict:
    _baseline(tmp_path, _frame())
    capture = tmp_path / "capture"
    _capture(capture, current, dt.datetime(2026, 1, 1, 10, 30, tzinfo=dt.UTC), output)
    env = {
        "dataset_format": '{"sagemakerCaptureJson": {"captureIndexNames": ["endpointInput", "endpointOutput"]}}',
        "dataset_source": str(capture),
        "output_path": str(tmp_path / "result"),
        "baseline_constraints": str(tmp_path / "out" / "constraints.json"),
        "baseline_statistics": str(tmp_path / "out" / "statistics.json"),
        "start_time": start,
        "end_time": "2026-01-01T11:00:00Z",
    }
    analyzer.run(env)
    return json.loads((tmp_path / "result" / "constraint_violations.json").read_text())


def test_a_shifted_feature_is_the_one_drift_violation(tmp_path: Path) -> None:
    current = _frame(500, seed=7, missing=False)
    current["amount"] += 25.0
    found = _monitor(tmp_path, current)["violations"]
    assert [(v["feature_name"], v["constraint_check_type"]) for v in found] == [("amount", "baseline_drift_check")]
    assert found[0]["description"].startswith("Baseline drift distance: ")


def test_same_distribution_has_no_violations(tmp_path: Path) -> None:
    assert _monitor(tmp_path, _frame(500, seed=11, missing=False))["violations"] == []


def test_type_completeness_and_domain_checks(tmp_path: Path) -> None:
    current = _frame(400, seed=5, missing=False)
    current["count"] = current["count"].astype(float) + 0.5
    current.loc[:199, "amount"] = np.nan
    current.loc[:99, "colour"] = "purple"
    checks_found = {(v["feature_name"], v["constraint_check_type"]) for v in _monitor(tmp_path, current)["violations"]}
    assert ("count", "data_type_check") in checks_found
    assert ("amount", "completeness_check") in checks_found
    assert ("colour", "categorical_values_check") in checks_found


def test_missing_and_extra_columns(tmp_path: Path) -> None:
    current = _frame(300, seed=2, missing=False).drop(columns=["colour"])
    found = _monitor(tmp_path, current, output=False)["violations"]
    assert [(v["feature_name"], v["constraint_check_type"]) for v in found] == [("colour", "missing_column_check")]
    assert (
        "Number of columns in current dataset: 3, Number of columns in baseline constraints: 4"
        in (found[0]["description"])
    )
    current = _frame(300, seed=2, missing=False)
    current["more"] = 1.0
    found = _monitor(tmp_path, current, output=False)["violations"]
    assert [(v["feature_name"], v["constraint_check_type"]) for v in found] == [("_c4", "extra_column_check")]


def test_an_empty_window_says_which_window_and_where(tmp_path: Path) -> None:
    with pytest.raises(analyzer.AnalyzerError, match="No captured records between 2026-01-01T10:45:00Z"):
        _monitor(tmp_path, _frame(50, missing=False), start="2026-01-01T10:45:00Z")


def test_distances_are_zero_for_the_same_statistics(tmp_path: Path) -> None:
    statistics, _ = _baseline(tmp_path, _frame())
    assert checks.distances(statistics, statistics) == {"amount": 0.0, "count": 0.0, "ratio": 0.0, "colour": 0.0}
