"""EventBridge event patterns: checking a pattern and matching events against it.

A pattern is a JSON object whose leaves are arrays of match values; an event matches when every
field the pattern names matches one of the values given for it (a field that is an array in the
event matches when one of its elements does). A match value is a literal (string, number, null,
boolean; numbers compare by value) or a filter object:

* ``{"prefix": "s"}``, ``{"suffix": "s"}`` (either may hold ``{"equals-ignore-case": "s"}``),
  ``{"equals-ignore-case": "s"}``, ``{"wildcard": "a*b"}``;
* ``{"anything-but": v | [v, ...] | {"prefix": s} | {"suffix": s} | {"equals-ignore-case": s | [s]}}``;
* ``{"numeric": [">", 0, "<=", 5]}`` (one or two comparisons), ``{"exists": true|false}``,
  ``{"cidr": "10.0.0.0/24"}``;
* ``"$or": [pattern, ...]`` beside the fields of an object: one of the alternatives must match too.

:func:`check` raises :class:`InvalidPattern` with EventBridge's kind of message for what AWS refuses.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Any

_MISSING = object()
_NUMERIC_OPS = frozenset({"<", "<=", "=", ">", ">="})
_FILTERS = frozenset(
    {"prefix", "suffix", "equals-ignore-case", "wildcard", "anything-but", "numeric", "exists", "cidr"}
)


class InvalidPattern(ValueError):
    """The pattern is not one EventBridge accepts; the message says why."""


def parse(text: str) -> dict[str, Any]:
    """The pattern in ``text`` (a JSON object), checked. Raises :class:`InvalidPattern`."""
    try:
        pattern = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidPattern(
            f"Event pattern is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}."
        ) from exc
    check(pattern)
    return pattern


def check(pattern: Any, path: str = "") -> None:
    """Raise :class:`InvalidPattern` unless ``pattern`` is a valid (sub-)pattern object."""
    if not isinstance(pattern, Mapping) or not pattern:
        raise InvalidPattern(f"Event pattern{_at(path)} must be a non-empty JSON object.")
    for key, value in pattern.items():
        where = f"{path}.{key}" if path else key
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2:
                raise InvalidPattern(f"{where} must be an array of at least two patterns.")
            for alternative in value:
                check(alternative, where)
        elif isinstance(value, Mapping):
            check(value, where)
        elif isinstance(value, list):
            if not value:
                raise InvalidPattern(f"Empty arrays are not allowed{_at(where)}.")
            for item in value:
                _check_value(item, where)
        else:
            raise InvalidPattern(f"Match value{_at(where)} must be an array (write [{json.dumps(value)}]).")


def _at(path: str) -> str:
    return f" at {path}" if path else ""


def _check_value(item: Any, where: str) -> None:
    if not isinstance(item, Mapping):
        if isinstance(item, list):
            raise InvalidPattern(f"Nested arrays are not allowed at {where}.")
        return
    if len(item) != 1 or next(iter(item)) not in _FILTERS:
        raise InvalidPattern(
            f"Unrecognized match type {', '.join(map(str, item)) or '{}'} at {where}; use one of "
            f"{', '.join(sorted(_FILTERS))}."
        )
    ((kind, arg),) = item.items()
    if kind in ("prefix", "suffix"):
        if not (isinstance(arg, str) or (isinstance(arg, Mapping) and isinstance(arg.get("equals-ignore-case"), str))):
            raise InvalidPattern(f"{kind} match pattern must be a string at {where}.")
    elif kind in ("equals-ignore-case", "wildcard"):
        if not isinstance(arg, str):
            raise InvalidPattern(f"{kind} match pattern must be a string at {where}.")
        if kind == "wildcard" and "**" in arg:
            raise InvalidPattern(f"Consecutive wildcard characters at {where} are not allowed.")
    elif kind == "exists":
        if not isinstance(arg, bool):
            raise InvalidPattern(f"exists match pattern must be either true or false at {where}.")
    elif kind == "numeric":
        _numeric_terms(arg, where)
    elif kind == "cidr":
        try:
            ipaddress.ip_network(str(arg), strict=False)
        except ValueError as exc:
            raise InvalidPattern(f"Malformed CIDR {arg!r} at {where}.") from exc
    elif kind == "anything-but":
        _check_anything_but(arg, where)


def _check_anything_but(arg: Any, where: str) -> None:
    if isinstance(arg, Mapping):
        if len(arg) != 1 or next(iter(arg)) not in ("prefix", "suffix", "equals-ignore-case", "wildcard"):
            raise InvalidPattern(f"Unsupported anything-but pattern at {where}: use a value, a list, prefix or suffix.")
        inner = next(iter(arg.values()))
        if not (isinstance(inner, str) or (isinstance(inner, list) and all(isinstance(i, str) for i in inner))):
            raise InvalidPattern(f"anything-but {next(iter(arg))} needs a string at {where}.")
    elif isinstance(arg, list) and (not arg or any(isinstance(a, Mapping | list) for a in arg)):
        raise InvalidPattern(f"anything-but at {where} needs a non-empty list of strings or numbers.")


def _numeric_terms(arg: Any, where: str) -> list[tuple[str, float]]:
    if not isinstance(arg, list) or len(arg) not in (2, 4):
        raise InvalidPattern(f'numeric at {where} needs one or two comparisons, like [">", 0, "<=", 5].')
    terms = []
    for op, value in zip(arg[::2], arg[1::2], strict=True):
        if op not in _NUMERIC_OPS or isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidPattern(f"Bad numeric comparison {op!r} {value!r} at {where}.")
        terms.append((op, float(value)))
    return terms


# --- matching -----------------------------------------------------------------------------------------


def matches(pattern: Mapping[str, Any], event: Any) -> bool:
    """Whether ``event`` (a parsed JSON object) matches the checked ``pattern``."""
    for key, want in pattern.items():
        if key == "$or":
            if not any(matches(alt, event) for alt in want):
                return False
            continue
        value = event.get(key, _MISSING) if isinstance(event, Mapping) else _MISSING
        if isinstance(want, Mapping):
            if value is _MISSING:
                if not _all_absent_ok(want):
                    return False
            elif isinstance(value, list):
                if not any(isinstance(v, Mapping) and matches(want, v) for v in value):
                    return False
            elif not matches(want, value if isinstance(value, Mapping) else {}):
                return False
        elif not _field_matches(want, value):
            return False
    return True


def _all_absent_ok(pattern: Mapping[str, Any]) -> bool:
    """A sub-pattern against a missing object: only ``exists: false`` leaves match."""
    return matches(pattern, {})


def _field_matches(wanted: list[Any], value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    for matcher in wanted:
        if isinstance(matcher, Mapping) and "exists" in matcher:
            present = value is not _MISSING and not (isinstance(value, list) and not value)
            if present == matcher["exists"]:
                return True
            continue
        if value is _MISSING:
            continue
        if any(_one(matcher, v) for v in values):
            return True
    return False


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _one(matcher: Any, value: Any) -> bool:
    if not isinstance(matcher, Mapping):
        a, b = _number(matcher), _number(value)
        if a is not None or b is not None:
            return a is not None and a == b
        return bool(matcher == value)
    ((kind, arg),) = matcher.items()
    if kind == "anything-but":
        return _anything_but(arg, value)
    if kind == "numeric":
        number = _number(value)
        return number is not None and all(_compare(op, number, bound) for op, bound in _numeric_terms(arg, ""))
    if not isinstance(value, str):
        return False
    if kind == "prefix":
        return _affix(arg, value, str.startswith)
    if kind == "suffix":
        return _affix(arg, value, str.endswith)
    if kind == "equals-ignore-case":
        return value.casefold() == str(arg).casefold()
    if kind == "wildcard":
        return _wild(arg, value)
    if kind == "cidr":
        try:
            return ipaddress.ip_address(value) in ipaddress.ip_network(str(arg), strict=False)
        except ValueError:
            return False
    return False


def _wild(pattern: str, value: str) -> bool:
    """``*`` matches any run of characters; nothing else is special (unlike fnmatch's ``?`` and ``[``)."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, value, re.DOTALL) is not None


def _affix(arg: Any, value: str, test: Any) -> bool:
    if isinstance(arg, Mapping):
        return bool(test(value.casefold(), str(arg["equals-ignore-case"]).casefold()))
    return bool(test(value, arg))


def _anything_but(arg: Any, value: Any) -> bool:
    if isinstance(arg, Mapping):
        ((kind, inner),) = arg.items()
        options = inner if isinstance(inner, list) else [inner]
        if not isinstance(value, str):
            return True
        if kind == "prefix":
            return not any(value.startswith(o) for o in options)
        if kind == "suffix":
            return not any(value.endswith(o) for o in options)
        if kind == "wildcard":
            return not any(_wild(o, value) for o in options)
        return not any(value.casefold() == o.casefold() for o in options)
    options = arg if isinstance(arg, list) else [arg]
    return not any(_one(o, value) for o in options)


def _compare(op: str, a: float, b: float) -> bool:
    return {"<": a < b, "<=": a <= b, "=": a == b, ">": a > b, ">=": a >= b}[op]
