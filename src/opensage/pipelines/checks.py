"""QualityCheck steps (``CheckType: DATA_QUALITY``): a baselining job of the model monitor's analyzer,
checked against a supplied baseline.

The step's ``Arguments`` are the SDK's CreateProcessingJob request for the analyzer image over the
step's dataset. :func:`prepare` adds the supplied baseline (``SuppliedBaselineConstraints`` and
``SuppliedBaselineStatistics``) to that job as inputs, unless ``SkipCheck`` is true or no baseline is
given (as on AWS, the first run of a check then just calculates one). :func:`conclude` reads what the
job wrote: the step's properties (``CalculatedBaselineStatistics``/``Constraints``,
``BaselineUsedForDriftCheckStatistics``/``Constraints`` — the calculated ones when
``RegisterNewBaseline`` is true or nothing was supplied), its ``Metadata.QualityCheck``, and, when the
check found violations and ``FailOnViolation`` is true (the default), the step's failure naming them.

LIMITATIONS: ``MODEL_QUALITY`` checks are refused (the analyzer computes data quality only); the
baseline is not looked up in ``ModelPackageGroupName``'s latest approved model package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opensage.monitor import CONSTRAINTS_FILE, STATISTICS_FILE, VIOLATIONS_FILE
from opensage.pipelines.definition import CHECK_MEMBERS

BASELINE_DIR = "/opt/ml/processing/baseline"
_FIELDS = ("CheckType", *CHECK_MEMBERS)


class CheckRefused(Exception):
    """The step cannot run as given; the message says why."""


def fields(document: dict[str, Any]) -> dict[str, Any]:
    """The check's own members of a QualityCheck step (outside its Arguments)."""
    return {k: document[k] for k in _FIELDS if k in document}


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def prepare(request: dict[str, Any], check: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The processing job to run and what :func:`conclude` needs (stored with the step)."""
    kind = check.get("CheckType") or "DATA_QUALITY"
    if kind != "DATA_QUALITY":
        raise CheckRefused(
            f"CheckType {kind} is not available in OpenSage: QualityCheck steps run DATA_QUALITY checks "
            "(a DataQualityCheckConfig)."
        )
    outputs = (request.get("ProcessingOutputConfig") or {}).get("Outputs") or []
    if not outputs or not (outputs[0].get("S3Output") or {}).get("S3Uri"):
        raise CheckRefused("The check job has no S3 output for its statistics and constraints.")
    constraints, statistics = check.get("SuppliedBaselineConstraints"), check.get("SuppliedBaselineStatistics")
    checking = not _flag(check.get("SkipCheck"), False) and bool(constraints)
    job = dict(request)
    if checking:
        env = dict(job.get("Environment") or {})
        inputs = list(job.get("ProcessingInputs") or [])
        for name, uri, folder in (
            ("baseline_constraints", constraints, "constraints"),
            ("baseline_statistics", statistics, "stats"),
        ):
            if not uri:
                continue
            inputs.append(
                {
                    "InputName": name,
                    "S3Input": {
                        "S3Uri": uri,
                        "LocalPath": f"{BASELINE_DIR}/{folder}",
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                        "S3DataDistributionType": "FullyReplicated",
                    },
                }
            )
            env[name] = f"{BASELINE_DIR}/{folder}/{uri.rstrip('/').rsplit('/', 1)[-1]}"
        job.update(ProcessingInputs=inputs, Environment=env)
    state = {
        "CheckType": kind,
        "Checking": checking,
        "FailOnViolation": _flag(check.get("FailOnViolation"), True),
        "RegisterNewBaseline": _flag(check.get("RegisterNewBaseline"), False),
        "SkipCheck": _flag(check.get("SkipCheck"), False),
        "SuppliedBaselineConstraints": constraints,
        "SuppliedBaselineStatistics": statistics,
        "ModelPackageGroupName": check.get("ModelPackageGroupName"),
        "Output": outputs[0]["S3Output"]["S3Uri"].rstrip("/"),
    }
    return job, state


def conclude(
    state: dict[str, Any], job_arn: str, read_json: Callable[[str], Any]
) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(the step's properties, its Metadata, its failure or None) once the check job completed."""
    out = state["Output"]
    calculated_statistics, calculated_constraints = f"{out}/{STATISTICS_FILE}", f"{out}/{CONSTRAINTS_FILE}"
    use_calculated = state["RegisterNewBaseline"] or not state["SuppliedBaselineConstraints"]
    used_constraints = calculated_constraints if use_calculated else state["SuppliedBaselineConstraints"]
    used_statistics = calculated_statistics if use_calculated else state["SuppliedBaselineStatistics"]
    properties = {
        "CalculatedBaselineStatistics": calculated_statistics,
        "CalculatedBaselineConstraints": calculated_constraints,
        "BaselineUsedForDriftCheckStatistics": used_statistics,
        "BaselineUsedForDriftCheckConstraints": used_constraints,
    }
    metadata: dict[str, Any] = {
        "CheckType": state["CheckType"],
        "CheckJobArn": job_arn,
        "SkipCheck": state["SkipCheck"],
        "RegisterNewBaseline": state["RegisterNewBaseline"],
        **{k: v for k, v in properties.items() if v},
    }
    if state.get("ModelPackageGroupName"):
        metadata["ModelPackageGroupName"] = state["ModelPackageGroupName"]
    failure = None
    if state["Checking"]:
        report = f"{out}/{VIOLATIONS_FILE}"
        metadata["ViolationReport"] = report
        found = (read_json(report) or {}).get("violations") or []
        if found and state["FailOnViolation"]:
            named = ", ".join(f"{v.get('feature_name')}: {v.get('constraint_check_type')}" for v in found[:5])
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            failure = (
                f"ClientError: Quality check failed: {len(found)} constraint violation(s) of the baseline "
                f"({named}{more}); see {report}."
            )
    return properties, {"QualityCheck": metadata}, failure
