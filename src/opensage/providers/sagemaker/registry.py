"""SageMaker model registry operations: model package groups and (versioned) model packages.

LIMITATIONS: a package is checked when it is created (each container names an image and, when
given, an ``s3://`` model) and is ``Completed`` at once; ``ValidationSpecification`` is recorded, its
transform jobs are not run; ``CertifyForMarketplace``, ``SecurityConfig``, ``ModelCard`` and
``ManagedStorageType`` are recorded without effect; no cross-account sharing (``CrossAccountFilterOption``
and group policies); ``CreatedBy``/``LastModifiedBy`` are not recorded. ``ListModelPackages`` without
a ``ModelPackageGroupName`` lists unversioned packages unless ``ModelPackageType`` says otherwise,
as AWS documents. DeleteModelPackageGroup refuses a group that still has versions (ConflictException
naming how many), so no version is left without its group.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, NotFound, ServiceError, not_found, validation_error
from opensage.providers.sagemaker.listing import list_page
from opensage.providers.sagemaker.search import SearchOperations
from opensage.registry import packages as reg
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore


def _conflict(message: str) -> ServiceError:
    return ServiceError("ConflictException", message)


def _check_spec(spec: dict[str, Any] | None, member: str) -> None:
    for i, c in enumerate((spec or {}).get("Containers") or []):
        if not c.get("Image") and not c.get("ModelPackageName"):
            raise validation_error(f"{member}.Containers[{i}] needs an Image (the image URI its model runs with).")
        url = c.get("ModelDataUrl")
        if url and not url.startswith("s3://"):
            raise validation_error(f"{member}.Containers[{i}].ModelDataUrl must be an s3:// URI, not {url!r}.")


class RegistryOperations(SearchOperations):
    """Comes before :class:`InferenceOperations` among the provider's bases: its ``create_model`` resolves
    model packages, then hands the request on. Search (over the registry and the other resources) comes
    with it."""

    store: SqlStore
    clock: Callable[[], dt.datetime]

    def _group(self, name_or_arn: str) -> Resource:
        row = self.store.get_resource(reg.GROUP, reg.group_key(name_or_arn))
        if row is None:
            raise not_found(f"ModelPackageGroup {name_or_arn} does not exist.")
        return row

    def _package(self, name_or_arn: str) -> Resource:
        row = self.store.get_resource(reg.PACKAGE, reg.package_key(name_or_arn))
        if row is None:
            raise not_found(f"ModelPackage {name_or_arn} does not exist.")
        return row

    # --- groups -------------------------------------------------------------------------------------

    def create_model_package_group(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["ModelPackageGroupName"]
        arn = ctx.arn("sagemaker", f"model-package-group/{name.lower()}")
        try:
            reg.create_group(self.store, request, arn, self.clock())
        except AlreadyExists as exc:
            raise validation_error(f"Model Package Group already exists: {arn}") from exc
        return {"ModelPackageGroupArn": arn}

    def describe_model_package_group(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return reg.public(self._group(request["ModelPackageGroupName"]).data)

    def list_model_package_groups(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows, token = list_page(self.store, reg.GROUP, {**request, "NameContains": _lower(request.get("NameContains"))})
        return {"ModelPackageGroupSummaryList": [reg.group_summary(r) for r in rows], "NextToken": token}

    def delete_model_package_group(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        group = self._group(request["ModelPackageGroupName"])
        left = reg.versions(self.store, group)
        if left:
            raise _conflict(
                f"Model Package Group {group.data['ModelPackageGroupName']} still has {len(left)} model package "
                "version(s); delete them (DeleteModelPackage) before the group."
            )
        reg.delete_group(self.store, group)
        return {}

    # --- packages -----------------------------------------------------------------------------------

    def create_model_package(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        group_name, name = request.get("ModelPackageGroupName"), request.get("ModelPackageName")
        if bool(group_name) == bool(name):
            raise validation_error(
                "Give either ModelPackageGroupName (a versioned package of that group) or ModelPackageName "
                "(an unversioned package), not both nor neither."
            )
        _check_spec(request.get("InferenceSpecification"), "InferenceSpecification")
        for i, spec in enumerate(request.get("AdditionalInferenceSpecifications") or []):
            _check_spec(spec, f"AdditionalInferenceSpecifications[{i}]")
        if group_name and not request.get("InferenceSpecification") and not request.get("SourceUri"):
            raise validation_error("A model package version needs an InferenceSpecification (or a SourceUri).")
        now = self.clock()
        if group_name:
            try:
                group, version = reg.next_version(self.store, group_name, now)
            except NotFound as exc:
                raise not_found(
                    f"Model Package Group {group_name} does not exist; create it with CreateModelPackageGroup."
                ) from exc
            arn = ctx.arn("sagemaker", f"model-package/{group.name}/{version}")
            reg.create_package(self.store, request, arn, now, group)
            return {"ModelPackageArn": arn}
        if request.get("ModelApprovalStatus"):
            raise validation_error("ModelApprovalStatus is for versioned packages (give a ModelPackageGroupName).")
        arn = ctx.arn("sagemaker", f"model-package/{str(name).lower()}")
        try:
            reg.create_package(self.store, request, arn, now, None)
        except AlreadyExists as exc:
            raise validation_error(f"Model Package already exists: {arn}") from exc
        return {"ModelPackageArn": arn}

    def describe_model_package(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return reg.public(self._package(request["ModelPackageName"]).data)

    def batch_describe_model_package(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        found, errors = {}, {}
        for arn in request["ModelPackageArnList"]:
            row = self.store.get_resource(reg.PACKAGE, reg.package_key(arn))
            if row is None:
                errors[arn] = {"ErrorCode": "ValidationException", "ErrorResponse": f"ModelPackage {arn} not found."}
            else:
                keys = (
                    "ModelPackageGroupName",
                    "ModelPackageVersion",
                    "ModelPackageArn",
                    "ModelPackageDescription",
                    "CreationTime",
                    "InferenceSpecification",
                    "ModelPackageStatus",
                    "ModelApprovalStatus",
                )
                found[arn] = {k: row.data[k] for k in keys if k in row.data}
        return {"ModelPackageSummaries": found, "BatchDescribeModelPackageErrorMap": errors}

    def list_model_packages(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        kind = request.get("ModelPackageType")
        filters: dict[str, Any] = {"status": request.get("ModelApprovalStatus")}
        query = {k: v for k, v in request.items() if k != "NameContains"}
        query["NameContains"] = _lower(request.get("NameContains"))
        if request.get("ModelPackageGroupName"):
            filters["parent_arn"] = self._group(request["ModelPackageGroupName"]).arn
        elif kind in (None, "Unversioned"):
            filters["parent_arn"] = ""  # no group
        rows, token = list_page(self.store, reg.PACKAGE, query, **filters)
        if kind == "Versioned":
            rows = [r for r in rows if r.parent_arn]
        return {"ModelPackageSummaryList": [reg.summary(r) for r in rows], "NextToken": token}

    def update_model_package(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._package(request["ModelPackageArn"])
        if "ModelApprovalStatus" in request and not row.parent_arn:
            raise validation_error("Only versioned model packages (of a group) have a ModelApprovalStatus.")
        _check_spec(request.get("InferenceSpecification"), "InferenceSpecification")
        try:
            reg.update_package(self.store, row.name, request, self.clock())
        except NotFound as exc:
            raise not_found(f"ModelPackage {request['ModelPackageArn']} does not exist.") from exc
        return {"ModelPackageArn": row.arn}

    def delete_model_package(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._package(request["ModelPackageName"])
        try:
            reg.delete_package(self.store, row)
        except NotFound as exc:
            raise not_found(f"ModelPackage {request['ModelPackageName']} does not exist.") from exc
        return {}

    def create_model(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        """CreateModel, where a container may name a ``ModelPackageName`` instead of an image and a model."""
        return super().create_model(ctx, self._with_packages(request))  # type: ignore[misc]

    def _with_packages(self, request: dict[str, Any]) -> dict[str, Any]:
        """``request`` with each container that names a ``ModelPackageName`` completed from that package."""
        out = dict(request)
        if (request.get("PrimaryContainer") or {}).get("ModelPackageName"):
            out["PrimaryContainer"] = self._model_package_container(request["PrimaryContainer"])
        if request.get("Containers"):
            out["Containers"] = [
                self._model_package_container(c) if c.get("ModelPackageName") else c for c in request["Containers"]
            ]
        return out

    def _model_package_container(self, container: dict[str, Any]) -> dict[str, Any]:
        """CreateModel's container with a ``ModelPackageName``: the package's image, model and environment
        (the request's environment on top), for the servers and transform jobs that run the model."""
        name = container["ModelPackageName"]
        row = self.store.get_resource(reg.PACKAGE, reg.package_key(name))
        if row is None:
            raise validation_error(f"ModelPackage {name} does not exist; give the ARN of a model package.")
        if row.parent_arn and row.data.get("ModelApprovalStatus") != reg.Approval.APPROVED:
            raise validation_error(
                f"Model package {row.arn} is {row.data.get('ModelApprovalStatus')}; only an Approved model package "
                "version can be deployed (UpdateModelPackage with ModelApprovalStatus=Approved)."
            )
        base = reg.container(row.data)
        if not base.get("Image"):
            raise validation_error(f"Model package {row.arn} has no container in its InferenceSpecification.")
        environment = {**(base.get("Environment") or {}), **(container.get("Environment") or {})}
        out = {k: base[k] for k in ("Image", "ModelDataUrl") if base.get(k)}
        merged = {**container, **out, "ModelPackageName": row.arn}
        if environment:
            merged["Environment"] = environment
        return merged


def _lower(value: str | None) -> str | None:
    return value.lower() if value else value
