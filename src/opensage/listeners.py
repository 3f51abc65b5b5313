"""What keeps the platform's listeners and its log up under a flood of connections.

uvicorn closes a kept-alive connection after ``timeout_keep_alive`` but gives a new connection (or
one that has begun a request) unlimited time to send its request head. :func:`guarded_http_protocol`
adds that limit, and a cap on connections still waiting for their head: at the cap the oldest one
is closed, so half-sent requests cannot hold the process's file descriptors and whole requests
still get in. :class:`RepeatFilter` lets a log line that repeats (the same logger, level and
message template) through a few times a minute and counts the rest; :func:`rotate_log` keeps
``opensage.log`` to a few bounded files.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT = 10.0
MAX_WAITING = 1024
LOG_MAX_BYTES = 20 * 1024 * 1024
LOG_BACKUPS = 3


def guarded_http_protocol(header_timeout: float = HEADER_TIMEOUT, max_waiting: int = MAX_WAITING) -> type[Any]:
    """An httptools protocol class for ``uvicorn.Config(http=...)``, one per listener (its waiting set is its own)."""
    waiting: dict[GuardedProtocol, None] = {}

    class GuardedProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_head()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._head_timer is None:
                self._await_head()

        def on_headers_complete(self) -> None:
            self._head_done()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_done()
            super().connection_lost(exc)

        def _await_head(self) -> None:
            if len(waiting) >= max_waiting:
                oldest = next(iter(waiting))
                oldest._head_done()
                oldest.transport.abort()
            waiting[self] = None
            self._head_timer = self.loop.call_later(header_timeout, self._head_expired)

        def _head_done(self) -> None:
            waiting.pop(self, None)
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_expired(self) -> None:
            self._head_timer = None
            waiting.pop(self, None)
            if not self.transport.is_closing():
                self.transport.abort()

    return GuardedProtocol


class RepeatFilter(logging.Filter):
    """Pass at most ``burst`` records of one (logger, level, template) per ``window`` seconds.

    The first record after a quiet window says how many were held back. The memory used is one
    entry per distinct template, not per record.
    """

    def __init__(self, burst: int = 5, window: float = 60.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.burst, self.window, self.clock = burst, window, clock
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key -> [window start, passed, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self.window:
            dropped = int(entry[2]) if entry else 0
            self._seen[key] = [now, 1, 0]
            if dropped:
                record.msg = f"{record.msg} [{dropped} similar line(s) suppressed in the last {self.window:g}s]"
            if len(self._seen) > 10_000:  # templates are few; this bounds memory if they are not
                self._seen = {key: self._seen[key]}
            return True
        if entry[1] < self.burst:
            entry[1] += 1
            return True
        entry[2] += 1
        return False


def install_log_guards(path: Path, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS) -> None:
    """Rate-limit every root log handler with :class:`RepeatFilter`; rotate ``path`` when the log goes there.

    ``up --detach`` points the process's standard output and error at ``path``; then the root
    logger's stream handler is replaced by a rotating handler on ``path`` and standard output by
    ``/dev/null``. Standard error stays on the file for what bypasses logging (a fatal error).
    """
    root = logging.getLogger()
    try:
        target = path.stat()
        to_file = {fd for fd in (1, 2) if _same_file(os.fstat(fd), target)}
    except OSError:
        to_file = set()
    if 2 in to_file:
        for handler in list(root.handlers):
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is sys.stderr:
                root.removeHandler(handler)
        rotating = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups)
        rotating.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(rotating)
    if 1 in to_file:
        sys.stdout.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    for handler in root.handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter())


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
