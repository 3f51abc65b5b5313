"""Pure policies of pipeline steps: which failures a RetryPolicy retries and when, and the cache key.

``classify`` names a failure with the ExceptionType a RetryPolicy lists; ``next_retry`` decides,
from a step's policies, the attempts so far and the time since its first attempt, whether and after
how many seconds the step runs again. ``cache_key`` hashes the members of a step's resolved
arguments that AWS documents as its cache key (so outputs named after the execution do not keep a
step from hitting the cache).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

INTERNAL = "SageMaker.JOB_INTERNAL_ERROR"
CAPACITY = "SageMaker.CAPACITY_ERROR"
RESOURCE_LIMIT = "SageMaker.RESOURCE_LIMIT"
SERVICE_FAULT = "Step.SERVICE_FAULT"
THROTTLING = "Step.THROTTLING"
EXCEPTION_TYPES = (INTERNAL, CAPACITY, RESOURCE_LIMIT, SERVICE_FAULT, THROTTLING)
CACHEABLE = ("Processing", "Training", "Tuning", "Transform")

# https://docs.aws.amazon.com/sagemaker/latest/dg/pipelines-default-keys.html
_KEYS: Mapping[str, tuple[str, ...]] = {
    "Processing": ("AppSpecification", "Environment", "ProcessingInputs"),
    "Training": (
        "AlgorithmSpecification",
        "CheckpointConfig",
        "DebugHookConfig",
        "DebugRuleConfigurations",
        "Environment",
        "HyperParameters",
        "InputDataConfig",
    ),
    "Tuning": ("HyperParameterTuningJobConfig", "TrainingJobDefinition", "TrainingJobDefinitions"),
    "Transform": ("DataProcessing", "Environment", "ModelName", "TransformInput"),
}
_DEFINITION_KEYS = (
    "AlgorithmSpecification",
    "CheckpointConfig",
    "DefinitionName",
    "Environment",
    "HyperParameterRanges",
    "InputDataConfig",
    "StaticHyperParameters",
    "TuningObjective",
)
_DURATION = re.compile(
    r"^P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def classify(code: str | None, reason: str) -> str | None:
    """The ExceptionType of a failure: an error ``code`` at creation, or a job's FailureReason."""
    if code == "ResourceLimitExceeded":
        return RESOURCE_LIMIT
    if code in ("ThrottlingException", "Throttling"):
        return THROTTLING
    if code in ("InternalFailure", "ServiceUnavailable", "InternalServerError"):
        return SERVICE_FAULT
    if code is not None:
        return None
    if reason.startswith("InternalServerError"):
        return INTERNAL
    if reason.startswith("CapacityError"):
        return CAPACITY
    return None


def next_retry(
    policies: Sequence[Mapping[str, Any]], exception_type: str | None, attempts: int, since_first_s: float
) -> float | None:
    """Seconds to wait before attempt ``attempts + 1``, or None when the step fails now.

    The first policy that lists ``exception_type`` decides: ``IntervalSeconds * BackoffRate**(n-1)``
    before the n-th retry, while retries < ``MaxAttempts`` (or within ``ExpireAfterMin`` minutes).
    """
    if exception_type is None:
        return None
    for p in policies:
        if exception_type not in (p.get("ExceptionType") or ()):
            continue
        retries = attempts - 1
        delay = float(p.get("IntervalSeconds", 1)) * float(p.get("BackoffRate", 2.0)) ** retries
        if "ExpireAfterMin" in p:
            return delay if since_first_s + delay <= float(p["ExpireAfterMin"]) * 60 else None
        return delay if retries < int(p.get("MaxAttempts", 5)) else None
    return None


def duration(text: str) -> dt.timedelta:
    """An ISO-8601 duration (``P30D``, ``PT1H``, ``P1Y2M``; a year as 365 days, a month as 30)."""
    m = _DURATION.match(text or "")
    if m is None or text in ("P", "PT"):
        raise ValueError(f"'{text}' is not an ISO-8601 duration such as P30D or PT1H")
    g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    days = g["y"] * 365 + g["mo"] * 30 + g["w"] * 7 + g["d"]
    return dt.timedelta(days=days, hours=g["h"], minutes=g["mi"], seconds=g["s"])


def cache_key(step_type: str, arguments: Mapping[str, Any]) -> str:
    """The hash of what makes two runs of a step the same run."""
    keys = _KEYS.get(step_type)
    chosen: dict[str, Any] = {k: arguments.get(k) for k in keys} if keys else dict(arguments)
    if step_type == "Tuning":
        for k in ("TrainingJobDefinition", "TrainingJobDefinitions"):
            value = chosen.get(k)
            if isinstance(value, dict):
                chosen[k] = {d: value.get(d) for d in _DEFINITION_KEYS}
            elif isinstance(value, list):
                chosen[k] = [{d: v.get(d) for d in _DEFINITION_KEYS} for v in value if isinstance(v, dict)]
    text = json.dumps([step_type, chosen], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
