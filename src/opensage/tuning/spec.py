"""Typed tuning-job specs, built once from a validated CreateHyperParameterTuningJob request.

:func:`from_request` checks what botocore's model cannot (ranges in order, log scales over positive
values, an objective the algorithm emits, Hyperband without early stopping, the account's limits)
and raises :class:`InvalidTuningJob` with the message AWS's ValidationException would carry. A
:class:`Definition` is one algorithm to tune (``TrainingJobDefinition`` or each of
``TrainingJobDefinitions``); :meth:`Definition.training_request` is the CreateTrainingJob request of
one trial, from which the training engine's spec is built.
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opensage.errors import OpenSageError
from opensage.images import registry
from opensage.jobs.specs import jsonable
from opensage.timestamps import epoch

OBJECTIVE_HP = "_tuning_objective_metric"
MAX_PARALLEL_TRAINING_JOBS = 100  # the account limit ("Maximum number of concurrent training jobs per tuning job")
MAX_TRAINING_JOBS = 750  # the account limit ("Maximum number of training jobs per tuning job")
MAX_GRID = 750
EPOCH_HPS = ("epochs", "numepochs", "n-epochs", "n_epochs", "num_epochs")  # Hyperband's MaxResource fallback
SCRIPT_MODE_HP = "sagemaker_program"


class InvalidTuningJob(OpenSageError):
    """The request cannot start a tuning job; the message says what to fix (a ValidationException)."""


@dataclass(frozen=True, slots=True)
class ParamRange:
    """One tuned hyperparameter: Continuous, Integer or Categorical."""

    name: str
    kind: str  # Continuous | Integer | Categorical
    low: float = 0.0
    high: float = 0.0
    scaling: str = "Linear"  # Linear | Logarithmic | ReverseLogarithmic (Auto resolved at parse time)
    values: tuple[str, ...] = ()

    def grid_values(self) -> list[str]:
        if self.kind == "Categorical":
            return list(self.values)
        return [str(v) for v in range(int(self.low), int(self.high) + 1)]


@dataclass(frozen=True, slots=True)
class Definition:
    """One algorithm of a tuning job: its training job template, ranges and objective."""

    name: str | None  # DefinitionName (multi-algorithm jobs), else None
    metric: str
    maximize: bool
    ranges: tuple[ParamRange, ...]
    static: Mapping[str, str]  # StaticHyperParameters, with _tuning_objective_metric added
    document: Mapping[str, Any]  # the definition as given (plus _tuning_objective_metric), for Describe

    def training_request(self, job_name: str, tuned: Mapping[str, str]) -> dict[str, Any]:
        """The CreateTrainingJob request of one trial with hyperparameters ``tuned``."""
        d = self.document
        algo = d["AlgorithmSpecification"]
        resources = resource_config(d)
        request: dict[str, Any] = {
            "TrainingJobName": job_name,
            "AlgorithmSpecification": {
                k: v for k, v in algo.items() if k in ("TrainingImage", "TrainingInputMode", "MetricDefinitions")
            },
            "RoleArn": d["RoleArn"],
            "OutputDataConfig": {"KmsKeyId": "", **d["OutputDataConfig"]},  # as AWS describes trials; attach() reads it
            "ResourceConfig": resources,
            "StoppingCondition": d["StoppingCondition"],
            "HyperParameters": {**self.static, **tuned},
        }
        for key in (
            "InputDataConfig",
            "VpcConfig",
            "EnableNetworkIsolation",
            "EnableInterContainerTrafficEncryption",
            "EnableManagedSpotTraining",
            "CheckpointConfig",
            "RetryStrategy",
            "Environment",
        ):
            if d.get(key) is not None:
                request[key] = d[key]
        return request


@dataclass(frozen=True, slots=True)
class TuningJobSpec:
    """A tuning job as CreateHyperParameterTuningJob asks for it."""

    name: str
    strategy: str  # Bayesian | Random | Grid | Hyperband
    max_jobs: int
    max_parallel: int
    max_runtime_s: int | None
    early_stopping: bool  # TrainingJobEarlyStoppingType Auto
    seed: int | None
    min_resource: int
    max_resource: int
    target: float | None  # TuningJobCompletionCriteria.TargetObjectiveMetricValue
    not_improving: int | None  # BestObjectiveNotImproving.MaxNumberOfTrainingJobsNotImproving
    convergence: bool  # ConvergenceDetected.CompleteOnConvergence Enabled
    definitions: tuple[Definition, ...]
    parents: tuple[str, ...]  # WarmStartConfig's parent tuning jobs
    warm_start_type: str | None
    document: Mapping[str, Any]

    @property
    def maximize(self) -> bool:
        return self.definitions[0].maximize

    def definition(self, name: Any) -> Definition:
        return next((d for d in self.definitions if d.name == name), self.definitions[0])

    def initial_description(self, arn: str, now: dt.datetime) -> dict[str, Any]:
        """DescribeHyperParameterTuningJob right after Create: the request plus what the platform computes.

        ``_tuning_objective_metric`` is in each definition's StaticHyperParameters (the SDK's ``attach()``
        expects it there), Grid's MaxNumberOfTrainingJobs is the grid's size; ``_Trials`` (what the job
        knows of each of its training jobs) and ``_Sequence`` (the last job number) are the controller's.
        """
        data = copy.deepcopy(dict(self.document))
        config = data["HyperParameterTuningJobConfig"]
        config["ResourceLimits"]["MaxNumberOfTrainingJobs"] = self.max_jobs
        config.setdefault("TrainingJobEarlyStoppingType", "Off")
        if data.get("TrainingJobDefinition"):
            data["TrainingJobDefinition"] = copy.deepcopy(dict(self.definitions[0].document))
        else:
            data["TrainingJobDefinitions"] = [copy.deepcopy(dict(d.document)) for d in self.definitions]
        zero = {"Completed": 0, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0}
        data.update(
            {
                "HyperParameterTuningJobArn": arn,
                "HyperParameterTuningJobStatus": "InProgress",
                "CreationTime": epoch(now),
                "LastModifiedTime": epoch(now),
                "TrainingJobStatusCounters": zero,
                "ObjectiveStatusCounters": {"Succeeded": 0, "Pending": 0, "Failed": 0},
                "_Trials": {},
                "_Sequence": 0,
            }
        )
        return data


def from_request(request: Mapping[str, Any]) -> TuningJobSpec:
    """The spec of a request that passed the model's validation.

    Raises:
        InvalidTuningJob: what AWS refuses with a ValidationException.
    """
    document = jsonable({k: v for k, v in request.items() if k != "Tags"})
    config = document["HyperParameterTuningJobConfig"]
    given = [document["TrainingJobDefinition"]] if document.get("TrainingJobDefinition") else []
    if given and document.get("TrainingJobDefinitions"):
        raise InvalidTuningJob("Give either TrainingJobDefinition or TrainingJobDefinitions, not both.")
    given = given or list(document.get("TrainingJobDefinitions") or [])
    if not given:
        raise InvalidTuningJob("A tuning job needs a TrainingJobDefinition (or TrainingJobDefinitions).")
    multi = bool(document.get("TrainingJobDefinitions"))
    definitions = tuple(_definition(d, config, multi) for d in given)
    if multi and len({d.name for d in definitions}) != len(definitions):
        raise InvalidTuningJob("Each of TrainingJobDefinitions needs a DefinitionName of its own.")
    if len({d.maximize for d in definitions}) > 1:
        raise InvalidTuningJob("Every TrainingJobDefinition's TuningObjective must have the same Type.")
    strategy = config["Strategy"]
    limits = config["ResourceLimits"]
    early = config.get("TrainingJobEarlyStoppingType", "Off") == "Auto"
    if strategy == "Hyperband" and early:
        raise InvalidTuningJob(
            "The Hyperband strategy stops training jobs itself: set TrainingJobEarlyStoppingType to Off."
        )
    if strategy == "Grid":
        max_jobs = _grid_size(definitions, limits.get("MaxNumberOfTrainingJobs"))
    else:
        if config.get("StrategyConfig") is not None and strategy != "Hyperband":
            raise InvalidTuningJob("StrategyConfig applies to the Hyperband strategy only.")
        max_jobs = limits.get("MaxNumberOfTrainingJobs") or 0
        if not max_jobs:
            raise InvalidTuningJob(f"ResourceLimits.MaxNumberOfTrainingJobs is required for the {strategy} strategy.")
    parallel = limits["MaxParallelTrainingJobs"]
    if parallel > MAX_PARALLEL_TRAINING_JOBS:
        raise InvalidTuningJob(
            f"MaxParallelTrainingJobs {parallel} is above the account limit of {MAX_PARALLEL_TRAINING_JOBS} "
            "concurrent training jobs per tuning job; lower it."
        )
    if max_jobs > MAX_TRAINING_JOBS:
        raise InvalidTuningJob(
            f"MaxNumberOfTrainingJobs {max_jobs} is above the account limit of {MAX_TRAINING_JOBS}; lower it."
        )
    min_res, max_res = _hyperband(config, definitions) if strategy == "Hyperband" else (1, 1)
    criteria = config.get("TuningJobCompletionCriteria") or {}
    warm = document.get("WarmStartConfig") or {}
    return TuningJobSpec(
        name=document["HyperParameterTuningJobName"],
        strategy=strategy,
        max_jobs=max_jobs,
        max_parallel=min(parallel, max_jobs),
        max_runtime_s=limits.get("MaxRuntimeInSeconds"),
        early_stopping=early,
        seed=config.get("RandomSeed"),
        min_resource=min_res,
        max_resource=max_res,
        target=criteria.get("TargetObjectiveMetricValue"),
        not_improving=(criteria.get("BestObjectiveNotImproving") or {}).get("MaxNumberOfTrainingJobsNotImproving"),
        convergence=(criteria.get("ConvergenceDetected") or {}).get("CompleteOnConvergence") == "Enabled",
        definitions=definitions,
        parents=tuple(p["HyperParameterTuningJobName"] for p in warm.get("ParentHyperParameterTuningJobs") or []),
        warm_start_type=warm.get("WarmStartType"),
        document=document,
    )


def _definition(d: dict[str, Any], config: Mapping[str, Any], multi: bool) -> Definition:
    label = f"TrainingJobDefinition '{d.get('DefinitionName')}'" if multi else "TrainingJobDefinition"
    objective = d.get("TuningObjective") if multi else config.get("HyperParameterTuningJobObjective")
    objective = objective or config.get("HyperParameterTuningJobObjective")
    if not objective:
        raise InvalidTuningJob(f"{label} needs a TuningObjective (or the config's HyperParameterTuningJobObjective).")
    if multi and not d.get("DefinitionName"):
        raise InvalidTuningJob("Each of TrainingJobDefinitions needs a DefinitionName.")
    ranges_doc = (d.get("HyperParameterRanges") if multi else config.get("ParameterRanges")) or {}
    ranges_doc = ranges_doc or config.get("ParameterRanges") or {}
    algo = d["AlgorithmSpecification"]
    image_uri = algo.get("TrainingImage")
    if not image_uri:
        raise InvalidTuningJob(
            f"{label}'s AlgorithmSpecification must name a TrainingImage; OpenSage has no marketplace algorithms."
        )
    if not d["OutputDataConfig"]["S3OutputPath"].startswith("s3://"):
        raise InvalidTuningJob(f"{label}'s OutputDataConfig.S3OutputPath must be an S3 URI (s3://bucket/prefix).")
    static = {k: str(v) for k, v in (d.get("StaticHyperParameters") or {}).items() if k != OBJECTIVE_HP}
    ranges = _ranges(ranges_doc, label)
    if not ranges:
        raise InvalidTuningJob(f"{label} has no ParameterRanges: give at least one hyperparameter to tune.")
    clash = sorted({r.name for r in ranges} & set(static))
    if clash:
        raise InvalidTuningJob(f"Hyperparameters {clash} are both static and tuned; remove them from one of the two.")
    metric = objective["MetricName"]
    _check_metric(metric, image_uri, algo.get("MetricDefinitions") or [], static, label)
    framework = SCRIPT_MODE_HP in static
    static[OBJECTIVE_HP] = json.dumps(metric) if framework else metric  # the SDK's attach() expects it here
    # Describe shows ResourceConfig and the algorithm's MetricDefinitions too: the SDK's attach() reads both
    image = registry.resolve(image_uri)
    shown = algo.get("MetricDefinitions") or (image.metric_definitions(static) if image is not None else [])
    document = {
        **d,
        "AlgorithmSpecification": {**algo, "MetricDefinitions": shown},
        "StaticHyperParameters": static,
        "ResourceConfig": d.get("ResourceConfig") or resource_config(d),
    }
    return Definition(d.get("DefinitionName"), metric, objective["Type"] == "Maximize", ranges, static, document)


def resource_config(d: Mapping[str, Any]) -> dict[str, Any]:
    """The ResourceConfig of a definition's trials (from HyperParameterTuningResourceConfig, as the SDK sends)."""
    resources = dict(d.get("HyperParameterTuningResourceConfig") or d.get("ResourceConfig") or {})
    resources.pop("AllocationStrategy", None)
    choices = resources.pop("InstanceConfigs", None) or []
    if choices and not resources.get("InstanceType"):  # a list to choose from: OpenSage takes the first
        resources.update(choices[0])
    resources.setdefault("InstanceCount", 1)
    resources.setdefault("InstanceType", "ml.m5.large")
    resources.setdefault("VolumeSizeInGB", 30)
    return resources


def _check_metric(metric: str, image_uri: str, definitions: list[dict], static: dict[str, str], label: str) -> None:
    image = registry.resolve(image_uri)
    if definitions:
        names = [m["Name"] for m in definitions]
    elif image is not None and not image.script_mode(static) and image.algorithm:
        module: Any = importlib.import_module(image.algorithm)
        names = list(getattr(module, "tuning_metric_names", lambda: [])()) or [
            m["Name"] for m in image.metric_definitions(static)
        ]
    else:
        raise InvalidTuningJob(
            f"{label}: the objective metric '{metric}' needs a MetricDefinitions entry of that name (a regex over "
            "the training log) in AlgorithmSpecification.MetricDefinitions."
        )
    if metric not in names:
        shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
        raise InvalidTuningJob(
            f"{label}: the objective metric '{metric}' is not one the algorithm emits; choose one of: {shown}."
        )


def _ranges(doc: Mapping[str, Any], label: str) -> tuple[ParamRange, ...]:
    out: list[ParamRange] = []
    for r in doc.get("ContinuousParameterRanges") or []:
        out.append(_numeric(r, "Continuous", label))
    for r in doc.get("IntegerParameterRanges") or []:
        out.append(_numeric(r, "Integer", label))
    for r in doc.get("CategoricalParameterRanges") or []:
        if not r["Values"]:
            raise InvalidTuningJob(f"Categorical hyperparameter '{r['Name']}' needs at least one value.")
        out.append(ParamRange(r["Name"], "Categorical", values=tuple(dict.fromkeys(r["Values"]))))
    for r in doc.get("AutoParameters") or []:
        out.append(_auto(r))
    names = [r.name for r in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidTuningJob(f"{label}: hyperparameters {dupes} are given more than one range.")
    return tuple(out)


def _numeric(r: Mapping[str, Any], kind: str, label: str) -> ParamRange:
    name = r["Name"]
    try:
        low, high = float(r["MinValue"]), float(r["MaxValue"])
    except ValueError as exc:
        raise InvalidTuningJob(f"The range of '{name}' must have numeric MinValue and MaxValue.") from exc
    if kind == "Integer" and (low != int(low) or high != int(high)):
        raise InvalidTuningJob(f"Integer hyperparameter '{name}' needs whole-number MinValue and MaxValue.")
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise InvalidTuningJob(
            f"The MinValue ({r['MinValue']}) of hyperparameter '{name}' must be less than or equal to its MaxValue "
            f"({r['MaxValue']})."
        )
    scaling = r.get("ScalingType", "Auto")
    if scaling == "Auto":
        scaling = "Logarithmic" if low > 0 and high / low >= 100 else "Linear"
    if scaling == "Logarithmic" and low <= 0:
        raise InvalidTuningJob(
            f"Hyperparameter '{name}' has ScalingType Logarithmic, which needs MinValue greater than 0 "
            f"(it is {r['MinValue']}); raise MinValue or use Linear."
        )
    if scaling == "ReverseLogarithmic":
        if kind == "Integer":
            raise InvalidTuningJob(f"ReverseLogarithmic scaling applies to continuous ranges only, not to '{name}'.")
        if low < 0 or high >= 1:
            raise InvalidTuningJob(
                f"Hyperparameter '{name}' has ScalingType ReverseLogarithmic, which needs 0 <= MinValue and "
                f"MaxValue < 1 (they are {r['MinValue']} and {r['MaxValue']})."
            )
    return ParamRange(name, kind, low, high, scaling)


def _auto(r: Mapping[str, Any]) -> ParamRange:
    """An AutoParameter: a range around its ValueHint (a tenth to ten times it, log-scaled)."""
    hint = r["ValueHint"]
    try:
        value = float(hint)
    except ValueError as exc:
        raise InvalidTuningJob(
            f"AutoParameter '{r['Name']}' has ValueHint '{hint}'; OpenSage infers ranges from numeric hints only. "
            "Give it a CategoricalParameterRanges entry instead."
        ) from exc
    if value <= 0:
        return ParamRange(r["Name"], "Continuous", value - 1.0, value + 1.0, "Linear")
    if value == int(value) and "." not in hint and "e" not in hint.lower():
        return ParamRange(r["Name"], "Integer", max(1, int(value) // 10), int(value) * 10, "Logarithmic")
    return ParamRange(r["Name"], "Continuous", value / 10, value * 10, "Logarithmic")


def grid_points(definitions: tuple[Definition, ...]) -> list[tuple[str | None, dict[str, str]]]:
    """Every point of a Grid job, in order: (definition name, hyperparameters)."""
    import itertools

    points: list[tuple[str | None, dict[str, str]]] = []
    for d in definitions:
        names = [r.name for r in d.ranges]
        for combo in itertools.product(*(r.grid_values() for r in d.ranges)):
            points.append((d.name, dict(zip(names, combo, strict=True))))
    return points


def _grid_size(definitions: tuple[Definition, ...], given: int | None) -> int:
    for d in definitions:
        continuous = [r.name for r in d.ranges if r.kind == "Continuous"]
        if continuous:
            raise InvalidTuningJob(
                f"The Grid strategy searches categorical and integer hyperparameters only; {continuous} are "
                "continuous. Give them CategoricalParameterRanges, or use another strategy."
            )
    size = sum(math.prod(len(r.grid_values()) for r in d.ranges) for d in definitions)
    if size > MAX_GRID:
        raise InvalidTuningJob(f"The grid has {size} points, more than the {MAX_GRID} a tuning job may train.")
    if given and given != size:
        raise InvalidTuningJob(
            f"For the Grid strategy, leave ResourceLimits.MaxNumberOfTrainingJobs out (it is the grid's size, {size}) "
            f"or set it to {size}; it is {given}."
        )
    return size


def _hyperband(config: Mapping[str, Any], definitions: tuple[Definition, ...]) -> tuple[int, int]:
    hb = ((config.get("StrategyConfig") or {}).get("HyperbandStrategyConfig")) or {}
    max_res = hb.get("MaxResource")
    if max_res is None:
        for d in definitions:
            found = next((d.static[k] for k in EPOCH_HPS if k in d.static), None)
            if found is not None and found.strip('"').isdigit():
                max_res = int(found.strip('"'))
                break
    if max_res is None:
        raise InvalidTuningJob(
            "The Hyperband strategy needs StrategyConfig.HyperbandStrategyConfig.MaxResource (the epochs or rounds "
            f"of a full trial), or a static hyperparameter named one of {list(EPOCH_HPS)}."
        )
    min_res = hb.get("MinResource", 1)
    if max_res > 20000:
        raise InvalidTuningJob(f"HyperbandStrategyConfig.MaxResource must be at most 20000; it is {max_res}.")
    if min_res > max_res:
        raise InvalidTuningJob(
            f"HyperbandStrategyConfig.MinResource ({min_res}) must not exceed MaxResource ({max_res})."
        )
    return int(min_res), int(max_res)
