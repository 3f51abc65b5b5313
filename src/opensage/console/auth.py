"""Console sign-in: the console password (a salted scrypt hash in the home), signed session cookies, CSRF.

A session is a cookie ``<payload>.<signature>``: the payload is base64url JSON (who signed in, with
which access key, the CSRF token, the expiry), the signature an HMAC-SHA256 under a random key kept
in ``<home>/console.key``. Anonymous visitors get a session too (no user), so the sign-in form carries
a CSRF token like every other form. A signed-in session also names its record in the store
(:mod:`opensage.console.sessions`), which sign-out, key deletion and a new password end.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PASSWORD_FILE = "console-password"
KEY_FILE = "console.key"
COOKIE = "opensage_console"
SIGNED_IN_TTL_S = 12 * 3600
ANONYMOUS_TTL_S = 2 * 3600
MIN_PASSWORD = 8
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.strip().split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


def set_password(home: Path, password: str) -> None:
    """Store the console password's salted hash in ``home`` (replacing any earlier one)."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"The console password needs at least {MIN_PASSWORD} characters.")
    _write_private(home / PASSWORD_FILE, (hash_password(password) + "\n").encode())


def check_password(home: Path, password: str) -> bool:
    """True when a console password is set and ``password`` is it."""
    try:
        stored = (home / PASSWORD_FILE).read_text()
    except OSError:
        return False
    return verify_password(password, stored)


def session_key(home: Path) -> bytes:
    """The key that signs session cookies, created once per home."""
    path = home / KEY_FILE
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except OSError:
        pass
    key = secrets.token_bytes(32)
    _write_private(path, key)
    return key


@dataclass(frozen=True, slots=True)
class Session:
    """Who is signed in (``user`` empty for a visitor), with which access key, and the CSRF token."""

    user: str
    access_key_id: str
    csrf: str
    expires: float
    sid: str = ""  # the server-side record of a signed-in session

    @property
    def signed_in(self) -> bool:
        return bool(self.user)


class SessionSigner:
    def __init__(self, key: bytes) -> None:
        self.key = key

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.key, payload.encode(), hashlib.sha256).digest())

    def dump(self, session: Session) -> str:
        payload = _b64(
            json.dumps(
                {
                    "u": session.user,
                    "k": session.access_key_id,
                    "c": session.csrf,
                    "e": session.expires,
                    "s": session.sid,
                },
                separators=(",", ":"),
            ).encode()
        )
        return f"{payload}.{self._sign(payload)}"

    def load(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session in ``cookie``, or None when it is missing, forged or expired."""
        if not cookie or "." not in cookie:
            return None
        payload, _, signature = cookie.partition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(
                str(data["u"]), str(data["k"]), str(data["c"]), float(data["e"]), str(data.get("s", ""))
            )
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > (time.time() if now is None else now) else None

    @staticmethod
    def anonymous() -> Session:
        return Session("", "", secrets.token_urlsafe(24), time.time() + ANONYMOUS_TTL_S)

    @staticmethod
    def signed_in(user: str, access_key_id: str, open_session: Callable[[str, str, float], str]) -> Session:
        """A new session (a fresh CSRF token: the visitor's one is not carried over), recorded with
        ``open_session(user, access_key_id, expires)``, which returns the record's id."""
        expires = time.time() + SIGNED_IN_TTL_S
        sid = open_session(user, access_key_id, expires)
        return Session(user, access_key_id, secrets.token_urlsafe(24), expires, sid)


def csrf_ok(session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(session.csrf.encode(), (token or "").encode())
