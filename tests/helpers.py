"""Shared test helpers: free ports, an in-process API server, boto3 clients for it."""

from __future__ import annotations

import contextlib
import random
import socket
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


def free_base_port(span: int = 10, extra: tuple[int, ...] = (10, 11, 12, 13, 14, 15)) -> int:
    """A base port whose whole range (and the store's +10000 gRPC twins) is free."""
    offsets = list(range(span)) + list(extra) + [o + 10000 for o in extra] + [1 + 10000]
    for _ in range(200):
        base = random.randrange(20000, 40000)
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
    server = uvicorn.Server(uvicorn.Config(platform, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
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
