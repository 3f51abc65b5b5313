"""Containers that cannot read the platform: their own user, and the platform's home out of sight.

Where the platform runs as root on a machine that gives mount namespaces, each container runs as
an unprivileged user of its own (``OPENSAGE_CONTAINER_UID``, 61000 unless set; 0 keeps root) with
no capabilities and ``no_new_privs``, in a mount and a PID namespace where the platform's home is
covered by an empty ``tmpfs``. Where the platform runs as another user and the machine allows
unprivileged user namespaces, containers run as that user in a user namespace of their own, with no
capability there either: the same covers, and no other process in sight (so none of the
platform's, whose files that user could otherwise reach through ``/proc``).

Only what the container needs stays in sight, each at its own path:
its own directories (which it then owns), the shared caches it writes, the model it serves, and
the platform's Python. A directory on the way to one of those that the container's user could not
enter (``/root``, pytest's ``/tmp/pytest-of-root``) is covered the same way, so the Python under
``/root/.pyenv`` runs while ``/root/.aws`` stays out of sight.

So user code reads neither the keys under the home (``master.key``, ``console.key``, the object
store's), nor the database, nor another job's files, nor the AWS files the platform wrote, and
cannot undo the covering mounts. Elsewhere (no namespaces, or ``OPENSAGE_CONTAINER_UID=0``)
containers run as the platform's user, unconfined.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import site
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from opensage.compute import sandbox

UID_ENV = "OPENSAGE_CONTAINER_UID"
DEFAULT_UID = 61000


@dataclass(frozen=True, slots=True)
class Confinement:
    """Who containers run as and what they must not see."""

    uid: int
    gid: int
    hidden: tuple[Path, ...]  # the platform's home (and any other private root)
    readable: tuple[Path, ...]  # the platform's Python: prefixes and import paths
    # True: containers run as the platform's own user (it is not root), in a user namespace of their
    # own with no capability and a PID namespace, so neither the platform's processes nor its home
    # are in their sight.
    own_user: bool = False

    def plan(self, visible: Iterable[Path]) -> tuple[list[Path], list[Path]]:
        """(directories to cover, paths to keep in sight) for a container that needs ``visible``."""
        hidden = [_real(h) for h in self.hidden if os.path.isdir(h)]
        # a readable root that holds the home (say /tmp, for a home under /tmp) is not kept whole
        readable = [r for r in map(_real, self.readable) if not any(_within(h, r) for h in hidden)]
        keep = _outermost(p for p in (*map(_real, visible), *readable) if os.path.exists(p))
        cover = set(hidden)
        for path in keep:
            wall = _first_wall(path, self.uid, self.gid)
            if wall is not None:
                cover.add(wall)
        covers = _outermost(cover)
        kept = [p for p in keep if any(_within(p, c) and p != c for c in covers)]
        return covers, kept

    def take(self, paths: Iterable[Path]) -> None:
        """Make the container's user the owner of the directories ``paths`` (made if missing) and what they hold.

        A directory the user owns already is skipped: what is in it, the user made."""
        for top in paths:
            top.mkdir(parents=True, exist_ok=True)
            if self.own_user:
                continue
            with contextlib.suppress(FileNotFoundError):
                if top.lstat().st_uid == self.uid:  # taken before: what is in it, its user made
                    continue
                for path in _tree(top):
                    with contextlib.suppress(FileNotFoundError):
                        os.chown(path, self.uid, self.gid, follow_symlinks=False)


def confinement(hidden: Sequence[Path], env: dict[str, str] | None = None) -> Confinement | None:
    """The confinement containers get on this machine, or ``None`` where they cannot (or are not to) get one."""
    env = dict(os.environ if env is None else env)
    try:
        uid = int(env.get(UID_ENV) or DEFAULT_UID)
    except ValueError:
        raise ValueError(f"{UID_ENV} must be a number (a user id; 0 runs containers as root)") from None
    if uid == 0 or shutil.which("setpriv") is None or shutil.which("bash") is None:
        return None
    if os.geteuid() == 0 and sandbox.mounts_available():
        return Confinement(uid, uid, tuple(hidden), interpreter_paths())
    if os.geteuid() != 0 and sandbox.user_namespaces_available():
        return Confinement(os.getuid(), os.getgid(), tuple(hidden), interpreter_paths(), own_user=True)
    return None


@functools.cache
def interpreter_paths() -> tuple[Path, ...]:
    """Where the platform's Python and its packages live (what every container's Python reads)."""
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(sys.executable).resolve().parent}
    paths.add(Path(__file__).resolve().parents[2])  # where opensage itself is imported from (an editable checkout)
    cwd = os.getcwd()  # ``python -m opensage`` puts the directory it was started in on the path: not a package root
    paths.update(Path(p) for p in sys.path if p and p != cwd and Path(p).exists())
    paths.update(Path(p) for p in site.getsitepackages() if Path(p).exists())
    return tuple(sorted(_outermost(_real(p) for p in paths)))


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """``paths`` without those inside another of them."""
    result: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(_within(path, kept) for kept in result):
            result.append(path)
    return result


def _first_wall(path: Path, uid: int, gid: int) -> Path | None:
    """The outermost directory above ``path`` that user ``uid`` may not enter, if any."""
    for parent in reversed(path.parents):
        try:
            mode = parent.stat()
        except OSError:
            return None
        if not _enterable(mode, uid, gid):
            return parent
    return None


def _enterable(st: os.stat_result, uid: int, gid: int) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _tree(top: Path) -> Iterable[str]:
    yield str(top)
    if top.is_dir() and not top.is_symlink():
        for root, dirs, files in os.walk(top):
            for name in (*dirs, *files):
                yield os.path.join(root, name)
