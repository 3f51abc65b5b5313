"""Storage: browse buckets and prefixes, upload into a prefix, download an object (the platform's S3 client)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from starlette.datastructures import UploadFile
from starlette.responses import Response, StreamingResponse

from opensage.console.pages import BASE, Page, page, redirect

CHUNK = 1024 * 1024


def crumbs(bucket: str, prefix: str) -> list[tuple[str, str]]:
    """(label, prefix) for each level from the bucket down to ``prefix``."""
    out = [(bucket, "")]
    path = ""
    for part in [x for x in prefix.split("/") if x]:
        path += part + "/"
        out.append((part, path))
    return out


@page
async def buckets(p: Page) -> Response:
    return p.render("storage.html", bucket="", buckets=await p.api.gather_use(), listing=None, crumbs=[], prefix="")


async def _browse(p: Page, bucket: str, prefix: str, status: int = 200, error: str = "") -> Response:
    listing = await asyncio.to_thread(p.api.browse, bucket, prefix)
    return p.render(
        "storage.html",
        status,
        bucket=bucket,
        buckets=None,
        listing=listing,
        prefix=prefix,
        crumbs=crumbs(bucket, prefix),
        error=error,
    )


@page
async def browse(p: Page) -> Response:
    return await _browse(p, p.request.path_params["bucket"], p.request.query_params.get("prefix", ""))


@page
async def upload(p: Page) -> Response:
    bucket = p.request.path_params["bucket"]
    prefix = p.field("prefix")
    assert p.form is not None
    file = p.form.get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        return await _browse(p, bucket, prefix, 400, "Choose a file to upload.")
    name = (p.field("name").strip() or file.filename).lstrip("/")
    await asyncio.to_thread(p.api.upload, bucket, prefix + name, file.file)
    return redirect(f"{BASE}/storage/{quote(bucket)}?prefix={quote(prefix)}")


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        while chunk := body.read(CHUNK):
            yield chunk
    finally:
        body.close()


@page
async def download(p: Page) -> Response:
    bucket, key = p.request.path_params["bucket"], p.request.query_params.get("key", "")
    head = await asyncio.to_thread(p.api.head, bucket, key)
    body = await asyncio.to_thread(p.api.open_object, bucket, key)
    filename = key.rsplit("/", 1)[-1] or "object"
    return StreamingResponse(
        _chunks(body),
        media_type=head.get("ContentType") or "application/octet-stream",
        headers={
            "Content-Length": str(head.get("ContentLength", "")),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
        },
    )
