"""The SageMaker List* operations' common shape: filters, sort and pages over one resource kind.

Pages are taken by key in SQL: ``NextToken`` names the (sort column, name) of the last row a page
returned, and the next page starts past it. Rows created while a client pages appear or not, but never
shift the others, so a paginator sees no row twice and misses none that existed when it started.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from opensage.aws.pagination import decode_token, encode_token, invalid_token
from opensage.errors import validation_error
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

_SORT_COLUMNS = {"Name": "name", "CreationTime": "created_at", "Status": "status"}
DEFAULT_PAGE_SIZE = 10  # SageMaker's List* MaxResults default (the service model allows 1-100)
_TOKEN_KIND = "after"


# The filter members SageMaker's List* requests share -> the matching :meth:`SqlStore.list_resources` filter.
_FILTERS = {
    "NameContains": "name_contains",
    "StatusEquals": "status",
    "CreationTimeAfter": "created_after",
    "CreationTimeBefore": "created_before",
    "LastModifiedTimeAfter": "modified_after",
    "LastModifiedTimeBefore": "modified_before",
}


def list_page(
    store: SqlStore, kind: str, request: dict[str, Any], **extra: Any
) -> tuple[list[Resource], str | None]:
    """One page of ``kind`` for a List* ``request`` (SortBy, SortOrder, MaxResults, NextToken and the
    shared filters NameContains, StatusEquals and the creation and modification times); and the
    token of the next page, None on the last. ``extra`` are more :meth:`SqlStore.list_resources`
    filters (they win over the shared ones).

    Raises:
        ServiceError: ``ValidationException`` for a token this listing did not hand out.
    """
    sort_by = _SORT_COLUMNS.get(request.get("SortBy", "CreationTime"), "created_at")
    descending = request.get("SortOrder", "Descending") == "Descending"
    size = request.get("MaxResults") or DEFAULT_PAGE_SIZE
    after = _after(request["NextToken"], sort_by, descending) if request.get("NextToken") else None
    filters: dict[str, Any] = {column: request.get(member) for member, column in _FILTERS.items()}
    filters.update(extra)
    rows = store.list_resources(kind, sort_by=sort_by, descending=descending, after=after, limit=size + 1, **filters)
    if len(rows) <= size:
        return rows, None
    last = rows[size - 1]
    key = {"name": last.name, "status": last.status}.get(sort_by, last.created_at.isoformat())
    return rows[:size], encode_token(_TOKEN_KIND, json.dumps([sort_by, descending, key, last.name]))


def _after(token: str, sort_by: str, descending: bool) -> tuple[Any, str]:
    try:
        by, desc, key, name = json.loads(decode_token(token, _TOKEN_KIND))
        if by == "created_at":
            key = dt.datetime.fromisoformat(key)
    except (ValueError, TypeError) as exc:
        raise invalid_token(token) from exc
    if (by, desc) != (sort_by, descending):
        raise validation_error(
            "The pagination token was handed out for another SortBy or SortOrder; page with the same "
            "SortBy and SortOrder as the request that returned it."
        )
    if not isinstance(name, str) or not isinstance(key, str | dt.datetime):
        raise invalid_token(token)
    return key, name


def list_jobs(
    store: SqlStore, kind: str, request: dict[str, Any], noun: str, extra_keys: Sequence[str]
) -> dict[str, Any]:
    """``{"<noun>Summaries": [...], "NextToken": ...}`` for ``List<noun>s``: NameContains, StatusEquals,
    the time filters, SortBy, SortOrder and the page; each summary has the name, ARN, status and
    ``extra_keys`` when set."""
    rows, token = list_page(store, kind, request)
    return {
        f"{noun}Summaries": [
            {
                f"{noun}Name": r.name,
                f"{noun}Arn": r.arn,
                f"{noun}Status": r.status,
                **{k: r.data[k] for k in extra_keys if r.data.get(k) is not None},
            }
            for r in rows
        ],
        "NextToken": token,
    }
