"""Who signed a request: SigV4 verification against the access keys in the metadata store."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from opensage.aws import sigv4
from opensage.store.entities import AccessKey

KeyLookup = Callable[[str], AccessKey | None]


@dataclass(frozen=True, slots=True)
class Caller:
    access_key_id: str
    principal_arn: str
    user_id: str
    region: str
    service: str
    body: bytes  # the decoded body (differs from the wire body for aws-chunked uploads)


class Authenticator:
    """Verifies signatures; keys are cached for ``ttl`` seconds so a key deleted elsewhere stops working soon."""

    def __init__(self, lookup: KeyLookup, ttl: float = 5.0, clock: Callable[[], dt.datetime] | None = None) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._cache: dict[str, tuple[float, AccessKey | None]] = {}
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def _key(self, access_key_id: str) -> AccessKey | None:
        hit = self._cache.get(access_key_id)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        key = self._lookup(access_key_id)
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[access_key_id] = (now, key)
        return key

    def forget(self, access_key_id: str | None = None) -> None:
        if access_key_id is None:
            self._cache.clear()
        else:
            self._cache.pop(access_key_id, None)

    def authenticate(
        self, method: str, raw_path: str, raw_query: str, headers: Mapping[str, str], body: bytes
    ) -> Caller:
        """Return the caller or raise :class:`sigv4.SigV4Error`."""
        sig = sigv4.parse(headers, raw_query)
        sigv4.check_time(sig, self._clock())
        key = self._key(sig.access_key)
        if key is None or key.status != "Active":
            raise sigv4.SigV4Error("unknown_key", "The security token included in the request is invalid.")
        seed = sigv4.verify(sig, key.secret_access_key, method, raw_path, raw_query, headers, body)
        if headers.get("x-amz-content-sha256") == sigv4.STREAMING_PAYLOAD:
            body = sigv4.decode_aws_chunked(body, key.secret_access_key, sig, seed)
        return Caller(key.access_key_id, key.principal_arn, key.user_id, sig.region, sig.service, body)
