"""Warm start: which parent tuning jobs a new one may start from, and the trials they hand it.

AWS's rules: up to five parents, each finished (Completed, Stopped or Failed), with the same
objective metric and type, and the same number of hyperparameters (static plus tuned).
``IdenticalDataAndAlgorithm`` also needs the same training image and the same input data;
``TransferLearning`` may change both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opensage.states import JobStatus
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.tuning import summaries
from opensage.tuning.spec import OBJECTIVE_HP, InvalidTuningJob, TuningJobSpec

KIND = "hyper-parameter-tuning-job"
TRAINING_KIND = "training-job"
FINISHED = (JobStatus.COMPLETED, JobStatus.STOPPED, JobStatus.FAILED)


def _definitions(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [doc["TrainingJobDefinition"]] if doc.get("TrainingJobDefinition") else list(doc["TrainingJobDefinitions"])


def _hp_count(definition: dict[str, Any], config: dict[str, Any]) -> int:
    static = [k for k in definition.get("StaticHyperParameters") or {} if k != OBJECTIVE_HP]
    ranges = definition.get("HyperParameterRanges") or config.get("ParameterRanges") or {}
    return len(static) + sum(len(v or []) for v in ranges.values())


def _kinds(definition: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    """Each tuned hyperparameter's kind (Continuous, Integer, Categorical)."""
    ranges = definition.get("HyperParameterRanges") or config.get("ParameterRanges") or {}
    kinds = {"ContinuousParameterRanges": "Continuous", "IntegerParameterRanges": "Integer"}
    return {r["Name"]: kinds.get(key, "Categorical") for key, items in ranges.items() for r in items or []}


def _data(definition: dict[str, Any]) -> list[str]:
    return sorted(c["DataSource"]["S3DataSource"]["S3Uri"] for c in definition.get("InputDataConfig") or [])


def check(store: SqlStore, spec: TuningJobSpec) -> list[Resource]:
    """The parent tuning jobs of ``spec`` (none without WarmStartConfig).

    Raises:
        InvalidTuningJob: a parent is missing, unfinished, or breaks the warm-start type's rules.
    """
    parents = []
    config = spec.document["HyperParameterTuningJobConfig"]
    mine = spec.definitions[0]
    for name in spec.parents:
        row = store.get_resource(KIND, name)
        if row is None:
            raise InvalidTuningJob(f"The parent tuning job '{name}' of WarmStartConfig does not exist.")
        if row.status not in FINISHED:
            raise InvalidTuningJob(
                f"The parent tuning job '{name}' is {row.status}; a warm start needs finished parents (Completed, "
                "Stopped or Failed)."
            )
        pconfig = row.data["HyperParameterTuningJobConfig"]
        pdef = _definitions(row.data)[0]
        objective = pdef.get("TuningObjective") or pconfig.get("HyperParameterTuningJobObjective") or {}
        if objective.get("MetricName") != mine.metric or (objective.get("Type") == "Maximize") != mine.maximize:
            raise InvalidTuningJob(
                f"The parent tuning job '{name}' optimises {objective.get('Type')} {objective.get('MetricName')}; a "
                f"warm start needs the same objective ({'Maximize' if mine.maximize else 'Minimize'} {mine.metric})."
            )
        if _hp_count(pdef, pconfig) != _hp_count(dict(mine.document), config):
            raise InvalidTuningJob(
                f"The parent tuning job '{name}' has {_hp_count(pdef, pconfig)} hyperparameters (static and tuned) "
                f"and this one {_hp_count(dict(mine.document), config)}; a warm start needs the same number."
            )
        mine_kinds, parent_kinds = _kinds(dict(mine.document), config), _kinds(pdef, pconfig)
        changed = sorted(k for k in mine_kinds.keys() & parent_kinds.keys() if mine_kinds[k] != parent_kinds[k])
        if changed:
            raise InvalidTuningJob(
                f"Hyperparameters {changed} are tuned with another type of range than in the parent tuning job "
                f"'{name}'; a warm start keeps each hyperparameter's type (continuous, integer, categorical)."
            )
        if spec.warm_start_type == "IdenticalDataAndAlgorithm":
            image = mine.document["AlgorithmSpecification"].get("TrainingImage")
            if pdef["AlgorithmSpecification"].get("TrainingImage") != image or _data(pdef) != _data(
                dict(mine.document)
            ):
                raise InvalidTuningJob(
                    f"WarmStartType IdenticalDataAndAlgorithm needs the parent tuning job '{name}''s training image "
                    "and input data; use TransferLearning to change them."
                )
        parents.append(row)
    return parents


def parent_trials(store: SqlStore, parents: Iterable[Resource]) -> list[dict[str, Any]]:
    """The summaries of every trial of ``parents`` (for seeding and OverallBestTrainingJob)."""
    out: list[dict[str, Any]] = []
    for parent in parents:
        children = store.list_resources(TRAINING_KIND, parent_arn=parent.arn)
        out.extend(summaries.summaries(children, parent.data.get("_Trials") or {}, parent.name))
    return out
