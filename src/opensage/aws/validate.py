"""Input validation from the service model: required members, types, enums, lengths, ranges, patterns.

Messages follow AWS's own form, e.g. ``1 validation error detected: Value 'x!' at
'trainingJobName' failed to satisfy constraint: Member must satisfy regular expression pattern:
...``, so a person sees what to fix and where.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from typing import Any

from botocore.model import ListShape, MapShape, Shape, StructureShape

from opensage.errors import ServiceError

_MAX_REPORTED = 10


@lru_cache(maxsize=4096)
def _pattern(regex: str) -> re.Pattern[str] | None:
    try:
        return re.compile(regex)
    except re.error:  # Java-only syntax (e.g. \p{...}): not checked here
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
