"""Image layers and configs (blobs), kept in the platform's object store by digest, and the uploads that
bring them: chunks appended to a file of the home until the client names the digest, which is checked
before the blob is stored.

Blobs live in one bucket, ``<prefix>/sha256/<hex>``, shared by every repository of the account (a layer
pushed once is mounted into other repositories without a copy). An upload that was never finished
is forgotten with the process; its client starts it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

CHUNK = 1024 * 1024


@dataclass(slots=True)
class Upload:
    repository: str
    path: Path
    hasher: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class BlobStore:
    def __init__(self, s3: Any, bucket: str, uploads_dir: Path, prefix: str = "blobs") -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.uploads_dir = uploads_dir
        self._uploads: dict[str, Upload] = {}
        self._bucket_ready = False

    def _key(self, digest: str) -> str:
        return f"{self.prefix}/{digest.replace(':', '/')}"

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            with contextlib.suppress(ClientError):
                self.s3.create_bucket(Bucket=self.bucket)
        self._bucket_ready = True

    def size(self, digest: str) -> int | None:
        """The blob's size, None when there is no such blob."""
        self._ensure_bucket()
        try:
            return int(self.s3.head_object(Bucket=self.bucket, Key=self._key(digest))["ContentLength"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def read(self, digest: str) -> Iterator[bytes]:
        body = self.s3.get_object(Bucket=self.bucket, Key=self._key(digest))["Body"]
        try:
            while True:
                chunk = body.read(CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    def read_all(self, digest: str) -> bytes:
        return b"".join(self.read(digest))

    # --- uploads ----------------------------------------------------------------------------------

    def start(self, repository: str) -> str:
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        upload_id = uuid.uuid4().hex
        path = self.uploads_dir / upload_id
        path.touch(mode=0o600)
        self._uploads[upload_id] = Upload(repository, path)
        return upload_id

    def get(self, upload_id: str, repository: str) -> Upload | None:
        upload = self._uploads.get(upload_id)
        return upload if upload is not None and upload.repository == repository else None

    def append(self, upload: Upload, chunks: Iterator[bytes], start: int | None = None) -> int:
        """Append a chunk (``start``: the offset the client says it begins at); the size so far.

        Raises ``ValueError`` when ``start`` is not where the upload stands."""
        with upload.lock:
            if start is not None and start != upload.size:
                raise ValueError(f"the chunk starts at {start}, but the upload has {upload.size} bytes")
            with open(upload.path, "ab") as f:
                for chunk in chunks:
                    f.write(chunk)
                    upload.hasher.update(chunk)
                    upload.size += len(chunk)
            return upload.size

    def finish(self, upload_id: str, upload: Upload, digest: str) -> int:
        """Store the upload as blob ``digest``; its size. Raises ``ValueError`` when the bytes have another digest."""
        with upload.lock:
            actual = "sha256:" + upload.hasher.hexdigest()
            if actual != digest:
                raise ValueError(f"the uploaded bytes have digest {actual}, not {digest}")
            self._ensure_bucket()
            if self.size(digest) is None:
                self.s3.upload_file(str(upload.path), self.bucket, self._key(digest))
            size = upload.size
        self.cancel(upload_id)
        return size

    def cancel(self, upload_id: str) -> None:
        upload = self._uploads.pop(upload_id, None)
        if upload is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(upload.path)

    def put(self, data: bytes, digest: str) -> None:
        """Store a whole blob at once (a monolithic upload). Raises ``ValueError`` on a digest mismatch."""
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise ValueError(f"the uploaded bytes have digest {actual}, not {digest}")
        self._ensure_bucket()
        self.s3.put_object(Bucket=self.bucket, Key=self._key(digest), Body=data)

    def delete(self, digest: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(digest))
