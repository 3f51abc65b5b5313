"""AWS Signature Version 4 verification: the header form and the presigned query form.

The canonical request is rebuilt from the bytes that arrived (raw path and query, the signed
headers, the payload hash) exactly as AWS defines it, and the signature is compared in constant
time. The ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` (aws-chunked) body form is supported;
:func:`decode_aws_chunked` checks every chunk's signature. ``UNSIGNED-PAYLOAD`` is S3's alone: on the
API port's services AWS signs the body's own hash whatever that header says, and so does this check
(a request signed with ``UNSIGNED-PAYLOAD`` does not verify); a presigned URL's empty body may be.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, unquote

from botocore.utils import normalize_url_path

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
MAX_SKEW = dt.timedelta(minutes=15)
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class SigV4Error(Exception):
    """Why a request's signature is not accepted.

    ``kind`` is one of: ``missing`` (no signature at all), ``incomplete`` (malformed
    authorization), ``unknown_key``, ``mismatch``, ``expired``, ``future``, ``payload``.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class Signature:
    """The parts of a signed request, as sent."""

    access_key: str
    amz_date: str
    scope_date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    presigned: bool
    expires: int = 0

    @property
    def scope(self) -> str:
        return f"{self.scope_date}/{self.region}/{self.service}/aws4_request"


def _split_query(raw_query: str) -> list[tuple[str, str]]:
    pairs = []
    for part in raw_query.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((key, value))
    return pairs


def _parse_credential(credential: str) -> tuple[str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise SigV4Error(
            "incomplete",
            f"Credential should be scoped to a valid region and service, like "
            f"'<key>/<yyyymmdd>/<region>/<service>/aws4_request'; got '{credential}'.",
        )
    return parts[0], parts[1], parts[2], parts[3]


def parse(headers: Mapping[str, str], raw_query: str) -> Signature:
    """Read the signature from the Authorization header or the presigned query parameters."""
    auth = headers.get("authorization", "")
    if auth:
        return _parse_header(auth, headers)
    query = {unquote(k): unquote(v) for k, v in _split_query(raw_query)}
    if "X-Amz-Signature" in query or "X-Amz-Credential" in query:
        return _parse_presigned(query)
    raise SigV4Error("missing", "Missing Authentication Token")


def _parse_header(auth: str, headers: Mapping[str, str]) -> Signature:
    algorithm, _, rest = auth.partition(" ")
    if algorithm != ALGORITHM:
        raise SigV4Error("incomplete", f"Unsupported authorization type '{algorithm}'; sign requests with {ALGORITHM}.")
    fields = {}
    for item in rest.split(","):
        key, _, value = item.strip().partition("=")
        fields[key] = value
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not fields.get(k)]
    if missing:
        raise SigV4Error("incomplete", f"Authorization header requires {', '.join(missing)}.")
    amz_date = headers.get("x-amz-date", "")
    if not amz_date:
        raise SigV4Error("incomplete", "Authorization header requires an 'X-Amz-Date' header.")
    key, scope_date, region, service = _parse_credential(fields["Credential"])
    return Signature(
        key,
        amz_date,
        scope_date,
        region,
        service,
        tuple(fields["SignedHeaders"].split(";")),
        fields["Signature"],
        presigned=False,
    )


def _parse_presigned(query: Mapping[str, str]) -> Signature:
    needed = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature")
    missing = [k for k in needed if not query.get(k)]
    if missing:
        raise SigV4Error("incomplete", f"A presigned request requires the query parameters {', '.join(missing)}.")
    if query["X-Amz-Algorithm"] != ALGORITHM:
        raise SigV4Error("incomplete", f"Unsupported X-Amz-Algorithm; use {ALGORITHM}.")
    try:
        expires = int(query.get("X-Amz-Expires", "900"))
    except ValueError as exc:
        raise SigV4Error("incomplete", "X-Amz-Expires must be a number of seconds.") from exc
    key, scope_date, region, service = _parse_credential(query["X-Amz-Credential"])
    return Signature(
        key,
        query["X-Amz-Date"],
        scope_date,
        region,
        service,
        tuple(query["X-Amz-SignedHeaders"].split(";")),
        query["X-Amz-Signature"],
        presigned=True,
        expires=expires,
    )


@lru_cache(maxsize=64)
def _parse_amz_date(value: str) -> dt.datetime:
    try:
        if len(value) != 16 or value[8] != "T" or value[15] != "Z":
            raise ValueError(value)
        return dt.datetime(int(value[0:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]), int(value[11:13]),
                           int(value[13:15]), tzinfo=dt.UTC)
    except ValueError as exc:
        raise SigV4Error("incomplete", f"X-Amz-Date must be in the form yyyyMMdd'T'HHmmss'Z'; got '{value}'.") from exc


def check_time(sig: Signature, now: dt.datetime) -> None:
    """Reject a stale or future-dated request the way AWS words it."""
    when = _parse_amz_date(sig.amz_date)
    if sig.scope_date != sig.amz_date[:8]:
        raise SigV4Error("incomplete", f"Credential date {sig.scope_date} does not match X-Amz-Date {sig.amz_date}.")
    if not sig.presigned and -MAX_SKEW <= now - when <= MAX_SKEW:
        return  # the usual case, decided without formatting any message
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    if sig.presigned:
        if not 0 < sig.expires <= MAX_PRESIGN_EXPIRES:
            raise SigV4Error("incomplete", f"X-Amz-Expires must be between 1 and {MAX_PRESIGN_EXPIRES} seconds.")
        if now > when + dt.timedelta(seconds=sig.expires):
            raise SigV4Error(
                "expired", f"Request has expired: signed at {sig.amz_date}, valid {sig.expires} s, now {stamp}."
            )
        if when - now > MAX_SKEW:
            raise SigV4Error("future", f"Signature not yet current: {sig.amz_date} is still later than {stamp}.")
        return
    if now - when > MAX_SKEW:
        limit = (now - MAX_SKEW).strftime("%Y%m%dT%H%M%SZ")
        raise SigV4Error(
            "expired", f"Signature expired: {sig.amz_date} is now earlier than {limit} ({stamp} - 15 min.)"
        )
    if when - now > MAX_SKEW:
        limit = (now + MAX_SKEW).strftime("%Y%m%dT%H%M%SZ")
        raise SigV4Error(
            "future", f"Signature not yet current: {sig.amz_date} is still later than {limit} ({stamp} + 15 min.)"
        )


def canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    sig: Signature,
    payload_hash: str,
    *,
    double_encode: bool = True,
) -> str:
    uri = _canonical_uri(raw_path, double_encode)
    if raw_query:
        pairs = [(k, v) for k, v in _split_query(raw_query) if not (sig.presigned and k == "X-Amz-Signature")]
        query = "&".join(f"{k}={v}" for k, v in sorted(pairs))
    else:
        query = ""
    lines = []
    for name in sig.signed_headers:
        value = headers.get(name)
        if value is None:
            raise SigV4Error("mismatch", f"Signed header '{name}' is missing from the request.")
        lines.append(f"{name}:{' '.join(value.split())}")
    return "\n".join([method.upper(), uri, query, "\n".join(lines) + "\n", ";".join(sig.signed_headers), payload_hash])


@lru_cache(maxsize=1024)
def _canonical_uri(raw_path: str, double_encode: bool) -> str:
    """Paths repeat (an endpoint's invocations URL above all): normalize and encode each once."""
    path = normalize_url_path(raw_path or "/")
    return quote(path, safe="/~") if double_encode else path


def signing_key(secret: str, sig: Signature) -> bytes:
    return _derive_key(secret, sig.scope_date, sig.region, sig.service)


@lru_cache(maxsize=256)
def _derive_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The signing key changes once a day per scope: derive it once."""
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def payload_hash(headers: Mapping[str, str], body: bytes, sig: Signature) -> str:
    declared = headers.get("x-amz-content-sha256")
    if declared == STREAMING_PAYLOAD:
        return declared
    actual = hashlib.sha256(body).hexdigest()
    if declared and declared not in (actual, UNSIGNED_PAYLOAD):
        raise SigV4Error("payload", "The provided 'x-amz-content-sha256' header does not match what was computed.")
    return actual


def verify(
    sig: Signature,
    secret: str,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
) -> str:
    """Check ``sig`` against the request; returns the seed signature (for aws-chunked bodies)."""
    if "host" not in sig.signed_headers:
        raise SigV4Error("incomplete", "The 'host' header must be signed.")
    body_hash = payload_hash(headers, body, sig)
    key = signing_key(secret, sig)
    candidates = [body_hash]
    if sig.presigned and body_hash == EMPTY_SHA256:
        candidates.append(UNSIGNED_PAYLOAD)
    for candidate in candidates:
        creq = canonical_request(method, raw_path, raw_query, headers, sig, candidate)
        string_to_sign = "\n".join([ALGORITHM, sig.amz_date, sig.scope, hashlib.sha256(creq.encode()).hexdigest()])
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, sig.signature):
            return expected
    raise SigV4Error(
        "mismatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
    )


def decode_aws_chunked(body: bytes, secret: str, sig: Signature, seed_signature: str) -> bytes:
    """Decode an ``aws-chunked`` body, verifying each chunk's signature chain."""
    key = signing_key(secret, sig)
    previous = seed_signature
    out = bytearray()
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            raise SigV4Error("incomplete", "Malformed aws-chunked body: missing chunk header.")
        header = body[pos:eol].decode("ascii", "replace")
        size_text, _, ext = header.partition(";")
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise SigV4Error("incomplete", f"Malformed aws-chunked body: bad chunk size '{size_text}'.") from exc
        chunk_sig = ext.partition("chunk-signature=")[2]
        data = body[eol + 2 : eol + 2 + size]
        if len(data) != size:
            raise SigV4Error("incomplete", "Malformed aws-chunked body: truncated chunk.")
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                sig.amz_date,
                sig.scope,
                previous,
                EMPTY_SHA256,
                hashlib.sha256(data).hexdigest(),
            ]
        )
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, chunk_sig):
            raise SigV4Error("mismatch", "A chunk signature of the aws-chunked body does not match.")
        previous = expected
        out += data
        pos = eol + 2 + size + 2
        if size == 0:
            return bytes(out)
