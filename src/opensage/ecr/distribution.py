"""The OCI distribution API (``/v2/...``) that ``docker``, ``skopeo``, ``podman`` and ``crane`` push and pull with.

Served on the registry's own port. Clients sign in as ECR's do: HTTP Basic with user ``AWS`` and the
password from GetAuthorizationToken (``aws ecr get-login-password``); an unauthenticated request is
answered 401 with the ``WWW-Authenticate`` challenge that makes them log in. Repositories must exist
(CreateRepository) before images are pushed to them, as in ECR.

Blobs: monolithic (``POST ?digest=``) and chunked (``POST``, ``PATCH``..., ``PUT ?digest=``) uploads,
cross-repository mounts (``POST ?mount=&from=``), ``HEAD``/``GET``. Manifests by tag or digest (Docker
v2 schema 2 and OCI manifests and indexes), checked (every blob or manifest they name must be there)
and addressed by the sha256 of their exact bytes; ``DELETE`` by digest; tag lists and the catalog.
Errors are the distribution spec's JSON (``{"errors": [{"code": "BLOB_UNKNOWN", ...}]}``).

LIMITATIONS: blobs no image refers to any more stay in the object store (no garbage collection);
no Range requests on blobs; the referrers API and schema 1 manifests are not served.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from opensage.ecr import images as img
from opensage.ecr.blobs import BlobStore
from opensage.errors import NotFound, ServiceError
from opensage.store.sql import SqlStore

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
_NAME = r"(?P<name>(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*)"
ROUTES = [
    (re.compile(r"^/v2/?$"), "base"),
    (re.compile(r"^/v2/_catalog$"), "catalog"),
    (re.compile(rf"^/v2/{_NAME}/tags/list$"), "tags"),
    (re.compile(rf"^/v2/{_NAME}/manifests/(?P<ref>[A-Za-z0-9_.:-]+)$"), "manifest"),
    (re.compile(rf"^/v2/{_NAME}/blobs/uploads/?$"), "upload_start"),
    (re.compile(rf"^/v2/{_NAME}/blobs/uploads/(?P<upload>[0-9a-f]{{32}})$"), "upload"),
    (re.compile(rf"^/v2/{_NAME}/blobs/(?P<digest>[a-z0-9]+:[A-Za-z0-9=_-]+)$"), "blob"),
]
_STATUS = {"UNAUTHORIZED": 401, "DENIED": 403, "UNSUPPORTED": 405, "TOO_LARGE": 413}
MAX_MANIFEST = 4 * 1024 * 1024


class RegistryError(Exception):
    def __init__(self, code: str, message: str, status: int = 0, detail: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.detail = code, message, detail
        self.status = status or _STATUS.get(code, 404 if code.endswith("_UNKNOWN") else 400)


def _error(exc: RegistryError, realm: str) -> Response:
    body = {"errors": [{"code": exc.code, "message": exc.message, "detail": exc.detail}]}
    headers = dict(API_VERSION)
    if exc.status == 401:
        headers["WWW-Authenticate"] = f'Basic realm="{realm}"'
    return JSONResponse(body, status_code=exc.status, headers=headers)


class Distribution:
    """The ASGI app of the registry port."""

    def __init__(
        self, store: SqlStore, blobs: BlobStore, account: str, realm: str, clock: Callable[[], dt.datetime]
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.account = account
        self.realm = realm
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            response = await self._handle(request)
        except RegistryError as exc:
            response = _error(exc, self.realm)
        except ServiceError as exc:
            code = {"RepositoryNotFoundException": "NAME_UNKNOWN", "ImageTagAlreadyExistsException": "TAG_INVALID"}
            response = _error(
                RegistryError(
                    code.get(exc.code, "UNSUPPORTED"),
                    exc.message,
                    404 if exc.code == "RepositoryNotFoundException" else 400,
                ),
                self.realm,
            )
        await response(scope, receive, send)

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", ""
            if user == "AWS" and img.check_token(self.store, password, self.clock()):
                return
            raise RegistryError(
                "UNAUTHORIZED",
                "The registry password is not valid or has expired; sign in again "
                "with the password of `aws ecr get-login-password`.",
            )
        raise RegistryError(
            "UNAUTHORIZED", "Sign in first: docker login -u AWS with the password of `aws ecr get-login-password`."
        )

    async def _handle(self, request: Request) -> Response:
        await asyncio.to_thread(self._authenticate, request)
        path = request.url.path
        for pattern, kind in ROUTES:
            m = pattern.match(path)
            if m:
                return await getattr(self, f"_{kind}")(request, **m.groupdict())
        raise RegistryError(
            "NAME_INVALID", f"{path} is not a path of the registry API (or names an invalid repository)."
        )

    def _repo(self, name: str) -> Any:
        row = self.store.get_resource(img.REPOSITORY, name)
        if row is None:
            raise RegistryError(
                "NAME_UNKNOWN",
                f"The repository with name '{name}' does not exist in the registry "
                f"with id '{self.account}'; create it with aws ecr create-repository.",
            )
        return row

    # --- base, catalog, tags ----------------------------------------------------------------------

    async def _base(self, request: Request) -> Response:
        return JSONResponse({}, headers=API_VERSION)

    async def _catalog(self, request: Request) -> Response:
        rows = await asyncio.to_thread(self.store.list_resources, img.REPOSITORY, sort_by="name", descending=False)
        names = [r.name for r in rows]
        return self._paged(request, "repositories", names, "/v2/_catalog", {})

    async def _tags(self, request: Request, name: str) -> Response:
        repo = await asyncio.to_thread(self._repo, name)
        tags = [t.data["tag"] for t in await asyncio.to_thread(img.tag_rows, self.store, repo)]
        return self._paged(request, "tags", sorted(tags), f"/v2/{name}/tags/list", {"name": name})

    @staticmethod
    def _paged(request: Request, key: str, items: list[str], path: str, extra: dict[str, Any]) -> Response:
        last = request.query_params.get("last")
        if last:
            items = [i for i in items if i > last]
        n = request.query_params.get("n")
        headers = dict(API_VERSION)
        if n and n.isdigit() and len(items) > int(n):
            items = items[: int(n)]
            headers["Link"] = f'<{path}?n={n}&last={quote(items[-1])}>; rel="next"'
        return JSONResponse({**extra, key: items}, headers=headers)

    # --- manifests --------------------------------------------------------------------------------

    async def _manifest(self, request: Request, name: str, ref: str) -> Response:
        repo = await asyncio.to_thread(self._repo, name)
        if request.method in ("GET", "HEAD"):
            row = await asyncio.to_thread(img.resolve, self.store, repo, ref)
            if row is None:
                raise RegistryError("MANIFEST_UNKNOWN", f"The image {name}:{ref} does not exist.", detail={"Tag": ref})
            body = row.data["manifest"].encode()
            headers = {
                **API_VERSION,
                "Docker-Content-Digest": row.data["imageDigest"],
                "Content-Type": row.data["imageManifestMediaType"],
                "Content-Length": str(len(body)),
            }
            return Response(b"" if request.method == "HEAD" else body, headers=headers)
        if request.method == "PUT":
            return await self._put_manifest(request, repo, ref)
        if request.method == "DELETE":
            if not img.DIGEST.fullmatch(ref):
                try:
                    await asyncio.to_thread(img.untag, self.store, repo, ref)
                except NotFound as exc:
                    raise RegistryError("MANIFEST_UNKNOWN", f"There is no tag {ref} in {name}.") from exc
                return Response(status_code=202, headers=API_VERSION)
            try:
                await asyncio.to_thread(img.delete_image, self.store, repo, ref)
            except NotFound as exc:
                raise RegistryError("MANIFEST_UNKNOWN", f"The image {name}@{ref} does not exist.") from exc
            return Response(status_code=202, headers=API_VERSION)
        raise RegistryError("UNSUPPORTED", f"{request.method} is not served on manifests.")

    async def _put_manifest(self, request: Request, repo: Any, ref: str) -> Response:
        body = await request.body()
        if len(body) > MAX_MANIFEST:
            raise RegistryError("MANIFEST_INVALID", f"The manifest is larger than {MAX_MANIFEST} bytes.")
        try:
            manifest = img.parse_manifest(body, request.headers.get("content-type"))
        except ValueError as exc:
            raise RegistryError("MANIFEST_INVALID", f"The manifest is not valid: {exc}.") from exc
        digest = img.digest_of(body)
        if img.DIGEST.fullmatch(ref):
            if ref != digest:
                raise RegistryError("DIGEST_INVALID", f"The manifest's bytes have digest {digest}, not {ref}.")
            tag = None
        elif img.TAG_NAME.fullmatch(ref):
            tag = ref
        else:
            raise RegistryError("TAG_INVALID", f"{ref!r} is not a valid tag (letters, digits, _ . -; 128 at most).")

        def missing() -> list[str]:
            if manifest.media_type in img.INDEX_TYPES:
                return [d for d in manifest.references if img.image(self.store, repo, d) is None]
            return [d for d in manifest.references if self.blobs.size(d) is None]

        absent = await asyncio.to_thread(missing)
        if absent:
            what = "manifest" if manifest.media_type in img.INDEX_TYPES else "blob"
            raise RegistryError(
                "MANIFEST_BLOB_UNKNOWN",
                f"The manifest names a {what} that was not pushed: {absent[0]}.",
                detail={"digest": absent[0]},
            )
        await asyncio.to_thread(img.put_image, self.store, repo, body, manifest, tag, self.clock())
        headers = {**API_VERSION, "Docker-Content-Digest": digest, "Location": f"/v2/{repo.name}/manifests/{digest}"}
        return Response(status_code=201, headers=headers)

    # --- blobs ------------------------------------------------------------------------------------

    async def _blob(self, request: Request, name: str, digest: str) -> Response:
        await asyncio.to_thread(self._repo, name)
        if not img.DIGEST.fullmatch(digest):
            raise RegistryError("DIGEST_INVALID", f"{digest} is not a sha256 digest.")
        size = await asyncio.to_thread(self.blobs.size, digest)
        if size is None:
            raise RegistryError("BLOB_UNKNOWN", f"The blob {digest} is not in the registry.", detail={"digest": digest})
        headers = {
            **API_VERSION,
            "Docker-Content-Digest": digest,
            "Content-Length": str(size),
            "Content-Type": "application/octet-stream",
        }
        if request.method == "HEAD":
            return Response(headers=headers)
        if request.method == "DELETE":
            raise RegistryError("UNSUPPORTED", "Blobs are deleted with the images that use them (BatchDeleteImage).")
        return StreamingResponse(_threaded(self.blobs.read(digest)), headers=headers)

    async def _upload_start(self, request: Request, name: str) -> Response:
        await asyncio.to_thread(self._repo, name)
        if request.method != "POST":
            raise RegistryError("UNSUPPORTED", f"{request.method} is not served on uploads; POST starts one.")
        q = request.query_params
        mount, source = q.get("mount"), q.get("from")
        if mount and img.DIGEST.fullmatch(mount) and await asyncio.to_thread(self.blobs.size, mount) is not None:
            return self._created(name, mount)  # blobs are shared by the account's repositories
        del source
        if q.get("digest"):
            digest = q["digest"]
            data = await request.body()
            try:
                await asyncio.to_thread(self.blobs.put, data, digest)
            except ValueError as exc:
                raise RegistryError("DIGEST_INVALID", f"The blob is not what its digest says: {exc}.") from exc
            return self._created(name, digest)
        upload = await asyncio.to_thread(self.blobs.start, name)
        return self._accepted(name, upload, 0)

    async def _upload(self, request: Request, name: str, upload: str) -> Response:
        state = self.blobs.get(upload, name)
        if state is None:
            raise RegistryError(
                "BLOB_UPLOAD_UNKNOWN", f"There is no upload {upload} in progress for {name}; start a new one."
            )
        if request.method == "GET":
            return Response(status_code=204, headers=self._upload_headers(name, upload, state.size))
        if request.method == "DELETE":
            self.blobs.cancel(upload)
            return Response(status_code=204, headers=API_VERSION)
        if request.method not in ("PATCH", "PUT"):
            raise RegistryError("UNSUPPORTED", f"{request.method} is not served on an upload.")
        start = None
        content_range = request.headers.get("content-range")
        if content_range and request.method == "PATCH":
            m = re.fullmatch(r"(?:bytes[ =])?(\d+)-(\d+)", content_range.strip())
            if m is None:
                raise RegistryError(
                    "BLOB_UPLOAD_INVALID", f"Content-Range {content_range!r} is not <start>-<end>.", 416
                )
            start = int(m.group(1))
        try:
            size = await self._receive(request, state, start)
        except ValueError as exc:
            raise RegistryError("BLOB_UPLOAD_INVALID", f"The chunk is out of order: {exc}.", 416) from exc
        if request.method == "PATCH":
            return self._accepted(name, upload, size)
        digest = request.query_params.get("digest", "")
        if not img.DIGEST.fullmatch(digest):
            raise RegistryError("DIGEST_INVALID", "Finish the upload with PUT ?digest=sha256:<64 hex>.")
        try:
            await asyncio.to_thread(self.blobs.finish, upload, state, digest)
        except ValueError as exc:
            self.blobs.cancel(upload)
            raise RegistryError("DIGEST_INVALID", f"The upload is not what its digest says: {exc}.") from exc
        return self._created(name, digest)

    async def _receive(self, request: Request, state: Any, start: int | None) -> int:
        return await _receive_into(self.blobs, request, state, start)

    @staticmethod
    def _upload_headers(name: str, upload: str, size: int) -> dict[str, str]:
        return {
            **API_VERSION,
            "Location": f"/v2/{name}/blobs/uploads/{upload}",
            "Docker-Upload-UUID": upload,
            "Range": f"0-{max(size - 1, 0)}",
        }

    def _accepted(self, name: str, upload: str, size: int) -> Response:
        return Response(status_code=202, headers={**self._upload_headers(name, upload, size), "Content-Length": "0"})

    @staticmethod
    def _created(name: str, digest: str) -> Response:
        headers = {
            **API_VERSION,
            "Location": f"/v2/{name}/blobs/{digest}",
            "Docker-Content-Digest": digest,
            "Content-Length": "0",
        }
        return Response(status_code=201, headers=headers)


async def _receive_into(blobs: BlobStore, request: Request, state: Any, start: int | None) -> int:
    """Append the request body to an upload as it arrives, a megabyte at a time off the event loop."""
    size = state.size
    buffer: list[bytes] = []
    held = 0
    first = True
    async for chunk in request.stream():
        if not chunk:
            continue
        buffer.append(chunk)
        held += len(chunk)
        if held >= 1024 * 1024:
            size = await asyncio.to_thread(blobs.append, state, iter(buffer), start if first else None)
            first, buffer, held = False, [], 0
    if buffer or first:
        size = await asyncio.to_thread(blobs.append, state, iter(buffer), start if first else None)
    return size


async def _threaded(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A blocking iterator (an object-store read) consumed off the event loop."""
    done = object()
    while True:
        chunk = await asyncio.to_thread(next, chunks, done)
        if chunk is done:
            return
        yield chunk  # type: ignore[misc]
