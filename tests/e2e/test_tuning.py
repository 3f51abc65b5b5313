"""Hyperparameter tuning jobs end to end: boto3 and the SageMaker SDK v2's HyperparameterTuner.

Trials are kept tiny (a few hundred rows, a few rounds, two at a time) so the suite stays fast.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from helpers import RunningPlatform, running_platform

pytestmark = pytest.mark.slow
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
BUCKET = "tuning-tests"


def _csv(rows: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    y = (x[:, 0] + 0.7 * x[:, 1] + rng.normal(scale=0.8, size=rows) > 0).astype(int)
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack([y, x]), delimiter=",", fmt="%.5g")
    return buf.getvalue().encode()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("tuning")
    with running_platform(root / "home", root / "aws") as running:
        s3 = running.session().client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="data/train/train.csv", Body=_csv(300, 0))
        s3.put_object(Bucket=BUCKET, Key="data/validation/validation.csv", Body=_csv(150, 1))
        yield running


def _role(platform: RunningPlatform) -> str:
    account = platform.session().client("sts").get_caller_identity()["Account"]
    return f"arn:aws:iam::{account}:role/OpenSageExecutionRole"


def _channel(name: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "ContentType": "text/csv",
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/data/{name}"}},
    }


def _definition(platform: RunningPlatform, rounds: int = 5, **extra: Any) -> dict[str, Any]:
    return {
        "StaticHyperParameters": {"objective": "binary:logistic", "num_round": str(rounds)},
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": _role(platform),
        "InputDataConfig": [_channel("train"), _channel("validation")],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/out"},
        "HyperParameterTuningResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        **extra,
    }


def _config(strategy: str = "Bayesian", jobs: int | None = 4, **extra: Any) -> dict[str, Any]:
    limits: dict[str, Any] = {"MaxParallelTrainingJobs": 2}
    if jobs is not None:
        limits["MaxNumberOfTrainingJobs"] = jobs
    return {
        "Strategy": strategy,
        "ResourceLimits": limits,
        "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
        "ParameterRanges": {
            "ContinuousParameterRanges": [
                {"Name": "eta", "MinValue": "0.05", "MaxValue": "0.5", "ScalingType": "Logarithmic"}
            ],
            "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "1", "MaxValue": "5"}],
        },
        **extra,
    }


def _wait(sm: Any, name: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        desc = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        if desc["HyperParameterTuningJobStatus"] not in ("InProgress", "Stopping"):
            return desc
        assert time.monotonic() < deadline, desc
        time.sleep(0.5)


def _name(prefix: str = "tune") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_boto3_bayesian_tuning_job(platform: RunningPlatform) -> None:
    sm = platform.session().client("sagemaker")
    name = _name()
    arn = sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig=_config(RandomSeed=3),
        TrainingJobDefinition=_definition(platform),
    )["HyperParameterTuningJobArn"]
    assert arn.endswith(f":hyper-parameter-tuning-job/{name}")
    peak = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        desc = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        peak = max(peak, desc["TrainingJobStatusCounters"]["InProgress"])
        if desc["HyperParameterTuningJobStatus"] != "InProgress":
            break
        time.sleep(0.2)
    assert desc["HyperParameterTuningJobStatus"] == "Completed", desc.get("FailureReason")
    assert peak <= 2
    assert desc["TrainingJobStatusCounters"]["Completed"] == 4
    assert desc["ObjectiveStatusCounters"] == {"Succeeded": 4, "Pending": 0, "Failed": 0}
    assert desc["TrainingJobDefinition"]["StaticHyperParameters"]["_tuning_objective_metric"] == "validation:auc"
    assert desc["ConsumedResources"]["RuntimeInSeconds"] >= 0 and "HyperParameterTuningEndTime" in desc
    jobs = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name, SortBy="FinalObjectiveMetricValue", SortOrder="Descending"
    )["TrainingJobSummaries"]
    assert len(jobs) == 4
    values = [j["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for j in jobs]
    assert values == sorted(values, reverse=True)
    assert desc["BestTrainingJob"]["TrainingJobName"] == jobs[0]["TrainingJobName"]
    assert desc["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == max(values)
    child = sm.describe_training_job(TrainingJobName=jobs[0]["TrainingJobName"])
    assert child["TuningJobArn"] == arn
    assert child["HyperParameters"]["_tuning_objective_metric"] == "validation:auc"
    assert child["HyperParameters"]["eta"] == jobs[0]["TunedHyperParameters"]["eta"]
    assert 0.05 <= float(child["HyperParameters"]["eta"]) <= 0.5
    parts = child["TrainingJobName"].rsplit("-", 2)
    assert parts[0] == name and len(parts[1]) == 3 and len(parts[2]) == 8
    listed = sm.list_hyper_parameter_tuning_jobs(NameContains=name)["HyperParameterTuningJobSummaries"]
    assert [(s["HyperParameterTuningJobName"], s["Strategy"]) for s in listed] == [(name, "Bayesian")]
    page = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=name, MaxResults=3)
    assert len(page["TrainingJobSummaries"]) == 3 and page["NextToken"]
    sm.delete_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    with pytest.raises(ClientError):
        sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    assert sm.describe_training_job(TrainingJobName=child["TrainingJobName"])["TrainingJobStatus"] == "Completed"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"ParameterRanges": {"ContinuousParameterRanges": [{"Name": "eta", "MinValue": "0.5", "MaxValue": "0.1"}]}},
            "must be less than or equal to its MaxValue",
        ),
        (
            {
                "ParameterRanges": {
                    "ContinuousParameterRanges": [
                        {"Name": "alpha", "MinValue": "0", "MaxValue": "1", "ScalingType": "Logarithmic"}
                    ]
                }
            },
            "MinValue greater than 0",
        ),
        (
            {"HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:accuracy-ish"}},
            "not one the algorithm emits",
        ),
        ({"Strategy": "Hyperband", "TrainingJobEarlyStoppingType": "Auto"}, "TrainingJobEarlyStoppingType to Off"),
        ({"ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 101}}, "account limit"),
    ],
)
def test_bad_input_is_refused_and_nothing_starts(platform: RunningPlatform, change: dict, message: str) -> None:
    sm = platform.session().client("sagemaker")
    name = _name("bad")
    with pytest.raises(ClientError) as err:
        sm.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name,
            HyperParameterTuningJobConfig={**_config(), **change},
            TrainingJobDefinition=_definition(platform),
        )
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert message in err.value.response["Error"]["Message"]
    assert sm.list_hyper_parameter_tuning_jobs(NameContains=name)["HyperParameterTuningJobSummaries"] == []


def test_boto3_grid_computes_its_size(platform: RunningPlatform) -> None:
    sm = platform.session().client("sagemaker")
    name = _name("grid")
    config = _config("Grid", jobs=None)
    config["ParameterRanges"] = {
        "CategoricalParameterRanges": [{"Name": "eta", "Values": ["0.1", "0.3"]}],
        "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "3"}],
    }
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig=config,
        TrainingJobDefinition=_definition(platform),
    )
    desc = _wait(sm, name)
    assert desc["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 4
    assert desc["HyperParameterTuningJobStatus"] == "Completed"
    jobs = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)[
        "TrainingJobSummaries"
    ]
    points = {(j["TunedHyperParameters"]["eta"], j["TunedHyperParameters"]["max_depth"]) for j in jobs}
    assert points == {("0.1", "2"), ("0.1", "3"), ("0.3", "2"), ("0.3", "3")}


def test_early_stopping_auto_stops_poor_trials(platform: RunningPlatform) -> None:
    """The median rule stops trials whose logloss per round is worse than earlier trials' running averages."""
    sm = platform.session().client("sagemaker")
    name = _name("early")
    config = _config(jobs=8, RandomSeed=2, TrainingJobEarlyStoppingType="Auto")
    config["HyperParameterTuningJobObjective"] = {"Type": "Minimize", "MetricName": "validation:logloss"}
    config["ParameterRanges"] = {
        "ContinuousParameterRanges": [
            {"Name": "eta", "MinValue": "0.0001", "MaxValue": "0.3", "ScalingType": "Logarithmic"}
        ]
    }
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig=config,
        TrainingJobDefinition=_definition(platform, rounds=3000),
    )
    desc = _wait(sm, name, timeout=300)
    assert desc["HyperParameterTuningJobStatus"] == "Completed", desc.get("FailureReason")
    jobs = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)[
        "TrainingJobSummaries"
    ]
    stopped = [j for j in jobs if j["TrainingJobStatus"] == "Stopped"]
    assert stopped, [(j["TunedHyperParameters"], j["TrainingJobStatus"]) for j in jobs]
    assert all(j["ObjectiveStatus"] == "Succeeded" for j in stopped)  # stopped early, with the objective so far
    assert desc["TrainingJobStatusCounters"]["Stopped"] == len(stopped)
    assert desc["BestTrainingJob"]["TrainingJobStatus"] == "Completed"


def _rounds(platform: RunningPlatform, job: str) -> int:
    """How many rounds a trial's log shows (one evaluation line per round)."""
    logs = platform.session().client("logs")
    group = "/aws/sagemaker/TrainingJobs"
    stream = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=f"{job}/algo-1")["logStreams"][0]
    events = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"], startFromHead=True)
    return sum("validation-logloss" in e["message"] for e in events["events"])


def test_hyperband_stops_poor_trials_early(platform: RunningPlatform) -> None:
    """Hyperband, fed the built-in XGBoost's objective per round, stops the trials that fall behind at a rung."""
    sm = platform.session().client("sagemaker")
    name = _name("hyperband")
    rounds = 1000  # long enough for the trials behind at a rung to be stopped before they end
    config = _config(
        "Hyperband",
        jobs=6,
        RandomSeed=2,
        StrategyConfig={"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 9}},
    )
    config["HyperParameterTuningJobObjective"] = {"Type": "Minimize", "MetricName": "validation:logloss"}
    config["ParameterRanges"] = {
        "ContinuousParameterRanges": [
            {"Name": "eta", "MinValue": "0.0001", "MaxValue": "0.3", "ScalingType": "Logarithmic"}
        ]
    }
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig=config,
        TrainingJobDefinition=_definition(platform, rounds=rounds),
    )
    desc = _wait(sm, name, timeout=300)
    assert desc["HyperParameterTuningJobStatus"] == "Completed", desc.get("FailureReason")
    jobs = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)[
        "TrainingJobSummaries"
    ]
    stopped = [j for j in jobs if j["TrainingJobStatus"] == "Stopped"]
    assert stopped, [(j["TunedHyperParameters"], j["TrainingJobStatus"]) for j in jobs]
    assert desc["TrainingJobStatusCounters"]["Stopped"] == len(stopped)
    assert desc["TrainingJobStatusCounters"]["Completed"] == len(jobs) - len(stopped)
    # stopped early; one that Hyperband condemned as it wrote its last rounds may have them all
    assert any(_rounds(platform, job["TrainingJobName"]) < rounds for job in stopped)
    for job in stopped:
        assert job["ObjectiveStatus"] == "Succeeded"  # the objective it reached before it was stopped
        child = sm.describe_training_job(TrainingJobName=job["TrainingJobName"])
        assert child["ModelArtifacts"]["S3ModelArtifacts"].endswith("/output/model.tar.gz")
        assert "validation:logloss" in {m["MetricName"] for m in child["FinalMetricDataList"]}
    assert desc["BestTrainingJob"]["ObjectiveStatus"] == "Succeeded"


def test_completion_criteria_end_the_job_early(platform: RunningPlatform) -> None:
    sm = platform.session().client("sagemaker")
    name = _name("target")
    config = _config(jobs=10, TuningJobCompletionCriteria={"TargetObjectiveMetricValue": 0.5})
    config["ResourceLimits"]["MaxParallelTrainingJobs"] = 1
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig=config,
        TrainingJobDefinition=_definition(platform),
    )
    desc = _wait(sm, name)
    assert desc["HyperParameterTuningJobStatus"] == "Completed"
    assert desc["TrainingJobStatusCounters"]["Completed"] == 1  # the first trial reached the target
    assert desc["TuningJobCompletionDetails"]["NumberOfTrainingJobsObjectiveNotImproving"] == 0


def test_failing_trials_fail_the_job_with_their_reason(platform: RunningPlatform) -> None:
    sm = platform.session().client("sagemaker")
    name = _name("failing")
    definition = _definition(platform)
    definition["StaticHyperParameters"] = {**definition["StaticHyperParameters"], "objective": "no:such"}
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig=_config(jobs=6),
        TrainingJobDefinition=definition,
    )
    desc = _wait(sm, name)
    assert desc["HyperParameterTuningJobStatus"] == "Failed"
    assert "objective" in desc["FailureReason"], desc["FailureReason"]
    counters = desc["TrainingJobStatusCounters"]
    assert counters["NonRetryableError"] >= 3 and counters["Completed"] == 0 and counters["RetryableError"] == 0
    # a trial still running when the job failed is stopped, without an objective
    assert desc["ObjectiveStatusCounters"]["Failed"] == counters["NonRetryableError"] + counters["Stopped"]
    assert "BestTrainingJob" not in desc


def test_warm_start_rules(platform: RunningPlatform) -> None:
    sm = platform.session().client("sagemaker")
    parent = _name("parent")
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=parent,
        HyperParameterTuningJobConfig=_config(jobs=2),
        TrainingJobDefinition=_definition(platform),
    )

    def child(config: dict[str, Any], warm_type: str = "IdenticalDataAndAlgorithm", name: str = parent) -> str:
        with pytest.raises(ClientError) as err:
            sm.create_hyper_parameter_tuning_job(
                HyperParameterTuningJobName=_name("child"),
                HyperParameterTuningJobConfig=config,
                TrainingJobDefinition=_definition(platform),
                WarmStartConfig={
                    "WarmStartType": warm_type,
                    "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": name}],
                },
            )
        assert err.value.response["Error"]["Code"] == "ValidationException"
        return str(err.value.response["Error"]["Message"])

    assert "finished parents" in child(_config())  # still running
    _wait(sm, parent)
    assert "does not exist" in child(_config(), name="no-such-parent")
    other = _config(HyperParameterTuningJobObjective={"Type": "Minimize", "MetricName": "validation:logloss"})
    assert "same objective" in child(other)
    retyped = _config()
    retyped["ParameterRanges"] = {
        "ContinuousParameterRanges": retyped["ParameterRanges"]["ContinuousParameterRanges"],
        "CategoricalParameterRanges": [{"Name": "max_depth", "Values": ["2", "4"]}],
    }
    assert "another type of range" in child(retyped, "TransferLearning")


def test_two_algorithms_and_stop_in_the_middle(platform: RunningPlatform) -> None:
    sm = platform.session().client("sagemaker")
    name = _name("multi")
    config = _config(jobs=6)
    ranges = config.pop("ParameterRanges")
    objective = config.pop("HyperParameterTuningJobObjective")
    definitions = [
        {
            **_definition(platform, rounds=400),
            "DefinitionName": "deep",
            "TuningObjective": objective,
            "HyperParameterRanges": ranges,
        },
        {
            **_definition(platform, rounds=400),
            "DefinitionName": "linear",
            "TuningObjective": objective,
            "HyperParameterRanges": {
                "CategoricalParameterRanges": [{"Name": "booster", "Values": ["gblinear"]}],
                "ContinuousParameterRanges": [{"Name": "lambda", "MinValue": "0.1", "MaxValue": "2"}],
            },
        },
    ]
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name, HyperParameterTuningJobConfig=config, TrainingJobDefinitions=definitions
    )
    deadline = time.monotonic() + 60
    while (
        sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)["TrainingJobStatusCounters"][
            "InProgress"
        ]
        == 0
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    desc = _wait(sm, name)
    assert desc["HyperParameterTuningJobStatus"] == "Stopped"
    jobs = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)[
        "TrainingJobSummaries"
    ]
    assert jobs and all(j["TrainingJobStatus"] in ("Completed", "Stopped") for j in jobs)
    assert {j["TrainingJobDefinitionName"] for j in jobs} <= {"deep", "linear"}
    assert desc["TrainingJobStatusCounters"]["NonRetryableError"] == 0
    assert [d["DefinitionName"] for d in desc["TrainingJobDefinitions"]] == ["deep", "linear"]
    with pytest.raises(ClientError, match="only an InProgress job can be stopped"):
        sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)


SDK_PRELUDE = """
import sagemaker
from sagemaker import image_uris
from sagemaker.estimator import Estimator
from sagemaker.inputs import TrainingInput
from sagemaker.tuner import (CategoricalParameter, ContinuousParameter, HyperbandStrategyConfig,
    HyperparameterTuner, IntegerParameter, StrategyConfig, WarmStartConfig, WarmStartTypes)
session = sagemaker.Session()
image = image_uris.retrieve("xgboost", session.boto_region_name, "1.7-1")
inputs = {"train": TrainingInput("s3://%(bucket)s/data/train", content_type="text/csv"),
          "validation": TrainingInput("s3://%(bucket)s/data/validation", content_type="text/csv")}
def estimator(rounds=5):
    est = Estimator(image, sagemaker.get_execution_role(), instance_count=1, instance_type="ml.m5.large",
                    output_path="s3://%(bucket)s/sdk", sagemaker_session=session)
    est.set_hyperparameters(objective="binary:logistic", num_round=rounds)
    return est
ranges = {"eta": ContinuousParameter(0.05, 0.5, scaling_type="Logarithmic"), "max_depth": IntegerParameter(1, 5)}
"""

SDK_BAYESIAN = """
tuner = HyperparameterTuner(estimator(), "validation:auc", ranges, max_jobs=4, max_parallel_jobs=2,
                            base_tuning_job_name="sdk-bayes")
tuner.fit(inputs)
best = tuner.best_training_job()
print("BEST", best)
frame = tuner.analytics().dataframe()
print("ROWS", len(frame), sorted(frame.columns))
top = frame["FinalObjectiveValue"].max()
print("TOP", top == frame.set_index("TrainingJobName").loc[best, "FinalObjectiveValue"])
again = HyperparameterTuner.attach(tuner.latest_tuning_job.name, sagemaker_session=session)
print("ATTACHED", again.best_training_job(), again.objective_metric_name, sorted(again.hyperparameter_ranges()))
predictor = again.deploy(initial_instance_count=1, instance_type="ml.m5.large",
                         serializer=sagemaker.serializers.CSVSerializer())
print("PREDICTION", predictor.predict([[2.0, 1.0, 0, 0], [-2.0, -1.0, 0, 0]]).decode().replace("\\n", ","))
predictor.delete_endpoint()
"""


def _lines(out: str, key: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith(key + " ")]


def test_sdk_tuner_fit_best_analytics_attach_deploy(platform: RunningPlatform, tmp_path: Path) -> None:
    out = platform.run_python(SDK_PRELUDE % {"bucket": BUCKET} + SDK_BAYESIAN, tmp_path, timeout=400)
    best = _lines(out, "BEST")[0]
    assert best.startswith("sdk-bayes")
    assert _lines(out, "ROWS")[0].startswith("4 ")
    assert "FinalObjectiveValue" in _lines(out, "ROWS")[0] and "eta" in _lines(out, "ROWS")[0]
    assert _lines(out, "TOP")[0] == "True"  # the best job has the highest objective (others may tie it)
    assert _lines(out, "ATTACHED")[0] == f"{best} validation:auc ['ContinuousParameterRanges', " + (
        "'IntegerParameterRanges']"
    ) or _lines(out, "ATTACHED")[0].startswith(f"{best} validation:auc")
    import re

    first, second = (float(v) for v in re.findall(r"PREDICTION (\S+)", out)[0].split(","))
    assert first > second


# Grid: the SDK v2 sends MaxNumberOfTrainingJobs=None for max_jobs=None, which botocore itself refuses,
# so the SDK gives the grid's size; boto3 leaves it out (test_boto3_grid_computes_its_size).
SDK_STRATEGIES = """
import json
tuners = {
    "Random": HyperparameterTuner(estimator(), "validation:auc", ranges, strategy="Random", max_jobs=4,
                                  max_parallel_jobs=2, random_seed=11, base_tuning_job_name="sdk-random"),
    "Grid": HyperparameterTuner(estimator(), "validation:auc",
                                {"max_depth": CategoricalParameter([1, 2, 3]), "eta": CategoricalParameter([0.1, 0.3])},
                                strategy="Grid", max_jobs=6, max_parallel_jobs=2, base_tuning_job_name="sdk-grid"),
    "Hyperband": HyperparameterTuner(estimator(9), "validation:auc", ranges, strategy="Hyperband", max_jobs=4,
        max_parallel_jobs=2, base_tuning_job_name="sdk-hyperband",
        strategy_config=StrategyConfig(HyperbandStrategyConfig(min_resource=1, max_resource=9))),
    "EarlyStopping": HyperparameterTuner(estimator(), "validation:auc", ranges, max_jobs=4, max_parallel_jobs=2,
                                         early_stopping_type="Auto", base_tuning_job_name="sdk-early"),
}
for tuner in tuners.values():
    tuner.fit(inputs, wait=False)
for label, tuner in tuners.items():
    tuner.wait()
    desc = tuner.describe()
    print("DESC", label, json.dumps({k: desc[k] for k in ("HyperParameterTuningJobStatus", "TrainingJobStatusCounters",
          "HyperParameterTuningJobConfig")}, default=str))
parent = tuners["Random"].latest_tuning_job.name
warm = HyperparameterTuner(estimator(), "validation:auc", ranges, max_jobs=2, max_parallel_jobs=2,
    base_tuning_job_name="sdk-warm",
    warm_start_config=WarmStartConfig(WarmStartTypes.IDENTICAL_DATA_AND_ALGORITHM, parents={parent}))
warm.fit(inputs)
desc = warm.describe()
print("WARM", json.dumps({"parent": parent, "overall": desc["OverallBestTrainingJob"]["TrainingJobName"],
      "best": desc["BestTrainingJob"]["TrainingJobName"], "jobs": desc["TrainingJobStatusCounters"]["Completed"],
      "parent_best": tuners["Random"].best_training_job()}))
"""


def test_sdk_every_strategy_early_stopping_and_warm_start(platform: RunningPlatform, tmp_path: Path) -> None:
    import json

    out = platform.run_python(SDK_PRELUDE % {"bucket": BUCKET} + SDK_STRATEGIES, tmp_path, timeout=500)
    descs = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) for line in _lines(out, "DESC")}
    assert set(descs) == {"Random", "Grid", "Hyperband", "EarlyStopping"}
    for label, desc in descs.items():
        assert desc["HyperParameterTuningJobStatus"] == "Completed", (label, desc)
    grid = descs["Grid"]
    assert grid["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 6
    assert grid["TrainingJobStatusCounters"]["Completed"] == 6
    assert descs["EarlyStopping"]["HyperParameterTuningJobConfig"]["TrainingJobEarlyStoppingType"] == "Auto"
    hyperband = descs["Hyperband"]["TrainingJobStatusCounters"]
    assert hyperband["Completed"] + hyperband["Stopped"] == 4
    warm = json.loads(_lines(out, "WARM")[0])
    assert warm["jobs"] == 2
    assert warm["overall"] in (warm["best"], warm["parent_best"])


SDK_MULTI = """
import json
tuner = HyperparameterTuner.create(
    estimator_dict={"deep": estimator(), "shallow": estimator()},
    objective_metric_name_dict={"deep": "validation:auc", "shallow": "validation:auc"},
    hyperparameter_ranges_dict={"deep": {"max_depth": IntegerParameter(4, 6)},
                                "shallow": {"max_depth": IntegerParameter(1, 2), "eta": ContinuousParameter(0.1, 0.5)}},
    max_jobs=4, max_parallel_jobs=2, base_tuning_job_name="sdk-multi")
tuner.fit(inputs={"deep": inputs, "shallow": inputs}, include_cls_metadata={})
best = tuner.describe()["BestTrainingJob"]
print("MULTI", json.dumps({"definition": best["TrainingJobDefinitionName"], "name": best["TrainingJobName"]}))
again = HyperparameterTuner.attach(tuner.latest_tuning_job.name, sagemaker_session=session)
print("ESTIMATORS", sorted(again.estimator_dict), again.best_estimator().latest_training_job.name)
"""


def test_sdk_tuner_over_two_algorithms(platform: RunningPlatform, tmp_path: Path) -> None:
    import json

    out = platform.run_python(SDK_PRELUDE % {"bucket": BUCKET} + SDK_MULTI, tmp_path, timeout=300)
    best = json.loads(_lines(out, "MULTI")[0])
    assert best["definition"] in ("deep", "shallow") and best["name"].startswith("sdk-multi")
    assert _lines(out, "ESTIMATORS")[0] == f"['deep', 'shallow'] {best['name']}"


TRAIN_SCRIPT = """
import argparse, os
import numpy as np
from sklearn.linear_model import LogisticRegression
p = argparse.ArgumentParser()
p.add_argument("--C", type=float, default=1.0)
args, _ = p.parse_known_args()
def load(channel):
    d = os.environ["SM_CHANNEL_" + channel.upper()]
    data = np.loadtxt(os.path.join(d, os.listdir(d)[0]), delimiter=",")
    return data[:, 1:], data[:, 0]
x, y = load("train")
vx, vy = load("validation")
model = LogisticRegression(C=args.C).fit(x, y)
print(f"validation accuracy: {model.score(vx, vy):.4f}")
"""

SDK_SCRIPT_MODE = """
import json
from sagemaker.sklearn import SKLearn
est = SKLearn(entry_point="train.py", framework_version="1.2-1", instance_type="ml.m5.large", instance_count=1,
              role=sagemaker.get_execution_role(), sagemaker_session=session, output_path="s3://%(bucket)s/sk")
tuner = HyperparameterTuner(est, "accuracy", {"C": ContinuousParameter(0.001, 10, scaling_type="Logarithmic")},
    metric_definitions=[{"Name": "accuracy", "Regex": "validation accuracy: ([0-9.]+)"}], max_jobs=3,
    max_parallel_jobs=2, base_tuning_job_name="sdk-sklearn")
tuner.fit(inputs)
desc = tuner.describe()
print("SK", json.dumps({"status": desc["HyperParameterTuningJobStatus"], "best": desc["BestTrainingJob"]}, default=str))
attached = HyperparameterTuner.attach(tuner.latest_tuning_job.name, sagemaker_session=session)
print("ATTACH", attached.estimator.__class__.__name__)
"""


def test_sdk_script_mode_tuner_with_metric_definitions(platform: RunningPlatform, tmp_path: Path) -> None:
    import json

    (tmp_path / "train.py").write_text(TRAIN_SCRIPT)
    out = platform.run_python(SDK_PRELUDE % {"bucket": BUCKET} + SDK_SCRIPT_MODE % {"bucket": BUCKET}, tmp_path)
    result = json.loads(_lines(out, "SK")[0])
    assert result["status"] == "Completed"
    metric = result["best"]["FinalHyperParameterTuningJobObjectiveMetric"]
    assert metric["MetricName"] == "accuracy" and 0.5 < metric["Value"] <= 1.0
    assert _lines(out, "ATTACH") == ["SKLearn"]


def test_a_restart_in_the_middle_goes_on(tmp_path: Path) -> None:
    home, aws = tmp_path / "home", tmp_path / "aws"
    name = _name("restart")
    with running_platform(home, aws) as first:
        port = first.port
        s3 = first.session().client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="data/train/train.csv", Body=_csv(300, 0))
        s3.put_object(Bucket=BUCKET, Key="data/validation/validation.csv", Body=_csv(150, 1))
        sm = first.session().client("sagemaker")
        sm.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name,
            HyperParameterTuningJobConfig=_config(jobs=6, RandomSeed=5),
            TrainingJobDefinition=_definition(first, rounds=50),
        )
        deadline = time.monotonic() + 120
        while (
            sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)["TrainingJobStatusCounters"][
                "Completed"
            ]
            < 2
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    with running_platform(home, aws, port=port) as second:
        sm = second.session().client("sagemaker")
        desc = _wait(sm, name)
        assert desc["HyperParameterTuningJobStatus"] == "Completed", desc.get("FailureReason")
        jobs = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=name, MaxResults=100)[
            "TrainingJobSummaries"
        ]
        trials = {tuple(sorted(j["TunedHyperParameters"].items())) for j in jobs}
        counters = desc["TrainingJobStatusCounters"]
        assert counters["Completed"] == 6 and desc["ObjectiveStatusCounters"]["Succeeded"] == 6
        assert len(trials) == 6  # every trial once; the ones the restart cut off were retried with their values
        assert counters["NonRetryableError"] == 0
        assert len(jobs) == 6 + counters["RetryableError"]


def test_console_list_and_page_of_a_tuning_job(platform: RunningPlatform) -> None:
    import json
    import re

    import httpx

    sm = platform.session().client("sagemaker")
    name = _name("console")
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig=_config(jobs=3),
        TrainingJobDefinition=_definition(platform),
    )
    desc = _wait(sm, name)
    best = desc["BestTrainingJob"]["TrainingJobName"]
    creds = platform.session().get_credentials()
    with httpx.Client(base_url=platform.api_url, timeout=30) as client:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/signin").text)[1]  # type: ignore[index]
        signin = {"csrf": token, "access_key_id": creds.access_key, "secret": creds.secret_key, "next": "/console/"}
        assert client.post("/console/signin", data=signin).status_code == 303
        listing = client.get("/console/tuning-jobs", params={"name": name})
        assert (
            listing.status_code == 200 and f"/console/tuning-jobs/{name}" in listing.text and "Bayesian" in listing.text
        )
        page = client.get(f"/console/tuning-jobs/{name}", params={"sort": "FinalObjectiveMetricValue", "order": "desc"})
        assert page.status_code == 200
        html = page.text
        assert f'action="/console/training-jobs/{best}/deploy"' in html  # deploy the best
        rows = re.findall(r'<td><a href="/console/training-jobs/([^"]+)">', html)
        assert len(rows) == 3 and rows[0] == best  # sorted by the objective, best first
        data = json.loads(re.search(r'<script type="application/json" id="tuning-data">(.*?)</script>', html, re.S)[1])  # type: ignore[index]
        assert [t["n"] for t in data["trials"]] == [1, 2, 3] and data["hyperparameters"] == ["eta", "max_depth"]
        values = [t["value"] for t in data["trials"]]
        assert data["trials"][-1]["best"] == max(values)
        assert client.get(f"/console/tuning-jobs/{name}", params={"sort": "Name", "order": "asc"}).status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', html)[1]  # type: ignore[index]
        stop = client.post(f"/console/tuning-jobs/{name}/stop", data={"csrf": csrf})
        assert stop.status_code == 303 and stop.headers["location"] == f"/console/tuning-jobs/{name}"  # it had ended
