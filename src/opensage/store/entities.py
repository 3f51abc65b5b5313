"""The rows the platform keeps, as plain frozen values handed out by the store."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class AccessKey:
    access_key_id: str
    secret_access_key: str
    principal_arn: str
    user_id: str
    status: str
    created_at: dt.datetime
    description: str = ""


@dataclass(frozen=True, slots=True)
class Resource:
    """Any named API resource: its indexed fields plus its full description as JSON.

    ``version`` counts the writes (the store's compare-and-set); ``parent_arn`` links a resource to
    the one that made it (a tuning job's training jobs, a pipeline execution's step jobs).
    """

    kind: str
    name: str
    arn: str
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime
    data: dict[str, Any]
    version: int = 1
    parent_arn: str | None = None
