"""S3 transfer for jobs and model servers: S3 URIs, tarballs up and down, directory trees both ways.

What the engines move between the object store and an instance's directory: ``model.tar.gz`` and
``output.tar.gz`` up, checkpoints both ways, a ``sourcedir.tar.gz`` or a model unpacked.
"""

from __future__ import annotations

import tarfile
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


def download_and_unpack(s3: Any, s3_uri: str, target: Path) -> None:
    """Unpack the tarball at ``s3_uri`` into ``target``; an object not ending in .tar.gz is copied as is."""
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
        with tarfile.open(scratch) as tar:
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArtifactError(f"not a valid tar.gz ({exc})") from exc
    finally:
        scratch.unlink(missing_ok=True)
