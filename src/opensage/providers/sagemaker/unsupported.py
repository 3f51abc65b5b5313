"""Request members OpenSage cannot apply: refused with a ValidationException, as AWS refuses an unsupported value.

Each provider lists, in a table, the members whose effect a user would miss (a heterogeneous
cluster, an asynchronous endpoint, data capture, ...). A request that sets one of them is refused
with a message naming the member and what to do instead, rather than accepted and ignored.
Members that change nothing on one machine (VPC, volume KMS keys, spot capacity, ...) are accepted
and named in each provider's LIMITATIONS instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from opensage.errors import validation_error


@dataclass(frozen=True, slots=True)
class Unsupported:
    """``path`` (dots; ``[]`` walks every element of a list) is refused when ``applies(value)`` holds."""

    path: str
    why: str
    applies: Callable[[Any], bool] = lambda value: value not in (None, {}, [], "")


def _values(value: Any, parts: list[str]) -> Iterator[Any]:
    if not parts:
        yield value
        return
    head, rest = parts[0], parts[1:]
    if head.endswith("[]"):
        items = value.get(head[:-2]) if isinstance(value, Mapping) else None
        for item in items or []:
            yield from _values(item, rest)
    elif isinstance(value, Mapping) and head in value:
        yield from _values(value[head], rest)


def refuse(request: Mapping[str, Any], table: Iterable[Unsupported]) -> None:
    """Raise ``ValidationException`` for the first member of ``table`` that ``request`` sets."""
    for entry in table:
        for value in _values(request, entry.path.split(".")):
            if entry.applies(value):
                raise validation_error(f"{entry.path.replace('[]', '')}: {entry.why}")


def enabled(key: str) -> Callable[[Any], bool]:
    """A test for a config object whose ``key`` member switches it on."""
    return lambda value: isinstance(value, Mapping) and bool(value.get(key))


def refuse_nul(request: Mapping[str, Any], paths: Iterable[str]) -> None:
    """Raise ``ValidationException`` for a NUL byte in a member at ``paths`` (maps, lists or strings).

    These members become a process's arguments or environment, which cannot hold a NUL byte; the
    model's patterns (``.*``) let one through, and the job would otherwise fail inside the platform.
    """
    for path in paths:
        for value in _values(request, path.split(".")):
            if isinstance(value, Mapping):
                pairs = [(k, v) for k, v in value.items()]
            else:
                pairs = [(None, v) for v in (value if isinstance(value, list) else [value])]
            for key, item in pairs:
                if any(isinstance(s, str) and "\0" in s for s in (key, item)):
                    named = f" {key!r}" if key is not None else ""
                    raise validation_error(
                        f"{path.replace('[]', '')}{named} contains a NUL byte (\\x00), which an argument or "
                        "environment variable of a process cannot hold; remove it."
                    )
