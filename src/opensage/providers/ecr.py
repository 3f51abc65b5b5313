"""Amazon ECR: repositories, images and the registry password, over the registry of
:mod:`opensage.ecr` (whose ``/v2/`` API on its own port is what ``docker push`` and ``skopeo copy`` use).

LIMITATIONS: one registry (the account's; ``registryId`` other than it is refused); no image scanning
(``imageScanningConfiguration`` is recorded), no lifecycle or repository policies, no pull-through
cache or replication; ``encryptionConfiguration`` is recorded (the object store encrypts as configured).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.ecr import images as img
from opensage.ecr.blobs import BlobStore
from opensage.errors import NotFound, ServiceError
from opensage.store import tags as tagstore
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

REPOSITORY_KEYS = (
    "repositoryArn",
    "registryId",
    "repositoryName",
    "repositoryUri",
    "createdAt",
    "imageTagMutability",
    "imageScanningConfiguration",
    "encryptionConfiguration",
)


def _invalid(message: str) -> ServiceError:
    return ServiceError("InvalidParameterException", message)


class EcrProvider:
    def __init__(
        self, store: SqlStore, clock: Callable[[], dt.datetime], blobs: BlobStore | None, registry_url: str
    ) -> None:
        self.store = store
        self.clock = clock
        self.blobs = blobs
        self.registry_url = registry_url

    def _check_registry(self, ctx: RequestContext, request: dict[str, Any]) -> None:
        if request.get("registryId") and request["registryId"] != ctx.account_id:
            raise _invalid(f"registryId {request['registryId']} is not this account's registry ({ctx.account_id}).")

    def _repo(self, ctx: RequestContext, request: dict[str, Any]) -> Resource:
        self._check_registry(ctx, request)
        return img.repository(self.store, request["repositoryName"], ctx.account_id)

    # --- repositories -----------------------------------------------------------------------------

    def create_repository(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._check_registry(ctx, request)
        row = img.create_repository(self.store, request, ctx.account_id, ctx.region, self.clock())
        return {"repository": {k: row.data[k] for k in REPOSITORY_KEYS}}

    def describe_repositories(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._check_registry(ctx, request)
        if request.get("repositoryNames"):
            rows = [img.repository(self.store, n, ctx.account_id) for n in request["repositoryNames"]]
        else:
            rows = self.store.list_resources(img.REPOSITORY, sort_by="name", descending=False)
        return {"repositories": [{k: r.data[k] for k in REPOSITORY_KEYS} for r in rows]}

    def delete_repository(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        repo = self._repo(ctx, request)
        held = img.images(self.store, repo)
        if held and not request.get("force"):
            raise ServiceError(
                "RepositoryNotEmptyException",
                f"The repository with name '{repo.name}' in registry with id '{ctx.account_id}' cannot be deleted "
                f"because it still contains {len(held)} image(s); delete them first or pass force.",
            )
        for image in held:
            img.delete_image(self.store, repo, image.data["imageDigest"])
        for tag in img.tag_rows(self.store, repo):  # tags whose image was never pushed whole
            self.store.delete_resource(img.TAG, tag.name)
        self.store.delete_resource(img.REPOSITORY, repo.name)
        tagstore.drop_tags(self.store, repo.arn)
        return {"repository": {k: repo.data[k] for k in REPOSITORY_KEYS}}

    def put_image_tag_mutability(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        repo = self._repo(ctx, request)
        mutability = request["imageTagMutability"]
        self.store.modify_resource(
            img.REPOSITORY, repo.name, lambda r: ({**r.data, "imageTagMutability": mutability}, None), now=self.clock()
        )
        return {"registryId": ctx.account_id, "repositoryName": repo.name, "imageTagMutability": mutability}

    # --- the registry password --------------------------------------------------------------------

    def get_authorization_token(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        for registry in request.get("registryIds") or []:
            if registry != ctx.account_id:
                raise _invalid(f"registryIds: {registry} is not this account's registry ({ctx.account_id}).")
        password, expires = img.issue_token(self.store, ctx.access_key_id, self.clock())
        return {
            "authorizationData": [
                {
                    "authorizationToken": img.authorization_token(password),
                    "expiresAt": expires,
                    "proxyEndpoint": self.registry_url,
                }
            ]
        }

    # --- images -----------------------------------------------------------------------------------

    def _details(self, ctx: RequestContext, repo: Resource, row: Resource, tags: list[str]) -> dict[str, Any]:
        keys = ("imageDigest", "imageSizeInBytes", "imagePushedAt", "imageManifestMediaType", "artifactMediaType")
        out = {"registryId": ctx.account_id, "repositoryName": repo.name, **{k: row.data[k] for k in keys}}
        if tags:
            out["imageTags"] = sorted(tags)
        if not out.get("artifactMediaType"):
            out.pop("artifactMediaType", None)
        return out

    def _one(self, repo: Resource, image_id: dict[str, str]) -> tuple[Resource | None, dict[str, Any] | None]:
        """The image ``image_id`` names, or the failure saying why it names none."""
        digest, tag = image_id.get("imageDigest"), image_id.get("imageTag")
        if not digest and not tag:
            return None, {
                "imageId": image_id,
                "failureCode": "MissingDigestAndTag",
                "failureReason": "Give an imageDigest or an imageTag.",
            }
        row = img.resolve(self.store, repo, digest or str(tag))
        if row is None:
            return None, {
                "imageId": image_id,
                "failureCode": "ImageNotFound",
                "failureReason": "Requested image not found",
            }
        if tag and digest and img.resolve(self.store, repo, tag) != row:
            return None, {
                "imageId": image_id,
                "failureCode": "ImageTagDoesNotMatchDigest",
                "failureReason": f"The tag {tag} is not on the image {digest}.",
            }
        return row, None

    def _selected(
        self, repo: Resource, ids: list[dict[str, str]] | None
    ) -> tuple[list[Resource], list[dict[str, Any]]]:
        """The images ``ids`` name (every one when None) and the failures for those that name none."""
        if ids is None:
            return img.images(self.store, repo), []
        found, failures = [], []
        for image_id in ids:
            row, failure = self._one(repo, image_id)
            if row is not None:
                found.append(row)
            if failure is not None:
                failures.append(failure)
        return found, failures

    def describe_images(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        repo = self._repo(ctx, request)
        rows, failures = self._selected(repo, request.get("imageIds"))
        if failures:
            raise ServiceError(
                "ImageNotFoundException",
                f"The image {failures[0]['imageId']} does not exist within the repository {repo.name}.",
            )
        tags = img.tags_by_digest(self.store, repo)
        status = (request.get("filter") or {}).get("tagStatus", "ANY")
        details = [self._details(ctx, repo, r, tags.get(r.data["imageDigest"], [])) for r in rows]
        details = [d for d in details if status == "ANY" or (status == "TAGGED") == bool(d.get("imageTags"))]
        return {"imageDetails": details}

    def list_images(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        repo = self._repo(ctx, request)
        status = (request.get("filter") or {}).get("tagStatus", "ANY")
        tags = img.tags_by_digest(self.store, repo)
        ids: list[dict[str, str]] = []
        for row in img.images(self.store, repo):
            digest = row.data["imageDigest"]
            on = tags.get(digest, [])
            if on and status in ("ANY", "TAGGED"):
                ids += [{"imageDigest": digest, "imageTag": t} for t in sorted(on)]
            elif not on and status in ("ANY", "UNTAGGED"):
                ids.append({"imageDigest": digest})
        return {"imageIds": ids}

    def batch_get_image(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        repo = self._repo(ctx, request)
        accepted = request.get("acceptedMediaTypes")
        images, failures = [], []
        for image_id in request["imageIds"]:
            row, failure = self._one(repo, image_id)
            if failure is not None or row is None:
                failures.append(failure)
                continue
            media = row.data["imageManifestMediaType"]
            if accepted and media not in accepted:
                failures.append(
                    {
                        "imageId": image_id,
                        "failureCode": "ImageNotFound",
                        "failureReason": f"The manifest is {media}, not one of the accepted media types.",
                    }
                )
                continue
            found_id = {
                "imageDigest": row.data["imageDigest"],
                **({"imageTag": image_id["imageTag"]} if image_id.get("imageTag") else {}),
            }
            images.append(
                {
                    "registryId": ctx.account_id,
                    "repositoryName": repo.name,
                    "imageId": found_id,
                    "imageManifest": row.data["manifest"],
                    "imageManifestMediaType": media,
                }
            )
        return {"images": images, "failures": failures}

    def batch_delete_image(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        repo = self._repo(ctx, request)
        deleted: list[dict[str, str]] = []
        failures: list[dict[str, Any]] = []
        for image_id in request["imageIds"]:
            digest, tag = image_id.get("imageDigest"), image_id.get("imageTag")
            try:
                if tag and not digest:  # a tag alone: the tag goes; the image stays if other tags hold it
                    digest = img.untag(self.store, repo, tag)
                    if not img.tags_by_digest(self.store, repo).get(digest):
                        img.delete_image(self.store, repo, digest)
                    deleted.append({"imageDigest": digest, "imageTag": tag})
                elif digest:
                    for gone in img.delete_image(self.store, repo, digest) or [""]:
                        deleted.append({"imageDigest": digest, **({"imageTag": gone} if gone else {})})
                else:
                    failures.append(
                        {
                            "imageId": image_id,
                            "failureCode": "MissingDigestAndTag",
                            "failureReason": "Give an imageDigest or an imageTag.",
                        }
                    )
            except NotFound:
                failures.append(
                    {"imageId": image_id, "failureCode": "ImageNotFound", "failureReason": "Requested image not found"}
                )
        return {"imageIds": deleted, "failures": failures}

    def batch_check_layer_availability(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._repo(ctx, request)
        layers, failures = [], []
        for digest in request["layerDigests"]:
            size = self.blobs.size(digest) if self.blobs is not None and img.DIGEST.fullmatch(digest) else None
            if size is None:
                failures.append(
                    {
                        "layerDigest": digest,
                        "failureCode": "MissingLayerDigest",
                        "failureReason": "The layer is not in the registry.",
                    }
                )
            else:
                layers.append({"layerDigest": digest, "layerAvailability": "AVAILABLE", "layerSize": size})
        return {"layers": layers, "failures": failures}

    def put_image(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        repo = self._repo(ctx, request)
        body = request["imageManifest"].encode()
        try:
            manifest = img.parse_manifest(body, request.get("imageManifestMediaType"))
        except ValueError as exc:
            raise _invalid(f"imageManifest is not valid: {exc}.") from exc
        if request.get("imageDigest") and request["imageDigest"] != img.digest_of(body):
            raise _invalid(f"imageDigest {request['imageDigest']} is not the manifest's ({img.digest_of(body)}).")
        if manifest.media_type in img.IMAGE_TYPES and self.blobs is not None:
            absent = [d for d in manifest.references if self.blobs.size(d) is None]
            if absent:
                raise ServiceError("LayersNotFoundException", f"The layer {absent[0]} is not in the registry.")
        elif manifest.media_type in img.INDEX_TYPES:
            absent = [d for d in manifest.references if img.image(self.store, repo, d) is None]
            if absent:
                raise ServiceError("ReferencedImagesNotFoundException", f"The image {absent[0]} is not in {repo.name}.")
        row, changed = img.put_image(self.store, repo, body, manifest, request.get("imageTag"), self.clock())
        if not changed:
            raise ServiceError(
                "ImageAlreadyExistsException",
                f"Image with digest '{row.data['imageDigest']}' and tag '{request.get('imageTag')}' "
                "already exists in the repository",
            )
        image_id = {
            "imageDigest": row.data["imageDigest"],
            **({"imageTag": request["imageTag"]} if request.get("imageTag") else {}),
        }
        return {
            "image": {
                "registryId": ctx.account_id,
                "repositoryName": repo.name,
                "imageId": image_id,
                "imageManifest": row.data["manifest"],
                "imageManifestMediaType": row.data["imageManifestMediaType"],
            }
        }
