"""``opensage up --compute ray``: training jobs, endpoints and processing jobs whose containers are Ray actors
on a head the platform starts itself; a stop and a restart of the platform end what they should."""

from __future__ import annotations

import io
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import RunningPlatform, running_platform
from ray_kit import instance_actors

pytest.importorskip("ray")
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
PYTHON = "763104351884.dkr.ecr.us-east-1.amazonaws.com/opensage-python:latest"
BUCKET = "ray-tests"


def _actors(home: Path) -> list[int]:
    """The pids of this platform's instance actors (its head told apart from other tests' by its temp dir)."""
    from opensage.compute.raycluster import _temp_dir

    return list(instance_actors(_temp_dir(home / "home" / "ray")))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("ray")
    yield root
    from opensage.compute.raycluster import stop_head

    stop_head(root / "home" / "ray")


def _platform(home: Path) -> Any:
    return running_platform(home / "home", home / "aws", extra_args=("--compute", "ray"), timeout=180)


def _account(platform: RunningPlatform) -> str:
    return str(platform.session().client("sts").get_caller_identity()["Account"])


def _training(platform: RunningPlatform, **changes: Any) -> str:
    sm = platform.session().client("sagemaker")
    name = f"ray-{uuid.uuid4().hex[:8]}"
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": f"arn:aws:iam::{_account(platform)}:role/OpenSageExecutionRole",
        "HyperParameters": {"objective": "binary:logistic", "num_round": "20"},
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "ContentType": "text/csv",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/train/"}},
            }
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    request.update(changes)
    sm.create_training_job(**{k: v for k, v in request.items() if v is not None})
    return name


def _ended(describe: Any, key: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = describe()
        if found[key] in ("Completed", "Failed", "Stopped", "InService"):
            return found
        assert time.monotonic() < deadline, f"still {found[key]}"
        time.sleep(0.2)


def test_training_and_an_endpoint_run_as_ray_actors(home: Path) -> None:
    with _platform(home) as platform:
        assert json.loads((platform.home / "ray" / "head.json").read_text())["address"]
        session = platform.session()
        sm, s3 = session.client("sagemaker"), session.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(1000, 4))
        y = (x[:, 0] > 0).astype(int)
        body = io.StringIO()
        np.savetxt(body, np.column_stack([y, x]), delimiter=",", fmt="%.5f")
        s3.put_object(Bucket=BUCKET, Key="train/data.csv", Body=body.getvalue().encode())
        name = _training(platform)
        job = _ended(lambda: sm.describe_training_job(TrainingJobName=name), "TrainingJobStatus")
        assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")

        model = f"ray-model-{uuid.uuid4().hex[:6]}"
        sm.create_model(
            ModelName=model,
            PrimaryContainer={"Image": IMAGE, "ModelDataUrl": job["ModelArtifacts"]["S3ModelArtifacts"]},
            ExecutionRoleArn=job["RoleArn"],
        )
        sm.create_endpoint_config(
            EndpointConfigName=model,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": model,
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 2,
                }
            ],
        )
        sm.create_endpoint(EndpointName=model, EndpointConfigName=model)
        ready = _ended(lambda: sm.describe_endpoint(EndpointName=model), "EndpointStatus")
        assert ready["EndpointStatus"] == "InService", ready.get("FailureReason")
        assert len(_actors(home)) == 2  # one actor per model server
        answer = session.client("sagemaker-runtime").invoke_endpoint(
            EndpointName=model, ContentType="text/csv", Body=b"2,0,0,0\n-2,0,0,0\n"
        )
        high, low = (float(v) for v in answer["Body"].read().decode().replace("\n", ",").strip(",").split(","))
        assert high > 0.5 > low
        sm.delete_endpoint(EndpointName=model)
        deadline = time.monotonic() + 60
        while _actors(home):
            assert time.monotonic() < deadline, "the model servers' actors outlived their endpoint"
            time.sleep(0.2)


def test_a_stop_and_a_restart_end_the_jobs_actors(home: Path) -> None:
    sleeper = ["python3", "-c", "import time; print('sleeping', flush=True); time.sleep(120)"]
    sleeping = {"TrainingImage": PYTHON, "TrainingInputMode": "File", "ContainerEntrypoint": sleeper}
    with _platform(home) as platform:
        sm = platform.session().client("sagemaker")
        stopped = _training(
            platform,
            AlgorithmSpecification=sleeping,
            InputDataConfig=None,
        )
        deadline = time.monotonic() + 60
        while sm.describe_training_job(TrainingJobName=stopped)["SecondaryStatus"] != "Training" or not _actors(home):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        sm.stop_training_job(TrainingJobName=stopped)
        assert (
            _ended(lambda: sm.describe_training_job(TrainingJobName=stopped), "TrainingJobStatus")["TrainingJobStatus"]
            == "Stopped"
        )

        running = _training(
            platform,
            AlgorithmSpecification=sleeping,
            InputDataConfig=None,
        )
        deadline = time.monotonic() + 60
        while not _actors(home):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.kill(platform.proc.pid, signal.SIGKILL)  # a crash: the detached actor and its container outlive it
        platform.proc.wait(10)
        assert _actors(home), "the job's actor died with the platform"
    with _platform(home) as platform:
        sm = platform.session().client("sagemaker")
        job = _ended(lambda: sm.describe_training_job(TrainingJobName=running), "TrainingJobStatus")
        assert job["TrainingJobStatus"] == "Failed" and "restarted" in job["FailureReason"]
        deadline = time.monotonic() + 60
        while _actors(home):
            assert time.monotonic() < deadline, "the restarted platform left the job's actor running"
            time.sleep(0.2)
