"""Server-side console sessions and sign-in throttling.

A signed cookie alone cannot be taken back, so every signed-in session also has a record in the
store (kind ``console-session``, named by a random id the cookie carries). A session is valid only
while that record exists, its access key still exists and is Active, and, for a password session,
the console password is the one it signed in with. So a session ends on sign-out (the record is
deleted: a copied cookie is worthless), when its access key is deleted or deactivated (rotation
is a new key and the old one deleted), and when the console password changes.

Failed sign-ins are throttled per client address and per access key id: after three failures in a
row each further one makes the next attempt wait twice as long as the last (1 s, 2 s, 4 s... up to
5 minutes); a success clears the count.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from opensage.errors import NotFound
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

KIND = "console-session"
PASSWORD_SESSION = "console"  # the user of a session signed in with the console password
FREE_FAILURES = 3  # typos: no delay yet
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 300.0


def password_fingerprint(home: Path, password_file: str) -> str:
    """What identifies the current console password (its salted hash changes with every set)."""
    try:
        return hashlib.sha256((home / password_file).read_bytes()).hexdigest()[:32]
    except OSError:
        return ""


class SessionRegistry:
    """The live signed-in sessions, in the platform's store (they survive a restart, not a sign-out)."""

    def __init__(self, store: SqlStore, home: Path, password_file: str) -> None:
        self.store = store
        self.home = home
        self.password_file = password_file

    def open(self, user: str, access_key_id: str, expires: float) -> str:
        """Record a new session; returns its id (the cookie carries it)."""
        self._forget_expired()
        now = dt.datetime.now(dt.UTC)
        data = {
            "User": user,
            "AccessKeyId": access_key_id,
            "Password": password_fingerprint(self.home, self.password_file) if user == PASSWORD_SESSION else "",
            "Expires": expires,
        }
        sid = secrets.token_urlsafe(24)  # 192 random bits: never one that exists
        self.store.create_resource(Resource(KIND, sid, f"{KIND}/{sid}", "Active", now, now, data))
        return sid

    def valid(self, sid: str, user: str, access_key_id: str) -> bool:
        """Whether the session ``sid`` still stands for ``user`` with ``access_key_id``."""
        if not sid:
            return False
        row = self.store.get_resource(KIND, sid)
        if row is None or row.data.get("User") != user or row.data.get("AccessKeyId") != access_key_id:
            return False
        if float(row.data.get("Expires", 0)) <= time.time():
            return False
        if access_key_id:
            key = self.store.get_access_key(access_key_id)
            if key is None or key.status != "Active":
                return False
        if user == PASSWORD_SESSION:
            current = password_fingerprint(self.home, self.password_file)
            if not current or current != row.data.get("Password"):
                return False
        return True

    def close(self, sid: str) -> None:
        """End the session ``sid`` (sign-out)."""
        if sid:
            with contextlib.suppress(NotFound):
                self.store.delete_resource(KIND, sid)

    def _forget_expired(self) -> None:
        now = time.time()
        for row in self.store.list_resources(KIND):
            if float(row.data.get("Expires", 0)) <= now:
                self.close(row.name)


@dataclass(slots=True)
class _Failures:
    count: int = 0
    wait_until: float = 0.0


class SignInThrottle:
    """Growing delays after failed sign-ins, per client and per access key id (in memory)."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._failures: dict[str, _Failures] = {}

    @staticmethod
    def _keys(client: str, access_key_id: str) -> list[str]:
        return [f"client:{client}", *([f"key:{access_key_id}"] if access_key_id else [])]

    def wait_s(self, client: str, access_key_id: str) -> float:
        """How long the caller must wait before its next attempt (0: it may try now)."""
        now = self._clock()
        with self._lock:
            return max(
                [f.wait_until - now for k in self._keys(client, access_key_id) if (f := self._failures.get(k))] or [0.0]
            )

    def failed(self, client: str, access_key_id: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) > 10_000:  # a flood of addresses: drop what has cooled down
                self._failures = {k: f for k, f in self._failures.items() if f.wait_until > now}
            for key in self._keys(client, access_key_id):
                f = self._failures.setdefault(key, _Failures())
                f.count += 1
                if f.count > FREE_FAILURES:
                    f.wait_until = now + min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** min(f.count - FREE_FAILURES - 1, 20))

    def succeeded(self, client: str, access_key_id: str) -> None:
        with self._lock:
            for key in self._keys(client, access_key_id):
                self._failures.pop(key, None)
