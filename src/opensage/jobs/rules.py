"""SageMaker Debugger and Profiler rules of a training job, evaluated over the metrics the job emitted.

SageMaker runs each rule of ``DebugRuleConfigurations`` / ``ProfilerRuleConfigurations`` as a
processing job over the tensors and system metrics its Debugger hook saves. OpenSage has no such
hook; it evaluates the built-in *loss* rules the tutorials use over the job's metric series (the
log lines its metric definitions match, one value per round or epoch), with the rules' own
parameters and defaults:

- ``LossNotDecreasing`` (``num_steps`` 10, ``diff_percent`` 0.1): the loss must fall by at least
  ``diff_percent`` percent over every ``num_steps`` steps.
- ``Overfit`` (``start_step`` 0, ``patience`` 1, ``ratio_threshold`` 0.1): the validation loss
  must not exceed the training loss by more than ``ratio_threshold`` of it for ``patience`` steps.
- ``Overtraining`` (``patience_train`` 5, ``patience_validation`` 10, ``delta`` 0.01): the
  training (validation) loss must improve by more than ``delta`` within every ``patience_train``
  (``patience_validation``) steps.

Any other rule (ClassImbalance, the ProfilerReport, a custom rule image, ...) needs the tensors or
system metrics the hook collects: its status is ``Error`` with ``StatusDetails`` saying so, and
the job's log says so too. Statuses are ``InProgress`` while the job runs, ``Stopped`` when the job
was stopped.

The policies are pure functions of the series (:func:`loss_not_decreasing`, :func:`overfit`,
:func:`overtraining`); :func:`conclude` maps a finished job's description and log to the fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

DEBUG_CONFIGS, DEBUG_STATUSES = "DebugRuleConfigurations", "DebugRuleEvaluationStatuses"
PROFILER_CONFIGS, PROFILER_STATUSES = "ProfilerRuleConfigurations", "ProfilerRuleEvaluationStatuses"
IN_PROGRESS, NO_ISSUES, ISSUES, ERROR, STOPPED = "InProgress", "NoIssuesFound", "IssuesFound", "Error", "Stopped"

# Metrics where higher is better are not losses (XGBoost's auc, aucpr, map, ndcg; accuracy, f1...).
_NOT_LOSS = re.compile(r"(auc|map|ndcg|acc|f1|precision|recall|r2|pre@)", re.IGNORECASE)
_LOSS = re.compile(r"(loss|rmse|rmsle|mae|mape|mse|error|nloglik|deviance|mphe|cox)", re.IGNORECASE)
_VALIDATION = re.compile(r"(validation|valid|val|eval|test)", re.IGNORECASE)
_TRAIN = re.compile(r"train", re.IGNORECASE)

Series = list[float]


def initial_statuses(request: Mapping[str, Any], now: float) -> dict[str, Any]:
    """``InProgress`` for every configured rule, as DescribeTrainingJob shows them while the job runs."""
    out: dict[str, Any] = {}
    for configs, statuses in ((DEBUG_CONFIGS, DEBUG_STATUSES), (PROFILER_CONFIGS, PROFILER_STATUSES)):
        rules = request.get(configs) or []
        if rules:
            out[statuses] = [_status(r["RuleConfigurationName"], IN_PROGRESS, None, now) for r in rules]
    return out


def _status(name: str, status: str, details: str | None, now: float) -> dict[str, Any]:
    out: dict[str, Any] = {"RuleConfigurationName": name, "RuleEvaluationStatus": status, "LastModifiedTime": now}
    if details:
        out["StatusDetails"] = details[:1024]
    return out


# --- the series -------------------------------------------------------------------------------------


Patterns = list[tuple[str, re.Pattern[str]]]


def compile_definitions(definitions: Iterable[Mapping[str, str]]) -> Patterns:
    """MetricDefinitions as (name, compiled regex) pairs."""
    return [(d["Name"], re.compile(d["Regex"])) for d in definitions]


def metric_series(lines: Iterable[str], definitions: Iterable[Mapping[str, str]] | Patterns) -> dict[str, Series]:
    """Every value each metric definition's regex matched, in log order (metrics with none left out)."""
    patterns = [d if isinstance(d, tuple) else (d["Name"], re.compile(d["Regex"])) for d in definitions]
    series: dict[str, Series] = {name: [] for name, _ in patterns}
    for line in lines:
        for name, regex in patterns:
            m = regex.search(line)
            if m and m.groups():
                try:
                    series[name].append(float(m.group(1)))
                except ValueError:
                    continue
    return {k: v for k, v in series.items() if v}


def losses(series: Mapping[str, Series]) -> tuple[Series | None, Series | None]:
    """The training and validation loss series among the metrics (the first of each that looks like a loss)."""
    train = validation = None
    for name in sorted(series):
        if _NOT_LOSS.search(name) or not _LOSS.search(name):
            continue
        if _VALIDATION.search(name):
            validation = validation or series[name]
        elif _TRAIN.search(name) or train is None:
            train = train or series[name]
    return train, validation


# --- the policies ------------------------------------------------------------------------------------


def loss_not_decreasing(loss: Series, num_steps: int = 10, diff_percent: float = 0.1) -> str | None:
    """Why the loss did not fall by ``diff_percent`` percent over some ``num_steps`` steps, or None."""
    for step in range(num_steps, len(loss), num_steps):
        before, now = loss[step - num_steps], loss[step]
        if now > before - abs(before) * diff_percent / 100:
            return (
                f"The loss went from {before:.6g} at step {step - num_steps} to {now:.6g} at step {step}: "
                f"less than the {diff_percent:g}% decrease over {num_steps} steps the rule asks for."
            )
    return None


def overfit(
    train: Series, validation: Series, start_step: int = 0, patience: int = 1, ratio_threshold: float = 0.1
) -> str | None:
    """Why the validation loss ran away from the training loss for ``patience`` steps, or None."""
    run = 0
    for step in range(start_step, min(len(train), len(validation))):
        t, v = train[step], validation[step]
        ratio = (v - t) / abs(t) if t else (float("inf") if v > t else 0.0)
        run = run + 1 if ratio > ratio_threshold else 0
        if run >= patience:
            return (
                f"At step {step} the validation loss {v:.6g} exceeds the training loss {t:.6g} by "
                f"{ratio:.1%} (threshold {ratio_threshold:.0%}) for {run} step(s)."
            )
    return None


def _stalled(loss: Series, patience: int, delta: float) -> str | None:
    best, since = float("inf"), 0
    for step, value in enumerate(loss):
        if value < best - delta:
            best, since = value, 0
        else:
            since += 1
            if since >= patience:
                return f"no improvement by more than {delta:g} for {patience} steps (step {step}, best {best:.6g})"
    return None


def overtraining(
    train: Series | None,
    validation: Series | None,
    patience_train: int = 5,
    patience_validation: int = 10,
    delta: float = 0.01,
) -> str | None:
    """Why training went on after the training or validation loss stopped improving, or None."""
    for label, loss, patience in (("training", train, patience_train), ("validation", validation, patience_validation)):
        why = _stalled(loss or [], patience, delta)
        if why:
            return f"The {label} loss stalled: {why}."
    return None


# --- a job's rules ------------------------------------------------------------------------------------


def _params(rule: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (rule.get("RuleParameters") or {}).items()}


def _number(params: Mapping[str, str], name: str, default: float, kind: Callable[[str], Any] = float) -> Any:
    try:
        return kind(params[name]) if name in params else default
    except ValueError as exc:
        raise ValueError(f"the rule parameter {name}={params[name]!r} is not a number") from exc


def _evaluate(rule: Mapping[str, Any], series: Mapping[str, Series]) -> tuple[str, str | None]:
    params = _params(rule)
    builtin = params.get("rule_to_invoke") or rule["RuleConfigurationName"]
    train, validation = losses(series)
    needs = "the job's log has no metric line with a training loss" if train is None else None
    try:
        if builtin == "LossNotDecreasing":
            if train is None and validation is None:
                return ERROR, f"LossNotDecreasing: {needs} (MetricDefinitions matched {sorted(series) or 'nothing'})."
            loss = train if train is not None else validation
            assert loss is not None
            why = loss_not_decreasing(loss, _number(params, "num_steps", 10, int), _number(params, "diff_percent", 0.1))
        elif builtin == "Overfit":
            if train is None or validation is None:
                return ERROR, "Overfit needs a training and a validation loss among the job's metrics."
            why = overfit(
                train,
                validation,
                _number(params, "start_step", 0, int),
                _number(params, "patience", 1, int),
                _number(params, "ratio_threshold", 0.1),
            )
        elif builtin == "Overtraining":
            if train is None and validation is None:
                return ERROR, f"Overtraining: {needs}."
            why = overtraining(
                train,
                validation,
                _number(params, "patience_train", 5, int),
                _number(params, "patience_validation", 10, int),
                _number(params, "delta", 0.01),
            )
        else:
            return ERROR, (
                f"OpenSage does not evaluate the {builtin} rule: it needs the tensors or system metrics that "
                "SageMaker Debugger's hook collects. OpenSage evaluates LossNotDecreasing, Overfit and "
                "Overtraining over the job's metrics."
            )
    except ValueError as exc:
        return ERROR, f"{builtin}: {exc}."
    return (ISSUES, why) if why else (NO_ISSUES, None)


def conclude(
    desc: Mapping[str, Any],
    lines: Iterable[str],
    definitions: Iterable[Mapping[str, str]],
    job_status: str,
    now: float,
) -> dict[str, Any]:
    """The rule statuses of a finished job (``Completed``, ``Failed`` or ``Stopped``)."""
    out: dict[str, Any] = {}
    kinds = ((DEBUG_CONFIGS, DEBUG_STATUSES), (PROFILER_CONFIGS, PROFILER_STATUSES))
    wanted = [(c, s) for c, s in kinds if desc.get(c)]
    if not wanted:
        return out
    series = metric_series(lines, definitions) if job_status != STOPPED else {}
    for configs, statuses in wanted:
        results = []
        for rule in desc[configs]:
            details: str | None
            if job_status == STOPPED:
                status, details = STOPPED, "The training job was stopped."
            else:
                status, details = _evaluate(rule, series)
            results.append(_status(rule["RuleConfigurationName"], status, details, now))
        out[statuses] = results
    return out


def finish_job(
    logs: Any, group: str, desc: Mapping[str, Any], definitions: Iterable[Mapping[str, str]], status: str, now: float
) -> dict[str, Any]:
    """A finished job's rule statuses, evaluated over its first instance's log, which also gets a line per rule."""
    if not (desc.get(DEBUG_CONFIGS) or desc.get(PROFILER_CONFIGS)):
        return {}
    name = desc["TrainingJobName"]
    streams = [s.name for s in logs.list_streams(group, prefix=f"{name}/algo-1-")]
    lines: list[str] = []
    for stream in streams:
        token = None
        while True:
            page = logs.get_events(group, stream, start_from_head=True, token=token)
            lines.extend(e.message for e in page.events)
            if not page.events:
                break
            token = page.next_forward_token
    out = conclude(desc, lines, definitions, status, now)
    if streams:
        logs.put_events(group, streams[-1], [(int(now * 1000), line) for line in log_lines(out)])
    return out


def log_lines(statuses: Mapping[str, Any]) -> list[str]:
    """What the job's log says about its rules."""
    return [
        f"Rule {s['RuleConfigurationName']}: {s['RuleEvaluationStatus']}"
        + (f" ({s['StatusDetails']})" if s.get("StatusDetails") else "")
        for key in (DEBUG_STATUSES, PROFILER_STATUSES)
        for s in statuses.get(key, [])
    ]
