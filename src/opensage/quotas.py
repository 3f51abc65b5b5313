"""The account's quotas: what each limits, its default on one machine, the setting that changes it.

Named as AWS Service Quotas names SageMaker's (``ml.m5.large for endpoint usage``); the per-type
quotas hold for every instance type alike. :mod:`opensage.config` reads the values
(``OPENSAGE_QUOTA_<KEY>``), the providers enforce them with ``ResourceLimitExceeded``, and
``opensage quotas`` lists them. The ``archive_*`` ones bound how far an archive (a ``model.tar.gz``,
a source directory, a gzip input) may expand on disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

GiB = 1024**3
ENV_PREFIX = "OPENSAGE_QUOTA_"


@dataclass(frozen=True, slots=True)
class Quota:
    key: str  # the setting: OPENSAGE_QUOTA_<KEY>
    name: str  # as Service Quotas names it; {instance_type} stands for each type
    default: int
    unit: str
    limits: str  # what it limits

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()

    def title(self, instance_type: str = "") -> str:
        return self.name.format(instance_type=instance_type or "<instance type>")


QUOTAS: tuple[Quota, ...] = (
    Quota(
        "endpoint_instances",
        "{instance_type} for endpoint usage",
        8,
        "Instances",
        "instances of one type across all endpoints (every status but Failed)",
    ),
    Quota(
        "training_instances",
        "{instance_type} for training job usage",
        8,
        "Instances",
        "instances of one type across the training jobs in progress",
    ),
    Quota(
        "processing_instances",
        "{instance_type} for processing job usage",
        8,
        "Instances",
        "instances of one type across the processing jobs in progress",
    ),
    Quota(
        "transform_instances",
        "{instance_type} for transform job usage",
        8,
        "Instances",
        "instances of one type across the transform jobs in progress",
    ),
    Quota(
        "training_jobs",
        "Number of concurrent training jobs",
        10,
        "Jobs",
        "training jobs in progress at once (tuning trials included)",
    ),
    Quota("processing_jobs", "Number of concurrent processing jobs", 10, "Jobs", "processing jobs in progress at once"),
    Quota("transform_jobs", "Number of concurrent transform jobs", 10, "Jobs", "transform jobs in progress at once"),
    Quota("endpoints", "Number of endpoints", 20, "Endpoints", "endpoints of the account, whatever their status"),
    Quota(
        "archive_bytes",
        "Maximum unpacked size of an archive",
        30 * GiB,
        "Bytes",
        "bytes an archive or gzip input may expand to (a job's VolumeSizeInGB when smaller)",
    ),
    Quota(
        "archive_files",
        "Maximum files in an archive",
        100_000,
        "Files",
        "members of a model.tar.gz or source directory archive",
    ),
    Quota(
        "archive_ratio",
        "Maximum expansion ratio of an archive",
        100,
        "Times",
        "unpacked bytes per compressed byte, for archives that unpack to over 64 MiB (0: unchecked)",
    ),
)
BY_KEY: Mapping[str, Quota] = {q.key: q for q in QUOTAS}


def defaults() -> dict[str, int]:
    return {q.key: q.default for q in QUOTAS}


def exceeded_message(quota: Quota, instance_type: str, value: int, used: int, delta: int) -> str:
    """ResourceLimitExceeded's message, in the words SageMaker uses."""
    return (
        f"The account-level service limit '{quota.title(instance_type)}' is {value} {quota.unit}, with current "
        f"utilization of {used} {quota.unit} and a request delta of {delta} {quota.unit}. Please set "
        f"{quota.env} for `opensage up` to raise this quota (`opensage quotas` lists them)."
    )
