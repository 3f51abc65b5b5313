"""Kept-alive HTTP/1.1 connections from the router to one model server.

A small client on an asyncio ``Protocol`` (no stream objects, no task per request): one write per
request (headers and body together; TCP_NODELAY is asyncio's default), responses parsed by
httptools (``Content-Length``, chunked, or until close), idle connections reused, a stale one
retried once on a fresh connection, the timeout a timer handle rather than a wrapping task. The
router's hop is most of an endpoint's overhead budget: this is where it is spent.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import httptools

_MAX_HEADER = 64 * 1024
_JOIN_LIMIT = 64 * 1024  # bodies up to this size are copied behind the head: one write, one segment


class UpstreamError(Exception):
    """The model server could not be reached or answered malformed HTTP."""


class UpstreamLost(UpstreamError):
    """The model server could not be reached, or closed the connection before its answer was complete
    (it died or is being replaced): the request may be sent to another instance."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class _Connection(asyncio.Protocol):
    """One kept-alive connection; at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[Reply, bool]] | None = None
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._headers_done = False
        self._got_data = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._got_data = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError("the model server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and "content-length" not in self._headers and "transfer-encoding" not in self._headers:
            self._complete(keep=False)  # the body ran until the server closed the connection
            return
        waiter.set_exception(ConnectionResetError("the model server closed the connection"))

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > _MAX_HEADER:
            raise UpstreamError("response headers too large")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip()
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._complete(keep=self._parser.should_keep_alive())

    # -- requests
    def _complete(self, keep: bool) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        reply = Reply(self._parser.get_status_code(), self._headers, body)
        waiter.set_result((reply, keep and not self.closed))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()

    def send(self, payload: bytes | list[bytes]) -> asyncio.Future[tuple[Reply, bool]]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._headers, self._body, self._header_bytes = {}, [], 0
        self._headers_done = self._got_data = False
        if isinstance(payload, list):
            self.transport.writelines(payload)
        else:
            self.transport.write(payload)
        return self._waiter

    @property
    def answered_nothing(self) -> bool:
        return not self._got_data

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close()


class Upstream:
    def __init__(self, host: str, port: int, max_idle: int = 64, unix_path: str | None = None) -> None:
        self.host, self.port, self.max_idle, self.unix_path = host, port, max_idle, unix_path
        self._idle: list[_Connection] = []
        self._host_line = f"host: {host}:{port}\r\n"

    async def _open(self, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            if self.unix_path:
                opening = loop.create_unix_connection(_Connection, self.unix_path)
            else:
                opening = loop.create_connection(_Connection, self.host, self.port)
            _, conn = await asyncio.wait_for(opening, timeout)
        except (OSError, TimeoutError) as exc:
            where = self.unix_path or f"{self.host}:{self.port}"
            raise UpstreamLost(f"cannot connect to {where}: {exc}") from exc
        return conn

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
    ) -> Reply:
        """Send one request and read its whole answer.

        Raises:
            UpstreamError: no connection, a connection lost mid-answer, or malformed HTTP.
            TimeoutError: no complete answer within ``timeout`` seconds.
        """
        head = f"{method} {path} HTTP/1.1\r\n{self._host_line}content-length: {len(body)}\r\n"
        if headers:
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        raw_head = (head + "\r\n").encode("latin-1")
        payload: bytes | list[bytes] = raw_head + body if len(body) <= _JOIN_LIMIT else [raw_head, body]
        for attempt in (0, 1):
            conn = self._take_idle() if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._open(connect_timeout)
            waiter = conn.send(payload)
            timer = asyncio.get_running_loop().call_later(timeout, _expire, waiter)
            try:
                reply, keep = await waiter
            except (ConnectionError, UpstreamError) as exc:
                conn.close()
                if reused and conn.answered_nothing:
                    continue  # the server closed an idle connection: try once on a new one
                if isinstance(exc, UpstreamError):
                    raise
                raise UpstreamLost(str(exc) or type(exc).__name__) from exc
            except BaseException:
                conn.close()
                raise
            finally:
                timer.cancel()
            if keep and len(self._idle) < self.max_idle:
                self._idle.append(conn)
            else:
                conn.close()
            return reply
        raise UpstreamError("no connection")

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _expire(waiter: asyncio.Future[tuple[Reply, bool]]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
