"""What a rule's targets receive: the input a target is given, and the kinds of target there are.

A target is one of:

* a SageMaker pipeline (``arn:aws:sagemaker:<region>:<account>:pipeline/<name>``): the event starts
  an execution with the target's ``SageMakerPipelineParameters``; a parameter value that is wholly a
  JSON path (``$.detail.ModelPackageArn``) takes that value of the event, as EventBridge's dynamic
  path parameters do;
* a CloudWatch Logs log group (``arn:aws:logs:<region>:<account>:log-group:<name>``): the target's
  input (the event, or what ``Input``, ``InputPath`` or ``InputTransformer`` make of it) is written
  as one log event to the stream named after the rule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

# start_pipeline(pipeline ARN, [{Name, Value}], role ARN) -> the execution's ARN; raises when it cannot start
PipelineStarter = Callable[[str, list[dict[str, str]], str | None], Awaitable[str]]

PIPELINE_ARN = re.compile(r"arn:aws[a-z-]*:sagemaker:[^:]*:\d{12}:pipeline/([A-Za-z0-9\-]{1,256})")
LOG_GROUP_ARN = re.compile(r"arn:aws[a-z-]*:logs:[^:]*:\d{12}:log-group:([^:]+)(?::\*)?")
_PATH = re.compile(r"\$(\.[A-Za-z0-9_\-:]+|\[\d+\])*")
_MISSING = object()


class UnsupportedTarget(ValueError):
    """The target's ARN names a kind of target OpenSage does not deliver to."""


def kind_of(arn: str) -> str:
    """``pipeline`` or ``log-group``. Raises :class:`UnsupportedTarget`."""
    if PIPELINE_ARN.fullmatch(arn):
        return "pipeline"
    if LOG_GROUP_ARN.fullmatch(arn):
        return "log-group"
    raise UnsupportedTarget(
        f"Target {arn} is not a kind OpenSage delivers to; use a SageMaker pipeline "
        "(arn:aws:sagemaker:<region>:<account>:pipeline/<name>) or a CloudWatch Logs log group "
        "(arn:aws:logs:<region>:<account>:log-group:<name>)."
    )


def is_path(text: str) -> bool:
    return _PATH.fullmatch(text) is not None and text.startswith("$")


def select(event: Any, path: str) -> Any:
    """The value at a JSON path (``$``, ``$.a.b``, ``$.a[0]``) of ``event``; ``_MISSING`` when there is none."""
    value = event
    for part in re.findall(r"\.([A-Za-z0-9_\-:]+)|\[(\d+)\]", path[1:]):
        key, index = part
        if key:
            value = value.get(key, _MISSING) if isinstance(value, Mapping) else _MISSING
        else:
            value = value[int(index)] if isinstance(value, list) and int(index) < len(value) else _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def check_path(path: str, member: str) -> None:
    if not is_path(path):
        raise ValueError(
            f"{member} {path!r} is not a JSON path EventBridge accepts (dot notation from $, like $.detail)."
        )


def target_input(target: Mapping[str, Any], event: Mapping[str, Any]) -> str:
    """The text the target is given for ``event``."""
    if target.get("Input") is not None:
        return str(target["Input"])
    if target.get("InputPath"):
        found = select(event, target["InputPath"])
        return "" if found is _MISSING else json.dumps(found)
    transformer = target.get("InputTransformer")
    if transformer:
        values = {k: select(event, p) for k, p in (transformer.get("InputPathsMap") or {}).items()}
        template = str(transformer["InputTemplate"])
        json_template = template.strip().startswith(("{", "["))

        def fill(m: re.Match[str]) -> str:
            name = m.group(1)
            if name == "aws.events.event.json":
                return json.dumps(event)
            if name == "aws.events.rule-arn" or name not in values:
                return m.group(0)
            value = values[name]
            if value is _MISSING:
                return "null" if json_template else ""
            if isinstance(value, str):
                return json.dumps(value)[1:-1] if not json_template or _quoted(m) else json.dumps(value)
            return json.dumps(value)

        return re.sub(r"<([A-Za-z0-9_\-.]+)>", fill, template)
    return json.dumps(event)


def _quoted(m: re.Match[str]) -> bool:
    text, start, end = m.string, m.start(), m.end()
    return start > 0 and text[start - 1] == '"' and end < len(text) and text[end] == '"'


def pipeline_parameters(target: Mapping[str, Any], event: Mapping[str, Any]) -> list[dict[str, str]]:
    """The execution's parameters: each static value, or the event's value at a JSON path."""
    out = []
    for p in (target.get("SageMakerPipelineParameters") or {}).get("PipelineParameterList") or []:
        value = p["Value"]
        if is_path(value):
            found = select(event, value)
            if found is _MISSING:
                raise LookupError(f"The event has no value at {value} for pipeline parameter {p['Name']}.")
            value = found if isinstance(found, str) else json.dumps(found)
        out.append({"Name": p["Name"], "Value": value})
    return out
