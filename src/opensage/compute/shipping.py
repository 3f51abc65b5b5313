"""A container's directory carried to a node that does not see the platform's home, and back.

The ``ray`` backend stages a job's ``/opt/ml`` in the platform's home. A node that cannot read the
home (no shared file system) still runs a job's instance: the instance's directory goes to it as one
tar archive through Ray's object store and is unpacked there at the same path; the container's log is
read back a piece at every poll; when the container has ended, the files it made or changed (the model,
the output, checkpoints, the failure file) come back the same way and are unpacked over the
platform's copy, which the job then uploads as usual. Archives are unpacked with tarfile's ``data``
filter: nothing outside the directory, no device files, no links out of it.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

Snapshot = dict[str, tuple[int, int]]  # relative path -> (size, mtime in ns)


def snapshot(root: Path) -> Snapshot:
    """Every regular file under ``root`` with its size and modification time."""
    found: Snapshot = {}
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                stat = path.stat()
                found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            continue
    return found


def pack(paths: list[Path]) -> bytes:
    """A tar archive of ``paths`` (directories with all they hold) under their absolute names, for
    :func:`unpack` on a node at the same paths; links are kept as links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in paths:
            if path.exists():
                archive.add(path, str(path).lstrip("/"))
    return buffer.getvalue()


def unpack(data: bytes) -> None:
    """Unpack a :func:`pack` archive at its paths (made by the platform itself, so its links, which point
    at the platform's Python, are kept)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as archive:
        archive.extractall("/", filter="tar")


def pack_changes(root: Path, since: Snapshot) -> bytes:
    """A tar archive of the regular files under ``root`` that are new or changed since ``since``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for rel, now in sorted(snapshot(root).items()):
            if since.get(rel) != now:
                archive.add(root / rel, rel, recursive=False)
    return buffer.getvalue()


def unpack_changes(data: bytes, root: Path) -> None:
    """Unpack what a container made (:func:`pack_changes`) into ``root``: files only, nowhere outside it."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as archive:
        archive.extractall(root, filter="data")


def read_from(path: Path, offset: int, most: int = 4 << 20) -> bytes:
    """Up to ``most`` bytes of ``path`` from ``offset`` (nothing when it does not exist yet)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(most)
    except OSError:
        return b""


def append(path: Path, data: bytes) -> None:
    if data:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
