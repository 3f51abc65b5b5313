"""Shared test helpers: free ports, an in-process API server, boto3 clients for it."""

from __future__ import annotations

import contextlib
import random
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import uvicorn
from botocore.config import Config

from opensage.app import Platform, create_app
from opensage.config import load_settings
from opensage.identity import create_access_key


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_base_port(span: int = 10, extra: tuple[int, ...] = tuple(range(10, 18))) -> int:
    """A base port whose whole range (and the store's admin gRPC port at +10013) is free."""
    offsets = list(range(span)) + list(extra) + ([10013] if extra else [])
    for _ in range(200):
        base = random.randrange(20000, 22700)  # all of it, admin gRPC too, below the ephemeral range
        if all(port_free(base + o) for o in offsets):
            return base
    raise RuntimeError("no free port range found")


@dataclass
class ApiServer:
    url: str
    platform: Platform
    access_key_id: str
    secret: str

    def client(self, service: str, **overrides: Any) -> Any:
        kwargs: dict[str, Any] = {
            "endpoint_url": self.url,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret,
            "region_name": "us-east-1",
            "config": Config(retries={"max_attempts": 1}),
        }
        kwargs.update(overrides)
        return boto3.session.Session().client(service, **kwargs)


@contextlib.contextmanager
def api_server(home: Path) -> Iterator[ApiServer]:
    """The API server alone (no object store), in this process, on a free port."""
    port = free_base_port(span=3, extra=())
    settings = load_settings(env={}, home=str(home), port=port)
    home.mkdir(parents=True, exist_ok=True)
    platform = create_app(settings)
    key = create_access_key(platform.store, platform.identity.account_id, "tests")
    server = uvicorn.Server(uvicorn.Config(platform, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("in-process API server did not start")
        time.sleep(0.01)
    try:
        yield ApiServer(f"http://127.0.0.1:{port}", platform, key.access_key_id, key.secret_access_key)
    finally:
        server.should_exit = True
        thread.join(10)
        platform.close()


@dataclass
class RunningPlatform:
    """``opensage up`` running as a child process on its own home, ports and AWS files."""

    home: Path
    port: int
    env: dict[str, str]
    proc: Any
    python: str = sys.executable  # the interpreter OpenSage runs on (another virtual environment's, in some tests)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.port + 1}"

    def cli(self, *args: str, timeout: float = 120) -> Any:
        import subprocess

        return subprocess.run(
            [self.python, "-m", "opensage", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def shell_env(self) -> dict[str, str]:
        """The environment after ``eval "$(opensage env)"``."""
        out = self.cli("env", "--home", str(self.home)).stdout
        env = dict(self.env)
        for line in out.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            import shlex

            env[key] = shlex.split(value)[0] if value else ""
        return env

    def run_python(self, code: str, cwd: Path, timeout: float = 300, python: str | None = None) -> str:
        """Run a user's script (dedented) in a shell set up by ``opensage env``; its stdout and stderr.

        ``python`` is the interpreter to run it with (another SDK's virtual environment), by default this one.
        """
        import subprocess
        import sys
        import textwrap

        result = subprocess.run(
            [python or sys.executable, "-c", textwrap.dedent(code)],
            env=self.shell_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-12000:]  # the job log, then the error
        return result.stdout + result.stderr

    def session(self) -> Any:
        """A boto3 session that uses only the written profile (as a user's code would)."""
        import botocore.session

        core = botocore.session.Session(profile="opensage")
        core.set_config_variable("config_file", self.env["AWS_CONFIG_FILE"])
        core.set_config_variable("credentials_file", self.env["AWS_SHARED_CREDENTIALS_FILE"])
        return boto3.session.Session(botocore_session=core)


def platform_env(home: Path, aws_dir: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPENSAGE_"))}
    aws_dir.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "AWS_CONFIG_FILE": str(aws_dir / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(aws_dir / "credentials"),
            "OPENSAGE_HOME": str(home),
            "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        }
    )
    return env


@contextlib.contextmanager
def running_platform(
    home: Path,
    aws_dir: Path,
    port: int | None = None,
    timeout: float = 60,
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
    python: str | None = None,
) -> Iterator[RunningPlatform]:
    import signal
    import subprocess
    import sys
    import urllib.request

    port = port or free_base_port()
    env = {**platform_env(home, aws_dir), **(extra_env or {})}
    log = open(home.parent / f"{home.name}-up.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [python or sys.executable, "-m", "opensage", "up", "--home", str(home), "--port", str(port), *extra_args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    platform = RunningPlatform(home, port, env, proc, python or sys.executable)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"opensage up exited with {proc.returncode}: "
                    + (home.parent / f"{home.name}-up.log").read_text()[-2000:]
                )
            try:
                with urllib.request.urlopen(platform.api_url + "/_opensage/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield platform
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                import os

                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def is_model_server(cmdline: list[str]) -> bool:
    """A model server's own Python process, not the namespace tools (unshare, bash, setpriv) that start it."""
    return bool(cmdline) and Path(cmdline[0]).name.startswith("python") and "opensage.serving.modelserver" in cmdline


def xgboost_artifact(tmp: Path, rounds: int = 5) -> bytes:
    """A small XGBoost ``model.tar.gz`` (binary:logistic over 4 features; the label is ``x0 > 0``)."""
    import io
    import tarfile

    import numpy as np
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=(x[:, 0] > 0).astype(int)), rounds)
    path = tmp / f"xgboost-model-{rounds}.ubj"
    booster.save_model(str(path))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(path, arcname="xgboost-model")
    return buf.getvalue()


def console_client(url: str, access_key_id: str, secret: str) -> Any:
    """An ``httpx.Client`` signed in to the console at ``url`` with an access key (the caller closes it)."""
    import re

    import httpx

    client = httpx.Client(base_url=url, follow_redirects=False, timeout=30)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/signin").text)
    assert token, "the sign-in page has no CSRF token"
    form = {"csrf": token.group(1), "access_key_id": access_key_id, "secret": secret, "next": "/console/"}
    assert client.post("/console/signin", data=form).status_code == 303
    return client
