"""The embedded store's public S3 port: a byte pipe to weed that names the default KMS key.

AWS encrypts an ``x-amz-server-side-encryption: aws:kms`` upload that names no key under the AWS
managed key ``alias/aws/s3`` (the SageMaker SDK uploads every ``sourcedir.tar.gz`` that way). weed
4.48 answers such a request with ``InternalError`` ("key ID must be non-empty") instead, so this
front adds ``x-amz-server-side-encryption-aws-kms-key-id: alias/aws/s3`` to it. weed checks that
every header is signed, so the front first verifies the caller's SigV4 signature and then signs the
amended request again with the caller's own key (a request whose signature does not verify, or
whose body carries chunk signatures chained to the original one, is passed on untouched and weed
answers it as before). Nothing else is touched: request bodies and responses are copied as they
come (framing is read only to find where the next request head starts), once the body has been
checked against the hash or the chunk signatures its signature vouches for
(:mod:`opensage.aws.s3integrity`).

It runs on its own thread and event loop, so object traffic never waits on the API server's loop.
A connection costs nothing upstream until its first request head has arrived whole (within
``header_timeout``); a connection idle longer than ``idle_timeout`` between requests, or stalled
that long inside a body, is closed; beyond ``max_connections`` open connections a new one is
makes room by closing the oldest connection still waiting for its first head (or, when none is,
is closed itself), so half-sent requests can neither take the process's file descriptors nor keep
whole requests out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable

from opensage.aws import s3integrity, sigv4

log = logging.getLogger(__name__)

DEFAULT_KMS_KEY = "alias/aws/s3"
SSE_HEADER = b"x-amz-server-side-encryption"
KMS_KEY_HEADER = b"x-amz-server-side-encryption-aws-kms-key-id"
_HEAD_LIMIT = 256 * 1024
_COPY = 256 * 1024
HEADER_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0
MAX_CONNECTIONS = 2048


SecretLookup = Callable[[str], "str | None"]
_STREAMING_SIGNED = ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")


def _signature(sig: sigv4.Signature, secret: str, creq: str) -> str:
    digest = hashlib.sha256(creq.encode()).hexdigest()
    string_to_sign = "\n".join([sigv4.ALGORITHM, sig.amz_date, sig.scope, digest])
    return hmac.new(sigv4.signing_key(secret, sig), string_to_sign.encode(), hashlib.sha256).hexdigest()


def rewrite_head(head: bytes, secret_of: SecretLookup, default_key: str = DEFAULT_KMS_KEY) -> bytes:
    """``head`` (request line and headers, ending with the blank line) naming the default KMS key when needed.

    The request is signed again with the caller's key (``secret_of`` finds it) once its signature
    has verified; otherwise ``head`` is returned as it was.
    """
    lines = head[:-4].decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    kms_key = KMS_KEY_HEADER.decode()
    if headers.get(SSE_HEADER.decode(), "").lower() != "aws:kms" or headers.get(kms_key):
        return head
    body_hash = headers.get("x-amz-content-sha256", "")
    if "authorization" not in headers or not body_hash or body_hash in _STREAMING_SIGNED:
        return head
    try:
        sig = sigv4.parse(headers, "")
        method, target, _ = lines[0].split(" ", 2)
        path, _, query = target.partition("?")
        secret = secret_of(sig.access_key)
        if secret is None:
            return head
        creq = sigv4.canonical_request(method, path, query, headers, sig, body_hash, double_encode=False)
        if not hmac.compare_digest(_signature(sig, secret, creq), sig.signature):
            return head
        signed = dataclasses.replace(sig, signed_headers=tuple(sorted({*sig.signed_headers, kms_key})))
        headers[kms_key] = default_key
        creq = sigv4.canonical_request(method, path, query, headers, signed, body_hash, double_encode=False)
    except (sigv4.SigV4Error, ValueError):
        return head
    auth = (
        f"{sigv4.ALGORITHM} Credential={sig.access_key}/{sig.scope}, "
        f"SignedHeaders={';'.join(signed.signed_headers)}, Signature={_signature(signed, secret, creq)}"
    )
    kept = [line for line in lines[1:] if line.partition(":")[0].strip().lower() != "authorization"]
    out = [lines[0], *kept, f"Authorization: {auth}", f"{kms_key}: {default_key}"]
    return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")


def body_framing(head: bytes) -> tuple[int, bool]:
    """(Content-Length, chunked) of a request head."""
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip() or b"0")
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return length, chunked


async def _copy_exactly(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int, idle: float = IDLE_TIMEOUT
) -> None:
    while n > 0:
        data = await asyncio.wait_for(reader.read(min(n, _COPY)), idle)
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        writer.write(data)
        await writer.drain()
        n -= len(data)


async def _copy_chunked(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle: float = IDLE_TIMEOUT
) -> None:
    while True:
        line = await asyncio.wait_for(reader.readuntil(b"\r\n"), idle)
        writer.write(line)
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, then the blank line
                trailer = await asyncio.wait_for(reader.readuntil(b"\r\n"), idle)
                writer.write(trailer)
                if trailer == b"\r\n":
                    await writer.drain()
                    return
        await _copy_exactly(reader, writer, size + 2, idle)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, last: list[float] | None = None) -> None:
    """Copy until EOF; ``last[0]`` is the time bytes last flowed (a response in flight is not idleness)."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(_COPY):
            writer.write(data)
            await writer.drain()
            if last is not None:
                last[0] = time.monotonic()
    with contextlib.suppress(ConnectionError, OSError):
        writer.close()


class S3Front:
    """Listens on ``host:port`` and forwards every connection to weed's S3 gateway at ``upstream``."""

    def __init__(
        self,
        host: str,
        port: int,
        upstream: tuple[str, int] | str,
        secret_of: SecretLookup,
        default_key: str = DEFAULT_KMS_KEY,
        *,
        header_timeout: float = HEADER_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        """``secret_of`` maps an access key id to its secret (None for an unknown or inactive key)."""
        self.host, self.port, self.upstream, self.default_key = host, port, upstream, default_key
        self.secret_of = secret_of
        self.header_timeout, self.idle_timeout, self.max_connections = header_timeout, idle_timeout, max_connections
        self.connections = 0
        self._refused = 0
        self._waiting: dict[asyncio.StreamWriter, None] = {}  # no head yet, oldest first
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        """Listen (returns once the port is bound).

        Raises:
            OSError: the port cannot be bound.
        """
        loop = asyncio.new_event_loop()
        self._server = loop.run_until_complete(
            asyncio.start_server(self._client, self.host or "0.0.0.0", self.port, limit=_HEAD_LIMIT, backlog=4096)
        )
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="s3-front", daemon=True)
        self._thread.start()
        log.info("S3 front on %s:%d forwards to %s", self.host, self.port, self.upstream)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    async def _rewrite(self, head: bytes) -> bytes:
        if b"aws:kms" not in head.lower():  # the common case: no lookup, no parsing
            return head
        return await asyncio.to_thread(rewrite_head, head, self.secret_of, self.default_key)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= self.max_connections:
            self._refused += 1
            if self._refused in (1, 10, 100) or self._refused % 1000 == 0:
                log.warning("S3 front: %d connection(s) shed at the cap of %d", self._refused, self.max_connections)
            if not self._waiting:
                writer.close()
                return
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            oldest.transport.abort()
        self.connections += 1
        self._waiting[writer] = None
        try:
            await self._serve(reader, writer)
        finally:
            self.connections -= 1
            self._waiting.pop(writer, None)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            if isinstance(self.upstream, str):  # the store's Unix socket
                opening = asyncio.open_unix_connection(self.upstream, limit=_HEAD_LIMIT)
            else:
                opening = asyncio.open_connection(*self.upstream, limit=_HEAD_LIMIT)
            return await asyncio.wait_for(opening, 10)
        except (OSError, TimeoutError) as exc:
            log.warning("S3 front: the object store at %s does not answer: %s", self.upstream, exc)
            return None

    async def _copy_body(self, head: bytes, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        length, chunked = body_framing(head)
        if not (length or chunked):
            return
        fields = s3integrity.head_fields(head)[3]
        declared = s3integrity.declared_hash(fields)
        if chunked:  # Transfer-Encoding: chunked bodies go as they come (no S3 client sends a hash with them)
            await _copy_chunked(reader, up, self.idle_timeout)
        elif declared is not None:
            await s3integrity.copy_hashed(reader, up, length, declared, self.idle_timeout)
        elif fields.get("x-amz-content-sha256") == sigv4.STREAMING_PAYLOAD:
            access = fields.get("authorization", "").partition("Credential=")[2].partition("/")[0]
            secret = await asyncio.to_thread(self.secret_of, access) if access else None
            seeded = s3integrity.seed_signature(head, secret)
            if seeded is None or secret is None:  # weed refuses a signature that does not verify
                await _copy_exactly(reader, up, length, self.idle_timeout)
                return
            sig, seed = seeded
            await s3integrity.copy_signed_chunks(reader, up, length, sig, secret, seed, self.idle_timeout)
        else:
            await _copy_exactly(reader, up, length, self.idle_timeout)

    async def _next_head(self, reader: asyncio.StreamReader, timeout: float, last: list[float]) -> bytes:
        while True:
            try:
                return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            except TimeoutError:
                # a partial head stays in the reader's buffer; waiting again loses nothing
                if time.monotonic() - last[0] >= timeout:
                    raise

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_writer: asyncio.StreamWriter | None = None
        responses: asyncio.Task[None] | None = None
        try:
            # a new connection's head must arrive whole in header_timeout; a kept-alive one may idle longer
            timeout = self.header_timeout
            last = [time.monotonic()]
            while True:
                head = await self._next_head(reader, timeout, last)
                timeout = self.idle_timeout
                self._waiting.pop(writer, None)
                if up_writer is None:  # the store is dialled once a whole head is here, not before
                    opened = await self._open_upstream()
                    if opened is None:
                        return
                    up_reader, up_writer = opened
                    responses = asyncio.create_task(_pipe(up_reader, writer, last))
                up_writer.write(await self._rewrite(head))
                try:
                    await self._copy_body(head, reader, up_writer)
                except s3integrity.BodyMismatch as refused:
                    log.warning("S3 front: refused a request whose body is not the signed one: %s", head[:120])
                    up_writer.transport.abort()  # the store never sees a whole body: it stores nothing
                    with contextlib.suppress(ConnectionError, OSError):
                        writer.write(refused.response)
                        await writer.drain()
                    return
                await up_writer.drain()
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ConnectionError,
            OSError,
            ValueError,
        ):
            pass
        finally:
            if up_writer is not None:
                with contextlib.suppress(ConnectionError, OSError):
                    up_writer.close()
            if responses is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await responses
            with contextlib.suppress(ConnectionError, OSError):
                writer.close()
