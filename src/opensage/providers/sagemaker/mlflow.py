"""SageMaker managed MLflow: tracking servers (:mod:`opensage.mlflow_servers`).

Each tracking server is a real ``mlflow server`` process with a SQLite backend store under the
platform's home and its artifacts in the platform's S3 at ``ArtifactStoreUri``. The MLflow client
with the ``sagemaker-mlflow`` plugin reaches it through the platform (tracking URI = the server's
ARN, ``SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT`` from ``opensage env``); the UI opens through
CreatePresignedMlflowTrackingServerUrl.

LIMITATIONS: the MLflow that runs is the one installed with the platform, whatever ``MlflowVersion``
asks (Describe answers the version that runs); ``TrackingServerSize`` is recorded, every size is
one process with one worker; ``RoleArn`` must name a role of this account and is not assumed (the
process uses the platform's own key for S3); no maintenance windows (``WeeklyMaintenanceWindowStart``
is recorded, ``TrackingServerMaintenanceStatus`` never set); ``AutomaticModelRegistration`` is
recorded without registering models in the SageMaker model registry; ``S3BucketOwner*`` are
recorded; ``CreatedBy``/``LastModifiedBy`` are not; an ``https://`` ArtifactStoreUri is refused;
MLflow's server-side job execution (GenAI scorer and optimization jobs) is off.
A duplicate name answers ``ValidationException`` "... already exists", as other SageMaker creators do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, Conflict, NotFound, ServiceError, resource_not_found, validation_error
from opensage.jobs.training import TrainingEngine
from opensage.mlflow_servers import tokens
from opensage.mlflow_servers.engine import (
    KIND,
    RUNNING,
    STARTABLE,
    STOPPABLE,
    MlflowMissing,
    Status,
    TrackingServers,
    mlflow_command,
    mlflow_version,
)
from opensage.mlflow_servers.front import ui_path
from opensage.store import tags
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

DEFAULT_WINDOW = "Tue:03:30"
DEFAULT_URL_EXPIRY_S = 300  # what AWS documents for ExpiresInSeconds
DEFAULT_SESSION_S = 43200  # and for SessionExpirationDurationInSeconds (12 hours)
_UPDATABLE = ("ArtifactStoreUri", "TrackingServerSize", "AutomaticModelRegistration", "WeeklyMaintenanceWindowStart")
_RECORDED = ("S3BucketOwnerAccountId", "S3BucketOwnerVerification")
_SUMMARY = (
    "TrackingServerArn",
    "TrackingServerName",
    "CreationTime",
    "LastModifiedTime",
    "TrackingServerStatus",
    "IsActive",
    "MlflowVersion",
)
_LIST_SORT = {"Name": "name", "CreationTime": "created_at", "Status": "status"}


def _conflict(message: str) -> ServiceError:
    return ServiceError("ConflictException", message)


class MlflowOperations:
    store: SqlStore
    clock: Callable[[], dt.datetime]
    mlflow_servers: TrackingServers
    mlflow_url: str  # the platform's API URL, which the front is under
    training: TrainingEngine  # its ``s3`` client checks the artifact bucket
    _require_role: Callable[[RequestContext, str], None]

    def _tracking_server(self, name: str) -> Resource:
        row = self.store.get_resource(KIND, name.lower())
        if row is None:
            raise resource_not_found(
                f"Tracking server {name} does not exist (ListMlflowTrackingServers lists the tracking servers)."
            )
        return row

    def _check_artifact_store(self, uri: str) -> None:
        """An ``s3://`` URI whose bucket exists in the platform's object store."""
        if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
            raise validation_error(
                f"ArtifactStoreUri must be an s3:// URI of a bucket in this platform's object store "
                f"(like s3://my-bucket/mlflow), not {uri!r}."
            )
        bucket = uri[5:].split("/", 1)[0]
        try:
            self.training.s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                raise validation_error(
                    f"The bucket {bucket} of ArtifactStoreUri {uri} does not exist: create it first "
                    f"(aws s3 mb s3://{bucket})."
                ) from None
            raise validation_error(f"Could not check the bucket {bucket} of ArtifactStoreUri {uri}: {exc}.") from None
        except BotoCoreError as exc:
            raise ServiceError(
                "InternalFailure", f"The object store did not answer while checking {uri}: {exc}", 500
            ) from None

    def create_mlflow_tracking_server(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["TrackingServerName"]
        try:
            mlflow_command()
        except MlflowMissing as exc:
            raise validation_error(str(exc)) from None
        self._check_artifact_store(request["ArtifactStoreUri"])
        self._require_role(ctx, request["RoleArn"])
        arn = ctx.arn("sagemaker", f"mlflow-tracking-server/{name.lower()}")  # names are unique in any case
        now = self.clock()
        data = {
            "TrackingServerArn": arn,
            "TrackingServerName": name,
            "ArtifactStoreUri": request["ArtifactStoreUri"],
            "TrackingServerSize": request.get("TrackingServerSize") or "Small",
            "MlflowVersion": mlflow_version(),
            "RequestedMlflowVersion": request.get("MlflowVersion"),
            "RoleArn": request["RoleArn"],
            "AutomaticModelRegistration": bool(request.get("AutomaticModelRegistration", False)),
            "WeeklyMaintenanceWindowStart": request.get("WeeklyMaintenanceWindowStart") or DEFAULT_WINDOW,
            **{k: request[k] for k in _RECORDED if k in request},
        }
        try:
            self.store.create_resource(Resource(KIND, name.lower(), arn, Status.CREATING, now, now, data))
        except AlreadyExists:
            raise validation_error(
                f"Tracking server {name} already exists: choose another name, or delete it first."
            ) from None
        if request.get("Tags"):
            tags.put_tags(self.store, arn, request["Tags"], now)
        self.mlflow_servers.launch(name.lower())
        return {"TrackingServerArn": arn}

    def describe_mlflow_tracking_server(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._tracking_server(request["TrackingServerName"])
        out = {k: v for k, v in row.data.items() if k != "RequestedMlflowVersion" and v is not None}
        out.update(
            TrackingServerStatus=row.status,
            IsActive="Active" if row.status in RUNNING else "Inactive",
            TrackingServerUrl=self.mlflow_url + ui_path(row.name),
            CreationTime=row.created_at,
            LastModifiedTime=row.updated_at,
        )
        return out

    def list_mlflow_tracking_servers(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows = self.store.list_resources(
            KIND,
            status=request.get("TrackingServerStatus"),
            created_after=request.get("CreatedAfter"),
            created_before=request.get("CreatedBefore"),
            sort_by=_LIST_SORT[request.get("SortBy") or "CreationTime"],
            descending=(request.get("SortOrder") or "Descending") == "Descending",
        )
        version = request.get("MlflowVersion")
        summaries = []
        for row in rows:
            if version and row.data.get("MlflowVersion") != version:
                continue
            described = self.describe_mlflow_tracking_server(ctx, {"TrackingServerName": row.name})
            summaries.append({k: described[k] for k in _SUMMARY if k in described})
        return {"TrackingServerSummaries": summaries}  # paged by the gateway

    def update_mlflow_tracking_server(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["TrackingServerName"]
        row = self._tracking_server(name)
        changes = {k: request[k] for k in (*_UPDATABLE, *_RECORDED) if k in request}
        if "ArtifactStoreUri" in changes:
            self._check_artifact_store(changes["ArtifactStoreUri"])
        moved = changes.get("ArtifactStoreUri", row.data["ArtifactStoreUri"]) != row.data["ArtifactStoreUri"]
        status = Status(row.status)
        if status in STOPPABLE:
            to = Status.UPDATING if moved else Status.UPDATED  # a new artifact root needs a new process
        elif status in STARTABLE:
            to = status
        else:
            raise _conflict(f"Tracking server {name} is {row.status}; update it once it is active or stopped.")
        try:
            self.mlflow_servers.transition(row.name, to, (status,), {**row.data, **changes})
        except (Conflict, NotFound):
            raise _conflict(f"Tracking server {name} changed meanwhile; try again.") from None
        if to == Status.UPDATING:
            self.mlflow_servers.launch(row.name)
        return {"TrackingServerArn": row.arn}

    def start_mlflow_tracking_server(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._tracking_server(request["TrackingServerName"])
        if row.status not in STARTABLE:
            raise _conflict(
                f"Tracking server {row.name} is {row.status}: only a stopped server can be started "
                "(see TrackingServerStatus in DescribeMlflowTrackingServer)."
            )
        self._move_tracking_server(row, Status.STARTING, STARTABLE)
        self.mlflow_servers.launch(row.name)
        return {"TrackingServerArn": row.arn}

    def stop_mlflow_tracking_server(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._tracking_server(request["TrackingServerName"])
        if row.status not in STOPPABLE:
            raise _conflict(
                f"Tracking server {row.name} is {row.status}: only an active server can be stopped "
                "(see TrackingServerStatus in DescribeMlflowTrackingServer)."
            )
        self._move_tracking_server(row, Status.STOPPING, STOPPABLE)
        self.mlflow_servers.halt(row.name)
        return {"TrackingServerArn": row.arn}

    def delete_mlflow_tracking_server(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._tracking_server(request["TrackingServerName"])
        if row.status == Status.DELETING:
            raise _conflict(f"Tracking server {row.name} is being deleted already.")
        self._move_tracking_server(row, Status.DELETING, tuple(s for s in Status if s != Status.DELETING))
        tags.drop_tags(self.store, row.arn)
        self.mlflow_servers.halt(row.name, then=self.mlflow_servers.remove)
        return {"TrackingServerArn": row.arn}

    def create_presigned_mlflow_tracking_server_url(
        self, ctx: RequestContext, request: dict[str, Any]
    ) -> dict[str, Any]:
        row = self._tracking_server(request["TrackingServerName"])
        expires = request.get("ExpiresInSeconds") or DEFAULT_URL_EXPIRY_S
        session = request.get("SessionExpirationDurationInSeconds") or DEFAULT_SESSION_S
        grant = tokens.Grant(tokens.URL, row.name, self.clock().timestamp() + expires, session)
        token = tokens.issue(tokens.signing_key(self.store), grant)
        return {"AuthorizedUrl": f"{self.mlflow_url}{ui_path(row.name)}auth?authToken={token}"}

    def _move_tracking_server(self, row: Resource, to: Status, expect: tuple[Status, ...]) -> None:
        try:
            self.mlflow_servers.transition(row.name, to, expect)
        except (Conflict, NotFound):
            raise _conflict(f"Tracking server {row.name} changed meanwhile; describe it and try again.") from None
