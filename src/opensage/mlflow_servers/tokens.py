"""Signed, expiring tokens for the MLflow UI: the presigned URL's ``authToken`` and the session cookie.

A token is ``<payload>.<mac>``: the payload (base64url JSON: what it is for, which tracking server,
when it expires, and for an URL token how long the session it opens may last), the mac an
HMAC-SHA256 of it under the platform's key (kept in the metadata store, so tokens survive a restart).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from opensage.store.sql import SqlStore

KEY_META = "mlflow-ui-signing-key"
URL, SESSION = "url", "session"


class TokenError(Exception):
    """Why a token is refused: ``kind`` is ``invalid`` or ``expired``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Grant:
    use: str  # URL or SESSION
    server: str
    expires: float  # epoch seconds
    session_s: int = 0  # for a URL token: how long the session it opens lasts


def signing_key(store: SqlStore) -> bytes:
    return bytes.fromhex(store.set_meta_default(KEY_META, secrets.token_hex(32)))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(key: bytes, grant: Grant) -> str:
    body = {"u": grant.use, "n": grant.server, "e": round(grant.expires, 3), "s": grant.session_s}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload}.{_b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())}"


def subject(token: str) -> str:
    """What ``token`` names (its grant's server or user), to pass to :func:`check`, which then verifies it.

    Raises ValueError for what is not a token."""
    try:
        return str(json.loads(_unb64(token.partition(".")[0]))["n"])
    except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("not a token") from exc


def check(key: bytes, token: str, use: str, server: str, now: float) -> Grant:
    """The grant ``token`` carries, when it is genuine, for ``use`` on ``server`` and not expired."""
    payload, _, mac = token.partition(".")
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not mac or not hmac.compare_digest(mac, expected):
        raise TokenError("invalid", "The sign-in token is not valid.")
    try:
        body = json.loads(_unb64(payload))
        grant = Grant(str(body["u"]), str(body["n"]), float(body["e"]), int(body.get("s", 0)))
    except (ValueError, KeyError, TypeError):
        raise TokenError("invalid", "The sign-in token is not valid.") from None
    if grant.use != use or grant.server != server:
        raise TokenError("invalid", f"The sign-in token is not for tracking server {server}.")
    if now >= grant.expires:
        raise TokenError("expired", "The sign-in token has expired.")
    return grant
