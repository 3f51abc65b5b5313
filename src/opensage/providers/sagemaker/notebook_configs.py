"""What notebook instances are made from: lifecycle configurations and code repositories.

A lifecycle configuration holds base64 shell scripts: ``OnCreate`` runs once when an instance is
created, ``OnStart`` at every start (:mod:`opensage.notebooks.engine`); their output goes to the log
group ``/aws/sagemaker/NotebookInstances``. A code repository is a Git URL that ``git clone`` puts
into an instance's volume when the instance is created.

LIMITATIONS: ``GitConfig.SecretArn`` is recorded, not read (only repositories that clone without
credentials work); a repository is cloned once, at creation, as AWS does; ``UpdateCodeRepository``
is not served.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, NotFound, resource_in_use, validation_error
from opensage.notebooks.engine import KIND, LIFECYCLE_KIND, REPOSITORY_KIND
from opensage.store import tags
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

_SORT = {"Name": "name", "CreationTime": "created_at"}


def _sorted(store: SqlStore, kind: str, request: dict[str, Any]) -> list[Resource]:
    """Rows of ``kind`` with the shared List* filters, in the order SortBy/SortOrder ask."""
    rows = store.list_resources(
        kind,
        name_contains=request.get("NameContains"),
        created_after=request.get("CreationTimeAfter"),
        created_before=request.get("CreationTimeBefore"),
        modified_after=request.get("LastModifiedTimeAfter"),
        modified_before=request.get("LastModifiedTimeBefore"),
        sort_by=_SORT.get(request.get("SortBy") or "CreationTime", "created_at"),
        descending=(request.get("SortOrder") or "Descending") == "Descending",
    )
    if request.get("SortBy") == "LastModifiedTime":
        rows.sort(
            key=lambda r: (r.updated_at, r.name), reverse=(request.get("SortOrder") or "Descending") == "Descending"
        )
    return rows


def _scripts(request: dict[str, Any]) -> dict[str, Any]:
    """OnCreate and OnStart as given, each checked to be base64."""
    out: dict[str, Any] = {}
    for hook in ("OnCreate", "OnStart"):
        scripts = request.get(hook) or []
        for script in scripts:
            try:
                base64.b64decode(script["Content"], validate=True)
            except (binascii.Error, ValueError):
                raise validation_error(
                    f"The {hook} script's Content must be base64-encoded (e.g. base64 -w0 on-start.sh)."
                ) from None
        if scripts:
            out[hook] = [{"Content": s["Content"]} for s in scripts]
    return out


class NotebookConfigOperations:
    store: SqlStore
    clock: Callable[[], dt.datetime]

    # --- lifecycle configurations ---------------------------------------------------------------------

    def _lifecycle_config(self, name: str, verb: str = "describe") -> Resource:
        row = self.store.get_resource(LIFECYCLE_KIND, name)
        if row is None:
            raise validation_error(
                f"Unable to {verb} Notebook Instance Lifecycle Config {name}: it does not exist "
                "(see ListNotebookInstanceLifecycleConfigs)."
            )
        return row

    def create_notebook_instance_lifecycle_config(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["NotebookInstanceLifecycleConfigName"]
        arn = ctx.arn("sagemaker", f"notebook-instance-lifecycle-config/{name.lower()}")
        now = self.clock()
        data = {"NotebookInstanceLifecycleConfigArn": arn, "NotebookInstanceLifecycleConfigName": name,
                **_scripts(request)}  # fmt: skip
        try:
            self.store.create_resource(Resource(LIFECYCLE_KIND, name, arn, "Created", now, now, data))
        except AlreadyExists:
            raise validation_error(
                f"Unable to create Notebook Instance Lifecycle Config {name}: it already exists. Choose another name, "
                "or update it with UpdateNotebookInstanceLifecycleConfig."
            ) from None
        if request.get("Tags"):
            tags.put_tags(self.store, arn, request["Tags"], now)
        return {"NotebookInstanceLifecycleConfigArn": arn}

    def describe_notebook_instance_lifecycle_config(
        self, ctx: RequestContext, request: dict[str, Any]
    ) -> dict[str, Any]:
        row = self._lifecycle_config(request["NotebookInstanceLifecycleConfigName"])
        return {**row.data, "CreationTime": row.created_at, "LastModifiedTime": row.updated_at}

    def list_notebook_instance_lifecycle_configs(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        configs = [
            {
                "NotebookInstanceLifecycleConfigName": r.name,
                "NotebookInstanceLifecycleConfigArn": r.arn,
                "CreationTime": r.created_at,
                "LastModifiedTime": r.updated_at,
            }
            for r in _sorted(self.store, LIFECYCLE_KIND, request)
        ]
        return {"NotebookInstanceLifecycleConfigs": configs}  # paged by the gateway

    def update_notebook_instance_lifecycle_config(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["NotebookInstanceLifecycleConfigName"]
        self._lifecycle_config(name, "update")
        scripts = _scripts(request)

        def change(row: Resource) -> tuple[dict[str, Any], None]:
            data = dict(row.data)
            for hook in ("OnCreate", "OnStart"):
                if hook in request:  # given (even empty): replaced
                    data.pop(hook, None)
                    data.update({hook: scripts[hook]} if hook in scripts else {})
            return data, None

        self.store.modify_resource(LIFECYCLE_KIND, name, change, now=self.clock())
        return {}

    def delete_notebook_instance_lifecycle_config(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["NotebookInstanceLifecycleConfigName"]
        row = self._lifecycle_config(name, "delete")
        users = [r.name for r in self.store.list_resources(KIND)
                 if r.data.get("NotebookInstanceLifecycleConfigName") == name]  # fmt: skip
        if users:
            raise resource_in_use(
                f"Notebook Instance Lifecycle Config {name} is used by notebook instance {', '.join(users)}: "
                "disassociate it first (UpdateNotebookInstance with DisassociateLifecycleConfig) or delete them."
            )
        with contextlib.suppress(NotFound):
            self.store.delete_resource(LIFECYCLE_KIND, name)
        tags.drop_tags(self.store, row.arn)
        return {}

    # --- code repositories ----------------------------------------------------------------------------

    def _code_repository(self, name: str) -> Resource:
        row = self.store.get_resource(REPOSITORY_KIND, name)
        if row is None:
            raise validation_error(f"Cannot find CodeRepository {name} (see ListCodeRepositories).")
        return row

    def create_code_repository(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["CodeRepositoryName"]
        arn = ctx.arn("sagemaker", f"code-repository/{name.lower()}")
        now = self.clock()
        git = {k: v for k, v in request["GitConfig"].items() if v}
        data = {"CodeRepositoryName": name, "CodeRepositoryArn": arn, "GitConfig": git}
        try:
            self.store.create_resource(Resource(REPOSITORY_KIND, name, arn, "Created", now, now, data))
        except AlreadyExists:
            raise validation_error(
                f"Cannot create CodeRepository {name}: a code repository of that name already exists."
            ) from None
        if request.get("Tags"):
            tags.put_tags(self.store, arn, request["Tags"], now)
        return {"CodeRepositoryArn": arn}

    def _repository_out(self, row: Resource) -> dict[str, Any]:
        return {**row.data, "CreationTime": row.created_at, "LastModifiedTime": row.updated_at}

    def describe_code_repository(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return self._repository_out(self._code_repository(request["CodeRepositoryName"]))

    def list_code_repositories(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows = _sorted(self.store, REPOSITORY_KIND, request)
        return {"CodeRepositorySummaryList": [self._repository_out(r) for r in rows]}  # paged by the gateway

    def delete_code_repository(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["CodeRepositoryName"]
        row = self._code_repository(name)
        users = [
            r.name
            for r in self.store.list_resources(KIND)
            if name == r.data.get("DefaultCodeRepository") or name in (r.data.get("AdditionalCodeRepositories") or [])
        ]
        if users:
            raise resource_in_use(
                f"CodeRepository {name} is associated with notebook instance {', '.join(users)}: disassociate it "
                "first (UpdateNotebookInstance) or delete them."
            )
        with contextlib.suppress(NotFound):
            self.store.delete_resource(REPOSITORY_KIND, name)
        tags.drop_tags(self.store, row.arn)
        return {}
