"""The ``opensage`` command: up, down, status, env, version, keys, console-password, api-coverage, quotas."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from opensage import __version__
from opensage.config import Settings, load_settings
from opensage.errors import NotFound, OpenSageError

ERROR_PREFIX = "opensage: error: "


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        home=getattr(args, "home", None),
        port=getattr(args, "port", None),
        host=getattr(args, "host", None),
        region=getattr(args, "region", None),
        database_url=getattr(args, "database_url", None),
        s3_endpoint=getattr(args, "s3_endpoint", None),
        profile=getattr(args, "profile", None),
        log_level=getattr(args, "log_level", None),
        compute=getattr(args, "compute", None),
        ray_address=getattr(args, "ray_address", None),
    )


def health(settings: Settings, timeout: float = 2.0) -> dict | None:
    """The server's health; signed with the profile's key when there is one, which adds the account."""
    request = urllib.request.Request(settings.api_url + "/_opensage/health", headers=_signed_get(settings))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return json.loads(r.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def _signed_get(settings: Settings) -> dict[str, str]:
    import botocore.exceptions
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    core = botocore.session.Session(profile=settings.profile)
    core.set_config_variable("config_file", str(settings.aws_config_file))
    core.set_config_variable("credentials_file", str(settings.aws_credentials_file))
    try:
        credentials = core.get_credentials()
    except botocore.exceptions.BotoCoreError:  # no such profile yet: an unsigned request
        return {}
    if credentials is None:
        return {}
    request = AWSRequest("GET", settings.api_url + "/_opensage/health")
    SigV4Auth(credentials, "sagemaker", settings.region).add_auth(request)
    return dict(request.headers.items())


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.detach:
        return _up_detached(settings, args)
    from opensage.server import serve

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    serve(settings)
    return 0


def _up_detached(settings: Settings, args: argparse.Namespace) -> int:
    from opensage.server import prepare_home, print_ready, read_pid

    prepare_home(settings.home)
    pid = read_pid(settings.home)
    if _pid_alive(pid) and health(settings):
        raise OpenSageError(f"OpenSage is already running on {settings.home} (pid {pid}); `opensage down` stops it.")
    log_dir = settings.home / "logs"
    log_dir.mkdir(exist_ok=True)
    log_path = log_dir / "opensage.log"
    argv = [sys.executable, "-m", "opensage", "up", "--home", str(settings.home)]
    flags = ("port", "host", "region", "database_url", "s3_endpoint", "profile", "log_level", "compute", "ray_address")
    for flag in flags:
        value = getattr(args, flag, None)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise OpenSageError(f"OpenSage did not start: {tail[0].removeprefix(ERROR_PREFIX)} (log: {log_path})")
        if health(settings, timeout=0.5) and read_pid(settings.home) == proc.pid:
            print_ready(settings)
            print(f"Running in the background (pid {proc.pid}); log: {log_path}; stop with `opensage down`.")
            return 0
        time.sleep(0.1)
    raise OpenSageError(f"OpenSage did not answer within {args.timeout:.0f} s; see {log_path}.")


def cmd_down(args: argparse.Namespace) -> int:
    from opensage.server import read_pid

    settings = _settings(args)
    pid = read_pid(settings.home)
    if not _pid_alive(pid):
        if pid is None:
            print(f"OpenSage is not running on {settings.home}.")
            return 0
        return _down_after_a_crash(settings, pid)
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            print(f"OpenSage stopped (pid {pid}).")
            return 0
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    print(f"OpenSage did not stop within {args.timeout:.0f} s and was killed (pid {pid}); state is kept.")
    return 1


def _down_after_a_crash(settings: Settings, pid: int) -> int:
    """The server of ``settings.home`` died without stopping (pid file left): end what it left running."""
    from opensage import leftovers
    from opensage.server import PID_FILE

    ended = leftovers.end_all(settings.home)
    (settings.home / PID_FILE).unlink(missing_ok=True)
    what = ", ".join(f"{n} {kind}" for kind, n in ended.items() if n) or "nothing still running"
    print(f"OpenSage (pid {pid}) had ended without stopping; ended what it left: {what}. Records are kept.")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from opensage.server import read_pid

    settings = _settings(args)
    pid = read_pid(settings.home)
    info = health(settings) if _pid_alive(pid) else None
    if info is None:
        print(f"OpenSage is not running on {settings.home}.")
        return 3
    print(
        f"OpenSage {info['version']} is running (pid {pid}, home {settings.home}, "
        f"account {info.get('account_id', f'unknown, no key in profile {settings.profile}')})"
    )
    print(f"  API: {settings.api_url}\n  S3:  {settings.s3_url}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from opensage.profile import export_lines, shell_env

    print(export_lines(shell_env(_settings(args), sdk_proxy=not args.no_sdk_proxy)))
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"opensage {__version__}")
    return 0


def _open_store(settings: Settings):  # type: ignore[no-untyped-def]
    from opensage.identity import bootstrap
    from opensage.store.sql import open_store

    if not (settings.home / "master.key").exists():
        raise OpenSageError(f"{settings.home} has no platform yet; run `opensage up` first.")
    store = open_store(settings.db_url, settings.home / "master.key")
    return store, bootstrap(store)


def cmd_keys(args: argparse.Namespace) -> int:
    from opensage.identity import create_access_key

    settings = _settings(args)
    store, identity = _open_store(settings)
    try:
        if args.keys_command == "create":
            key = create_access_key(
                store, identity.account_id, args.description or "", args.access_key_id, args.secret_access_key
            )
            print(f"aws_access_key_id = {key.access_key_id}\naws_secret_access_key = {key.secret_access_key}")
        elif args.keys_command == "list":
            for key in store.list_access_keys():
                print(f"{key.access_key_id}  {key.status}  {key.created_at:%Y-%m-%d %H:%M:%S}  {key.description}")
        else:
            if args.access_key_id not in {k.access_key_id for k in store.list_access_keys()}:
                raise OpenSageError(f"There is no access key {args.access_key_id}; `opensage keys list` shows them.")
            if len(store.list_access_keys()) <= 1:
                raise OpenSageError("Refusing to delete the last access key: create another one first.")
            try:
                store.delete_access_key(args.access_key_id)
            except NotFound as exc:
                raise OpenSageError(str(exc)) from exc
            print(f"Deleted {args.access_key_id}.")
    finally:
        store.close()
    return 0


def cmd_api_coverage(args: argparse.Namespace) -> int:
    """Per served service, the operations OpenSage implements, read from the provider classes the
    platform serves (no platform is built or started, nothing is read from the home)."""
    from opensage.app import PROVIDER_CLASSES
    from opensage.aws.dispatch import coverage
    from opensage.aws.specs import load_specs

    services = coverage(load_specs(), PROVIDER_CLASSES)
    if args.json:
        out = {
            s.service: {"service_id": s.service_id, "operations": s.total, "served": list(s.served)} for s in services
        }
        print(json.dumps(out, indent=2))
        return 0
    for s in services:
        print(f"{s.service}: {len(s.served)} of {s.total}")
        for name in s.served:
            print(f"  {name}")
    return 0


def cmd_quotas(args: argparse.Namespace) -> int:
    """The account's quotas, as Service Quotas lists them: name, value, what it limits, the setting."""
    from opensage.quotas import QUOTAS

    values = _settings(args).quotas
    rows: list[dict[str, Any]] = [
        {"QuotaName": q.title(), "Value": values[q.key], "Unit": q.unit, "Limits": q.limits, "Setting": q.env}
        for q in QUOTAS
    ]
    if args.json:
        print(json.dumps({"Quotas": rows}, indent=2))
        return 0
    width = max(len(r["QuotaName"]) for r in rows)
    for r in rows:
        print(f"{r['QuotaName']:<{width}}  {r['Value']:>12} {r['Unit']:<9}  {r['Limits']} ({r['Setting']})")
    return 0


def cmd_console_password(args: argparse.Namespace) -> int:
    import getpass

    from opensage.console.auth import set_password

    settings = _settings(args)
    if not settings.home.is_dir():
        raise OpenSageError(f"{settings.home} has no platform yet; run `opensage up` first.")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Console password: ")
        if getpass.getpass("Again: ") != password:
            raise OpenSageError("The two passwords differ; nothing was changed.")
    try:
        set_password(settings.home, password)
    except ValueError as exc:
        raise OpenSageError(str(exc)) from exc
    print(f"Console password set; sign in at {settings.api_url}/console.")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opensage", description="Self-hosted SageMaker-compatible ML platform.")
    sub = p.add_subparsers(dest="command", required=True)

    def home_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--home", help="state directory (default ~/.opensage, or OPENSAGE_HOME)")
        sp.add_argument(
            "--port", type=int, help="base port: API on it, S3 on +1, HTTPS on +2, store internals +10.. (default 8780)"
        )

    up = sub.add_parser("up", help="start the platform (foreground unless --detach)")
    home_args(up)
    up.add_argument("--host", help="address to bind (default 127.0.0.1)")
    up.add_argument("--region", help="AWS region name the platform answers as (default us-east-1)")
    up.add_argument("--database-url", help="SQLAlchemy URL of the metadata DB (default SQLite in the home)")
    up.add_argument("--s3-endpoint", help="use this S3 endpoint instead of the embedded store")
    up.add_argument("--profile", help="name of the AWS profile to write (default opensage)")
    up.add_argument("--log-level", help="debug, info, warning (default info)")
    up.add_argument(
        "--compute", choices=["local", "ray"], help="where containers run: this machine's processes or a Ray cluster"
    )
    up.add_argument("--ray-address", help="the Ray cluster for --compute ray (host:port or auto; default: start one)")
    up.add_argument("--detach", action="store_true", help="run in the background")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for --detach to be ready")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop the platform started on this home")
    home_args(down)
    down.add_argument("--timeout", type=float, default=30.0)
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="is the platform running?")
    home_args(status)
    status.set_defaults(func=cmd_status)

    env = sub.add_parser("env", help='print export lines for a shell: eval "$(opensage env)"')
    home_args(env)
    env.add_argument(
        "--no-sdk-proxy",
        action="store_true",
        help="leave HTTPS_PROXY alone (the SDK's get_execution_role()/account_id() then need AWS)",
    )
    env.set_defaults(func=cmd_env)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)

    keys = sub.add_parser("keys", help="manage access keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create an access key")
    home_args(create)
    create.add_argument("--description")
    create.add_argument("--access-key-id", help="import this key id (e.g. an external S3's) instead of generating one")
    create.add_argument("--secret-access-key", help="the secret for --access-key-id")
    listing = keys_sub.add_parser("list", help="list access keys")
    home_args(listing)
    delete = keys_sub.add_parser("delete", help="delete an access key")
    home_args(delete)
    delete.add_argument("access_key_id")
    keys.set_defaults(func=cmd_keys)

    console = sub.add_parser("console-password", help="set the password that signs in to the web console")
    home_args(console)
    console.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    console.set_defaults(func=cmd_console_password)

    coverage = sub.add_parser("api-coverage", help="list the operations OpenSage serves, per AWS service")
    coverage.add_argument("--json", action="store_true", help="print JSON: service -> served operations and count")
    coverage.set_defaults(func=cmd_api_coverage)

    quotas = sub.add_parser("quotas", help="list the account's quotas (Service Quotas style) and their settings")
    home_args(quotas)
    quotas.add_argument("--json", action="store_true", help="print JSON: QuotaName, Value, Unit, Limits, Setting")
    quotas.set_defaults(func=cmd_quotas)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except OpenSageError as exc:
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
