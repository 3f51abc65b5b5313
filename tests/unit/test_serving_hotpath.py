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
