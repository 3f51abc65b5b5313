"""SageMaker notebook instances (:mod:`opensage.notebooks`): each InService instance is a real JupyterLab.

The instance's volume is a directory under the platform's home, kept across stop and start (at
``/home/ec2-user/SageMaker`` where mount namespaces allow); its kernels reach this platform with no
set-up (``opensage env``'s settings and ``/opt/ml/metadata/resource-metadata.json``). The browser
opens it through CreatePresignedNotebookInstanceUrl.

LIMITATIONS: ``VolumeSizeInGB`` is recorded, not enforced (the volume is a directory);
``DirectInternetAccess``, ``RootAccess``, ``SubnetId``, ``SecurityGroupIds``, ``KmsKeyId``,
``AcceleratorTypes``, ``PlatformIdentifier``, ``IpAddressType`` and
``InstanceMetadataServiceConfiguration`` are recorded only (the processes run as the platform's
container user, with the machine's network); the JupyterLab and Python are the platform's own; the
instance type's CPU and memory limits hold for JupyterLab and its kernels together; the
credentials in a kernel's environment are the platform's own key (as ``opensage env`` gives a
shell), whatever ``RoleArn`` says. Without mount
namespaces the volume and the metadata file stay at their host paths, and
``get_execution_role()`` cannot find the metadata file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, Conflict, NotFound, ServiceError, validation_error
from opensage.notebooks import layout
from opensage.notebooks.engine import (
    DELETABLE,
    KIND,
    LIFECYCLE_KIND,
    REPOSITORY_KIND,
    STARTABLE,
    STOPPABLE,
    UPDATABLE,
    NotebookInstances,
    Status,
    base_url,
)
from opensage.notebooks.front import issue_url_token, sign_in_path, signing_key
from opensage.store import tags
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

URL_EXPIRY_S = 300  # AWS: the AuthorizedUrl is valid for 5 minutes
DEFAULT_SESSION_S = 43200  # SessionExpirationDurationInSeconds' default (12 hours)
DEFAULT_VOLUME_GB = 5
_RECORDED = (
    "SubnetId",
    "SecurityGroupIds",
    "KmsKeyId",
    "AcceleratorTypes",
    "PlatformIdentifier",
    "IpAddressType",
    "InstanceMetadataServiceConfiguration",
)
_INTERNAL = ("OpenSageCreated", "OpenSageHandle")
_SUMMARY = (
    "NotebookInstanceName",
    "NotebookInstanceArn",
    "NotebookInstanceStatus",
    "Url",
    "InstanceType",
    "CreationTime",
    "LastModifiedTime",
    "NotebookInstanceLifecycleConfigName",
    "DefaultCodeRepository",
    "AdditionalCodeRepositories",
)
_LIST_SORT = {"Name": "name", "CreationTime": "created_at", "Status": "status"}


class NotebookOperations:
    store: SqlStore
    clock: Callable[[], dt.datetime]
    notebooks: NotebookInstances
    notebook_url: str  # the platform's API URL, which the front is under
    _require_role: Callable[[RequestContext, str], None]

    def _notebook(self, name: str) -> Resource:
        row = self.store.get_resource(KIND, name)
        if row is None:
            # SageMaker answers a missing notebook instance with ValidationException "RecordNotFound".
            raise validation_error(
                f"RecordNotFound: notebook instance {name} does not exist (see ListNotebookInstances)."
            )
        return row

    def _check_references(self, request: dict[str, Any]) -> None:
        """The lifecycle configuration and the code repositories named must exist; at most 3 additional ones."""
        config = request.get("LifecycleConfigName")
        if config and self.store.get_resource(LIFECYCLE_KIND, config) is None:
            raise validation_error(
                f"Unable to describe Notebook Instance Lifecycle Config {config}: it does not exist "
                "(create it with CreateNotebookInstanceLifecycleConfig)."
            )
        refs = [request.get("DefaultCodeRepository"), *(request.get("AdditionalCodeRepositories") or [])]
        for ref in filter(None, refs):
            if not ref.startswith("https://") and self.store.get_resource(REPOSITORY_KIND, ref) is None:
                raise validation_error(
                    f"Code repository {ref} does not exist: give a Git URL (https://...) or the name of a code "
                    "repository created with CreateCodeRepository."
                )
        listed = [r for r in refs if r]
        if len(set(listed)) != len(listed):
            raise validation_error("A code repository may be associated with a notebook instance only once.")

    def create_notebook_instance(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["NotebookInstanceName"]
        if not layout.jupyter_available():
            raise validation_error(
                "JupyterLab is not installed where OpenSage runs: install it with pip install 'opensage[notebooks]' "
                "(or pip install jupyterlab) and restart opensage up."
            )
        self._require_role(ctx, request["RoleArn"])
        self._check_references(request)
        arn = ctx.arn("sagemaker", f"notebook-instance/{name.lower()}")
        now = self.clock()
        data = {
            "NotebookInstanceArn": arn,
            "NotebookInstanceName": name,
            "InstanceType": request["InstanceType"],
            "RoleArn": request["RoleArn"],
            "NotebookInstanceLifecycleConfigName": request.get("LifecycleConfigName"),
            "VolumeSizeInGB": request.get("VolumeSizeInGB") or DEFAULT_VOLUME_GB,
            "DefaultCodeRepository": request.get("DefaultCodeRepository"),
            "AdditionalCodeRepositories": request.get("AdditionalCodeRepositories"),
            "DirectInternetAccess": request.get("DirectInternetAccess") or "Enabled",
            "RootAccess": request.get("RootAccess") or "Enabled",
            **{k: request[k] for k in _RECORDED if k in request},
        }
        data = {k: v for k, v in data.items() if v is not None}
        try:
            self.store.create_resource(Resource(KIND, name, arn, Status.PENDING, now, now, data))
        except AlreadyExists:
            raise resource_in_use_name(name) from None
        if request.get("Tags"):
            tags.put_tags(self.store, arn, request["Tags"], now)
        self.notebooks.launch(name)
        return {"NotebookInstanceArn": arn}

    def describe_notebook_instance(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._notebook(request["NotebookInstanceName"])
        out = {k: v for k, v in row.data.items() if k not in _INTERNAL}
        out.update(
            NotebookInstanceStatus=row.status,
            Url=self._url(row.name),
            CreationTime=row.created_at,
            LastModifiedTime=row.updated_at,
        )
        if row.status != Status.FAILED:
            out.pop("FailureReason", None)
        return out

    def _url(self, name: str) -> str:
        """Like AWS's ``<name>.notebook.<region>.sagemaker.aws``: host and path, no scheme."""
        return (self.notebook_url + base_url(name)).split("://", 1)[-1]

    def list_notebook_instances(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows = self.store.list_resources(
            KIND,
            name_contains=request.get("NameContains"),
            status=request.get("StatusEquals"),
            created_after=request.get("CreationTimeAfter"),
            created_before=request.get("CreationTimeBefore"),
            modified_after=request.get("LastModifiedTimeAfter"),
            modified_before=request.get("LastModifiedTimeBefore"),
            sort_by=_LIST_SORT[request.get("SortBy") or "Name"],
            descending=(request.get("SortOrder") or "Descending") == "Descending",
        )
        config, default, extra = (
            request.get("NotebookInstanceLifecycleConfigNameContains"),
            request.get("DefaultCodeRepositoryContains"),
            request.get("AdditionalCodeRepositoryEquals"),
        )
        summaries = []
        for row in rows:
            if config and config not in (row.data.get("NotebookInstanceLifecycleConfigName") or ""):
                continue
            if default and default not in (row.data.get("DefaultCodeRepository") or ""):
                continue
            if extra and extra not in (row.data.get("AdditionalCodeRepositories") or []):
                continue
            described = self.describe_notebook_instance(ctx, {"NotebookInstanceName": row.name})
            summaries.append({k: described[k] for k in _SUMMARY if k in described})
        return {"NotebookInstances": summaries}  # paged by the gateway

    def update_notebook_instance(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["NotebookInstanceName"]
        row = self._notebook(name)
        if row.status not in UPDATABLE:
            raise validation_error(
                f"Status ({row.status}) not in ([Stopped]). Unable to update notebook instance {name}: stop it "
                "first (StopNotebookInstance) and wait until it is Stopped."
            )
        if request.get("RoleArn"):
            self._require_role(ctx, request["RoleArn"])
        self._check_references(
            {
                "LifecycleConfigName": request.get("LifecycleConfigName"),
                "DefaultCodeRepository": request.get("DefaultCodeRepository"),
                "AdditionalCodeRepositories": request.get("AdditionalCodeRepositories"),
            }
        )
        changes = _update_changes(request)
        if changes.get("VolumeSizeInGB") is not None and changes["VolumeSizeInGB"] < row.data.get("VolumeSizeInGB", 0):
            raise validation_error("VolumeSizeInGB can only grow: give a size at least the current one.")

        def change(current: Resource) -> tuple[dict[str, Any], str]:
            if current.status not in UPDATABLE:
                raise Conflict(current.status)
            data = {k: v for k, v in {**current.data, **changes}.items() if v is not None}
            return data, Status.UPDATING

        try:
            self.store.modify_resource(KIND, name, change, now=self.clock())
        except (Conflict, NotFound):
            raise validation_error(f"Notebook instance {name} changed meanwhile; describe it and try again.") from None
        self.notebooks.finish_update(name)
        return {}

    def start_notebook_instance(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._notebook(request["NotebookInstanceName"])
        if row.status == Status.IN_SERVICE or row.status == Status.PENDING:
            return {}  # AWS: starting a running instance does nothing
        self._move(row, Status.PENDING, STARTABLE, "start", "Stopped")
        self.notebooks.launch(row.name)
        return {}

    def stop_notebook_instance(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._notebook(request["NotebookInstanceName"])
        if row.status in (Status.STOPPED, Status.STOPPING):
            return {}
        self._move(row, Status.STOPPING, STOPPABLE, "stop", "InService, Pending or Failed")
        self.notebooks.halt(row.name)
        return {}

    def delete_notebook_instance(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._notebook(request["NotebookInstanceName"])
        self._move(row, Status.DELETING, DELETABLE, "delete", "Stopped or Failed")
        self.notebooks.remove(row.name)
        return {}

    def _move(self, row: Resource, to: Status, expect: tuple[Status, ...], verb: str, allowed: str) -> None:
        if row.status not in expect:
            hint = " Stop it first (StopNotebookInstance) and wait until it is Stopped." if verb == "delete" else ""
            raise validation_error(
                f"Status ({row.status}) not in ([{allowed}]). Unable to {verb} notebook instance {row.name}.{hint}"
            )
        try:
            self.notebooks.transition(row.name, to, expect)
        except (Conflict, NotFound):
            raise validation_error(
                f"Notebook instance {row.name} changed meanwhile; describe it and try again."
            ) from None

    def create_presigned_notebook_instance_url(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._notebook(request["NotebookInstanceName"])
        session = request.get("SessionExpirationDurationInSeconds") or DEFAULT_SESSION_S
        token = issue_url_token(signing_key(self.store), row.name, self.clock().timestamp(), URL_EXPIRY_S, session)
        return {"AuthorizedUrl": self.notebook_url + sign_in_path(row.name, token)}


def resource_in_use_name(name: str) -> ServiceError:
    return ServiceError(
        "ValidationException",
        f"Cannot create a duplicate Notebook Instance ({name}): a notebook instance of that name already exists. "
        "Choose another name, or delete it first.",
    )


def _update_changes(request: dict[str, Any]) -> dict[str, Any]:
    """What UpdateNotebookInstance changes (None removes a member: the Disassociate* flags)."""
    changes: dict[str, Any] = {
        k: request[k]
        for k in ("InstanceType", "RoleArn", "VolumeSizeInGB", "DefaultCodeRepository", "AdditionalCodeRepositories",
                  "RootAccess", "AcceleratorTypes", "PlatformIdentifier", "IpAddressType",
                  "InstanceMetadataServiceConfiguration")
        if k in request
    }  # fmt: skip
    if "LifecycleConfigName" in request:
        changes["NotebookInstanceLifecycleConfigName"] = request["LifecycleConfigName"]
    for flag, member in (
        ("DisassociateLifecycleConfig", "NotebookInstanceLifecycleConfigName"),
        ("DisassociateDefaultCodeRepository", "DefaultCodeRepository"),
        ("DisassociateAdditionalCodeRepositories", "AdditionalCodeRepositories"),
        ("DisassociateAcceleratorTypes", "AcceleratorTypes"),
    ):
        if request.get(flag):
            changes[member] = None
    return changes
