"""The log store's records: its value types and errors, the event files (one JSON array a line, read
forward and backward by byte offset), CloudWatch Logs filter patterns and filter tokens.

An event line is ``[timestamp_ms, ingestion_ms, "message"]``; readers get ``(offset, end, line)`` so
that tokens can be byte offsets. Used by :mod:`opensage.logstore`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from opensage.errors import NotFound, OpenSageError

MAX_KEY = 180  # the longest file-name key before names are hashed

EVENT_OVERHEAD = 26
_CHUNK = 64 * 1024
_TERM = re.compile(r'([?-]?)(?:"((?:[^"\\]|\\.)*)"|(\S+))')
INVALID_TOKEN = "The specified nextToken is invalid."


class GroupNotFound(NotFound):
    """The log group does not exist."""


class StreamNotFound(NotFound):
    """The log stream does not exist (its group does)."""


@dataclass(frozen=True, slots=True)
class GroupInfo:
    name: str
    creation_time: int
    stored_bytes: int
    log_group_class: str
    tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class StreamInfo:
    name: str
    creation_time: int
    first_event_timestamp: int | None
    last_event_timestamp: int | None
    last_ingestion_time: int | None
    stored_bytes: int


@dataclass(frozen=True, slots=True)
class LogEvent:
    timestamp: int
    message: str
    ingestion_time: int


@dataclass(frozen=True, slots=True)
class EventPage:
    """One GetLogEvents answer: events oldest first and the two tokens to read on from."""

    events: list[LogEvent]
    next_forward_token: str
    next_backward_token: str


@dataclass(frozen=True, slots=True)
class FilteredEvent:
    stream: str
    timestamp: int
    message: str
    ingestion_time: int
    event_id: str


@dataclass(frozen=True, slots=True)
class FilterPage:
    """One FilterLogEvents answer; ``searched`` is (stream, searched completely) per stream."""

    events: list[FilteredEvent]
    searched: list[tuple[str, bool]]
    next_token: str | None


class InvalidRequest(OpenSageError):
    """A token or filter pattern the store cannot use; the message says why."""


def encode(ts: int, ingest: int, message: str) -> bytes:
    text = json.dumps([ts, ingest, message], ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass") + b"\n"


def decode(line: bytes) -> tuple[int, int, str] | None:
    try:
        ts, ingest, message = json.loads(line.decode("utf-8", "surrogatepass"))
    except (ValueError, TypeError):
        return None
    return int(ts), int(ingest), str(message)


def cost(message: str) -> int:
    return len(message.encode("utf-8", "surrogatepass")) + EVENT_OVERHEAD


def lines_forward(path: Path, start: int, stop: int) -> Iterator[tuple[int, int, bytes]]:
    """(offset, end, line) for every whole line in [start, stop); the file is open only per chunk."""
    pos = start
    while pos < stop:
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read(min(_CHUNK, stop - pos))
                while data and data.find(b"\n") < 0 and pos + len(data) < stop:  # a line longer than a chunk
                    data += f.read(min(len(data), stop - pos - len(data)))
        except FileNotFoundError:  # deleted while read
            return
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            return
        i = 0
        while i < cut:
            j = data.index(b"\n", i)
            yield pos + i, pos + j + 1, data[i:j]
            i = j + 1
        pos += cut


def lines_backward(path: Path, stop: int) -> Iterator[tuple[int, int, bytes]]:
    """(offset, end, line) for every whole line before ``stop``, newest first."""
    pos, chunk = stop, _CHUNK
    while pos > 0:
        begin = max(0, pos - chunk)
        try:
            with open(path, "rb") as f:
                f.seek(begin)
                data = f.read(pos - begin)
        except FileNotFoundError:
            return
        cut = 0
        if begin > 0:  # the first piece may be the tail of an earlier line
            first = data.find(b"\n")
            if first < 0 or first == len(data) - 1:
                chunk *= 2
                continue
            cut = first + 1
        lines = data[cut:].split(b"\n")[:-1]
        end = pos
        for line in reversed(lines):
            offset = end - len(line) - 1
            yield offset, end, line
            end = offset
        pos, chunk = begin + cut, _CHUNK


def window(start_time: int | None, end_time: int | None) -> Callable[[int], bool]:
    lo = start_time if start_time is not None else -(2**63)
    hi = end_time if end_time is not None else 2**63
    return lambda ts: lo <= ts < hi


def compile_filter_pattern(pattern: str | None) -> Callable[[str], bool]:
    """A predicate for a CloudWatch Logs filter pattern.

    Supported: empty (every event); space-separated terms and ``"quoted phrases"``, all of which must
    occur (case-sensitive substrings); ``?term`` (at least one of the ``?`` terms must occur); ``-term``
    (must not occur); ``%regex%`` (Python ``re`` search). Raises :class:`InvalidRequest` for JSON
    (``{ $.x = 1 }``) and space-delimited (``[ip, user, ...]``) patterns, which are not supported.
    """
    text = (pattern or "").strip()
    if not text:
        return lambda message: True
    if text[0] in "{[":
        raise InvalidRequest(
            'Invalid filter pattern: OpenSage supports terms, "quoted phrases", ?term, -term and %regex% '
            "patterns; JSON ({ ... }) and space-delimited ([ ... ]) patterns are not supported."
        )
    if len(text) >= 2 and text[0] == text[-1] == "%":
        try:
            regex = re.compile(text[1:-1])
        except re.error as exc:
            raise InvalidRequest(f"Invalid filter pattern: bad regular expression: {exc}.") from exc
        return lambda message: regex.search(message) is not None
    required: list[str] = []
    optional: list[str] = []
    excluded: list[str] = []
    for m in _TERM.finditer(text):
        sign, phrase, word = m.group(1), m.group(2), m.group(3) or ""
        if '"' in word:
            raise InvalidRequest("Invalid filter pattern: unbalanced double quote.")
        term = re.sub(r"\\(.)", r"\1", phrase) if phrase is not None else word
        {"": required, "?": optional, "-": excluded}[sign].append(term)

    def match(message: str) -> bool:
        return (
            all(t in message for t in required)
            and (not optional or any(t in message for t in optional))
            and not any(t in message for t in excluded)
        )

    return match


def decode_filter_token(token: str, fingerprint: str) -> dict[str, int]:
    try:
        state = json.loads(zlib.decompress(base64.urlsafe_b64decode(token.encode())))
        positions = state["p"]
        ok = state["q"] == fingerprint and all(isinstance(v, int) and v >= 0 for v in positions.values())
    except (binascii.Error, zlib.error, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidRequest(INVALID_TOKEN) from exc
    if not ok:
        raise InvalidRequest(INVALID_TOKEN)
    return {str(k): v for k, v in positions.items()}


def file_key(name: str) -> str:
    """A file-name-safe key for ``name``: no '/', '.', '..', or '~' prefixes; hashed when too long."""
    key = quote(name, safe="-_").replace(".", "%2E").replace("~", "%7E")
    if len(key) > MAX_KEY:
        key = "~" + hashlib.sha256(name.encode()).hexdigest()
    return key


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def matching(
    s: Any, index: int, begin: int, size: int, window: Callable[[int], bool], match: Callable[[str], bool]
) -> Iterator[tuple[int, int, int, int, int, str]]:
    """(timestamp, stream index, offset, end, ingestion time, message) of one stream's matching events."""
    for offset, end, line in lines_forward(s.path, begin, size):
        rec = decode(line)
        if rec is not None and window(rec[0]) and match(rec[2]):
            yield rec[0], index, offset, end, rec[1], rec[2]
