"""An HTTPS proxy that answers the AWS host names the SageMaker SDK calls without endpoint settings.

The SDK builds its STS client for ``get_execution_role()``, ``account_id()`` and the default bucket
name with an explicit ``https://sts.<region>.amazonaws.com`` URL, which no endpoint setting can
redirect. ``opensage env`` sets ``HTTPS_PROXY`` to this proxy (with ``NO_PROXY`` for loopback) and
``AWS_CA_BUNDLE`` to a bundle of the public CAs plus OpenSage's own. A ``CONNECT`` to an STS host
is joined to the platform's TLS listener, whose certificate names those hosts; a ``CONNECT`` to a
public host is tunnelled to that host untouched, so the rest of a shell's HTTPS traffic (pip, git)
works as before. Nothing is decrypted here: the proxy only joins byte streams.

What it refuses (403, the reason in the status line, which is what clients show):

* any other ``*.amazonaws.com`` name: a service OpenSage does not serve must not receive the
  user's request (signed with the user's keys) on real AWS;
* an address of this machine (loopback, or one of its interfaces' addresses), link-local,
  unspecified or multicast: the proxy is no way around the platform's own ports or into the
  object store's internal ones. The name is resolved once and the checked address is the one
  dialled, so a name that changes its answer between check and connect gains nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

_STS_HOST = re.compile(r"sts(\.[a-z0-9-]+)?\.amazonaws\.com(\.cn)?", re.IGNORECASE)
_AWS_HOST = re.compile(r"(.+\.)?amazonaws\.com(\.cn)?\.?", re.IGNORECASE)
_MAX_HEADER = 16 * 1024
_MAX_CLIENTS = 512


class Refused(Exception):
    """The proxy will not tunnel to this destination; the message says why."""


def local_addresses() -> set[str]:
    """The addresses of this machine's interfaces."""
    import psutil

    found: set[str] = set()
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in (socket.AF_INET, socket.AF_INET6):
                found.add(addr.address.split("%", 1)[0])
    return found


def check_address(address: str, own: set[str]) -> None:
    """Raise :class:`Refused` unless ``address`` is a public address of another machine."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast or str(ip) in own:
        raise Refused(f"tunnelling to {ip} is refused (an address of this machine, link-local or not routable)")


async def resolve_public(host: str, port: int, own: Callable[[], set[str]] = local_addresses) -> str:
    """The address to dial for ``host``: its first address, once every address has passed :func:`check_address`.

    Raises:
        Refused: an unserved AWS host name, or an address this proxy must not reach.
        OSError: the name does not resolve.
    """
    if _AWS_HOST.fullmatch(host):
        raise Refused(f"OpenSage does not serve {host}; the request was not sent to AWS")
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    mine = own()
    for address in addresses:
        check_address(address, mine)
    return addresses[0]


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

    def __init__(self, target: tuple[str, int], connect_timeout: float = 10.0, max_clients: int = _MAX_CLIENTS) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.max_clients = max_clients
        self._clients = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._client, host, port, reuse_address=True, backlog=1024)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= self.max_clients:  # a cap on open tunnels: the process's descriptors are shared
            writer.close()
            return
        self._clients += 1
        try:
            await self._serve(reader, writer)
        finally:
            self._clients -= 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
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
        upstream_addr = self.target
        if not intercepted(host):
            try:
                upstream_addr = (await resolve_public(host, int(port_text)), int(port_text))
            except Refused as exc:
                log.info("proxy: refused CONNECT %s:%s: %s", host, port_text, exc)
                await self._answer(writer, 403, f"Forbidden: {exc}")
                return
            except (OSError, ValueError) as exc:
                await self._answer(writer, 502, f"Bad Gateway: cannot resolve {host}: {exc}"[:200])
                return
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
