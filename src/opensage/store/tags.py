"""Tags of any resource, by its ARN (SageMaker's AddTags, ListTags, DeleteTags).

The tags of one resource are a row of their own (kind ``tags``, named by the resource's ARN), so
every creator can record the ``Tags`` of its Create* request without touching the resource's
document, and a resource's tags outlive nothing: :func:`drop_tags` removes them with it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from opensage.errors import AlreadyExists, NotFound
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

KIND = "tags"


def _row_arn(arn: str) -> str:
    return f"tags:{arn}"


def get_tags(store: SqlStore, arn: str) -> list[dict[str, str]]:
    """The tags of ``arn`` ({Key, Value} each, in the order they were first added)."""
    row = store.get_resource(KIND, arn)
    return [] if row is None else [{"Key": k, "Value": v} for k, v in row.data["Tags"].items()]


def put_tags(store: SqlStore, arn: str, tags: Iterable[Mapping[str, Any]], now: dt.datetime) -> list[dict[str, str]]:
    """Add (or overwrite) ``tags`` on ``arn``; its tags afterwards."""
    new = {str(t["Key"]): str(t.get("Value", "")) for t in tags}
    if not new:
        return get_tags(store, arn)

    def change(row: Resource) -> tuple[dict[str, Any], str | None]:
        return {"Tags": {**row.data["Tags"], **new}}, None

    try:
        store.modify_resource(KIND, arn, change, now=now)
    except NotFound:
        try:
            store.create_resource(Resource(KIND, arn, _row_arn(arn), "", now, now, {"Tags": new}))
        except AlreadyExists:  # created meanwhile
            store.modify_resource(KIND, arn, change, now=now)
    return get_tags(store, arn)


def remove_tags(store: SqlStore, arn: str, keys: Iterable[str], now: dt.datetime) -> None:
    gone = set(keys)

    def change(row: Resource) -> tuple[dict[str, Any], str | None]:
        return {"Tags": {k: v for k, v in row.data["Tags"].items() if k not in gone}}, None

    with contextlib.suppress(NotFound):
        store.modify_resource(KIND, arn, change, now=now)


def drop_tags(store: SqlStore, arn: str) -> None:
    with contextlib.suppress(NotFound):
        store.delete_resource(KIND, arn)
