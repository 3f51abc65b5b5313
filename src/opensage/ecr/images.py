"""Container image repositories, their images (manifests) and tags, as the store keeps them; and the tokens
that sign registry clients in.

A repository is a row of kind ``ecr-repository`` named by its name; an image is a row ``ecr-image``
named ``<repository>@<digest>`` holding its manifest (manifests are small; the layers and configs they
name are blobs in the object store, :mod:`opensage.ecr.blobs`); a tag is a row ``ecr-tag`` named
``<repository>:<tag>`` pointing at a digest. Images and tags have their repository's ARN as parent.

The registry password (GetAuthorizationToken, ``docker login -u AWS``) is the access key id and an
expiry sealed with the home's master key: it proves who asked, and nothing can forge or extend it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opensage.errors import AlreadyExists, NotFound, ServiceError
from opensage.store import tags as tagstore
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore, StoreError
from opensage.timestamps import epoch

REPOSITORY, IMAGE, TAG = "ecr-repository", "ecr-image", "ecr-tag"
TOKEN_TTL_S = 12 * 3600  # as ECR's
NAME = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")
TAG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_LIST, OCI_INDEX)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def repository_not_found(name: str, account: str) -> ServiceError:
    return ServiceError(
        "RepositoryNotFoundException",
        f"The repository with name '{name}' does not exist in the registry with id '{account}'. "
        "Create it with CreateRepository (aws ecr create-repository --repository-name ...).",
    )


def create_repository(
    store: SqlStore, request: Mapping[str, Any], account: str, region: str, now: dt.datetime
) -> Resource:
    name = request["repositoryName"]
    if not NAME.fullmatch(name):
        raise ServiceError(
            "InvalidParameterException",
            f"Invalid parameter at 'repositoryName': {name!r} must be lower-case letters, digits and . _ - "
            "separators, in /-separated parts (e.g. team/my-model).",
        )
    arn = f"arn:aws:ecr:{region}:{account}:repository/{name}"
    data = {
        "repositoryArn": arn,
        "registryId": account,
        "repositoryName": name,
        "repositoryUri": f"{account}.dkr.ecr.{region}.amazonaws.com/{name}",
        "createdAt": epoch(now),
        "imageTagMutability": request.get("imageTagMutability") or "MUTABLE",
        "imageScanningConfiguration": request.get("imageScanningConfiguration") or {"scanOnPush": False},
        "encryptionConfiguration": request.get("encryptionConfiguration") or {"encryptionType": "AES256"},
    }
    try:
        row = store.create_resource(Resource(REPOSITORY, name, arn, "", now, now, data))
    except AlreadyExists as exc:
        raise ServiceError(
            "RepositoryAlreadyExistsException",
            f"The repository with name '{name}' already exists in the registry with id '{account}'",
        ) from exc
    if request.get("tags"):
        tagstore.put_tags(store, arn, [{"Key": t["Key"], "Value": t.get("Value", "")} for t in request["tags"]], now)
    return row


def repository(store: SqlStore, name: str, account: str) -> Resource:
    row = store.get_resource(REPOSITORY, name)
    if row is None:
        raise repository_not_found(name, account)
    return row


def images(store: SqlStore, repo: Resource) -> list[Resource]:
    return store.list_resources(IMAGE, parent_arn=repo.arn, sort_by="created_at", descending=True)


def tag_rows(store: SqlStore, repo: Resource) -> list[Resource]:
    return store.list_resources(TAG, parent_arn=repo.arn, sort_by="name", descending=False)


def tags_by_digest(store: SqlStore, repo: Resource) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for t in tag_rows(store, repo):
        out.setdefault(t.data["digest"], []).append(t.data["tag"])
    return out


def image(store: SqlStore, repo: Resource, digest: str) -> Resource | None:
    return store.get_resource(IMAGE, f"{repo.name}@{digest}")


def resolve(store: SqlStore, repo: Resource, reference: str) -> Resource | None:
    """The image a tag or a digest names in ``repo``."""
    if DIGEST.fullmatch(reference):
        return image(store, repo, reference)
    tag = store.get_resource(TAG, f"{repo.name}:{reference}")
    return image(store, repo, tag.data["digest"]) if tag is not None else None


@dataclass(frozen=True, slots=True)
class Manifest:
    media_type: str
    references: tuple[str, ...]  # blobs (an image's config and layers) or manifests (an index's)
    size: int  # what the image's layers and config weigh (ECR's imageSizeInBytes)
    artifact_type: str


def parse_manifest(body: bytes, content_type: str | None) -> Manifest:
    """Raises ``ValueError`` saying what is wrong with the manifest."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"the manifest is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError("the manifest is not a JSON object")
    media_type = (content_type or "").split(";")[0].strip() or doc.get("mediaType") or ""
    if media_type in ("", "application/json", "application/octet-stream"):
        media_type = doc.get("mediaType") or (OCI_INDEX if "manifests" in doc else OCI_MANIFEST)
    if doc.get("mediaType") and doc["mediaType"] != media_type:
        raise ValueError(f"the manifest says it is {doc['mediaType']} but was sent as {media_type}")
    if media_type in IMAGE_TYPES:
        config = doc.get("config") or {}
        layers = doc.get("layers")
        if not isinstance(layers, list) or not config.get("digest"):
            raise ValueError("an image manifest needs a config and a list of layers")
        refs = [config["digest"], *(layer.get("digest", "") for layer in layers)]
        size = int(config.get("size", 0)) + sum(int(layer.get("size", 0)) for layer in layers)
        artifact = doc.get("artifactType") or config.get("mediaType", "")
    elif media_type in INDEX_TYPES:
        manifests = doc.get("manifests")
        if not isinstance(manifests, list):
            raise ValueError("an image index needs a list of manifests")
        refs = [m.get("digest", "") for m in manifests]
        size, artifact = 0, doc.get("artifactType", "")
    else:
        raise ValueError(
            f"manifests of media type {media_type!r} are not accepted; push {', '.join(IMAGE_TYPES + INDEX_TYPES)}"
        )
    bad = [r for r in refs if not DIGEST.fullmatch(str(r))]
    if bad:
        raise ValueError(f"the manifest names a digest that is not sha256:<64 hex>: {bad[0]!r}")
    return Manifest(media_type, tuple(refs), size, artifact)


def put_image(
    store: SqlStore, repo: Resource, body: bytes, manifest: Manifest, tag: str | None, now: dt.datetime
) -> tuple[Resource, bool]:
    """Record an image (and point ``tag`` at it); (its row, whether the tag moved or the image is new).

    Raises ``ServiceError`` ImageTagAlreadyExistsException for a tag an immutable repository has on
    another image."""
    digest = digest_of(body)
    name = f"{repo.name}@{digest}"
    row = store.get_resource(IMAGE, name)
    changed = row is None
    if row is None:
        data = {
            "imageDigest": digest,
            "imageManifestMediaType": manifest.media_type,
            "artifactMediaType": manifest.artifact_type,
            "imageSizeInBytes": manifest.size,
            "imagePushedAt": epoch(now),
            "manifest": body.decode(),
            "references": list(manifest.references),
        }
        try:
            row = store.create_resource(
                Resource(IMAGE, name, f"{repo.arn}@{digest}", "", now, now, data, parent_arn=repo.arn)
            )
        except AlreadyExists:
            row = store.get_resource(IMAGE, name)
            assert row is not None
    if tag:
        changed = set_tag(store, repo, tag, digest, now) or changed
    return row, changed


def set_tag(store: SqlStore, repo: Resource, tag: str, digest: str, now: dt.datetime) -> bool:
    """Point ``tag`` at ``digest``; whether it changed."""
    key = f"{repo.name}:{tag}"
    current = store.get_resource(TAG, key)
    if current is not None and current.data["digest"] == digest:
        return False
    if current is not None and repo.data.get("imageTagMutability", "MUTABLE").startswith("IMMUTABLE"):
        raise ServiceError(
            "ImageTagAlreadyExistsException",
            f"The image tag '{tag}' already exists in the '{repo.name}' repository and cannot be overwritten "
            "because the repository is immutable; push a new tag, or PutImageTagMutability MUTABLE.",
        )
    data = {"tag": tag, "digest": digest}
    if current is None:
        try:
            store.create_resource(Resource(TAG, key, f"{repo.arn}:{tag}", "", now, now, data, parent_arn=repo.arn))
            return True
        except AlreadyExists:
            pass
    store.modify_resource(TAG, key, lambda _row: (data, None), now=now)
    return True


def delete_image(store: SqlStore, repo: Resource, digest: str) -> list[str]:
    """Delete an image and the tags on it; the tags it had. Raises ``NotFound``."""
    gone = [t for t in tag_rows(store, repo) if t.data["digest"] == digest]
    for t in gone:
        store.delete_resource(TAG, t.name)
    store.delete_resource(IMAGE, f"{repo.name}@{digest}")
    return [t.data["tag"] for t in gone]


def untag(store: SqlStore, repo: Resource, tag: str) -> str:
    """Remove a tag; the digest it pointed at. Raises ``NotFound``."""
    row = store.get_resource(TAG, f"{repo.name}:{tag}")
    if row is None:
        raise NotFound(f"tag {tag}")
    store.delete_resource(TAG, row.name)
    return str(row.data["digest"])


# --- registry passwords -----------------------------------------------------------------------------


def issue_token(store: SqlStore, access_key_id: str, now: dt.datetime) -> tuple[str, float]:
    """(the registry password for ``access_key_id``, when it expires in epoch seconds)."""
    expires = now.timestamp() + TOKEN_TTL_S
    sealed = store.seal(json.dumps({"key": access_key_id, "exp": expires}).encode())
    return sealed.decode(), expires


def authorization_token(password: str) -> str:
    """GetAuthorizationToken's ``authorizationToken``: base64 of ``AWS:<password>``."""
    return base64.b64encode(f"AWS:{password}".encode()).decode()


def check_token(store: SqlStore, password: str, now: dt.datetime) -> str | None:
    """The access key id a registry password was issued to, None when it is not a live one of ours."""
    try:
        claims = json.loads(store.unseal(password.encode()))
    except (StoreError, ValueError):
        return None
    if not isinstance(claims, dict) or float(claims.get("exp", 0)) < now.timestamp():
        return None
    key = store.get_access_key(str(claims.get("key", "")))
    return key.access_key_id if key is not None and key.status == "Active" else None
