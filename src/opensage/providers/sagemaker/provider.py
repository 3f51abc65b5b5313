"""Amazon SageMaker control-plane operations.

LIMITATIONS: resources live in one namespace per installation (not per region); only the
operations defined here are served, every other one answers ``NotImplemented`` naming it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import ServiceError
from opensage.identity import ROLE_KIND
from opensage.store.sql import SqlStore

TRAINING_JOB = "training-job"

_SORT_COLUMNS = {"Name": "name", "CreationTime": "created_at", "Status": "status"}


class SageMakerProvider:
    def __init__(self, store: SqlStore, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.clock = clock

    def require_role(self, ctx: RequestContext, role_arn: str) -> None:
        """Reject a ``RoleArn`` that names no role of this account, as SageMaker does."""
        name = role_arn.rsplit("/", 1)[-1]
        role = self.store.get_resource(ROLE_KIND, name)
        if role is None or role.arn != role_arn:
            raise ServiceError(
                "ValidationException",
                f"Could not assume role {role_arn}. Please ensure that the role exists and allows principal "
                "'sagemaker.amazonaws.com' to assume the role (create it with IAM CreateRole, or use "
                f"arn:aws:iam::{ctx.account_id}:role/OpenSageExecutionRole).",
            )

    def list_training_jobs(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows = self.store.list_resources(
            TRAINING_JOB,
            name_contains=request.get("NameContains"),
            status=request.get("StatusEquals"),
            created_after=request.get("CreationTimeAfter"),
            created_before=request.get("CreationTimeBefore"),
            modified_after=request.get("LastModifiedTimeAfter"),
            modified_before=request.get("LastModifiedTimeBefore"),
            sort_by=_SORT_COLUMNS.get(request.get("SortBy", "CreationTime"), "created_at"),
            descending=request.get("SortOrder", "Descending") == "Descending",
        )
        summaries = []
        for row in rows:
            d = row.data
            summary = {
                "TrainingJobName": row.name,
                "TrainingJobArn": row.arn,
                "CreationTime": d.get("CreationTime"),
                "TrainingEndTime": d.get("TrainingEndTime"),
                "LastModifiedTime": d.get("LastModifiedTime"),
                "TrainingJobStatus": row.status,
                "SecondaryStatus": d.get("SecondaryStatus"),
            }
            summaries.append({k: v for k, v in summary.items() if v is not None})
        return {"TrainingJobSummaries": summaries}
