"""An HTTPS proxy that answers the AWS host names the SageMaker SDK calls without endpoint settings.

The SDK builds its STS client for ``get_execution_role()``, ``account_id()`` and the default bucket
name with an explicit ``https://sts.<region>.amazonaws.com`` URL, which no endpoint setting can
redirect. ``opensage env`` sets ``HTTPS_PROXY`` to this proxy (with ``NO_PROXY`` for loopback) and
``AWS_CA_BUNDLE`` to a bundle of the public CAs plus OpenSage's own. A ``CONNECT`` to an STS host
is joined to the platform's TLS listener, whose certificate names those hosts; a ``CONNECT`` to any
other host is tunnelled to that host untouched, so the rest of a shell's HTTPS traffic works as
before. Nothing is decrypted here: the proxy only joins byte streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable

log = logging.getLogger(__name__)

_STS_HOST = re.compile(r"sts(\.[a-z0-9-]+)?\.amazonaws\.com(\.cn)?", re.IGNORECASE)
_MAX_HEADER = 16 * 1024


def intercepted(host: str) -> bool:
    """Is ``host`` one that OpenSage answers itself?"""
    return _STS_HOST.fullmatch(host) is not None


def sts_host_names() -> list[str]:
    """Every STS host name of botocore's partitions (the TLS certificate lists them)."""
    import botocore.loaders

    data = botocore.loaders.create_loader().load_data("endpoints")
    names = {"sts.amazonaws.com"}
    for partition in data.get("partitions", []):
        suffix = partition.get("dnsSuffix", "amazonaws.com")
        for region in partition.get("regions", {}):
            names.add(f"sts.{region}.{suffix}")
    return sorted(n for n in names if intercepted(n))


class SdkProxy:
    """``CONNECT``-only HTTP proxy; STS hosts go to ``target`` (host, port), others pass through."""

    def __init__(self, target: tuple[str, int], connect_timeout: float = 10.0) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._client, host, port, reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        if len(head) > _MAX_HEADER:
            await self._answer(writer, 431, "Request Header Fields Too Large")
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3 or parts[0].upper() != "CONNECT":
            await self._answer(writer, 405, "Method Not Allowed (this proxy only tunnels HTTPS with CONNECT)")
            return
        host, _, port_text = parts[1].rpartition(":")
        host = host.strip("[]")
        if not port_text.isdigit() or not host:
            await self._answer(writer, 400, "Bad Request")
            return
        upstream_addr = self.target if intercepted(host) else (host, int(port_text))
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*upstream_addr), self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            log.info("proxy: cannot reach %s:%s: %s", host, port_text, exc)
            await self._answer(writer, 502, "Bad Gateway")
            return
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def no_proxy_hosts(extra: Iterable[str] = ()) -> str:
    return ",".join(dict.fromkeys(["127.0.0.1", "localhost", "::1", *extra]))
