"""SageMaker Search: filters, nested filters and sub-expressions over the records of one resource type.

A record is what the type's Describe* answers plus its ``Tags``; a filter's ``Name`` is a dot path
into it (``ModelPackageGroupName``, ``Tags.owner``, ``HyperParameters.eta``, ``Metrics.validation:auc``
for a training job's final metrics, ``InputDataConfig.ChannelName`` inside a nested filter). Values
are compared as numbers when the record's value is a number, as times when the member's name ends
in ``Time`` (ISO 8601 or epoch seconds), else as strings (``Contains`` ignores case).

LIMITATIONS: the types with records here (TrainingJob, HyperParameterTuningJob, Endpoint, Model,
ModelPackage, ModelPackageGroup, Pipeline, PipelineExecution, Experiment, ExperimentTrial,
ExperimentTrialComponent) are searched; the others (feature groups, projects, model cards, images)
answer a ValidationException naming what is searchable. A filter on the experiment types must name a
member of their record (``Parents.TrialName``, ``Metrics.loss.Min``, ``Parameters.eta.NumberValue``).
Matching reads every record of the type (no search index), which is fine for the thousands of resources
one installation holds. ``VisibilityConditions`` and
``CrossAccountFilterOption`` are not applied (one account).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

import botocore.session

from opensage.aws.context import RequestContext
from opensage.aws.pagination import decode_token, encode_token, invalid_token
from opensage.errors import validation_error
from opensage.experiments import records as rec
from opensage.experiments.metrics import TrialMetrics
from opensage.store import tags
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

# Search's Resource -> (store kind, its SearchRecord member)
SEARCHABLE: Mapping[str, tuple[str, str]] = {
    "TrainingJob": ("training-job", "TrainingJob"),
    "HyperParameterTuningJob": ("hyper-parameter-tuning-job", "HyperParameterTuningJob"),
    "Endpoint": ("endpoint", "Endpoint"),
    "Model": ("model", "Model"),
    "ModelPackage": ("model-package", "ModelPackage"),
    "ModelPackageGroup": ("model-package-group", "ModelPackageGroup"),
    "Pipeline": ("pipeline", "Pipeline"),
    "PipelineExecution": ("pipeline-execution", "PipelineExecution"),
    "Experiment": (rec.EXPERIMENT, "Experiment"),
    "ExperimentTrial": (rec.TRIAL, "Trial"),
    "ExperimentTrialComponent": (rec.COMPONENT, "TrialComponent"),
}
# The types whose filters must name a member of their record (others match nothing on an unknown name).
_CHECKED = {rec.EXPERIMENT, rec.TRIAL, rec.COMPONENT}
_MISSING = object()
_TOKEN = "search"
DEFAULT_PAGE = 10


def record(kind: str, data: Mapping[str, Any], tag_list: list[dict[str, str]]) -> dict[str, Any]:
    """The Search record of a stored document."""
    out = {k: v for k, v in data.items() if not k.startswith("_") and k != "Tags"}
    if kind == "model":  # Search's Model record nests the description
        return {"Model": out, "Tags": tag_list}
    if tag_list:
        out["Tags"] = tag_list
    return out


def lookup(value: Any, path: str) -> Any:
    """The value at dot ``path`` in a record (``_MISSING`` when there is none); lists of ``{Key, Value}``
    or ``{MetricName, Value}`` entries are addressed by their key, ``Metrics`` names FinalMetricDataList."""
    if path.startswith("Metrics.") and isinstance(value, Mapping) and "FinalMetricDataList" in value:
        metrics = {m["MetricName"]: m.get("Value") for m in value["FinalMetricDataList"] or []}
        return metrics.get(path[len("Metrics.") :], _MISSING)
    return _walk(value, path.split("."))


def _walk(value: Any, parts: list[str]) -> Any:
    if not parts:
        return value
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        keyed = _keyed(value)
        if isinstance(keyed, list):  # a member of every element: the list of their values
            found = [_walk(item, parts) for item in keyed]
            found = [f for f in found if f is not _MISSING]
            return found if found else _MISSING
        value = keyed
    if not isinstance(value, Mapping):
        return _MISSING
    for j in range(len(parts), 0, -1):  # the longest key first: hyperparameter names may hold dots
        key = ".".join(parts[:j])
        if key in value:
            return _walk(value[key], parts[j:])
    return _MISSING


def _keyed(items: list[Mapping[str, Any]]) -> Any:
    for key, val in (("Key", "Value"), ("MetricName", "Value"), ("Name", "Value")):
        if all(key in item for item in items):
            if key == "MetricName" and not any(val in item for item in items):  # summaries: Metrics.loss.Min
                return {item[key]: item for item in items}
            return {item[key]: item.get(val) for item in items}
    return items


@functools.cache
def _record_members(member: str) -> frozenset[str]:
    """The members of a Search record type (the service model's shape of ``member``)."""
    shape = botocore.session.get_session().get_service_model("sagemaker").shape_for(member)
    return frozenset(shape.members)  # type: ignore[attr-defined]


def check_names(expression: Mapping[str, Any] | None, member: str) -> None:
    """Refuse a filter (or nested filter) on a property that ``member`` records do not have."""
    known = _record_members(member)
    for flt in (expression or {}).get("Filters") or []:
        if flt["Name"].split(".", 1)[0] not in known:
            raise validation_error(
                f"Unknown property {flt['Name']!r} for {member} in the search expression; filter on one of "
                f"{', '.join(sorted(known))}."
            )
    for nested in (expression or {}).get("NestedFilters") or []:
        if nested["NestedPropertyName"].split(".", 1)[0] not in known:
            raise validation_error(f"Unknown NestedPropertyName {nested['NestedPropertyName']!r} for {member}.")
    for sub in (expression or {}).get("SubExpressions") or []:
        check_names(sub, member)


def _as_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise validation_error(
            f"{text!r} is not a time: give ISO 8601 (2024-01-31T12:00:00Z) or epoch seconds."
        ) from exc
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


def _coerce(found: Any, text: str, name: str) -> tuple[Any, Any]:
    if name.endswith("Time") and isinstance(found, int | float):
        return float(found), _as_time(text)
    if isinstance(found, bool):
        return str(found).lower(), text.lower()
    if isinstance(found, int | float):
        try:
            return float(found), float(text)
        except ValueError:
            return str(found), text
    if isinstance(found, str) and name.endswith("Time"):
        return _as_time(found), _as_time(text)
    return (found if isinstance(found, str) else json.dumps(found)), text


_COMPARE: Mapping[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: a == b,
    "NotEquals": lambda a, b: a != b,
    "GreaterThan": lambda a, b: a > b,
    "GreaterThanOrEqualTo": lambda a, b: a >= b,
    "LessThan": lambda a, b: a < b,
    "LessThanOrEqualTo": lambda a, b: a <= b,
}


def matches_filter(rec: Any, flt: Mapping[str, Any]) -> bool:
    """Whether one Filter ``{Name, Operator (Equals), Value}`` holds for ``rec``."""
    name, op = flt["Name"], flt.get("Operator", "Equals")
    found = lookup(rec, name)
    if op == "Exists":
        return found is not _MISSING and found is not None
    if op == "NotExists":
        return found is _MISSING or found is None
    if "Value" not in flt:
        raise validation_error(f"The filter on {name} with operator {op} needs a Value.")
    if found is _MISSING or found is None:
        return op == "NotEquals"
    text = str(flt["Value"])
    if isinstance(found, list):  # a list of values matches when one of them does
        return any(matches_filter({"v": item}, {**flt, "Name": "v"}) for item in found)
    if op == "Contains":
        return text.lower() in (found if isinstance(found, str) else json.dumps(found)).lower()
    if op == "In":
        return any(_compare("Equals", found, v.strip(), name) for v in text.split(","))
    if op not in _COMPARE:
        raise validation_error(f"Unknown Operator {op}.")
    return _compare(op, found, text, name)


def _compare(op: str, found: Any, text: str, name: str) -> bool:
    a, b = _coerce(found, text, name)
    try:
        return _COMPARE[op](a, b)
    except TypeError:
        return _COMPARE[op](str(a), str(b))


def matches(rec: Any, expression: Mapping[str, Any] | None) -> bool:
    """Whether ``rec`` satisfies a SearchExpression (Filters, NestedFilters, SubExpressions; And/Or)."""
    if not expression:
        return True
    results: list[bool] = [matches_filter(rec, f) for f in expression.get("Filters") or []]
    for nested in expression.get("NestedFilters") or []:
        prop = nested["NestedPropertyName"]
        items = lookup(rec, prop)
        items = items if isinstance(items, list) else [] if items is _MISSING else [items]
        inner = [{**f, "Name": f["Name"].removeprefix(prop + ".")} for f in nested["Filters"]]
        results.append(any(all(matches_filter(item, f) for f in inner) for item in items))
    results.extend(matches(rec, sub) for sub in expression.get("SubExpressions") or [])
    return any(results) if expression.get("Operator") == "Or" else all(results)


def _sort_key(rec: Any, path: str) -> tuple[int, Any]:
    value = lookup(rec, path)
    if value is _MISSING or value is None:
        return (1, "")
    return (0, value) if isinstance(value, int | float) else (0, str(value))


def _with_tags(rec: dict[str, Any], tag_list: list[dict[str, str]]) -> dict[str, Any]:
    return {**rec, "Tags": tag_list} if tag_list else rec


class SearchOperations:
    store: SqlStore
    trial_metrics: TrialMetrics

    def _record(self, row: Resource, tag_list: list[dict[str, str]]) -> dict[str, Any]:
        if row.kind == rec.COMPONENT:
            return rec.component_record(row, self.trial_metrics, tag_list)
        if row.kind == rec.TRIAL:
            return rec.trial_record(self.store, row, tag_list)
        return record(row.kind, row.data, tag_list)

    def search(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        resource = request["Resource"]
        if resource not in SEARCHABLE:
            raise validation_error(
                f"Search over {resource} is not available in OpenSage; searchable: {', '.join(SEARCHABLE)}."
            )
        kind, member = SEARCHABLE[resource]
        expression = request.get("SearchExpression")
        if kind in _CHECKED:
            check_names(expression, member)
        by = request.get("SortBy") or "CreationTime"
        # a record's tags are a row of their own: read them for every record only when the search uses them
        tagged = "Tags" in by or '"Tags' in json.dumps(expression or {})
        found = []
        arns: dict[int, str] = {}
        for row in self.store.list_resources(kind):
            item = self._record(row, tags.get_tags(self.store, row.arn) if tagged else [])
            if matches(item, expression):
                found.append(item)
                arns[id(item)] = row.arn
        descending = request.get("SortOrder", "Descending") == "Descending"
        present = [r for r in found if _sort_key(r, by)[0] == 0]
        absent = [r for r in found if _sort_key(r, by)[0] == 1]
        present.sort(key=lambda r: _sort_key(r, by), reverse=descending)
        ordered = present + absent
        start = 0
        if request.get("NextToken"):
            try:
                start = int(decode_token(request["NextToken"], _TOKEN))
            except ValueError as exc:
                raise invalid_token(request["NextToken"]) from exc
        size = request.get("MaxResults") or DEFAULT_PAGE
        page = ordered[start : start + size]
        if not tagged:
            page = [_with_tags(r, tags.get_tags(self.store, arns[id(r)])) for r in page]
        more = start + size < len(ordered)
        return {
            "Results": [{member: r} for r in page],
            "NextToken": encode_token(_TOKEN, str(start + size)) if more else None,
            "TotalHits": {"Value": len(ordered), "Relation": "EqualTo"},
        }
