"""S3 transfer for jobs and model servers: S3 URIs, tarballs up and down, directory trees both ways.

What the engines move between the object store and an instance's directory: ``model.tar.gz`` and
``output.tar.gz`` up, checkpoints both ways, a ``sourcedir.tar.gz`` or a model unpacked.
"""

from __future__ import annotations

import gzip
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opensage.errors import OpenSageError


class S3LocationError(OpenSageError):
    """An S3 location cannot be used; the message (``ClientError: ...``) is the job's FailureReason."""


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise S3LocationError(f"ClientError: '{uri}' is not an S3 URI (s3://bucket/prefix).")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise S3LocationError(f"ClientError: '{uri}' names no bucket.")
    return bucket, key


def local_path(root: Path, relpath: str, key: str) -> Path:
    """Where the object ``key`` goes: ``root / relpath``, refused when ``relpath`` would leave ``root``.

    An S3 key is any string: one with a leading ``/``, a ``..`` segment or a NUL byte must not become a
    path of the job's machine (it would overwrite, or for a transform truncate, files elsewhere).

    Raises:
        S3LocationError: ``relpath`` is empty, absolute, has a ``..`` segment or a NUL byte.
    """
    parts = relpath.split("/")
    if relpath.startswith("/") or ".." in parts or "\0" in relpath or all(p in ("", ".") for p in parts):
        raise S3LocationError(
            f"ClientError: the S3 key '{key}' cannot be written as a local file (as '{relpath}' below the "
            "target directory): keys must not start with '/' or contain '..' segments or NUL bytes."
        )
    return root / relpath


def tar_directory(source: Path, target: Path) -> Path:
    """A gzip tarball of ``source``'s contents (paths relative to it, as SageMaker writes them)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:gz", compresslevel=6) as tar:
        for path in sorted(source.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(source)), recursive=False)
    return target


def upload_tarball(s3: Any, source: Path, scratch: Path, s3_uri: str) -> str:
    bucket, key = split_s3_uri(s3_uri)
    tarball = tar_directory(source, scratch)
    s3.upload_file(str(tarball), bucket, key)
    tarball.unlink()
    return s3_uri


def output_uri(s3_output_path: str, job_name: str, filename: str) -> str:
    return f"{s3_output_path.rstrip('/')}/{job_name}/output/{filename}"


def files_under(source: Path) -> list[Path]:
    """The files under ``source``, sorted; a symbolic link counts only when it points inside ``source``, since
    the job that made it could otherwise have the platform upload any file the platform can read."""
    root = source.resolve()
    return [
        path
        for path in sorted(source.rglob("*"))
        if path.is_file() and (not path.is_symlink() or path.resolve().is_relative_to(root))
    ]


def upload_tree(s3: Any, source: Path, s3_uri: str) -> int:
    """Upload every file under ``source`` below ``s3_uri`` (see :func:`files_under`); returns the number of files."""
    bucket, prefix = split_s3_uri(s3_uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    n = 0
    for path in files_under(source):
        if path.is_file():
            s3.upload_file(str(path), bucket, prefix + str(path.relative_to(source)))
            n += 1
    return n


def download_tree(s3: Any, s3_uri: str, target: Path) -> int:
    """Download every object below ``s3_uri`` into ``target``; returns the number of files."""
    bucket, prefix = split_s3_uri(s3_uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    n = 0
    try:
        pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix))
    except s3.exceptions.NoSuchBucket:
        return 0
    for page in pages:
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix) :]
            if not rel or rel.endswith("/"):
                continue
            dest = local_path(target, rel, obj["Key"])
            dest.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(dest))
            n += 1
    return n


class ArtifactError(Exception):
    """An artifact cannot be read: missing, unreadable, or not a tarball."""


class TooLarge(ArtifactError):
    """An archive or gzip file would expand past its :class:`Expansion` bounds."""


RATIO_FLOOR = 64 * 1024 * 1024  # below this, an archive's compression ratio is not checked


@dataclass(frozen=True, slots=True)
class Expansion:
    """How far an archive may expand: unpacked bytes, members, and unpacked bytes per compressed byte."""

    max_bytes: int
    max_files: int = 100_000
    max_ratio: int = 100  # 0: not checked

    @classmethod
    def from_quotas(cls, values: Mapping[str, int], volume_gb: int | None = None) -> Expansion:
        """The account's archive quotas, the size capped by a volume of ``volume_gb`` GB when one is given."""
        limit = values.get("archive_bytes", 30 * 1024**3)
        if volume_gb:
            limit = min(limit, volume_gb * 1024**3)
        return cls(limit, values.get("archive_files", 100_000), values.get("archive_ratio", 100))

    def check(self, unpacked: int, files: int, packed: int) -> None:
        """Raises TooLarge when ``unpacked`` bytes in ``files`` members from ``packed`` bytes are over a bound."""
        if unpacked > self.max_bytes:
            raise TooLarge(f"it expands to more than {_size(self.max_bytes)}, the limit of the unpacked size")
        if files > self.max_files:
            raise TooLarge(f"it holds more than {self.max_files} files, the limit of files in an archive")
        if self.max_ratio and unpacked > RATIO_FLOOR and unpacked > self.max_ratio * max(packed, 1):
            raise TooLarge(
                f"it expands more than {self.max_ratio} times ({_size(packed)} to over {_size(unpacked)}), "
                "the limit of an archive's expansion ratio"
            )


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def unpack_tarball(archive: Path, target: Path, bounds: Expansion) -> None:
    """Unpack ``archive`` into ``target`` with tarfile's ``data`` filter, once its members are within ``bounds``.

    The members' sizes are read (decompressing, writing nothing) and checked before a byte is written.

    Raises:
        TooLarge: the archive expands past ``bounds``.
        tarfile.TarError, OSError, EOFError: not a readable tarball.
    """
    packed = archive.stat().st_size
    with tarfile.open(archive) as tar:
        members, unpacked = [], 0
        while (member := tar.next()) is not None:
            members.append(member)
            unpacked += member.size if member.isreg() else 0
            bounds.check(unpacked, len(members), packed)
        tar.extractall(target, members=members, filter="data")


def gunzip_file(source: Path, target: Path, bounds: Expansion) -> None:
    """Write ``source`` gunzipped to ``target``, in chunks, stopping (and removing ``target``) past ``bounds``."""
    packed, unpacked = source.stat().st_size, 0
    try:
        with gzip.open(source, "rb") as src, open(target, "wb") as dst:
            while chunk := src.read(1024 * 1024):
                unpacked += len(chunk)
                bounds.check(unpacked, 1, packed)
                dst.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def download_and_unpack(s3: Any, s3_uri: str, target: Path, bounds: Expansion | None = None) -> None:
    """Unpack the tarball at ``s3_uri`` into ``target``; an object not ending in .tar.gz is copied as is.

    Raises:
        ArtifactError: the object is missing or unreadable, not a valid tarball, or (``TooLarge``) it
            would expand past ``bounds`` (by default the account's default archive quotas).
    """
    import botocore.exceptions

    bucket, key = split_s3_uri(s3_uri)
    target.mkdir(parents=True, exist_ok=True)
    scratch = target / ".download"
    try:
        s3.download_file(bucket, key, str(scratch))
    except botocore.exceptions.ClientError as exc:
        scratch.unlink(missing_ok=True)
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        raise ArtifactError(
            "it does not exist" if code in ("404", "NoSuchKey", "NoSuchBucket") else error.get("Message") or code
        ) from exc
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    try:
        if not tarfile.is_tarfile(scratch):
            name = key.rsplit("/", 1)[-1]
            if name in ("", ".", "..") or "\0" in name:
                raise ArtifactError(f"its file name '{name}' cannot be a local file")
            scratch.rename(target / name)
            return
        unpack_tarball(scratch, target, bounds or Expansion(30 * 1024**3))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArtifactError(f"not a valid tar.gz ({exc})") from exc
    finally:
        scratch.unlink(missing_ok=True)
