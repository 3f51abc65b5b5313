"""Images of the platform's registry as root file systems a container runs in.

:class:`RootFsCache` reads an image's manifest from the registry's records and its blobs from the
object store, checks each blob against its digest as it streams, and applies the layers in order to
a new directory as the OCI image spec says (whiteouts ``.wh.<name>`` and opaque directories
``.wh..wh..opq``, hard and symbolic links, modes and, as root, owners). The result is kept under
the image's manifest digest, made once and shared read-only by every container of that image (each
gets a writable overlay of its own: :mod:`opensage.compute.sandbox`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from opensage.ecr import images as ecr
from opensage.ecr.blobs import BlobStore
from opensage.store.sql import SqlStore

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
PLATFORM = ("linux", "amd64")


class ImageError(Exception):
    """The image cannot be run; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What an image's config says about running it."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: dict[str, str]
    workdir: str
    user: str

    @classmethod
    def of(cls, doc: dict[str, Any]) -> ImageConfig:
        c = doc.get("config") or {}
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in c.get("Env") or [])
        return cls(
            tuple(c.get("Entrypoint") or ()),
            tuple(c.get("Cmd") or ()),
            env,
            c.get("WorkingDir") or "/",
            c.get("User") or "",
        )


@dataclass(frozen=True, slots=True)
class Unpacked:
    digest: str  # the image manifest's
    rootfs: Path
    config: ImageConfig


class _Hashing:
    """A file-like reader over a blob's chunks that hashes what passes through it."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buffer = b""
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buffer) < n:
            chunk = next(self.chunks, b"")
            if not chunk:
                break
            self.hash.update(chunk)
            self.size += len(chunk)
            self.buffer += chunk
        if n < 0:
            out, self.buffer = self.buffer, b""
        else:
            out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def drain(self) -> str:
        while self.read(1 << 20):
            pass
        return "sha256:" + self.hash.hexdigest()


class RootFsCache:
    """Unpacked images by manifest digest under ``directory``."""

    def __init__(self, store: SqlStore, blobs: BlobStore, directory: Path) -> None:
        self.store = store
        self.blobs = blobs
        self.directory = directory
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def unpack(self, repository: str, reference: str) -> Unpacked:
        """The image ``repository:reference`` (a tag or a digest) unpacked (a blocking call).

        Raises:
            ImageError: no such repository or image, a manifest for another platform, a blob that is
                missing or does not match its digest, a layer that cannot be applied.
        """
        repo = self.store.get_resource(ecr.REPOSITORY, repository)
        if repo is None:
            raise ImageError(f"the repository '{repository}' does not exist in this platform's registry")
        row = ecr.resolve(self.store, repo, reference)
        if row is None:
            raise ImageError(
                f"the registry's repository '{repository}' has no image '{reference}'; push it first "
                f"(aws ecr list-images --repository-name {repository} shows what it has)"
            )
        manifest = json.loads(row.data["manifest"])
        digest = row.data["imageDigest"]
        if row.data["imageManifestMediaType"] in ecr.INDEX_TYPES:
            digest, manifest = self._platform_manifest(repo, manifest, f"{repository}:{reference}")
        with self._lock(digest):
            target = self.directory / digest.replace(":", "-")
            config_file = target / "config.json"
            if not config_file.exists():
                self._build(target, manifest, f"{repository}:{reference}")
            return Unpacked(digest, target / "rootfs", ImageConfig.of(json.loads(config_file.read_text())))

    def prune(self) -> int:
        """Remove unpacked images the registry no longer has, and unfinished unpacks; how many went."""
        if not self.directory.is_dir():
            return 0
        kept = {row.data["imageDigest"].replace(":", "-") for row in self.store.list_resources(ecr.IMAGE)}
        removed = 0
        for path in self.directory.iterdir():
            if path.name not in kept:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed

    def _lock(self, digest: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(digest, threading.Lock())

    def _platform_manifest(self, repo: Any, index: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
        for entry in index.get("manifests") or []:
            p = entry.get("platform") or {}
            if (p.get("os"), p.get("architecture")) in (PLATFORM, (None, None)):
                child = ecr.image(self.store, repo, entry["digest"])
                if child is not None:
                    return child.data["imageDigest"], json.loads(child.data["manifest"])
        found = ", ".join(
            f"{(m.get('platform') or {}).get('os')}/{(m.get('platform') or {}).get('architecture')}"
            for m in index.get("manifests") or []
        )
        raise ImageError(f"the image index {name} has no {'/'.join(PLATFORM)} image (it has: {found or 'none'})")

    def _build(self, target: Path, manifest: dict[str, Any], name: str) -> None:
        work = self.directory / f"tmp-{uuid.uuid4().hex}"
        root = work / "rootfs"
        root.mkdir(parents=True)
        try:
            config = self._blob(manifest["config"], name, "config")
            for n, layer in enumerate(manifest.get("layers") or [], 1):
                self._apply(root, layer, f"{name} layer {n} ({layer.get('digest')})")
            (work / "config.json").write_bytes(config)
            shutil.rmtree(target, ignore_errors=True)
            os.rename(work, target)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def _blob(self, descriptor: dict[str, Any], name: str, what: str) -> bytes:
        digest = descriptor["digest"]
        if self.blobs.size(digest) is None:
            raise ImageError(f"the {what} blob {digest} of {name} is missing from the registry; push the image again")
        data = self.blobs.read_all(digest)
        if ecr.digest_of(data) != digest:
            raise ImageError(f"the {what} blob of {name} does not match its digest {digest}: it is corrupt")
        return data

    def _apply(self, root: Path, layer: dict[str, Any], what: str) -> None:
        digest = layer["digest"]
        media = str(layer.get("mediaType") or "")
        if "zstd" in media:
            raise ImageError(f"{what} is zstd-compressed, which OpenSage cannot unpack; push it with gzip layers")
        if self.blobs.size(digest) is None:
            raise ImageError(f"{what} is missing from the registry; push the image again")
        reader = _Hashing(self.blobs.read(digest))
        try:
            apply_layer(root, reader)
        except tarfile.TarError as exc:
            reader.drain()
            if "sha256:" + reader.hash.hexdigest() != digest:
                raise ImageError(f"{what} does not match its digest: it is corrupt") from exc
            raise ImageError(f"{what} is not a tar archive OpenSage can read: {exc}") from exc
        if reader.drain() != digest:
            raise ImageError(f"{what} does not match its digest: it is corrupt")


def apply_layer(root: Path, layer: Any) -> None:
    """Apply the layer archive read from ``layer`` (a file object; gzip or not) to the tree at ``root``.

    Raises:
        tarfile.TarError: not an archive; ImageError: an entry that would write outside ``root``.
    """
    added: set[str] = set()
    with tarfile.open(fileobj=layer, mode="r|*") as tar:
        for member in tar:
            _apply_member(root, tar, member, added)


def _inside(root: Path, name: str) -> Path | None:
    """``name`` of an archive as a path under ``root`` (None: it leaves the root)."""
    parts = [p for p in PurePosixPath(name.lstrip("/")).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return root.joinpath(*parts)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def _apply_member(root: Path, tar: tarfile.TarFile, member: tarfile.TarInfo, added: set[str]) -> None:
    path = _inside(root, member.name)
    if path is None:
        return
    parent = path.parent
    real, top = os.path.realpath(parent), os.path.realpath(root)
    if real != top and not real.startswith(top + os.sep):
        raise ImageError(f"a layer writes {member.name} through a symbolic link that leads out of the image")
    base = path.name
    if base == OPAQUE:  # the directory hides what earlier layers put in it
        for child in list(parent.iterdir()) if parent.is_dir() else []:
            if str(child) not in added:
                _remove(child)
        return
    if base.startswith(WHITEOUT):
        _remove(parent / base[len(WHITEOUT) :])
        return
    if member.isdev() and os.geteuid() != 0:
        return  # device nodes need root; /dev is the host's in the container
    if member.islnk():
        target = _inside(root, member.linkname)
        if target is None:
            raise ImageError(f"a layer's hard link {member.name} points out of the image")
        member.linkname = str(target.relative_to(root))
    member.name = str(path.relative_to(root))  # no leading / or ./: extracted under the root, nowhere else
    if path.is_symlink() or (path.exists() and not (path.is_dir() and member.isdir())):
        _remove(path)
    parent.mkdir(parents=True, exist_ok=True)
    tar.extract(member, root, set_attrs=True, numeric_owner=True, filter="fully_trusted")
    added.add(str(path))
