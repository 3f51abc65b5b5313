"""Model package groups and model packages, as the store keeps them.

A group is a row of kind ``model-package-group``; each version of it is a row of kind
``model-package`` whose ``parent_arn`` is the group's ARN, named ``<group>/<version>`` (lower-cased,
as ARNs are), with the approval status as the row's status so that listings filter and sort in SQL.
Versions count up per group from 1: the next number is taken with a compare-and-set on the group's
document, so two registrations at once never get the same version. An unversioned package (given a
``ModelPackageName`` instead of a group) is a row of its own name.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from opensage.errors import NotFound
from opensage.store import tags
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch, jsonable

GROUP = "model-package-group"
PACKAGE = "model-package"
_VERSIONS = "_Versions"  # the last version number a group handed out (kept in the group's document)


class Approval(StrEnum):
    """ModelApprovalStatus."""

    APPROVED = "Approved"
    REJECTED = "Rejected"
    PENDING = "PendingManualApproval"


class PackageStatus(StrEnum):
    """ModelPackageStatus (a package is checked when it is created, so it is Completed at once)."""

    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    DELETING = "Deleting"


_ARN = re.compile(r"arn:aws[a-z-]*:sagemaker:[^:]*:\d{12}:model-package/([^/]+)(?:/(\d+))?")
_GROUP_ARN = re.compile(r"arn:aws[a-z-]*:sagemaker:[^:]*:\d{12}:model-package-group/([^/]+)")


def public(data: Mapping[str, Any]) -> dict[str, Any]:
    """A stored document as Describe* answers it (without the platform's own members)."""
    return {k: v for k, v in data.items() if not k.startswith("_") and k != "Tags"}


def group_key(name_or_arn: str) -> str:
    """The row name of a group given its name or ARN."""
    m = _GROUP_ARN.fullmatch(name_or_arn)
    return (m.group(1) if m else name_or_arn).lower()


def package_key(name_or_arn: str) -> str:
    """The row name of a package given its ARN (versioned or not), its name, or ``<group>/<version>``."""
    m = _ARN.fullmatch(name_or_arn)
    if m:
        return f"{m.group(1).lower()}/{m.group(2)}" if m.group(2) else m.group(1).lower()
    return name_or_arn.lower()


def is_package_arn(value: str) -> bool:
    return _ARN.fullmatch(value) is not None


def create_group(store: SqlStore, request: Mapping[str, Any], arn: str, now: dt.datetime) -> Resource:
    """Record a group. Raises ``AlreadyExists``."""
    name = request["ModelPackageGroupName"]
    data = {
        **jsonable(public(request)),
        "ModelPackageGroupArn": arn,
        "CreationTime": epoch(now),
        "ModelPackageGroupStatus": "Completed",
        _VERSIONS: 0,
    }
    row = store.create_resource(Resource(GROUP, group_key(name), arn, "Completed", now, now, data))
    if request.get("Tags"):
        tags.put_tags(store, arn, request["Tags"], now)
    return row


def next_version(store: SqlStore, group: str, now: dt.datetime) -> tuple[Resource, int]:
    """Take the next version number of ``group`` (compare-and-set). Raises ``NotFound``."""

    def change(row: Resource) -> tuple[dict[str, Any], str | None]:
        return {**row.data, _VERSIONS: int(row.data.get(_VERSIONS, 0)) + 1}, None

    row = store.modify_resource(GROUP, group_key(group), change, now=now)
    return row, int(row.data[_VERSIONS])


def package_document(
    request: Mapping[str, Any], arn: str, now: dt.datetime, group: Resource | None, version: int | None
) -> dict[str, Any]:
    """What DescribeModelPackage answers for a package created by ``request``."""
    data = jsonable(public(request))
    data.pop("ClientToken", None)
    data.update(
        ModelPackageArn=arn,
        CreationTime=epoch(now),
        LastModifiedTime=epoch(now),
        ModelPackageStatus=PackageStatus.COMPLETED,
        ModelPackageStatusDetails={"ValidationStatuses": [], "ImageScanStatuses": []},
        CertifyForMarketplace=bool(request.get("CertifyForMarketplace", False)),
    )
    if group is not None:
        data.update(
            ModelPackageName=group.data["ModelPackageGroupName"],
            ModelPackageGroupName=group.data["ModelPackageGroupName"],
            ModelPackageVersion=version,
            ModelApprovalStatus=request.get("ModelApprovalStatus") or Approval.PENDING,
        )
    return data


def create_package(
    store: SqlStore, request: Mapping[str, Any], arn: str, now: dt.datetime, group: Resource | None
) -> Resource:
    """Record a package (``group`` and the version in ``arn`` for a versioned one). Raises ``AlreadyExists``."""
    version = int(arn.rsplit("/", 1)[1]) if group is not None else None
    data = package_document(request, arn, now, group, version)
    key = package_key(arn)
    status = data.get("ModelApprovalStatus", "")
    row = store.create_resource(
        Resource(PACKAGE, key, arn, status, now, now, data, parent_arn=group.arn if group else "")
    )
    if request.get("Tags"):
        tags.put_tags(store, arn, request["Tags"], now)
    return row


_UPDATABLE = ("ModelApprovalStatus", "ApprovalDescription", "InferenceSpecification", "SourceUri", "ModelCard")


def update_package(store: SqlStore, key: str, request: Mapping[str, Any], now: dt.datetime) -> Resource:
    """Apply an UpdateModelPackage request (approval, its description, metadata, specifications).

    Raises ``NotFound``."""

    def change(row: Resource) -> tuple[dict[str, Any], str | None]:
        data = dict(row.data)
        for member in _UPDATABLE:
            if member in request:
                data[member] = jsonable(request[member])
        if "ModelLifeCycle" in request:
            data["ModelLifeCycle"] = {**data.get("ModelLifeCycle", {}), **jsonable(request["ModelLifeCycle"])}
        properties = dict(data.get("CustomerMetadataProperties") or {})
        properties.update(request.get("CustomerMetadataProperties") or {})
        for k in request.get("CustomerMetadataPropertiesToRemove") or []:
            properties.pop(k, None)
        if properties or "CustomerMetadataProperties" in data:
            data["CustomerMetadataProperties"] = properties
        added = request.get("AdditionalInferenceSpecificationsToAdd") or []
        if added:
            data["AdditionalInferenceSpecifications"] = [
                *(data.get("AdditionalInferenceSpecifications") or []),
                *jsonable(added),
            ]
        data["LastModifiedTime"] = epoch(now)
        return data, data.get("ModelApprovalStatus", row.status)

    return store.modify_resource(PACKAGE, key, change, now=now)


def delete_package(store: SqlStore, row: Resource) -> None:
    store.delete_resource(PACKAGE, row.name)
    tags.drop_tags(store, row.arn)


def delete_group(store: SqlStore, row: Resource) -> None:
    with contextlib.suppress(NotFound):
        store.delete_resource(GROUP, row.name)
    tags.drop_tags(store, row.arn)


def versions(store: SqlStore, group: Resource) -> list[Resource]:
    """Every version of ``group``, newest first."""
    return store.list_resources(PACKAGE, parent_arn=group.arn)


def summary(row: Resource) -> dict[str, Any]:
    """A ModelPackageSummary of a package row."""
    keys = (
        "ModelPackageName",
        "ModelPackageGroupName",
        "ModelPackageVersion",
        "ModelPackageArn",
        "ModelPackageDescription",
        "CreationTime",
        "ModelPackageStatus",
        "ModelApprovalStatus",
        "ModelLifeCycle",
        "ModelPackageRegistrationType",
    )
    return {k: row.data[k] for k in keys if row.data.get(k) is not None}


def group_summary(row: Resource) -> dict[str, Any]:
    keys = ("ModelPackageGroupName", "ModelPackageGroupArn", "ModelPackageGroupDescription", "CreationTime")
    return {**{k: row.data[k] for k in keys if row.data.get(k) is not None}, "ModelPackageGroupStatus": "Completed"}


def container(package: Mapping[str, Any]) -> dict[str, Any]:
    """The first container of a package's InferenceSpecification (what a model made from it runs)."""
    containers = (package.get("InferenceSpecification") or {}).get("Containers") or []
    return dict(containers[0]) if containers else {}
