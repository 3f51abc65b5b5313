"""The invoke hot path's pieces: the router's HTTP client, the model server's protocol, the metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from opensage.serving.metrics import InvocationMetrics
from opensage.serving.modelserver import HttpConnection
from opensage.serving.upstream import Upstream, UpstreamError


class EchoApp:
    """Stands in for ModelApp: echoes the body and the content headers."""

    def __init__(self) -> None:
        self.calls = 0

    def answer(self, method: str, path: str, payload: bytes, content_type: str, accept: str) -> tuple[int, bytes, str]:
        self.calls += 1
        if path == "/ping":
            return 200, b"", "text/plain"
        if path != "/invocations" or method != "POST":
            return 404, b"not found", "text/plain"
        if payload == b"bad":
            return 400, b"cannot parse", "text/plain"
        return 200, payload + f"|{content_type}|{accept}".encode(), "text/csv"


async def _with_server(factory: Callable[[], asyncio.Protocol], test: Callable[[int], Awaitable[None]]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await test(port)
    finally:
        server.close()
        await server.wait_closed()


def test_model_server_protocol_and_kept_alive_client() -> None:
    app = EchoApp()

    async def test(port: int) -> None:
        upstream = Upstream("127.0.0.1", port)
        ping = await upstream.request("GET", "/ping")
        assert (ping.status, ping.body) == (200, b"")
        reply = await upstream.request("POST", "/invocations", b"1,2", {"content-type": "text/csv", "accept": "*/*"})
        assert (reply.status, reply.body, reply.headers["content-type"]) == (200, b"1,2|text/csv|*/*", "text/csv")
        assert len(upstream._idle) == 1  # one connection, reused
        big = b"x" * 200_000  # sent as two writes
        assert (await upstream.request("POST", "/invocations", big)).body.startswith(big)
        assert (await upstream.request("POST", "/invocations", b"bad")).status == 400
        assert (await upstream.request("GET", "/nowhere")).status == 404
        replies = await asyncio.gather(*(upstream.request("POST", "/invocations", str(i).encode()) for i in range(20)))
        assert [r.body.split(b"|")[0] for r in replies] == [str(i).encode() for i in range(20)]
        upstream.close()

    asyncio.run(_with_server(lambda: HttpConnection(app), test))  # type: ignore[arg-type]


class RawServer(asyncio.Protocol):
    """Answers every request with a canned response, then maybe closes."""

    def __init__(self, response: bytes, close: bool = False, silent: bool = False) -> None:
        self.response, self.close, self.silent = response, close, silent

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.silent:
            return
        self.transport.write(self.response)
        if self.close:
            self.transport.close()


@pytest.mark.parametrize(
    ("response", "close", "body"),
    [
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", False, b"abcde"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok", True, b"ok"),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil close", True, b"until close"),
    ],
)
def test_client_reads_every_framing(response: bytes, close: bool, body: bytes) -> None:
    async def test(port: int) -> None:
        upstream = Upstream("127.0.0.1", port)
        for _ in range(2):  # the second one on a fresh connection when the first was closed
            reply = await upstream.request("GET", "/x", timeout=5)
            assert (reply.status, reply.body) == (200, body)
        upstream.close()

    asyncio.run(_with_server(lambda: RawServer(response, close), test))


def test_client_errors() -> None:
    async def malformed(port: int) -> None:
        with pytest.raises(UpstreamError):
            await Upstream("127.0.0.1", port).request("GET", "/x", timeout=5)

    asyncio.run(_with_server(lambda: RawServer(b"garbage\r\n\r\n"), malformed))

    async def timeout(port: int) -> None:
        with pytest.raises(TimeoutError):
            await Upstream("127.0.0.1", port).request("GET", "/x", timeout=0.2)

    asyncio.run(_with_server(lambda: RawServer(b"", silent=True), timeout))

    async def refused() -> None:
        with pytest.raises(UpstreamError, match="cannot connect"):
            await Upstream("127.0.0.1", 1).request("GET", "/x", connect_timeout=1)

    asyncio.run(refused())


def test_metrics_buckets_percentiles_and_prometheus() -> None:
    m = InvocationMetrics()
    m.record("ep", "a", 200, 100, 20, now=120.0)
    m.record("ep", "a", 424, 300, 10, now=130.0)
    m.record("ep", "a", 500, 50, 5, now=200.0)
    key = ("ep", "a", "Invocation4XXErrors")
    assert key in m.series()
    first = dict(m.buckets(key, 0, 1000))[120]
    assert (first.count, first.total, first.low, first.high) == (2, 1.0, 0.0, 1.0)
    model = dict(m.buckets(("ep", "a", "ModelLatency"), 0, 1000))[120]
    assert (model.count, model.total, model.low, model.high) == (2, 400.0, 100, 300)
    assert m.buckets(("ep", "a", "ModelLatency"), 0, 180) == [(120, model)]
    p50, p99 = m.latency_percentiles("ep", 120) or (0, 0)
    assert 110 < p50 < 130 and 290 < p99 < 330  # bins are about 4 % wide
    assert m.latency_percentiles("ep", 600) is None
    text = m.prometheus()
    assert 'opensage_endpoint_invocations_total{endpoint="ep",variant="a"} 3.0' in text
    assert 'opensage_endpoint_model_latency_microseconds_sum{endpoint="ep",variant="a"} 450.0' in text


# --- the gateway's InvokeEndpoint fast path -----------------------------------------------------------


class _Key:
    access_key_id = "AKIATESTKEY000000001"
    secret_access_key = "s3cr3t/With+Chars"
    principal_arn = "arn:aws:sts::123456789012:assumed-role/OpenSageExecutionRole/tests"
    user_id = "AROATEST:tests"
    status = "Active"


class _Engine:
    async def invoke(
        self, name: str, body: bytes, content_type: str, accept: str, target: Any, attrs: Any = None, **_: Any
    ):
        from opensage.serving.endpoints import Answer, NoEndpoint

        if name == "missing":
            raise NoEndpoint(name)
        if body == b"bad":
            return Answer(400, b"cannot parse", "text/plain", "AllTraffic", 0.001)
        return Answer(200, body + f"|{content_type}|{accept}|{target}".encode(), "text/csv", "AllTraffic", 0.001)


def _gateway(fast: bool) -> Any:
    from opensage.aws.auth import Authenticator
    from opensage.aws.gateway import Gateway
    from opensage.aws.specs import load_specs
    from opensage.providers.runtime import RuntimeProvider

    provider = RuntimeProvider(_Engine(), InvocationMetrics())  # type: ignore[arg-type]
    gateway = Gateway(
        load_specs(), {"sagemaker-runtime": provider}, Authenticator(lambda k: _Key()), "123456789012", 2**23
    )  # type: ignore[arg-type, return-value]
    assert gateway._invoke is not None  # the fast path is on for this model
    if not fast:
        gateway._invoke = None
    return gateway


def _call(gateway: Any, name: str, body: bytes, headers: dict[str, str], tamper: bytes | None = None) -> tuple:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    path = f"/endpoints/{name}/invocations"
    request = AWSRequest(method="POST", url=f"http://127.0.0.1:8080{path}", data=body, headers=headers)
    SigV4Auth(Credentials(_Key.access_key_id, _Key.secret_access_key), "sagemaker", "us-east-1").add_auth(request)
    wire = [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]
    wire += [(b"host", b"127.0.0.1:8080"), (b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": wire,
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": tamper if tamper is not None else body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(gateway(scope, receive, send))
    headers_out = {k.decode(): v.decode() for k, v in sent[0]["headers"] if k != b"x-amzn-requestid"}
    return sent[0]["status"], headers_out, sent[1]["body"]


@pytest.mark.parametrize(
    ("name", "body", "headers", "tamper", "status", "code"),
    [
        ("ep-1", b"1,2", {"Content-Type": "text/csv", "Accept": "text/csv"}, None, 200, None),
        ("ep-1", b"1,2", {"Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Variant": "B"}, None, 200, None),
        ("ep-1", b"bad", {"Content-Type": "text/csv"}, None, 424, "ModelError"),
        ("missing", b"1", {"Content-Type": "text/csv"}, None, 400, "ValidationError"),
        ("bad_name!", b"1", {"Content-Type": "text/csv"}, None, 400, "ValidationError"),
        ("ep-1", b"1,2", {"Content-Type": "text/csv"}, b"1,3", 403, "InvalidSignatureException"),
    ],
)
def test_fast_path_answers_as_the_generic_layer(
    name: str, body: bytes, headers: dict[str, str], tamper: bytes | None, status: int, code: str | None
) -> None:
    fast = _call(_gateway(True), name, body, headers, tamper)
    generic = _call(_gateway(False), name, body, headers, tamper)
    assert fast == generic
    assert fast[0] == status
    assert fast[1].get("x-amzn-errortype") == code
