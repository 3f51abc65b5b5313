"""Input validation from the service model: required members, types, enums, lengths, ranges, patterns.

Messages follow AWS's own form, e.g. ``1 validation error detected: Value 'x!' at
'trainingJobName' failed to satisfy constraint: Member must satisfy regular expression pattern:
...``, so a person sees what to fix and where.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import unicodedata
from functools import lru_cache
from typing import Any

from botocore.model import ListShape, MapShape, Shape, StructureShape

from opensage.errors import ServiceError

_MAX_REPORTED = 10


# Java's POSIX classes (ASCII only, as Java has them by default); Unicode categories are built below.
_POSIX = {"ASCII": "\\x00-\\x7f", "Alnum": "a-zA-Z0-9", "Print": "\\x20-\\x7e", "Alpha": "a-zA-Z", "Digit": "0-9"}


@lru_cache(maxsize=1)
def _categories() -> dict[str, str]:
    """Character-class contents per major Unicode category (``L``, ``N``, ...), as ``re`` ranges."""
    runs: dict[str, list[list[int]]] = {}
    for code in range(sys.maxunicode + 1):
        ranges = runs.setdefault(unicodedata.category(chr(code))[0], [])
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])

    def esc(code: int) -> str:
        return f"\\U{code:08x}"

    return {cat: "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges) for cat, ranges in runs.items()}


def _class(name: str) -> str | None:
    if name in _POSIX:
        return _POSIX[name]
    return _categories().get(name) if len(name) == 1 else None


def java_to_python(regex: str) -> str:
    """A Java pattern of the service models in Python's syntax: ``\\p{L}``-style classes spelled out as
    ranges (inside a bracket or as one), ``\\z`` as ``\\Z``, a repeated ``$`` once, a ``-`` after ``\\w`` in a
    bracket as a literal. An unknown ``\\p{...}`` stays as is (and fails)."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(regex):
        ch = regex[i]
        if ch == "\\" and i + 1 < len(regex):
            nxt = regex[i + 1]
            end = regex.find("}", i) if nxt == "p" and regex[i + 2 : i + 3] == "{" else -1
            content = _class(regex[i + 3 : end]) if end > 0 else None
            if content is not None:
                out.append(content if in_class else f"[{content}]")
                i = end + 1
                continue
            out.append("\\Z" if nxt == "z" else regex[i : i + 2])
            i += 2
            if in_class and nxt in "wdsWDS" and regex[i : i + 1] == "-":  # Java reads [\w-_] as \w, '-', '_'
                out.append("\\-")
                i += 1
            continue
        quantified = re.match(r"\$\{\d+(,\d*)?\}", regex[i:]) if ch == "$" and not in_class else None
        if quantified:  # Java repeats the end anchor ("(...)${1,128}"); once is the same
            out.append("$")
            i += quantified.end()
            continue
        if ch == "[" and not in_class:
            in_class = True
        elif ch == "]" and in_class and out and out[-1] != "[":
            in_class = False
        out.append(ch)
        i += 1
    return "".join(out)


@lru_cache(maxsize=4096)
def _pattern(regex: str) -> re.Pattern[str] | None:
    try:
        return re.compile(java_to_python(regex) if "\\" in regex else regex)
    except re.error:  # Java-only syntax Python has no spelling for: not checked here
        return None


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _show(value: Any) -> str:
    if value is None:
        return "null"
    text = value if isinstance(value, str) else repr(value)
    if len(text) > 100:
        text = text[:100] + "..."
    return f"'{text}'"


class _Validator:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, value: Any, path: str, constraint: str) -> None:
        self.errors.append(f"Value {_show(value)} at '{path}' failed to satisfy constraint: {constraint}")

    def check(self, shape: Shape, value: Any, path: str) -> None:
        kind = shape.type_name
        method = getattr(self, f"_{kind}", None)
        if method is not None:
            method(shape, value, path)

    def _structure(self, shape: StructureShape, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            self.fail(value, path or "body", "Member must be a structure (JSON object)")
            return
        for name in shape.required_members:
            if value.get(name) is None:
                self.fail(None, self._join(path, name), "Member must not be null")
        for name, member_value in value.items():
            member = shape.members.get(name)
            if member is None:
                # AWS ignores unknown members of JSON bodies; so do we.
                continue
            if member_value is None:
                continue
            self.check(member, member_value, self._join(path, name))

    @staticmethod
    def _join(path: str, name: str) -> str:
        return f"{path}.{_camel(name)}" if path else _camel(name)

    def _list(self, shape: ListShape, value: Any, path: str) -> None:
        if not isinstance(value, list):
            self.fail(value, path, "Member must be a list")
            return
        self._length(shape, len(value), value, path, "length")
        for i, item in enumerate(value):
            self.check(shape.member, item, f"{path}.{i + 1}.member")

    def _map(self, shape: MapShape, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            self.fail(value, path, "Member must be a map (JSON object)")
            return
        self._length(shape, len(value), value, path, "length")
        for k, v in value.items():
            self.check(shape.key, k, f"{path}.key")
            self.check(shape.value, v, f"{path}.{k}.value")

    def _string(self, shape: Shape, value: Any, path: str) -> None:
        if not isinstance(value, str):
            self.fail(value, path, "Member must be a string")
            return
        self._length(shape, len(value), value, path, "length")
        enum = shape.enum
        if enum and value not in enum:
            self.fail(value, path, f"Member must satisfy enum value set: [{', '.join(enum)}]")
        regex = shape.metadata.get("pattern")
        if regex:
            compiled = _pattern(regex)
            if compiled is not None and compiled.fullmatch(value) is None:
                self.fail(value, path, f"Member must satisfy regular expression pattern: {regex}")

    def _integer(self, shape: Shape, value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(value, path, "Member must be an integer")
            return
        self._range(shape, value, path)

    _long = _integer

    def _float(self, shape: Shape, value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(value, path, "Member must be a number")
            return
        self._range(shape, value, path)

    _double = _float

    def _boolean(self, shape: Shape, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            self.fail(value, path, "Member must be a boolean")

    def _timestamp(self, shape: Shape, value: Any, path: str) -> None:
        if not isinstance(value, dt.datetime):
            self.fail(value, path, "Member must be a timestamp")

    def _blob(self, shape: Shape, value: Any, path: str) -> None:
        if not isinstance(value, bytes | bytearray | memoryview):
            self.fail(value, path, "Member must be binary data")
            return
        self._length(shape, len(value), None, path, "length")

    def _length(self, shape: Shape, n: int, value: Any, path: str, what: str) -> None:
        lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
        if lo is not None and n < lo:
            self.fail(value, path, f"Member must have {what} greater than or equal to {lo}")
        if hi is not None and n > hi:
            self.fail(value, path, f"Member must have {what} less than or equal to {hi}")

    def _range(self, shape: Shape, value: float, path: str) -> None:
        lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
        if lo is not None and value < lo:
            self.fail(value, path, f"Member must have value greater than or equal to {lo}")
        if hi is not None and value > hi:
            self.fail(value, path, f"Member must have value less than or equal to {hi}")


def validate(shape: StructureShape | None, params: dict[str, Any]) -> None:
    """Raise ``ValidationException`` listing every violation (up to ten) of ``params`` against ``shape``."""
    if shape is None:
        return
    v = _Validator()
    v.check(shape, params, "")
    if v.errors:
        n = len(v.errors)
        shown = "; ".join(v.errors[:_MAX_REPORTED])
        noun = "error" if n == 1 else "errors"
        raise ServiceError("ValidationException", f"{n} validation {noun} detected: {shown}")
