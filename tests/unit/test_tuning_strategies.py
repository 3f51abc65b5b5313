"""The tuning strategy layer: request -> spec validation, Optuna ask/tell, scaling, grid, Hyperband, the median rule."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from opensage.tuning import spec as tspec
from opensage.tuning import strategies

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def _request(strategy: str = "Bayesian", ranges: dict[str, Any] | None = None, **config: Any) -> dict[str, Any]:
    limits = {"MaxNumberOfTrainingJobs": 12, "MaxParallelTrainingJobs": 2}
    limits.update(config.pop("limits", {}))
    return {
        "HyperParameterTuningJobName": "tune",
        "HyperParameterTuningJobConfig": {
            "Strategy": strategy,
            "ResourceLimits": limits,
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
            "ParameterRanges": ranges
            or {
                "ContinuousParameterRanges": [
                    {"Name": "eta", "MinValue": "0.001", "MaxValue": "1", "ScalingType": "Logarithmic"},
                    {"Name": "subsample", "MinValue": "0.5", "MaxValue": "0.999", "ScalingType": "ReverseLogarithmic"},
                ],
                "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "1", "MaxValue": "8"}],
                "CategoricalParameterRanges": [{"Name": "booster", "Values": ["gbtree", "dart"]}],
            },
            **config,
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": {"objective": "binary:logistic", "num_round": "10"},
            "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
            "RoleArn": "arn:aws:iam::000000000000:role/R",
            "OutputDataConfig": {"S3OutputPath": "s3://b/out"},
            "HyperParameterTuningResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large"},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        },
    }


def test_ask_tell_maps_ranges_and_scaling(tmp_path: Path) -> None:
    spec = tspec.from_request(_request(RandomSeed=7))
    assert spec.definitions[0].static[tspec.OBJECTIVE_HP] == "validation:auc"
    search = strategies.Search(spec, tmp_path / "study.journal")
    for _ in range(12):
        s = search.ask()
        hps = s.hyperparameters
        assert 0.001 <= float(hps["eta"]) <= 1
        assert 0.5 <= float(hps["subsample"]) <= 0.999
        assert hps["max_depth"].isdigit() and 1 <= int(hps["max_depth"]) <= 8
        assert hps["booster"] in ("gbtree", "dart")
        search.tell(s.number, float(hps["eta"]))
    best = search.study.best_trial
    assert best.params["eta"] == max(t.params["eta"] for t in search.study.trials)
    # ReverseLogarithmic is sampled as 1 - x on a log scale
    assert math.isclose(float(strategies.to_hyperparameter(spec.definitions[0].ranges[1], 0.1)), 0.9)
    # durable: a new Search on the same file sees every trial, and does not repeat their suggestions
    again = strategies.Search(spec, tmp_path / "study.journal")
    assert len(again.study.trials) == 12
    assert again.ask().hyperparameters["eta"] not in {t.params["eta"] for t in search.study.trials}
    # the same RandomSeed gives the same trials
    other = strategies.Search(spec, tmp_path / "other.journal")
    assert [other.ask().hyperparameters for _ in range(3)] == [
        {r.name: strategies.to_hyperparameter(r, t.params[r.name]) for r in spec.definitions[0].ranges}
        for t in search.study.trials[:3]
    ]


def test_log_scale_is_used_for_auto_over_orders_of_magnitude() -> None:
    ranges = {"ContinuousParameterRanges": [{"Name": "alpha", "MinValue": "0.0001", "MaxValue": "10"}]}
    spec = tspec.from_request(_request(ranges=ranges))
    assert spec.definitions[0].ranges[0].scaling == "Logarithmic"


def test_grid_size_and_every_point_once() -> None:
    ranges = {
        "CategoricalParameterRanges": [{"Name": "booster", "Values": ["gbtree", "dart", "gblinear"]}],
        "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "3"}],
    }
    request = _request("Grid", ranges, limits={"MaxNumberOfTrainingJobs": None})
    request["HyperParameterTuningJobConfig"]["ResourceLimits"].pop("MaxNumberOfTrainingJobs")
    spec = tspec.from_request(request)
    assert spec.max_jobs == 6
    search = strategies.Search(spec)
    seen = set()
    for _ in range(6):
        s = search.ask()
        seen.add((s.hyperparameters["booster"], s.hyperparameters["max_depth"]))
        search.tell(s.number, 0.5)
    assert len(seen) == 6 and search.waiting() == 0


def test_hyperband_prunes_a_bad_trial() -> None:
    spec = tspec.from_request(
        _request(
            "Hyperband",
            StrategyConfig={"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 9}},
            RandomSeed=1,
        )
    )
    assert (spec.min_resource, spec.max_resource) == (1, 9)
    search = strategies.Search(spec)
    pruned = 0
    for i in range(12):
        s = search.ask()
        good = i % 2 == 0
        curve = [0.5 + (0.05 if good else 0.001) * r for r in range(9)]
        stop = False
        for r in range(1, 10):
            stop = search.report(s.number, curve[:r])
            if stop:
                break
        pruned += stop
        search.tell(s.number, curve[-1], stopped_early=stop)
    assert pruned > 0


def test_median_rule() -> None:
    earlier = [{1: 0.6, 2: 0.7, 3: 0.8}, {1: 0.5, 2: 0.6}, {1: 0.7, 2: 0.8, 3: 0.9}]
    # running averages up to step 2: 0.65, 0.55, 0.75 -> median 0.65
    assert strategies.median_rule(0.6, 2, earlier, maximize=True)
    assert not strategies.median_rule(0.7, 2, earlier, maximize=True)
    assert strategies.median_rule(0.7, 2, earlier, maximize=False)
    assert not strategies.median_rule(0.1, 2, earlier[:2], maximize=True)  # too few earlier trials


def test_the_median_rule_stops_a_trial_from_the_series_of_earlier_ones(tmp_path: Path) -> None:
    """Each report writes the whole series once and its newest round as the one intermediate value."""
    spec = tspec.from_request(_request(TrainingJobEarlyStoppingType="Auto", RandomSeed=2))
    search = strategies.Search(spec, tmp_path / "study.journal")
    for _ in range(3):  # earlier trials whose running average is about 0.8
        s = search.ask()
        assert not search.report(s.number, [0.8] * 200)
        search.tell(s.number, 0.8)
    s = search.ask()
    assert not search.report(s.number, [0.9] * 50)  # better than the median: it goes on
    assert search.report(s.number, [0.9] * 50 + [0.5] * 50)  # at round 100 it is worse: stop it
    trial = search.study.trials[s.number]
    assert list(trial.intermediate_values) == [50, 100]
    assert len(trial.system_attrs[strategies.SERIES_ATTR]) == 100
    assert strategies.series_of(search.study.trials[0]) == {r: 0.8 for r in range(1, 201)}


def test_warm_start_seeds_in_range_trials_only() -> None:
    spec = tspec.from_request(_request())
    search = strategies.Search(spec)
    inside = {"eta": "0.1", "subsample": "0.8", "max_depth": "4", "booster": "dart"}
    assert search.seed(None, inside, 0.9)
    assert not search.seed(None, {**inside, "max_depth": "20"}, 0.95)
    assert search.study.best_value == 0.9


def test_completion_rules() -> None:
    assert strategies.improving_streak([0.5, 0.6, 0.55, 0.58], maximize=True) == 2
    assert strategies.converged([0.8] * 5 + [0.801] * 6, maximize=True)
    assert not strategies.converged([0.5] * 6 + [0.6] * 5, maximize=True)
    assert strategies.reached(0.91, 0.9, maximize=True) and not strategies.reached(0.91, 0.9, maximize=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ranges": {"ContinuousParameterRanges": [{"Name": "eta", "MinValue": "1", "MaxValue": "0.1"}]}}, "MinValue"),
        (
            {
                "ranges": {
                    "ContinuousParameterRanges": [
                        {"Name": "alpha", "MinValue": "0", "MaxValue": "1", "ScalingType": "Logarithmic"}
                    ]
                }
            },
            "greater than 0",
        ),
        ({"metric": "validation:nope"}, "not one the algorithm emits"),
        ({"strategy": "Hyperband", "TrainingJobEarlyStoppingType": "Auto"}, "TrainingJobEarlyStoppingType to Off"),
        ({"limits": {"MaxParallelTrainingJobs": 500}}, "account limit"),
        ({"strategy": "Grid"}, "categorical and integer"),
        ({"strategy": "Hyperband"}, "MaxResource"),
    ],
)
def test_bad_input_is_refused(change: dict[str, Any], message: str) -> None:
    change = dict(change)
    metric = change.pop("metric", None)
    request = _request(change.pop("strategy", "Bayesian"), change.pop("ranges", None), **change)
    if metric:
        request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"] = metric
    with pytest.raises(tspec.InvalidTuningJob, match=message):
        tspec.from_request(request)


def test_a_trial_request_is_an_ordinary_training_job() -> None:
    request = _request()
    request["TrainingJobDefinition"]["HyperParameterTuningResourceConfig"] = {
        "InstanceConfigs": [{"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10}],
        "AllocationStrategy": "Prioritized",
    }
    definition = tspec.from_request(request).definitions[0]
    trial = definition.training_request("tune-001-0123abcd", {"eta": "0.1"})
    assert trial["ResourceConfig"] == {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10}
    assert trial["HyperParameters"] == {
        "objective": "binary:logistic",
        "num_round": "10",
        "_tuning_objective_metric": "validation:auc",
        "eta": "0.1",
    }
    assert trial["OutputDataConfig"] == {"KmsKeyId": "", "S3OutputPath": "s3://b/out"}
    shown = definition.document
    assert shown["ResourceConfig"]["InstanceType"] == "ml.c5.xlarge"  # Describe shows it: attach() reads it
    assert any(m["Name"] == "validation:auc" for m in shown["AlgorithmSpecification"]["MetricDefinitions"])


def test_script_mode_objective_is_json_encoded_as_the_sdk_expects() -> None:
    request = _request()
    definition = request["TrainingJobDefinition"]
    definition["AlgorithmSpecification"] = {
        "TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
        "TrainingInputMode": "File",
        "MetricDefinitions": [{"Name": "validation:auc", "Regex": "auc: ([0-9.]+)"}],
    }
    definition["StaticHyperParameters"] = {"sagemaker_program": '"train.py"'}
    spec = tspec.from_request(request)
    assert spec.definitions[0].static[tspec.OBJECTIVE_HP] == '"validation:auc"'
    del definition["AlgorithmSpecification"]["MetricDefinitions"]
    with pytest.raises(tspec.InvalidTuningJob, match="MetricDefinitions"):
        tspec.from_request(request)
