"""The List*Jobs operations' common shape: filters, sort and summaries over one resource kind."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opensage.store.sql import SqlStore

_SORT_COLUMNS = {"Name": "name", "CreationTime": "created_at", "Status": "status"}


def list_jobs(
    store: SqlStore, kind: str, request: dict[str, Any], noun: str, extra_keys: Sequence[str]
) -> dict[str, Any]:
    """``{"<noun>Summaries": [...]}`` for ``List<noun>s``: NameContains, StatusEquals, the time filters,
    SortBy and SortOrder; each summary has the name, ARN, status and ``extra_keys`` when set."""
    rows = store.list_resources(
        kind,
        name_contains=request.get("NameContains"),
        status=request.get("StatusEquals"),
        created_after=request.get("CreationTimeAfter"),
        created_before=request.get("CreationTimeBefore"),
        modified_after=request.get("LastModifiedTimeAfter"),
        modified_before=request.get("LastModifiedTimeBefore"),
        sort_by=_SORT_COLUMNS.get(request.get("SortBy", "CreationTime"), "created_at"),
        descending=request.get("SortOrder", "Descending") == "Descending",
    )
    return {
        f"{noun}Summaries": [
            {
                f"{noun}Name": r.name,
                f"{noun}Arn": r.arn,
                f"{noun}Status": r.status,
                **{k: r.data[k] for k in extra_keys if r.data.get(k) is not None},
            }
            for r in rows
        ]
    }
