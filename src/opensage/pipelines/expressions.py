"""The expressions of a pipeline definition (Version 2020-12-01) and their evaluation.

An expression is any JSON value; inside it ``{"Get": "Parameters.<n>"}``, ``{"Get": "Execution.<v>"}``,
``{"Get": "Steps.<step>.<path>"}`` (a path into the step's ``Describe*`` answer: dots, ``['key']``
selecting a list element by its ``*Name`` member or a map entry, ``[i]`` by position),
``{"Std:Join": {"On", "Values"}}`` and ``{"Std:JsonGet": {"PropertyFile" | "S3Uri", "Path"}}`` are
replaced by their values. Evaluation is pure: what a ``Get`` of a step reads comes from a
:class:`Scope` the caller fills in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

PARAMETER_TYPES = ("String", "Integer", "Float", "Boolean")
EXECUTION_VARIABLES = (
    "StartDateTime",
    "CurrentDateTime",
    "PipelineName",
    "PipelineArn",
    "PipelineExecutionId",
    "PipelineExecutionArn",
    "TrainingJobName",
    "ProcessingJobName",
)
_TOKEN = re.compile(r"\.?([A-Za-z0-9_:\-]+)|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]|\[\s*(\d+)\s*\]")


class ExpressionError(Exception):
    """An expression that cannot be evaluated; the message says which and why."""


def tokens(path: str) -> list[str | int]:
    """``"A.B['x'].C[0]"`` -> ``["A", "B", "x", "C", 0]``.

    Raises:
        ExpressionError: the path has characters outside that grammar.
    """
    out: list[str | int] = []
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None or m.end() == pos:
            raise ExpressionError(f"cannot read the property path '{path}' at '{path[pos:]}'")
        name, quoted, dquoted, index = m.groups()
        if index is not None:
            out.append(int(index))
        else:
            out.append(name if name is not None else (quoted if quoted is not None else dquoted))
        pos = m.end()
    return out


def split_get(ref: str) -> tuple[str, str, list[str | int]]:
    """``"Steps.Train.ModelArtifacts.S3ModelArtifacts"`` -> ("Steps", "Train", [...]).

    Step names may contain dots only as the SDK never emits them; the first two parts are the
    namespace and the name (a name in ``['...']`` is accepted too).
    """
    parts = tokens(ref)
    if len(parts) < 2 or not isinstance(parts[0], str) or not isinstance(parts[1], str):
        raise ExpressionError(f"'{ref}' is not a reference of the form <Parameters|Execution|Steps>.<name>...")
    return parts[0], parts[1], parts[2:]


def walk(value: Any, path: list[str | int], where: str) -> Any:
    """Follow ``path`` into a Describe* answer; a ``['key']`` on a list picks the element whose
    ``*Name`` member (OutputName, InputName, ChannelName, MetricName...) equals the key."""
    current = value
    for i, key in enumerate(path):
        shown = where + "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in path[: i + 1])
        if isinstance(current, list):
            if isinstance(key, int):
                if key >= len(current):
                    raise ExpressionError(f"{shown}: the list has {len(current)} elements")
                current = current[key]
                continue
            match = [e for e in current if isinstance(e, dict) and _named(e, key)]
            if not match:
                raise ExpressionError(f"{shown}: no element named '{key}'")
            current = match[0]
        elif isinstance(current, dict):
            if key not in current:
                raise ExpressionError(f"{shown} does not exist")
            current = current[key]
        else:
            raise ExpressionError(f"{shown}: {type(current).__name__} has no member '{key}'")
    return current


def _named(element: dict[str, Any], key: str) -> bool:
    return any(k.endswith("Name") and v == key for k, v in element.items())


def json_path(document: Any, path: str) -> Any:
    """``Std:JsonGet``'s path (``a.b[0].c``) into a JSON document."""
    return walk(document, tokens(path), "JsonGet")


def coerce_parameter(kind: str, value: Any, name: str) -> Any:
    """A parameter's value (a string at StartPipelineExecution, typed as a default) as its ``kind``.

    Raises:
        ExpressionError: the value is not of that type.
    """
    try:
        if kind == "String":
            if isinstance(value, str):
                return value
        elif kind == "Integer":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                return int(value.strip())
        elif kind == "Float":
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                return float(value.strip())
        elif kind == "Boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                return value.strip().lower() == "true"
    except ValueError:
        pass
    raise ExpressionError(f"parameter '{name}' is of type {kind}; '{value}' is not a valid {kind}")


def to_text(value: Any) -> str:
    """How ``Std:Join`` and string arguments show a value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


@dataclass(slots=True)
class Scope:
    """What references read: parameter values, execution variables, and two callbacks the
    controller gives (a step's properties, a property file's JSON, an S3 object's JSON)."""

    parameters: Mapping[str, Any]
    execution: Mapping[str, Any]
    step_properties: Callable[[str], Any]
    property_file: Callable[[str, str], Any] = field(default=lambda s, n: None)
    s3_json: Callable[[str], Any] = field(default=lambda uri: None)


def evaluate(expr: Any, scope: Scope) -> Any:
    """``expr`` with every function and reference in it replaced by its value.

    Raises:
        ExpressionError: a reference that cannot be resolved, with what it was.
    """
    if isinstance(expr, list):
        return [evaluate(e, scope) for e in expr]
    if not isinstance(expr, dict):
        return expr
    if len(expr) == 1:
        ((key, arg),) = expr.items()
        if key == "Get":
            return _get(arg, scope)
        if key == "Std:Join":
            values = evaluate(arg.get("Values") or [], scope)
            return to_text(arg.get("On", "")).join(to_text(v) for v in values)
        if key == "Std:JsonGet":
            return _json_get(arg, scope)
    return {k: evaluate(v, scope) for k, v in expr.items()}


def _get(ref: Any, scope: Scope) -> Any:
    if not isinstance(ref, str):
        raise ExpressionError(f"a Get needs a string reference, got {ref!r}")
    space, name, path = split_get(ref)
    if space == "Parameters":
        if name not in scope.parameters:
            raise ExpressionError(f"'{ref}': no parameter '{name}'")
        return scope.parameters[name]
    if space == "Execution":
        if name not in scope.execution:
            raise ExpressionError(f"'{ref}': no execution variable '{name}'")
        return scope.execution[name]
    if space == "Steps":
        if path and path[0] == "PropertyFiles":
            raise ExpressionError(f"'{ref}': a property file is read with Std:JsonGet")
        return walk(scope.step_properties(name), path, f"Steps.{name}")
    raise ExpressionError(f"'{ref}': unknown namespace '{space}' (Parameters, Execution or Steps)")


def _json_get(arg: Mapping[str, Any], scope: Scope) -> Any:
    path = evaluate(arg.get("Path"), scope)
    source = arg.get("PropertyFile")
    if isinstance(source, dict) and "Get" in source:
        _, step, rest = split_get(source["Get"])
        if len(rest) != 2 or rest[0] != "PropertyFiles":
            raise ExpressionError(f"'{source['Get']}' does not name a property file (Steps.<step>.PropertyFiles.<n>)")
        document = scope.property_file(step, str(rest[1]))
    elif "S3Uri" in arg:
        document = scope.s3_json(to_text(evaluate(arg["S3Uri"], scope)))
    else:
        raise ExpressionError("Std:JsonGet needs a PropertyFile or an S3Uri")
    return json_path(document, to_text(path))


def references(expr: Any) -> Iterator[str]:
    """Every ``Get`` reference inside ``expr`` (with a JsonGet's property file as its Get)."""
    if isinstance(expr, list):
        for e in expr:
            yield from references(e)
    elif isinstance(expr, dict):
        if len(expr) == 1 and isinstance(expr.get("Get"), str):
            yield expr["Get"]
            return
        for v in expr.values():
            yield from references(v)


# --- conditions ------------------------------------------------------------------------------------

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: bool(a == b),
    "GreaterThan": lambda a, b: bool(a > b),
    "GreaterThanOrEqualTo": lambda a, b: bool(a >= b),
    "LessThan": lambda a, b: bool(a < b),
    "LessThanOrEqualTo": lambda a, b: bool(a <= b),
}
CONDITION_TYPES = (*_COMPARE, "In", "Not", "Or")


def _comparable(left: Any, right: Any) -> tuple[Any, Any]:
    """Both sides as one type: numbers with numbers (a numeric string counts), else text with text."""

    def number(v: Any) -> float | None:
        if isinstance(v, bool):
            return None
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                return None
        return None

    if isinstance(left, bool) or isinstance(right, bool):
        texts = {"true": True, "false": False}
        lb = left if isinstance(left, bool) else texts.get(str(left).lower())
        rb = right if isinstance(right, bool) else texts.get(str(right).lower())
        if lb is None or rb is None:
            raise ExpressionError(f"cannot compare {left!r} with {right!r}: one is a Boolean, the other is not")
        return lb, rb
    ln, rn = number(left), number(right)
    if ln is not None and rn is not None and not (isinstance(left, str) and isinstance(right, str)):
        return ln, rn
    if isinstance(left, str) and isinstance(right, str):
        return left, right
    raise ExpressionError(f"cannot compare {type(left).__name__} {left!r} with {type(right).__name__} {right!r}")


def condition(cond: Mapping[str, Any], scope: Scope) -> bool:
    """The outcome of one condition of a Condition step."""
    kind = cond.get("Type")
    if kind in _COMPARE:
        left, right = _comparable(evaluate(cond.get("LeftValue"), scope), evaluate(cond.get("RightValue"), scope))
        try:
            return _COMPARE[kind](left, right)
        except TypeError as exc:
            raise ExpressionError(f"{kind}: {exc}") from exc
    if kind == "In":
        query = evaluate(cond.get("QueryValue"), scope)
        for value in evaluate(cond.get("Values") or [], scope):
            try:
                a, b = _comparable(query, value)
            except ExpressionError:
                continue
            if a == b:
                return True
        return False
    if kind == "Not":
        return not condition(cond.get("Condition") or {}, scope)
    if kind == "Or":
        return any(condition(c, scope) for c in cond.get("Conditions") or [])
    raise ExpressionError(f"unknown condition type {kind!r} ({', '.join(CONDITION_TYPES)})")
