"""``opensage up`` in the foreground: object store, API server (HTTP and HTTPS), client files.

One process owns a home at a time (an exclusive lock on ``<home>/opensage.lock``); it writes its
pid to ``<home>/opensage.pid`` and removes it on a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import uvicorn

from opensage import leftovers
from opensage.app import Platform, create_app
from opensage.config import HOME_MARKER, SETTINGS_FILE, Settings
from opensage.errors import OpenSageError
from opensage.identity import platform_key
from opensage.listeners import guarded_http_protocol, install_log_guards
from opensage.objects.client import s3_client
from opensage.profile import write_aws_profile, write_sdk_config
from opensage.sdkproxy import SdkProxy, sts_host_names
from opensage.tls import ensure_tls

log = logging.getLogger(__name__)
LOCK_FILE = "opensage.lock"
PID_FILE = "opensage.pid"


class StartError(OpenSageError):
    """``up`` cannot start; the message says what to do."""


def prepare_home(home: Path) -> None:
    """Create a new home, or accept one made by OpenSage; refuse any other directory."""
    marker = home / HOME_MARKER
    if home.exists():
        if not home.is_dir():
            raise StartError(f"{home} is a file, not an OpenSage home; choose another --home.")
        if not marker.exists() and any(home.iterdir()):
            raise StartError(
                f"{home} is not empty and was not made by OpenSage; choose another --home or an empty directory."
            )
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not marker.exists():
        marker.write_text("1\n")


@contextlib.contextmanager
def home_lock(home: Path) -> Iterator[IO[str]]:
    """Hold the home's lock; a second ``up`` on the same home gets a one-line answer."""
    path = home / LOCK_FILE
    f = open(path, "a+")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        f.close()
        pid = read_pid(home)
        who = f" (pid {pid})" if pid else ""
        raise StartError(
            f"OpenSage is already running on {home}{who}; stop it with `opensage down` or use another --home."
        ) from exc
    try:
        yield f
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def read_pid(home: Path) -> int | None:
    try:
        return int((home / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def check_port_free(host: str, port: int, what: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            reason = (
                "is in use by another program"
                if exc.errno == errno.EADDRINUSE
                else f"cannot be opened ({exc.strerror})"
            )
            raise StartError(f"Port {port} ({what}) on {host} {reason}; choose another base port with --port.") from exc


@dataclass(slots=True)
class Running:
    settings: Settings
    platform: Platform
    access_key_id: str
    secret: str


class _Server(uvicorn.Server):
    """A uvicorn server whose signals are handled by :func:`serve` (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _secret_lookup(platform: Platform) -> Callable[[str], str | None]:
    def secret_of(access_key_id: str) -> str | None:
        key = platform.store.get_access_key(access_key_id)
        return key.secret_access_key if key is not None and key.status == "Active" else None

    return secret_of


def _start_store(settings: Settings, keys: list[tuple[str, str]], platform: Platform):  # type: ignore[no-untyped-def]
    from opensage.aws.s3front import S3Front
    from opensage.objects.seaweed import EmbeddedStore, Supervisor

    ports = settings.ports
    store = EmbeddedStore(
        settings.home / "objects",
        settings.host,
        ports.s3_store,
        ports.store_base,
        settings.home / "logs" / "object-store.log",
        kms=(settings.api_url, settings.region),
        isolate=True,
    )
    store.write_identities(keys)
    store.start()
    store.wait_ready()
    supervisor = Supervisor(store)
    supervisor.start()
    upstream = str(store.s3_socket) if store.isolated else ("127.0.0.1", ports.s3_store)
    front = S3Front(settings.host, ports.s3, upstream, _secret_lookup(platform))
    try:
        front.start()
    except OSError:
        supervisor.stop()
        store.stop()
        raise
    return store, supervisor, front


def _ensure_bucket(settings: Settings, key: tuple[str, str], bucket: str) -> None:
    client = s3_client(
        settings.s3_url, settings.s3_access_key or key[0], settings.s3_secret_key or key[1], settings.region
    )
    try:
        client.head_bucket(Bucket=bucket)
    except client.exceptions.ClientError:
        client.create_bucket(Bucket=bucket)


def default_bucket_name(settings: Settings, account_id: str) -> str:
    return f"sagemaker-{settings.region}-{account_id}"


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (``uvicorn[standard]``): the router's hop costs about half as much CPU on it."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def serve(settings: Settings, ready_message: bool = True) -> None:
    """Run the platform until SIGINT/SIGTERM."""
    prepare_home(settings.home)
    (settings.home / "logs").mkdir(exist_ok=True)
    install_log_guards(settings.home / "logs" / "opensage.log")
    _raise_file_limit()
    with home_lock(settings.home):
        # what a server of this home that died without stopping left (its jobs' records are recovered below)
        leftovers.end_orphaned_processes(settings.home)
        ports = settings.ports
        check_port_free(settings.host, ports.api, "API")
        check_port_free(settings.host, ports.proxy, "SDK proxy")
        check_port_free("127.0.0.1", ports.sts_tls, "HTTPS API")
        check_port_free(settings.host, ports.registry, "container registry")
        if settings.embedded_store:
            leftovers.end_orphaned_store(settings.home / "objects")
            check_port_free(settings.host, ports.s3, "S3")
        platform = create_app(settings)
        store = supervisor = front = None
        try:
            first = platform_key(platform.store, platform.identity.account_id)
            key = (first.access_key_id, first.secret_access_key)
            # the platform's key first: the object store calls KMS with it
            others = [(k.access_key_id, k.secret_access_key) for k in platform.store.list_access_keys()]
            all_keys = [key, *(k for k in others if k != key)]
            if settings.embedded_store:
                store, supervisor, front = _start_store(settings, all_keys, platform)
            bucket = default_bucket_name(settings, platform.identity.account_id)
            _ensure_bucket(settings, key, bucket)
            tls = ensure_tls(
                settings.home / "tls", ("127.0.0.1", "localhost", *sts_host_names()), settings.ca_bundle_source
            )
            write_sdk_config(settings, bucket)
            write_aws_profile(settings, *key)
            (settings.home / SETTINGS_FILE).write_text(json.dumps(settings.saved(), indent=2) + "\n")
            (settings.home / PID_FILE).write_text(f"{os.getpid()}\n")
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(_run_servers(settings, platform, tls.cert, tls.key, ready_message, store))
        finally:
            if front is not None:
                front.stop()
            if supervisor is not None:
                supervisor.stop()
            if store is not None:
                store.stop(grace=15)
            platform.close()
            with contextlib.suppress(OSError):
                (settings.home / PID_FILE).unlink()


def _raise_file_limit() -> None:
    """Take the hard limit on open files as the soft one: every connection costs a descriptor."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 65536)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _sync_store_keys(platform: Platform, store: object, interval: float = 0.5) -> None:
    """Keep the embedded store's identities equal to the access keys (``opensage keys`` edits them)."""
    current: list[tuple[str, str]] | None = None
    while True:
        keys = await asyncio.to_thread(platform.store.list_access_keys)
        wanted = sorted((k.access_key_id, k.secret_access_key) for k in keys if k.status == "Active")
        if current is not None and wanted and wanted != current:
            log.info("access keys changed: updating the object store's identities")
            await asyncio.to_thread(store.write_identities, wanted)  # type: ignore[attr-defined]
        current = wanted
        await asyncio.sleep(interval)


async def _run_servers(
    settings: Settings, platform: Platform, cert: Path, key: Path, ready_message: bool, store: object | None
) -> None:
    log_level = settings.log_level.lower()
    common: dict[str, Any] = {
        "host": settings.host,
        "log_level": log_level,
        "access_log": log_level == "debug",
        "timeout_graceful_shutdown": 10,
        "lifespan": "on",
        "log_config": None,  # uvicorn's lines go through the root logger, its rate limit and rotation
        # a request head must arrive whole in 10 s; idle keep-alive connections close after 20 s;
        # beyond 4096 connections and requests in progress a request is answered 503
        "timeout_keep_alive": 20,
        "limit_concurrency": 4096,
        "backlog": 4096,
    }
    http = _Server(uvicorn.Config(platform, port=settings.ports.api, http=guarded_http_protocol(), **common))
    https = _Server(
        uvicorn.Config(
            platform,
            # the platform's start-up and shutdown (recovering jobs and endpoints) run once, with ``http``
            **{**common, "host": "127.0.0.1", "lifespan": "off", "http": guarded_http_protocol()},
            port=settings.ports.sts_tls,
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
        )
    )  # type: ignore[arg-type]
    servers = [http, https]
    if platform.registry is not None:  # the container registry's /v2/ API on its own port
        registry_config = {**common, "lifespan": "off", "http": guarded_http_protocol(), "limit_concurrency": 1024}
        servers.append(_Server(uvicorn.Config(platform.registry, port=settings.ports.registry, **registry_config)))
    proxy = SdkProxy(("127.0.0.1", settings.ports.sts_tls))
    await proxy.start(settings.host, settings.ports.proxy)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    sync = asyncio.create_task(_sync_store_keys(platform, store)) if store is not None else None
    while not all(server.started for server in servers):
        if any(t.done() for t in tasks):
            stop()
            break
        await asyncio.sleep(0.02)
    else:
        if ready_message:
            print_ready(settings)
    await asyncio.gather(*tasks)
    if sync is not None:
        sync.cancel()
    await proxy.stop()
    if not (http.started and https.started):
        raise StartError("The API server did not start; see the messages above.")


def print_ready(settings: Settings, out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    lines = [
        f"OpenSage is up (home {settings.home})",
        f"  API (SageMaker, runtime, STS, IAM, logs): {settings.api_url}",
        f"  S3:                                       {settings.s3_url}",
        f"  HTTPS proxy for the SageMaker SDK's STS:  {settings.proxy_url}",
        f"  Console:                                  {settings.api_url}/console",
        f"  Container registry (ECR, docker login):   {settings.registry_host}",
        f"  Profile '{settings.profile}' written to {settings.aws_config_file}",
        "",
        f"export AWS_PROFILE={settings.profile}",
        '# or, for the SageMaker Python SDK too:  eval "$(opensage env)"',
    ]
    print("\n".join(lines), file=out, flush=True)
