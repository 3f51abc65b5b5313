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


def _unused(tmp_path: Path) -> None:  # keeps Path imported for the SDK tests below
    del tmp_path
