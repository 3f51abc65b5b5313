"""Model artifacts and source directories from S3, unpacked on disk for model servers.

A model's ``ModelDataUrl`` (a ``model.tar.gz``) is downloaded and unpacked once into
``<root>/<hash of URL and ETag>``, shared by every variant, endpoint and transform job that serves
it; a new upload (a new ETag) gets a directory of its own. Unpacking happens in a scratch directory
renamed into place, and a ``.complete`` marker says a directory is whole, so an interrupted
download is never served. A ``SAGEMAKER_SUBMIT_DIRECTORY`` in S3 is unpacked into the variant's
``code/`` the same way. Both unpack only within the cache's :class:`~opensage.objects.transfer.Expansion`
bounds (the account's archive quotas). :meth:`ModelCache.prune` removes the directories no fleet
links to any more, so a deleted endpoint's model does not stay on disk.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from opensage.objects import transfer
from opensage.objects.transfer import Expansion, split_s3_uri
from opensage.serving.fleet import FleetError

COMPLETE = ".complete"


class ModelCache:
    """Model directories by artifact URL and ETag, under ``root``."""

    def __init__(self, s3: Any, root: Path, bounds: Expansion | None = None) -> None:
        self.s3 = s3
        self.root = root
        self.bounds = bounds or Expansion(30 * 1024**3)
        self._lock = threading.Lock()  # a directory being pruned is never handed out meanwhile
        self.generation = 0  # counts the directories handed out
        self._handed: dict[Path, int] = {}  # a directory -> the generation it was last handed out at

    def prune(self, in_use: Iterable[Path], since: int) -> list[Path]:
        """Remove every cached model directory but those in ``in_use`` and those handed out after
        generation ``since`` (the caller's ``in_use`` may not know them yet); returns the removed ones.

        The caller must know that no directory handed out before ``since`` is missing from ``in_use``
        (the endpoint controller prunes only while no fleet is being prepared).
        """
        keep = {path.resolve() for path in in_use}
        removed = []
        with self._lock:
            for entry in sorted(self.root.iterdir()) if self.root.is_dir() else []:
                if entry.resolve() not in keep and self._handed.get(entry, 0) <= since:
                    shutil.rmtree(entry, ignore_errors=True)
                    self._handed.pop(entry, None)
                    removed.append(entry)
        return removed

    def model_dir(self, url: str, model_name: str) -> Path:
        """The unpacked artifact at ``url`` (downloaded the first time).

        Raises:
            FleetError: no URL, an object that cannot be read, not a tar.gz, or one that would expand past
                the cache's bounds.
        """
        with self._lock:
            target = self._model_dir(url, model_name)
            self.generation += 1
            self._handed[target] = self.generation
            return target

    def _model_dir(self, url: str, model_name: str) -> Path:
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
                transfer.unpack_tarball(archive, scratch / "model", self.bounds)
            except transfer.TooLarge as exc:
                raise FleetError(f"The model artifact {url} of model {model_name} cannot be used: {exc}.") from exc
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
                transfer.download_and_unpack(self.s3, url, code, self.bounds)
            except transfer.ArtifactError as exc:
                raise FleetError(f"The source directory {url} of model {model_name} cannot be used: {exc}.") from exc
            (code / COMPLETE).write_text(url)
        return code
