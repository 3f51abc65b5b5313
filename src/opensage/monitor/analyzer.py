"""The ``sagemaker-model-monitor-analyzer`` image: its environment variables in, its report files out.

As SageMaker's container: ``dataset_format`` (JSON: ``{"csv": {"header": true}}``, ``{"json":
{"lines": true}}``, ``{"parquet": {}}`` or ``{"sagemakerCaptureJson": {...}}``), ``dataset_source``
(the directory of the data), ``output_path`` (where the files go). A baselining job writes
``statistics.json`` and ``constraints.json``; a monitoring job (``baseline_constraints`` and
``baseline_statistics`` give the baseline's files, ``start_time`` and ``end_time`` the window of
captured records) writes the window's ``statistics.json`` and ``constraint_violations.json``.
A pipeline's QualityCheck job gives a plain dataset with ``baseline_constraints`` (and
``baseline_statistics``): it writes the dataset's ``statistics.json`` and ``constraints.json`` and its
``constraint_violations.json`` against that baseline. ``categorical_drift_method`` sets the
suggested constraints' method.

LIMITATIONS: ``record_preprocessor_script`` and ``post_analytics_processor_script`` are refused
(the job fails saying so); ``ChiSquared`` is measured as ``LInfinity``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opensage.monitor import CONSTRAINTS_FILE, STATISTICS_FILE, VIOLATIONS_FILE, checks, datasets
from opensage.monitor import statistics as stats

CAPTURE_FORMAT = "sagemakerCaptureJson"


class AnalyzerError(Exception):
    """The job cannot run as asked; the message says what to fix."""


def _time(text: str | None, name: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise AnalyzerError(f"{name} {text!r} is not an ISO 8601 time such as 2026-01-01T12:00:00Z.") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _read_json(path: str, name: str) -> dict[str, Any]:
    try:
        return dict(json.loads(Path(path).read_text()))
    except FileNotFoundError as exc:
        raise AnalyzerError(f"{name} {path} does not exist; check the baseline's S3 URI.") from exc
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise AnalyzerError(f"{name} {path} is not a JSON object: {exc}") from exc


def _write(directory: Path, name: str, document: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(json.dumps(document, indent=2))


def baseline(env: Mapping[str, str], fmt: dict[str, Any], source: Path, output: Path) -> dict[str, Any]:
    table = datasets.read_baseline(source, fmt)
    columns = stats.columns_of(table)
    statistics = stats.statistics(columns, table.num_rows)
    _write(output, STATISTICS_FILE, statistics)
    _write(output, CONSTRAINTS_FILE, stats.constraints(columns, env.get("categorical_drift_method") or None))
    return {"rows": table.num_rows, "features": len(columns)}


def check(env: Mapping[str, str], fmt: dict[str, Any], source: Path, output: Path) -> dict[str, Any]:
    """A pipeline's quality check: the dataset's baseline, and its violations of the given baseline."""
    constraints = _read_json(env["baseline_constraints"], "baseline_constraints")
    statistics_path = env.get("baseline_statistics")
    base_statistics = _read_json(statistics_path, "baseline_statistics") if statistics_path else None
    table = datasets.read_baseline(source, fmt)
    columns = stats.columns_of(table)
    current = stats.statistics(columns, table.num_rows)
    found = checks.violations(constraints, base_statistics, current, columns)
    _write(output, STATISTICS_FILE, current)
    _write(output, CONSTRAINTS_FILE, stats.constraints(columns, env.get("categorical_drift_method") or None))
    _write(output, VIOLATIONS_FILE, {"violations": found})
    return {"rows": table.num_rows, "features": len(columns), "violations": len(found)}


def monitor(env: Mapping[str, str], source: Path, output: Path) -> dict[str, Any]:
    constraints_path = env.get("baseline_constraints")
    statistics_path = env.get("baseline_statistics")
    if not constraints_path:
        raise AnalyzerError("A monitoring job needs baseline_constraints (the baseline's constraints.json).")
    constraints = _read_json(constraints_path, "baseline_constraints")
    base_statistics = _read_json(statistics_path, "baseline_statistics") if statistics_path else None
    start, end = _time(env.get("start_time"), "start_time"), _time(env.get("end_time"), "end_time")
    captured = datasets.read_capture(source, start, end)
    if not captured.records:
        window = f"between {start:%Y-%m-%dT%H:%M:%SZ} and {end:%Y-%m-%dT%H:%M:%SZ}" if start and end else ""
        raise AnalyzerError(
            f"No captured records {window} in the {captured.files} capture files under {source}; send traffic to "
            "the endpoint in that window, or widen it (DataAnalysisStartTime/EndTime)."
        )
    names = [f["name"] for f in constraints.get("features") or []]
    table = datasets.align(captured, names)
    columns = stats.columns_of(table)
    current = stats.statistics(columns, table.num_rows)
    found = checks.violations(constraints, base_statistics, current, columns)
    _write(output, STATISTICS_FILE, current)
    _write(output, VIOLATIONS_FILE, {"violations": found})
    return {"records": captured.records, "rows": table.num_rows, "violations": len(found)}


def run(env: Mapping[str, str]) -> dict[str, Any]:
    """One job of the image, by its environment; what it did.

    Raises:
        AnalyzerError, datasets.DatasetError: the job's inputs or settings are wrong.
    """
    for name in ("record_preprocessor_script", "post_analytics_processor_script"):
        if env.get(name):
            raise AnalyzerError(f"{name} is not supported by OpenSage's analyzer; run the job without it.")
    fmt = datasets.parse_format(env.get("dataset_format"))
    source = Path(env.get("dataset_source") or "/opt/ml/processing/input/baseline_dataset_input")
    output = Path(env.get("output_path") or "/opt/ml/processing/output")
    if not source.exists():
        raise AnalyzerError(f"dataset_source {source} does not exist; give the job an input at that LocalPath.")
    if CAPTURE_FORMAT in fmt:
        return monitor(env, source, output)
    if env.get("baseline_constraints"):
        return check(env, fmt, source, output)
    return baseline(env, fmt, source, output)


def main() -> int:
    started = time.monotonic()
    try:
        done = run(os.environ)
    except (AnalyzerError, datasets.DatasetError) as exc:
        message = f"ClientError: {exc}"
        print(message, file=sys.stderr)
        base = Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
        try:
            (base / "output").mkdir(parents=True, exist_ok=True)
            (base / "output" / "message").write_text(message)
        except OSError:
            pass
        return 1
    print(f"analysis done in {time.monotonic() - started:.2f} s: {json.dumps(done)}")
    return 0
