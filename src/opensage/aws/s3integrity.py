"""The S3 front's body checks: a request body must be the one its signature vouches for.

weed checks a request's signature, which covers the ``x-amz-content-sha256`` header, but not that
the body has that hash, so a signed PUT replayed with another body would be stored. The front
hashes the body as it copies it and holds back its last byte until the hash is known: on a
mismatch the store never receives a whole body (it stores nothing) and the caller gets S3's
``XAmzContentSHA256Mismatch``. ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` bodies (aws-chunked, each chunk
signed, the chain seeded by the request's own signature) are checked chunk by chunk, each chunk
passed on only once its signature verifies (a bad one: ``SignatureDoesNotMatch``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping

from opensage.aws import sigv4

_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_CHUNK_HEADER = 4096
_COPY = 256 * 1024


class BodyMismatch(Exception):
    """The body is not the signed one; ``response`` is S3's error answer."""

    def __init__(self, response: bytes) -> None:
        super().__init__(response[:80])
        self.response = response


def head_fields(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """(method, raw path, raw query, lower-cased headers) of a request head."""
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return method, path, query, headers


def declared_hash(headers: Mapping[str, str]) -> str | None:
    """The body's hash as the request declares it, when it declares a plain SHA-256."""
    value = headers.get("x-amz-content-sha256", "").lower()
    return value if _HEX_SHA256.fullmatch(value) else None


def error_response(code: str, message: str, status: str = "400 Bad Request", **extra: str) -> bytes:
    """S3's XML error shape, on a connection that is then closed."""
    fields = "".join(f"<{k}>{v}</{k}>" for k, v in extra.items())
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>{fields}"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def mismatch(declared: str, computed: str) -> BodyMismatch:
    return BodyMismatch(
        error_response(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ClientComputedContentSHA256=declared,
            S3ComputedContentSHA256=computed,
        )
    )


def chunk_mismatch() -> BodyMismatch:
    return BodyMismatch(
        error_response(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
            "403 Forbidden",
        )
    )


async def copy_hashed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int, declared: str, idle: float
) -> None:
    """Copy ``n`` body bytes whose SHA-256 must be ``declared``; the last byte goes only after the check.

    Raises:
        BodyMismatch: the hash differs (nothing of the last byte was written).
    """
    digest = hashlib.sha256()
    held = b""
    while n > 0:
        data = await asyncio.wait_for(reader.read(min(n, _COPY)), idle)
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        n -= len(data)
        digest.update(data)
        if held:
            writer.write(held)
        data, held = data[:-1], data[-1:]
        if data:
            writer.write(data)
            await writer.drain()
    computed = digest.hexdigest()
    if not hmac.compare_digest(computed, declared):
        raise mismatch(declared, computed)
    writer.write(held)


def seed_signature(head: bytes, secret: str | None) -> tuple[sigv4.Signature, str] | None:
    """The verified request signature that seeds an aws-chunked body's chain, or None when it does not verify."""
    if secret is None:
        return None
    try:
        method, path, query, headers = head_fields(head)
        sig = sigv4.parse(headers, "")
        creq = sigv4.canonical_request(
            method, path, query, headers, sig, sigv4.STREAMING_PAYLOAD, double_encode=False
        )
    except (sigv4.SigV4Error, ValueError):
        return None
    string_to_sign = "\n".join([sigv4.ALGORITHM, sig.amz_date, sig.scope, hashlib.sha256(creq.encode()).hexdigest()])
    expected = hmac.new(sigv4.signing_key(secret, sig), string_to_sign.encode(), hashlib.sha256).hexdigest()
    return (sig, expected) if hmac.compare_digest(expected, sig.signature) else None


async def copy_signed_chunks(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    n: int,
    sig: sigv4.Signature,
    secret: str,
    seed: str,
    idle: float,
) -> None:
    """Copy an aws-chunked body of ``n`` bytes, each chunk only once its signature verifies.

    Raises:
        BodyMismatch: a chunk's signature does not verify, or the framing is broken.
    """
    key = sigv4.signing_key(secret, sig)
    previous = seed
    while n > 0:
        line = await asyncio.wait_for(reader.readuntil(b"\r\n"), idle)
        if len(line) > _MAX_CHUNK_HEADER:
            raise chunk_mismatch()
        size_text, _, ext = line[:-2].decode("latin-1").partition(";")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise chunk_mismatch() from None
        data = await asyncio.wait_for(reader.readexactly(size + 2), idle)
        if data[-2:] != b"\r\n" or len(line) + len(data) > n:
            raise chunk_mismatch()
        n -= len(line) + len(data)
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                sig.amz_date,
                sig.scope,
                previous,
                sigv4.EMPTY_SHA256,
                hashlib.sha256(data[:-2]).hexdigest(),
            ]
        )
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, ext.partition("chunk-signature=")[2].strip()):
            raise chunk_mismatch()
        previous = expected
        writer.write(line)
        writer.write(data)
        await writer.drain()
        if size == 0 and n > 0:
            raise chunk_mismatch()
