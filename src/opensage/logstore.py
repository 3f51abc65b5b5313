"""Durable CloudWatch-style log groups, streams and events, kept as files under one directory.

Layout under ``root`` (``<home>/logs/cloudwatch``)::

    <group key>/group.json             {"name", "creationTime", "logGroupClass", "tags"}
    <group key>/streams/<key>.json     {"name", "creationTime"}
    <group key>/streams/<key>.jsonl    one event a line: [timestamp_ms, ingestion_ms, "message"]

A key is the percent-encoded name (a hash when that is too long for a file name); the real name is
always read back from the JSON metadata. Event files are append-only. For each stream the committed
length, its statistics and a sparse timestamp index live in memory, built by one scan of the file the
first time the stream is used after a start (a torn last line from a crash is cut off then). Readers
never read past the committed length, so they see whole batches only, and a reader costs what it
returns: tokens are byte offsets into the event file (``f/<offset>`` and ``b/<offset>``), so a tailer
polling with the token it got reads only the new bytes.

Thread-safe within one process (the API's worker threads read while the training engine appends).
Several processes must not write the same root. Writes reach the OS page cache, not the disk, before
returning (no fsync per batch): a machine crash can lose the last events.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import heapq
import json
import logging
import os
import re
import shutil
import threading
import uuid
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from opensage import logfiles
from opensage.errors import AlreadyExists
from opensage.logfiles import (
    INVALID_TOKEN,
    EventPage,
    FilteredEvent,
    FilterPage,
    GroupInfo,
    GroupNotFound,
    InvalidRequest,
    LogEvent,
    StreamInfo,
    StreamNotFound,
)

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000  # GetLogEvents / FilterLogEvents page size (default and maximum)
MAX_RESPONSE_BYTES = 1_048_576  # ... and response size: message bytes + 26 per event, as AWS counts
_CHECKPOINT_BYTES = 64 * 1024  # a sparse index entry per this many event bytes
_LINE_HEAD = re.compile(rb"\[(-?\d+),(-?\d+),")
_TOKEN = re.compile(r"([fb])/(\d{1,20})")


@dataclass(eq=False, slots=True)
class _Stream:
    name: str
    path: Path  # the event file; metadata sits beside it with a .json suffix
    creation_time: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    loaded: bool = False
    deleted: bool = False
    size: int = 0  # committed bytes: always at a line boundary
    first_ts: int | None = None  # smallest event timestamp
    last_ts: int | None = None  # largest event timestamp
    last_ingest: int | None = None
    since_checkpoint: int = 0
    # cp_max[i]: the largest timestamp of every event before byte cp_off[i] (non-decreasing).
    cp_max: list[int] = field(default_factory=list)
    cp_off: list[int] = field(default_factory=list)

    def account(self, ts: int | None, ingest: int | None, nbytes: int) -> None:
        """Add one committed line of ``nbytes`` (``ts`` None for a line that holds no event)."""
        self.size += nbytes
        if ts is not None and ingest is not None:
            self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
            self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
            self.last_ingest = ingest if self.last_ingest is None else max(self.last_ingest, ingest)
        self.since_checkpoint += nbytes
        if self.since_checkpoint >= _CHECKPOINT_BYTES and self.last_ts is not None:
            self.cp_max.append(self.last_ts)
            self.cp_off.append(self.size)
            self.since_checkpoint = 0

    def seek(self, start_time: int | None) -> int:
        """The latest indexed offset before which every event is older than ``start_time``."""
        if start_time is None:
            return 0
        i = bisect_left(self.cp_max, start_time)
        return self.cp_off[i - 1] if i else 0


@dataclass(eq=False, slots=True)
class _Group:
    name: str
    path: Path
    creation_time: int
    log_group_class: str
    tags: dict[str, str]
    streams: dict[str, _Stream] = field(default_factory=dict)


def _last_event_or_creation(info: StreamInfo) -> int:
    return info.creation_time if info.last_event_timestamp is None else info.last_event_timestamp


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LogStore:
    """Log groups, streams and events under ``root``; see the module docstring for the format.

    Raises :class:`GroupNotFound` / :class:`StreamNotFound` for missing resources,
    :class:`~opensage.errors.AlreadyExists` on create, :class:`InvalidRequest` for bad tokens or patterns.
    """

    def __init__(self, root: Path, clock: Callable[[], dt.datetime] = _utc_now) -> None:
        self.root = Path(root)
        self.clock = clock
        self._lock = threading.RLock()  # the catalog; taken before a stream's lock, never after
        self._groups: dict[str, _Group] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        self._load_catalog()

    # --- catalog ----------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock().timestamp() * 1000)

    def _load_catalog(self) -> None:
        for gdir in sorted(self.root.iterdir()):
            meta = gdir / "group.json"
            if not gdir.is_dir() or gdir.name.startswith(".") or not meta.is_file():
                continue
            try:
                g = json.loads(meta.read_text())
                group = _Group(
                    g["name"], gdir, g["creationTime"], g.get("logGroupClass", "STANDARD"), g.get("tags", {})
                )
            except (ValueError, KeyError) as exc:
                log.warning("skipping log group directory %s: unreadable group.json (%s)", gdir, exc)
                continue
            for smeta in sorted((gdir / "streams").glob("*.json")):
                try:
                    s = json.loads(smeta.read_text())
                    group.streams[s["name"]] = _Stream(s["name"], smeta.with_suffix(".jsonl"), s["creationTime"])
                except (ValueError, KeyError) as exc:
                    log.warning("skipping log stream %s: unreadable metadata (%s)", smeta, exc)
            self._groups[group.name] = group

    def _group(self, name: str) -> _Group:
        group = self._groups.get(name)
        if group is None:
            raise GroupNotFound(name)
        return group

    def _stream(self, group: str, stream: str) -> _Stream:
        with self._lock:
            s = self._group(group).streams.get(stream)
        if s is None:
            raise StreamNotFound(f"{group}:{stream}")
        return s

    def create_group(
        self,
        name: str,
        *,
        exist_ok: bool = False,
        tags: dict[str, str] | None = None,
        log_group_class: str = "STANDARD",
    ) -> None:
        """Create log group ``name``; :class:`AlreadyExists` if it exists unless ``exist_ok``."""
        with self._lock:
            if name in self._groups:
                if exist_ok:
                    return
                raise AlreadyExists(name)
            path = self.root / logfiles.file_key(name)
            if path.exists():  # debris of an interrupted create: not in the catalog, so not a group
                shutil.rmtree(path)
            (path / "streams").mkdir(parents=True)
            now = self._now_ms()
            meta = {"name": name, "creationTime": now, "logGroupClass": log_group_class, "tags": tags or {}}
            logfiles.write_json(path / "group.json", meta)
            self._groups[name] = _Group(name, path, now, log_group_class, dict(tags or {}))

    def delete_group(self, name: str) -> None:
        """Delete a group with its streams and events; :class:`GroupNotFound` if there is none."""
        with self._lock:
            group = self._group(name)
            del self._groups[name]
            for s in group.streams.values():
                with s.lock:
                    s.deleted = True
            trash = self.root / f".deleted-{uuid.uuid4().hex}"
            os.replace(group.path, trash)  # gone from the catalog at once, even if the removal is slow
        shutil.rmtree(trash, ignore_errors=True)

    def list_groups(self, prefix: str | None = None) -> list[GroupInfo]:
        """Groups whose name starts with ``prefix``, by name."""
        with self._lock:
            groups = sorted((g for g in self._groups.values() if g.name.startswith(prefix or "")), key=lambda g: g.name)
            streams = {g.name: list(g.streams.values()) for g in groups}
        return [
            GroupInfo(
                g.name,
                g.creation_time,
                sum(self._stored_bytes(s) for s in streams[g.name]),
                g.log_group_class,
                dict(g.tags),
            )
            for g in groups
        ]

    @staticmethod
    def _stored_bytes(s: _Stream) -> int:
        if s.loaded:
            return s.size
        try:
            return s.path.stat().st_size
        except FileNotFoundError:
            return 0

    def create_stream(self, group: str, stream: str, *, exist_ok: bool = False) -> None:
        """Create ``stream`` in ``group``.

        ``exist_ok`` is the platform's "make sure it exists": no error when the stream exists, and a
        missing group is created too. Otherwise :class:`GroupNotFound` or :class:`AlreadyExists`.
        """
        with self._lock:
            if exist_ok:
                self.create_group(group, exist_ok=True)
            g = self._group(group)
            if stream in g.streams:
                if exist_ok:
                    return
                raise AlreadyExists(f"{group}:{stream}")
            path = g.path / "streams" / (logfiles.file_key(stream) + ".jsonl")
            now = self._now_ms()
            path.write_bytes(b"")  # events file first: a stream exists once its metadata does
            logfiles.write_json(path.with_suffix(".json"), {"name": stream, "creationTime": now})
            g.streams[stream] = _Stream(stream, path, now, loaded=True)

    def delete_stream(self, group: str, stream: str) -> None:
        """Delete one stream and its events."""
        with self._lock:
            s = self._stream(group, stream)
            del self._groups[group].streams[stream]
            with s.lock:
                s.deleted = True
                s.path.unlink(missing_ok=True)
                s.path.with_suffix(".json").unlink(missing_ok=True)

    def list_streams(
        self,
        group: str,
        prefix: str | None = None,
        order_by: str = "LogStreamName",
        descending: bool = False,
    ) -> list[StreamInfo]:
        """Streams of ``group`` (whose name starts with ``prefix``), ordered by name or last event time.

        Streams without events sort as if their last event were at their creation time.
        """
        with self._lock:
            streams = [s for s in self._group(group).streams.values() if s.name.startswith(prefix or "")]
        infos = [self._info(s) for s in streams]
        if order_by == "LastEventTime":
            infos.sort(key=lambda i: (_last_event_or_creation(i), i.name), reverse=descending)
        else:
            infos.sort(key=lambda i: i.name, reverse=descending)
        return infos

    def describe_stream(self, group: str, stream: str) -> StreamInfo:
        """One stream's statistics."""
        return self._info(self._stream(group, stream))

    def _info(self, s: _Stream) -> StreamInfo:
        with s.lock:
            self._load(s)
            return StreamInfo(s.name, s.creation_time, s.first_ts, s.last_ts, s.last_ingest, s.size)

    # --- events -----------------------------------------------------------------------------

    def _load(self, s: _Stream) -> None:
        """Scan the event file once (caller holds ``s.lock``): stats, index, torn-tail repair."""
        if s.loaded or s.deleted:
            return
        try:
            with open(s.path, "rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        break
                    m = _LINE_HEAD.match(line)
                    s.account(int(m[1]) if m else None, int(m[2]) if m else None, len(line))
            if s.path.stat().st_size > s.size:
                log.warning("log stream %s: cutting a torn last line (%s)", s.name, s.path)
                os.truncate(s.path, s.size)
        except FileNotFoundError:
            s.path.touch()
        s.loaded = True

    def put_events(self, group: str, stream: str, events: Iterable[tuple[int, str]], *, create: bool = True) -> int:
        """Append ``(timestamp_ms, message)`` events in the given order; returns the stream's new size.

        With ``create`` (the platform's default) a missing group or stream is created; the API passes
        ``create=False`` and gets :class:`GroupNotFound` / :class:`StreamNotFound`.
        """
        ingest = self._now_ms()
        rows = [(int(ts), str(message)) for ts, message in events]
        lines = [logfiles.encode(ts, ingest, message) for ts, message in rows]
        data = b"".join(lines)
        while True:
            if create:
                self.create_stream(group, stream, exist_ok=True)
            s = self._stream(group, stream)
            with s.lock:
                if s.deleted:  # deleted between the lookup and the lock: look again
                    continue
                self._load(s)
                if not rows:
                    return s.size
                try:
                    with open(s.path, "ab") as f:
                        f.write(data)
                except BaseException:
                    os.truncate(s.path, s.size)  # never leave a partial batch for the next append to follow
                    raise
                for (ts, _), line in zip(rows, lines, strict=True):
                    s.account(ts, ingest, len(line))
                return s.size

    def _check_offset(self, s: _Stream, offset: int, size: int) -> None:
        """An offset from a token must lie on a line boundary inside the committed data."""
        if offset > size:
            raise InvalidRequest(INVALID_TOKEN)
        if 0 < offset < size:
            try:
                with open(s.path, "rb") as f:
                    f.seek(offset - 1)
                    boundary = f.read(1) == b"\n"
            except FileNotFoundError as exc:  # deleted meanwhile
                raise StreamNotFound(s.name) from exc
            if not boundary:
                raise InvalidRequest(INVALID_TOKEN)

    def get_events(
        self,
        group: str,
        stream: str,
        *,
        start_time: int | None = None,
        end_time: int | None = None,
        start_from_head: bool = False,
        limit: int | None = None,
        token: str | None = None,
    ) -> EventPage:
        """GetLogEvents: events with ``start_time <= timestamp < end_time``, oldest first.

        Without a token, the first events from the head (``start_from_head``) or the last ones. An
        ``f/`` token reads on forward, a ``b/`` token backward. When nothing new has arrived the
        forward token passed in comes back unchanged (pollers stop on an empty page and retry later).
        Events come in the order they were stored (timestamp order when written in time order).
        """
        s = self._stream(group, stream)
        direction, offset = "", 0
        if token:
            m = _TOKEN.fullmatch(token)
            if m is None:
                raise InvalidRequest(INVALID_TOKEN)
            direction, offset = m[1], int(m[2])
        with s.lock:
            self._load(s)
            size = s.size
            seek = s.seek(start_time)
        if direction:
            self._check_offset(s, offset, size)
        limit = min(limit or MAX_EVENTS, MAX_EVENTS)
        window = logfiles.window(start_time, end_time)
        if direction == "f" or (not direction and start_from_head):
            return self._read_forward(s, offset if direction else seek, size, window, limit)
        return self._read_backward(s, offset if direction else size, window, limit)

    @staticmethod
    def _read_forward(s: _Stream, begin: int, size: int, window: Callable[[int], bool], limit: int) -> EventPage:
        events: list[LogEvent] = []
        first, scanned, used = begin, begin, 0
        for offset, end, line in logfiles.lines_forward(s.path, begin, size):
            rec = logfiles.decode(line)
            if rec is not None and window(rec[0]):
                cost = logfiles.cost(rec[2])
                if len(events) >= limit or (events and used + cost > MAX_RESPONSE_BYTES):
                    break
                if not events:
                    first = offset
                events.append(LogEvent(rec[0], rec[2], rec[1]))
                used += cost
            scanned = end
        return EventPage(events, f"f/{scanned}", f"b/{first}")

    @staticmethod
    def _read_backward(s: _Stream, stop: int, window: Callable[[int], bool], limit: int) -> EventPage:
        events: list[LogEvent] = []
        scanned, last_end, used = stop, stop, 0
        for offset, end, line in logfiles.lines_backward(s.path, stop):
            rec = logfiles.decode(line)
            if rec is not None and window(rec[0]):
                cost = logfiles.cost(rec[2])
                if len(events) >= limit or (events and used + cost > MAX_RESPONSE_BYTES):
                    break
                if not events:
                    last_end = end
                events.append(LogEvent(rec[0], rec[2], rec[1]))
                used += cost
            scanned = offset
        events.reverse()
        return EventPage(events, f"f/{last_end}", f"b/{scanned}")

    def filter_events(
        self,
        group: str,
        *,
        stream_names: list[str] | None = None,
        prefix: str | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        pattern: str | None = None,
        limit: int | None = None,
        token: str | None = None,
    ) -> FilterPage:
        """FilterLogEvents: matching events of the chosen streams (all, ``stream_names`` or ``prefix``),
        interleaved by timestamp (ties: stream name, then stored order). ``next_token`` is set only when
        more matching events remain; names of streams that do not exist are ignored.
        """
        match = logfiles.compile_filter_pattern(pattern)
        with self._lock:
            chosen = self._group(group).streams
            if stream_names is not None:
                streams = [chosen[n] for n in sorted(set(stream_names)) if n in chosen]
            else:
                streams = sorted((s for s in chosen.values() if s.name.startswith(prefix or "")), key=lambda s: s.name)
        query = [group, sorted(stream_names) if stream_names is not None else prefix, start_time, end_time, pattern]
        fingerprint = hashlib.sha256(json.dumps(query).encode()).hexdigest()[:16]
        positions = logfiles.decode_filter_token(token, fingerprint) if token else {}
        window = logfiles.window(start_time, end_time)
        sizes, starts = [], []
        for s in streams:
            with s.lock:
                self._load(s)
                sizes.append(s.size)
                starts.append(positions.get(s.name, s.seek(start_time)))
            if s.name in positions:
                self._check_offset(s, starts[-1], sizes[-1])
        merged = heapq.merge(
            *(logfiles.matching(s, i, starts[i], sizes[i], window, match) for i, s in enumerate(streams))
        )
        limit = min(limit or MAX_EVENTS, MAX_EVENTS)
        events: list[FilteredEvent] = []
        used, more = 0, False
        consumed = dict(enumerate(starts))
        for ts, i, offset, end, ingest, message in merged:
            cost = logfiles.cost(message)
            if len(events) >= limit or (events and used + cost > MAX_RESPONSE_BYTES):
                more = True
                break
            s = streams[i]
            events.append(
                FilteredEvent(s.name, ts, message, ingest, f"{zlib.crc32(s.name.encode()):010d}{offset:020d}")
            )
            consumed[i] = end
            used += cost
        searched = [(s.name, not more or consumed[i] >= sizes[i]) for i, s in enumerate(streams)]
        next_token = None
        if more:
            state = {
                "q": fingerprint,
                "p": {
                    streams[i].name: pos
                    for i, pos in consumed.items()
                    if pos != starts[i] or streams[i].name in positions
                },
            }
            next_token = base64.urlsafe_b64encode(zlib.compress(json.dumps(state).encode())).decode()
        return FilterPage(events, searched, next_token)
