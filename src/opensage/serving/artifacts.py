"""Model artifacts and source directories from S3, unpacked on disk for model servers.

A model's ``ModelDataUrl`` (a ``model.tar.gz``) is downloaded and unpacked once into
``<root>/<hash of URL and ETag>``, shared by every variant, endpoint and transform job that serves
it; a new upload (a new ETag) gets a directory of its own. Unpacking happens in a scratch directory
renamed into place, and a ``.complete`` marker says a directory is whole, so an interrupted
download is never served. A ``SAGEMAKER_SUBMIT_DIRECTORY`` in S3 is unpacked into the variant's
``code/`` the same way.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path
from typing import Any

from opensage.objects import transfer
from opensage.objects.transfer import split_s3_uri
from opensage.serving.fleet import FleetError

COMPLETE = ".complete"


class ModelCache:
    """Model directories by artifact URL and ETag, under ``root``."""

    def __init__(self, s3: Any, root: Path) -> None:
        self.s3 = s3
        self.root = root

    def model_dir(self, url: str, model_name: str) -> Path:
        """The unpacked artifact at ``url`` (downloaded the first time).

        Raises:
            FleetError: no URL, an object that cannot be read, or not a tar.gz.
        """
        if not url:
            raise FleetError(f"Model {model_name} has no ModelDataUrl.")
        bucket, key = split_s3_uri(url)
        try:
            etag = self.s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        except self.s3.exceptions.ClientError as exc:
            raise FleetError(
                f"The model artifact {url} of model {model_name} cannot be read: "
                f"{exc.response['Error'].get('Message') or exc.response['Error']['Code']}."
            ) from exc
        target = self.root / hashlib.sha256(f"{url}#{etag}".encode()).hexdigest()[:16]
        if (target / COMPLETE).exists():
            return target
        scratch = target.with_suffix(".download")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        archive = scratch / "model.tar.gz"
        try:  # the scratch directory goes, whatever happens: a failed download or unpacking leaves nothing
            self.s3.download_file(bucket, key, str(archive))
            try:
                with tarfile.open(archive) as tar:
                    tar.extractall(scratch / "model", filter="data")
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise FleetError(
                    f"The model artifact {url} of model {model_name} is not a valid tar.gz: {exc}"
                ) from exc
            shutil.rmtree(target, ignore_errors=True)
            (scratch / "model").rename(target)
            (target / COMPLETE).write_text(url)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return target

    def source_dir(self, url: str, code: Path, model_name: str) -> Path:
        """The source directory at ``url`` unpacked into ``code`` (once).

        Raises:
            FleetError: the archive cannot be downloaded or unpacked.
        """
        if not (code / COMPLETE).exists():
            try:
                transfer.download_and_unpack(self.s3, url, code)
            except transfer.ArtifactError as exc:
                raise FleetError(f"The source directory {url} of model {model_name} cannot be used: {exc}.") from exc
            (code / COMPLETE).write_text(url)
        return code
