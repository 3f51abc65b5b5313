"""A pipeline definition (Version 2020-12-01): parsed once, validated whole, as a DAG of steps.

:func:`parse` refuses, with a message naming the step and the field, a definition that
references a missing step, parameter or property file, has a cycle, an unknown step type, a
condition comparing values of incompatible types, or a parameter default of the wrong type.
:func:`plan` is the scheduler's pure part: from the steps' statuses and the conditions' outcomes,
which steps may start now and which will never run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opensage.pipelines import expressions as ex
from opensage.pipelines import policies

VERSION = "2020-12-01"
JOB_TYPES = ("Processing", "Training", "Transform", "Tuning")
STEP_TYPES = (
    *JOB_TYPES,
    "Model",
    "RegisterModel",
    "Condition",
    "Fail",
    "EndpointConfig",
    "Endpoint",
    "Callback",
    "QualityCheck",
)
# a QualityCheck step's members outside its Arguments that may hold references
CHECK_MEMBERS = (
    "SkipCheck",
    "FailOnViolation",
    "RegisterNewBaseline",
    "SuppliedBaselineStatistics",
    "SuppliedBaselineConstraints",
    "ModelPackageGroupName",
)
NOT_AVAILABLE = {
    "Lambda": "AWS Lambda is not available in OpenSage; run the function's work in a Processing step instead",
    "ClarifyCheck": "SageMaker Clarify is not available in OpenSage",
    "EMR": "Amazon EMR is not available in OpenSage; use a Processing step",
    "AutoML": "Autopilot (AutoML) is not available in OpenSage; use a Tuning step",
    "InferenceComponent": "inference components are not available in OpenSage; use Model, EndpointConfig, Endpoint",
}
SUCCEEDED, FAILED, STOPPED = "Succeeded", "Failed", "Stopped"
ENDED = frozenset({SUCCEEDED, FAILED, STOPPED})


class InvalidDefinition(Exception):
    """The definition cannot run; the message says where and what to fix."""


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    type: str
    default: Any = None
    has_default: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    type: str
    arguments: Any
    document: dict[str, Any]  # the step's own JSON (without nested branch steps for a Condition)
    depends_on: tuple[str, ...] = ()
    condition: str | None = None  # the Condition step whose branch holds this step
    branch: bool | None = None  # True: IfSteps, False: ElseSteps
    if_steps: tuple[str, ...] = ()
    else_steps: tuple[str, ...] = ()
    property_files: tuple[dict[str, Any], ...] = ()
    retry_policies: tuple[dict[str, Any], ...] = ()
    cache: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Definition:
    parameters: dict[str, Parameter]
    steps: dict[str, Step]
    upstream: dict[str, frozenset[str]]
    experiment: dict[str, Any] | None = None
    order: tuple[str, ...] = field(default=())


def load(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidDefinition(f"The pipeline definition is not valid JSON: {exc}") from exc


def parse(text: str) -> Definition:
    """The definition in ``text``, validated.

    Raises:
        InvalidDefinition: what is wrong, naming the step and field.
    """
    doc = load(text)
    if not isinstance(doc, dict):
        raise InvalidDefinition("The pipeline definition must be a JSON object with Version, Parameters and Steps.")
    if doc.get("Version") != VERSION:
        raise InvalidDefinition(f"The pipeline definition's Version must be '{VERSION}' (got {doc.get('Version')!r}).")
    parameters = _parameters(doc.get("Parameters") or [])
    steps: dict[str, Step] = {}
    raw = doc.get("Steps")
    if not isinstance(raw, list) or not raw:
        raise InvalidDefinition("The pipeline definition needs a non-empty list of Steps.")
    _collect(raw, steps, None, None)
    upstream = {name: _upstream(step, steps, parameters) for name, step in steps.items()}
    order = _order(upstream)
    for step in steps.values():
        if step.type == "Condition":
            _check_conditions(step, parameters)
    experiment = doc.get("PipelineExperimentConfig")
    return Definition(parameters, steps, upstream, experiment if isinstance(experiment, dict) else None, order)


def _parameters(raw: Any) -> dict[str, Parameter]:
    if not isinstance(raw, list):
        raise InvalidDefinition("Parameters must be a list of {Name, Type, DefaultValue}.")
    out: dict[str, Parameter] = {}
    for i, p in enumerate(raw):
        if not isinstance(p, dict) or not isinstance(p.get("Name"), str) or not p["Name"]:
            raise InvalidDefinition(f"Parameters[{i}] needs a Name.")
        name, kind = p["Name"], p.get("Type", "String")
        if kind not in ex.PARAMETER_TYPES:
            raise InvalidDefinition(f"Parameter '{name}': Type must be one of {', '.join(ex.PARAMETER_TYPES)}.")
        if name in out:
            raise InvalidDefinition(f"Parameter '{name}' is defined twice.")
        has = "DefaultValue" in p and p["DefaultValue"] is not None
        default = None
        if has:
            try:
                default = ex.coerce_parameter(kind, p["DefaultValue"], name)
            except ex.ExpressionError as exc:
                raise InvalidDefinition(f"Parameter '{name}': DefaultValue: {exc}.") from exc
        out[name] = Parameter(name, kind, default, has)
    return out


def _collect(raw: list[Any], steps: dict[str, Step], parent: str | None, branch: bool | None) -> list[str]:
    names = []
    for i, s in enumerate(raw):
        where = f"Steps[{i}]" if parent is None else f"Step '{parent}': {'IfSteps' if branch else 'ElseSteps'}[{i}]"
        if not isinstance(s, dict) or not isinstance(s.get("Name"), str) or not s["Name"]:
            raise InvalidDefinition(f"{where} needs a Name.")
        name, kind = s["Name"], s.get("Type")
        if name in steps or name == parent:
            raise InvalidDefinition(f"Step name '{name}' is used twice; step names must be unique.")
        if kind in NOT_AVAILABLE:
            raise InvalidDefinition(f"Step '{name}' is of type {kind}: {NOT_AVAILABLE[kind]}.")
        if kind not in STEP_TYPES:
            raise InvalidDefinition(
                f"Step '{name}': unknown step Type {kind!r}; OpenSage runs {', '.join(STEP_TYPES)}."
            )
        args = s.get("Arguments", {})
        if kind != "Fail" and not isinstance(args, dict):
            raise InvalidDefinition(f"Step '{name}': Arguments must be an object.")
        depends = s.get("DependsOn") or []
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise InvalidDefinition(f"Step '{name}': DependsOn must be a list of step names.")
        own = {k: v for k, v in s.items()}
        if_names: list[str] = []
        else_names: list[str] = []
        if kind == "Condition":
            own["Arguments"] = {k: v for k, v in args.items() if k not in ("IfSteps", "ElseSteps")}
            if not isinstance(args.get("Conditions"), list) or not args["Conditions"]:
                raise InvalidDefinition(f"Step '{name}': Arguments.Conditions must be a non-empty list.")
        steps[name] = Step(name, kind, own.get("Arguments", {}), own)  # placeholder to reserve the name
        if kind == "Condition":
            if_names = _collect(args.get("IfSteps") or [], steps, name, True)
            else_names = _collect(args.get("ElseSteps") or [], steps, name, False)
        steps[name] = Step(
            name,
            kind,
            own.get("Arguments", {}),
            own,
            tuple(depends),
            parent,
            branch,
            tuple(if_names),
            tuple(else_names),
            tuple(s.get("PropertyFiles") or ()),
            tuple(s.get("RetryPolicies") or ()),
            s.get("CacheConfig") if isinstance(s.get("CacheConfig"), dict) else None,
        )
        _check_policies(steps[name])
        names.append(name)
    return names


def _check_policies(step: Step) -> None:
    for i, p in enumerate(step.retry_policies):
        where = f"Step '{step.name}': RetryPolicies[{i}]"
        if not isinstance(p, dict) or not p.get("ExceptionType"):
            raise InvalidDefinition(f"{where} needs an ExceptionType list.")
        if "MaxAttempts" in p and "ExpireAfterMin" in p:
            raise InvalidDefinition(f"{where}: give MaxAttempts or ExpireAfterMin, not both.")
        if not 1 <= int(p.get("MaxAttempts", 1)) <= 20:
            raise InvalidDefinition(f"{where}: MaxAttempts must be between 1 and 20.")
    expire = (step.cache or {}).get("ExpireAfter")
    if expire is not None:
        try:
            policies.duration(str(expire))
        except ValueError as exc:
            raise InvalidDefinition(f"Step '{step.name}': CacheConfig.ExpireAfter: {exc}.") from exc
    if step.property_files and step.type != "Processing":
        raise InvalidDefinition(f"Step '{step.name}': PropertyFiles belong to Processing steps.")


def _upstream(step: Step, steps: Mapping[str, Step], parameters: Mapping[str, Parameter]) -> frozenset[str]:
    ups: set[str] = set()
    for d in step.depends_on:
        if d not in steps:
            raise InvalidDefinition(f"Step '{step.name}': DependsOn names a step '{d}' that does not exist.")
        ups.add(d)
    if step.condition is not None:
        ups.add(step.condition)
    checked = {k: v for k, v in step.document.items() if k in CHECK_MEMBERS}  # a QualityCheck's baselines
    for ref in ex.references([step.arguments, checked]):
        ups |= _reference(step, ref, steps, parameters)
    ups.discard(step.name)
    return frozenset(ups)


def _reference(step: Step, ref: str, steps: Mapping[str, Step], parameters: Mapping[str, Parameter]) -> set[str]:
    where = f"Step '{step.name}': Arguments reference '{ref}'"
    try:
        space, name, path = ex.split_get(ref)
    except ex.ExpressionError as exc:
        raise InvalidDefinition(f"{where}: {exc}.") from exc
    if space == "Parameters":
        if name not in parameters:
            raise InvalidDefinition(f"{where}, but the pipeline has no parameter '{name}'.")
        return set()
    if space == "Execution":
        if name not in ex.EXECUTION_VARIABLES:
            raise InvalidDefinition(f"{where}: no such execution variable ({', '.join(ex.EXECUTION_VARIABLES)}).")
        return set()
    if space != "Steps":
        raise InvalidDefinition(f"{where}: a reference starts with Parameters, Execution or Steps.")
    if name not in steps:
        raise InvalidDefinition(f"{where}, but the pipeline has no step '{name}'.")
    if name == step.name:
        raise InvalidDefinition(f"{where}: a step cannot read its own properties.")
    if path and path[0] == "PropertyFiles":
        declared = [p.get("PropertyFileName") for p in steps[name].property_files]
        if len(path) != 2 or path[1] not in declared:
            raise InvalidDefinition(f"{where}, but step '{name}' declares no such property file ({declared}).")
    if steps[name].type in ("Condition", "Fail"):
        raise InvalidDefinition(f"{where}, but a {steps[name].type} step has no properties.")
    return {name}


def _order(upstream: Mapping[str, frozenset[str]]) -> tuple[str, ...]:
    """A topological order (Kahn); a cycle is refused naming its steps."""
    remaining = {n: set(u) for n, u in upstream.items()}
    order: list[str] = []
    while remaining:
        ready = sorted(n for n, u in remaining.items() if not u)
        if not ready:
            raise InvalidDefinition(
                f"The steps {', '.join(sorted(remaining))} depend on each other in a cycle; a pipeline must be a DAG."
            )
        for n in ready:
            order.append(n)
            del remaining[n]
        for u in remaining.values():
            u.difference_update(ready)
    return tuple(order)


def _static_type(value: Any, parameters: Mapping[str, Parameter]) -> str | None:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int | float):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, dict) and isinstance(value.get("Get"), str) and len(value) == 1:
        try:
            space, name, _ = ex.split_get(value["Get"])
        except ex.ExpressionError:
            return None
        if space == "Parameters" and name in parameters:
            kind = parameters[name].type
            return "Number" if kind in ("Integer", "Float") else kind
    if isinstance(value, dict) and "Std:Join" in value:
        return "String"
    return None


def _check_conditions(step: Step, parameters: Mapping[str, Parameter]) -> None:
    def check(cond: Any, where: str) -> None:
        if not isinstance(cond, dict) or cond.get("Type") not in ex.CONDITION_TYPES:
            kind = cond.get("Type") if isinstance(cond, dict) else cond
            raise InvalidDefinition(
                f"Step '{step.name}': {where}.Type {kind!r} is not one of {', '.join(ex.CONDITION_TYPES)}."
            )
        kind = cond["Type"]
        if kind == "Not":
            check(cond.get("Condition"), f"{where}.Condition")
            return
        if kind == "Or":
            for i, c in enumerate(cond.get("Conditions") or []):
                check(c, f"{where}.Conditions[{i}]")
            return
        pairs = (
            [("QueryValue", cond.get("QueryValue"), f"Values[{i}]", v) for i, v in enumerate(cond.get("Values") or [])]
            if kind == "In"
            else [("LeftValue", cond.get("LeftValue"), "RightValue", cond.get("RightValue"))]
        )
        for lname, left, rname, right in pairs:
            lt, rt = _static_type(left, parameters), _static_type(right, parameters)
            if lt and rt and lt != rt:
                raise InvalidDefinition(
                    f"Step '{step.name}': {where} ({kind}) compares {lname} of type {lt} with {rname} of type {rt}; "
                    "compare values of one type."
                )

    for i, cond in enumerate(step.arguments.get("Conditions") or []):
        check(cond, f"Conditions[{i}]")


# --- scheduling --------------------------------------------------------------------------------------


def plan(
    definition: Definition, statuses: Mapping[str, str], outcomes: Mapping[str, bool], selected: Iterable[str] = ()
) -> tuple[list[str], set[str]]:
    """(steps that may start now in topological order, steps that will never run).

    A step never runs when it sits in the branch a condition did not take, or when a step it
    depends on never runs, failed or was stopped.
    """
    never: set[str] = set()
    ready: list[str] = []
    for name in definition.order:
        step = definition.steps[name]
        if step.condition is not None and step.condition in outcomes and outcomes[step.condition] != step.branch:
            never.add(name)
            continue
        ups = definition.upstream[name]
        if any(u in never or statuses.get(u) in (FAILED, STOPPED) for u in ups):
            never.add(name)
            continue
        if name not in statuses and all(statuses.get(u) == SUCCEEDED for u in ups):
            ready.append(name)
    return ready, never
