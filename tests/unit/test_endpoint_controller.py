"""The endpoint controller's state machine with a compute backend whose "model servers" are threads.

Each container the controller starts is a tiny HTTP server on the Unix socket the container
contract names (``OPENSAGE_BIND_TO_SOCKET``): ``/ping`` answers 200, ``/invocations`` echoes the
body upper-cased. No process starts and no model loads; the clock is the test's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import io
import socketserver
import tarfile
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from opensage import states
from opensage.compute.base import ContainerState, Handle, JobSpec, JobStatus
from opensage.contract import BIND_TO_SOCKET_ENV
from opensage.logstore import LogStore
from opensage.serving.endpoints import CONFIG, ENDPOINT, MODEL, EndpointEngine
from opensage.serving.specs import EndpointConfigSpec, EndpointSpec
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore, open_store

XGBOOST = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the handler's protocol
        self._answer(200 if self.path == "/ping" else 404, b"")

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(200, body.upper())

    def log_message(self, *args: Any) -> None:
        return None

    def address_string(self) -> str:
        return "unix"


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class ThreadBackend:
    """Model servers as threads listening on the container's socket."""

    name = "threads"

    def __init__(self) -> None:
        self.servers: dict[str, _Server] = {}
        self.started: list[str] = []
        self.stopped: list[str] = []

    def submit(self, spec: JobSpec) -> Handle:
        (container,) = spec.containers
        path = container.env[BIND_TO_SOCKET_ENV]
        server = _Server(path, _Echo)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers[path] = server
        self.started.append(spec.job_id)
        return {"job_id": spec.job_id, "socket": path}

    def poll(self, handle: Handle) -> JobStatus:
        running = handle["socket"] in self.servers
        return JobStatus([ContainerState("server", running, None if running else 0)])

    def stop(self, handle: Handle, grace_s: float) -> None:
        server = self.servers.pop(handle["socket"], None)
        if server is not None:
            server.shutdown()
            server.server_close()
            self.stopped.append(handle["job_id"])

    def cleanup(self, handle: Handle) -> None:
        return None

    def end_job(self, job_id: str) -> int:
        return 0

    def close(self) -> None:
        for path in list(self.servers):
            self.stop({"job_id": "", "socket": path}, 0)


class ArtifactS3:
    """One model artifact (a tarball with an empty model file), as the model cache reads S3."""

    exceptions = types.SimpleNamespace(ClientError=botocore.exceptions.ClientError)

    def __init__(self) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("xgboost-model")
            tar.addfile(info, io.BytesIO(b""))
        self.artifact = buf.getvalue()

    def head_object(self, Bucket: str, Key: str) -> dict[str, str]:  # noqa: N803 - boto3's names
        if Key != "model.tar.gz":
            raise botocore.exceptions.ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        return {"ETag": '"abc"'}

    def download_file(self, bucket: str, key: str, path: str) -> None:
        Path(path).write_bytes(self.artifact)


class FakeClock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    s = open_store(f"sqlite:///{tmp_path / 'opensage.db'}", tmp_path / "master.key")
    yield s
    s.engine.dispose()


def _config(store: SqlStore, clock: FakeClock, name: str, model: str, count: int = 1) -> None:
    variant = {"VariantName": "AllTraffic", "ModelName": model, "InstanceType": "ml.m5.large"}
    spec = EndpointConfigSpec.from_request(
        {"EndpointConfigName": name, "ProductionVariants": [{**variant, "InitialInstanceCount": count}]}
    )
    data = spec.initial_description(f"arn:{name}", clock())
    store.create_resource(Resource(CONFIG, name, f"arn:{name}", "", clock(), clock(), data))


def _status(store: SqlStore, name: str) -> Resource:
    row = store.get_resource(ENDPOINT, name)
    assert row is not None
    return row


async def _until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "the endpoint did not get there"
        await asyncio.sleep(0.01)


def test_create_invoke_scale_update_rollback_delete(store: SqlStore, tmp_path: Path) -> None:
    clock, backend = FakeClock(), ThreadBackend()
    now = clock()
    data = {"ModelName": "m", "PrimaryContainer": {"Image": XGBOOST, "ModelDataUrl": "s3://b/model.tar.gz"}}
    store.create_resource(Resource(MODEL, "m", "arn:m", "", now, now, data))
    _config(store, clock, "one", "m")
    _config(store, clock, "broken", "no-such-model")

    async def scenario() -> None:
        engine = EndpointEngine(store, ArtifactS3(), backend, LogStore(tmp_path / "logs"), tmp_path / "ep", clock)
        try:
            await engine.create(EndpointSpec("ep", "one"), "arn:ep")
            assert _status(store, "ep").status == "Creating"
            await _until(lambda: _status(store, "ep").status == "InService")
            answer = await engine.invoke("ep", b"a,b", "text/csv", "", None, None)
            assert (answer.status, answer.body, answer.variant) == (200, b"A,B", "AllTraffic")

            # scaling in place: Updating -> InService with two servers
            change = states.transition(ENDPOINT, "Updating", clock())
            store.modify_resource(ENDPOINT, "ep", change, now=clock())
            engine.launch_scale("ep", {"AllTraffic": 2})
            await _until(lambda: _status(store, "ep").status == "InService")
            variant = _status(store, "ep").data["ProductionVariants"][0]
            assert variant["CurrentInstanceCount"] == 2 and len(backend.servers) == 2

            # a blue/green update to a config whose model is missing rolls back and says why
            store.modify_resource(ENDPOINT, "ep", states.transition(ENDPOINT, "Updating", clock()), now=clock())
            engine.launch_update("ep", "broken")
            await _until(lambda: _status(store, "ep").status == "InService")
            row = _status(store, "ep")
            assert row.data["EndpointConfigName"] == "one"
            assert row.data["FailureReason"].startswith("Update failed and was rolled back")
            assert (await engine.invoke("ep", b"x", "text/csv", "", None, None)).body == b"X"  # still serving

            # deleting: Deleting, then the servers stop and the record goes
            store.modify_resource(ENDPOINT, "ep", states.transition(ENDPOINT, "Deleting", clock()), now=clock())
            await engine.delete("ep")
            assert store.get_resource(ENDPOINT, "ep") is None and backend.servers == {}
        finally:
            await engine.shutdown()
            backend.close()

    asyncio.run(scenario())


def test_a_config_with_a_missing_model_fails_the_endpoint(store: SqlStore, tmp_path: Path) -> None:
    clock, backend = FakeClock(), ThreadBackend()
    _config(store, clock, "broken", "no-such-model")

    async def scenario() -> None:
        engine = EndpointEngine(store, ArtifactS3(), backend, LogStore(tmp_path / "logs"), tmp_path / "ep", clock)
        try:
            await engine.create(EndpointSpec("bad", "broken"), "arn:bad")
            await _until(lambda: _status(store, "bad").status == "Failed")
        finally:
            await engine.shutdown()

    asyncio.run(scenario())
    assert 'Could not find model "no-such-model"' in _status(store, "bad").data["FailureReason"]
    assert backend.started == []


def test_after_a_restart_an_endpoint_is_system_updating_and_requests_wait_for_its_fleet(
    store: SqlStore, tmp_path: Path
) -> None:
    clock, backend = FakeClock(), ThreadBackend()
    now = clock()
    data = {"ModelName": "m", "PrimaryContainer": {"Image": XGBOOST, "ModelDataUrl": "s3://b/model.tar.gz"}}
    store.create_resource(Resource(MODEL, "m", "arn:m", "", now, now, data))
    _config(store, clock, "one", "m")
    record = EndpointSpec("ep", "one").initial_description("arn:ep", now)
    record.update(EndpointStatus="InService", _Handles=[{"job_id": "gone", "socket": "/nonexistent"}])
    store.create_resource(Resource(ENDPOINT, "ep", "arn:ep", "InService", now, now, record))

    async def scenario() -> None:
        engine = EndpointEngine(store, ArtifactS3(), backend, LogStore(tmp_path / "logs"), tmp_path / "ep", clock)
        try:
            await engine.recover()  # what a new server does first
            assert _status(store, "ep").status == "SystemUpdating"  # not InService before it serves
            answer = await engine.invoke("ep", b"a", "text/csv", "", None, None)  # waits for the fleet
            assert answer.status == 200 and answer.body == b"A"
            assert _status(store, "ep").status == "InService"
        finally:
            await engine.shutdown()
            backend.close()

    asyncio.run(scenario())
