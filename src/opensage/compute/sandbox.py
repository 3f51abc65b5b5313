"""Mount namespaces for containers: the job's directory at ``/opt/ml``, and no network when asked.

SageMaker code hard-codes ``/opt/ml/...`` paths (processing scripts write to
``/opt/ml/processing/output``, inference code reads ``/opt/ml/model``). Where the machine lets this
process create a mount namespace (``unshare --mount``, which needs root or unprivileged user
namespaces), each container runs in its own namespace with its directories bind-mounted at the
paths the container contract names, and, for ``EnableNetworkIsolation``, in a new network namespace
that has only a loopback interface. Elsewhere the caller falls back to the ``SM_*`` variables, which
always point to the real directories.

A job's hosts resolve by name (``algo-1``, ``algo-2``...) as they do in a SageMaker cluster, where
drivers such as the SDK v3's ``torchrun`` one connect to ``algo-1``: :func:`hosts_file` writes the
machine's own ``/etc/hosts`` plus those names, and the namespace binds it over ``/etc/hosts``.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from opensage.compute.base import RootFs

# The script run between unshare and the container's own command: mount, then exec the command.
_SETUP = """set -e
net=$1; shift
while [ "$1" != "--" ]; do
  if [ -d "$1" ]; then mkdir -p "$2"; elif [ ! -e "$2" ]; then : >"$2"; fi
  mount --bind "$1" "$2"; shift 2
done
shift
if [ "$net" = cut ] && command -v ip >/dev/null; then ip link set lo up; fi
exec "$@"
"""

# The same for a confined container (:mod:`opensage.compute.confine`), in bash (for its numbered
# descriptors), as the first process of a PID namespace of its own: each path to keep in sight is
# opened before the covers go on and bound back at its own path through its descriptor; then the
# command runs as the container's user with no capability, and this script waits for it, passing on
# SIGTERM (the first process of a namespace gets only the signals it handles) and its exit code.
_CONFINED_SETUP = """set -e
net=$1; uid=$2; gid=$3; cwd=$4; shift 4
while [ "$1" != -- ]; do
  if [ -d "$1" ]; then mkdir -p "$2"; elif [ ! -e "$2" ]; then : >"$2"; fi
  mount --bind "$1" "$2"; shift 2
done
shift
kept=()
while [ "$1" != -- ]; do exec {fd}<"$1"; kept+=("$1" "$fd"); shift; done
shift
while [ "$1" != -- ]; do mount -t tmpfs -o mode=0755,size=4m,nosuid,nodev opensage-hidden "$1"; shift; done
shift
for ((i = 0; i < ${#kept[@]}; i += 2)); do
  path=${kept[i]}; fd=${kept[i+1]}
  if [ -d "/proc/self/fd/$fd" ]; then mkdir -p "$path"; else mkdir -p "${path%/*}"; : >"$path"; fi
  mount --no-canonicalize --bind "/proc/self/fd/$fd" "$path"
  exec {fd}<&-
done
if [ "$net" = cut ] && command -v ip >/dev/null; then ip link set lo up; fi
cd "$cwd"
user=()
if [ "$uid" != same ]; then user=(--reuid="$uid" --regid="$gid" --clear-groups); fi
set +e
setpriv "${user[@]}" --no-new-privs --inh-caps=-all --bounding-set=-all -- "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
while :; do
  wait "$child"; code=$?
  kill -0 "$child" 2>/dev/null || exit "$code"
done
"""


# The same for a container that runs in an image's root file system: an overlay of the image (read
# only, shared) and the container's own layer becomes its root, the mounts are bound into it, with
# /proc (of its PID namespace), /dev and the machine's resolver; then unshare --root enters it, in the
# image's WORKDIR, as the image's user, with the image's PATH to find the command.
_ROOTFS_SETUP = """set -e
net=$1; image=$2; layer=$3; wd=$4; user=$5; enter=$6; shift 6
image_path=$PATH; PATH=/usr/sbin:/usr/bin:/sbin:/bin
root=$layer/root
mkdir -p "$layer/diff" "$layer/work" "$root"
mount -t overlay opensage-image -o "lowerdir=$image,upperdir=$layer/diff,workdir=$layer/work" "$root"
while [ "$1" != -- ]; do
  t=$root$2
  if [ -L "$t" ]; then rm -f "$t"; fi
  if [ -d "$1" ]; then mkdir -p "$t"; else mkdir -p "${t%/*}"; [ -e "$t" ] || : >"$t"; fi
  mount --bind "$1" "$t"; shift 2
done
shift
for d in proc dev sys tmp etc; do [ -L "$root/$d" ] && rm -f "$root/$d"; mkdir -p "$root/$d"; done
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys" 2>/dev/null || true
if [ -e /etc/resolv.conf ]; then
  [ -L "$root/etc/resolv.conf" ] && rm -f "$root/etc/resolv.conf"
  [ -e "$root/etc/resolv.conf" ] || : >"$root/etc/resolv.conf"
  mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
fi
if [ "$net" = cut ] && command -v ip >/dev/null; then ip link set lo up; fi
ids=()
if [ -n "$user" ]; then ids=(--setuid "${user%%:*}" --setgid "${user#*:}"); fi
PATH=$image_path
exec "$enter" --root="$root" --wd="$wd" "${ids[@]}" -- "$@"
"""


@dataclass(frozen=True, slots=True)
class Confined:
    """How :func:`wrap` confines a container: its user, the directories to cover, what stays in sight."""

    uid: int | None  # None: the user namespace's root, that is this process's own user
    gid: int | None
    cwd: Path
    covers: Sequence[Path]
    kept: Sequence[Path]


@functools.cache
def mounts_available() -> bool:
    """Whether containers can get their own mount namespace on this machine."""
    return _probe(["--mount", "--propagation", "private"])


@functools.cache
def user_namespaces_available() -> bool:
    """Whether this (unprivileged) process can give a container a user, mount and PID namespace."""
    return _probe(["--user", "--map-root-user", "--mount", "--propagation", "private", "--pid", "--fork"])


@functools.cache
def network_isolation_available() -> bool:
    """Whether containers can get a network namespace of their own (loopback only)."""
    return _probe(["--mount", "--propagation", "private", "--net"])


def _probe(flags: list[str]) -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    try:
        return subprocess.run([unshare, *flags, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def hosts_file(path: Path, peers: Sequence[tuple[str, str]], system: Path = Path("/etc/hosts")) -> Path:
    """Write ``system``'s entries followed by one line per (name, address) of ``peers`` to ``path``."""
    try:
        base = system.read_text()
    except OSError:
        base = "127.0.0.1 localhost\n::1 localhost\n"
    lines = [base.rstrip("\n"), "# the job's hosts", *(f"{address} {name}" for name, address in peers)]
    path.write_text("\n".join(lines) + "\n")
    return path


def wrap(
    argv: Sequence[str],
    mounts: Sequence[tuple[Path, str]],
    isolate_network: bool,
    confined: Confined | None = None,
) -> tuple[list[str], bool]:
    """``argv`` run inside a namespace with ``mounts`` (host dir, container path) bound in.

    Returns the command and whether the network is cut. Without the means for a namespace the
    command comes back unchanged.
    """
    if confined is None and (not mounts_available() or not (mounts or isolate_network)):
        return list(argv), False
    cut = isolate_network and network_isolation_available()
    flags = ["--mount", "--propagation", "private", *(["--net"] if cut else [])]
    if confined is not None:
        own_user = ["--user", "--map-root-user"] if confined.uid is None else []
        flags = [*own_user, *flags, "--pid", "--fork", "--mount-proc", "--kill-child"]
    pairs = [part for host, target in mounts for part in (str(host), target)] if mounts_available() else []
    net = "cut" if cut else "net"
    if confined is None:
        setup = ["/bin/sh", "-c", _SETUP, "sh", net, *pairs, "--"]
    else:
        c = confined
        head = [net, "same" if c.uid is None else str(c.uid), str(c.gid), str(c.cwd)]
        lists = [*pairs, "--", *map(str, c.kept), "--", *map(str, c.covers), "--"]
        setup = [str(shutil.which("bash") or "/bin/bash"), "-c", _CONFINED_SETUP, "bash", *head, *lists]
    return [str(shutil.which("unshare")), *flags, *setup, *argv], cut


@functools.cache
def images_available() -> bool:
    """Whether containers can run in an image's root file system here (a mount and PID namespace, overlays)."""
    return _probe(["--mount", "--propagation", "private", "--pid", "--fork"]) and _probe_overlay()


def _probe_overlay() -> bool:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="opensage-overlay-") as d:
        for sub in ("l", "u", "w", "m"):
            Path(d, sub).mkdir()
        script = f"mount -t overlay x -o lowerdir={d}/l,upperdir={d}/u,workdir={d}/w {d}/m"
        flags = [] if _is_root() else ["--user", "--map-root-user"]
        return _probe([*flags, "--mount", "--propagation", "private", "sh", "-c", script])


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


def wrap_rootfs(
    argv: Sequence[str], rootfs: RootFs, mounts: Sequence[tuple[Path, str]], isolate_network: bool
) -> tuple[list[str], bool]:
    """``argv`` run inside ``rootfs`` (see :data:`_ROOTFS_SETUP`) with ``mounts`` bound in; and whether the
    network is cut. Raises ``OSError`` when the machine cannot run images (:func:`images_available`)."""
    if not images_available():
        raise OSError(
            "this machine does not let OpenSage run container images: it needs mount and PID namespaces and "
            "overlay mounts (as root, or with unprivileged user namespaces)"
        )
    cut = isolate_network and network_isolation_available()
    own_user = [] if _is_root() else ["--user", "--map-root-user"]
    flags = [*own_user, "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child"]
    flags += ["--net"] if cut else []
    pairs = [part for host, target in mounts for part in (str(host), target)]
    rootfs.layer.mkdir(parents=True, exist_ok=True)
    head = ["cut" if cut else "net", str(rootfs.image), str(rootfs.layer), rootfs.workdir, rootfs.user]
    unshare = str(shutil.which("unshare"))
    bash = str(shutil.which("bash") or "/bin/bash")
    return [unshare, *flags, bash, "-c", _ROOTFS_SETUP, "bash", *head, unshare, *pairs, "--", *argv], cut
