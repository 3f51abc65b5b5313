"""SageMaker AddTags, ListTags, DeleteTags: tags of any resource, by ARN (:mod:`opensage.store.tags`).

LIMITATIONS: the tags are those given to AddTags and to the Create* operations that record theirs
(CreateHyperParameterTuningJob, which also tags its training jobs); ListTags on an ARN that names
nothing answers an empty list. The SDK's ``Estimator.attach()`` (and so a tuner's ``deploy()``)
calls ListTags.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import validation_error
from opensage.store import tags
from opensage.store.sql import SqlStore

MAX_TAGS = 50  # per resource (TagList's maximum)


class TagOperations:
    store: SqlStore
    clock: Callable[[], dt.datetime]

    def add_tags(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        arn = request["ResourceArn"]
        keys = {t["Key"] for t in tags.get_tags(self.store, arn)} | {t["Key"] for t in request["Tags"]}
        if len(keys) > MAX_TAGS:
            raise validation_error(f"A resource can have at most {MAX_TAGS} tags; {arn} would have {len(keys)}.")
        if any(t["Key"].lower().startswith("aws:") for t in request["Tags"]):
            raise validation_error("Tag keys starting with 'aws:' are reserved for AWS; use another key.")
        return {"Tags": tags.put_tags(self.store, arn, request["Tags"], self.clock())}

    def list_tags(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {"Tags": tags.get_tags(self.store, request["ResourceArn"])}  # paged by the gateway

    def delete_tags(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        tags.remove_tags(self.store, request["ResourceArn"], request["TagKeys"], self.clock())
        return {}
