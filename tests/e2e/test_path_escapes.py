"""Jobs whose manifest names files outside the job's directory fail, naming the key, and write nothing there."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import RunningPlatform, running_platform

pytestmark = pytest.mark.slow
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
BUCKET = "escape-tests"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("escapes")
    with running_platform(root / "home", root / "aws") as running:
        running.session().client("s3").create_bucket(Bucket=BUCKET)
        yield running


def _manifest(platform: RunningPlatform, victim: Path) -> str:
    """A manifest whose second entry is an absolute path (the key ``parts/`` + it exists in S3)."""
    s3 = platform.session().client("s3")
    s3.put_object(Bucket=BUCKET, Key="parts/a.csv", Body=b"1,0.5\n0,0.1\n")
    entries = [{"prefix": f"s3://{BUCKET}/parts/"}, "a.csv", str(victim)]
    key = f"manifests/{uuid.uuid4().hex[:8]}.manifest"
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(entries).encode())
    return f"s3://{BUCKET}/{key}"


def _wait(describe: Any, status_key: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        desc = describe()
        if desc[status_key] in ("Completed", "Failed", "Stopped"):
            return desc
        assert time.monotonic() < deadline, desc[status_key]
        time.sleep(0.2)


def test_training_with_an_absolute_manifest_entry_fails_and_writes_nothing(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.csv"
    victim.write_text("keep me")
    sm = platform.session().client("sagemaker")
    account = platform.session().client("sts").get_caller_identity()["Account"]
    name = f"esc-{uuid.uuid4().hex[:8]}"
    source = {"S3DataType": "ManifestFile", "S3Uri": _manifest(platform, victim)}
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        RoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        InputDataConfig=[{"ChannelName": "train", "ContentType": "text/csv", "DataSource": {"S3DataSource": source}}],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
        HyperParameters={"objective": "binary:logistic", "num_round": "2"},
    )
    desc = _wait(lambda: sm.describe_training_job(TrainingJobName=name), "TrainingJobStatus")
    assert desc["TrainingJobStatus"] == "Failed"
    assert desc["FailureReason"].startswith("ClientError: the S3 key ") and str(victim) in desc["FailureReason"]
    assert victim.read_text() == "keep me"


def test_transform_with_a_dot_dot_manifest_entry_fails_and_writes_nothing(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.csv"
    victim.write_text("keep me")
    sm = platform.session().client("sagemaker")
    account = platform.session().client("sts").get_caller_identity()["Account"]
    model = f"esc-model-{uuid.uuid4().hex[:6]}"
    sm.create_model(
        ModelName=model,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/model.tar.gz"},
        ExecutionRoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
    )
    relative = "../" * 12 + str(victim).lstrip("/")
    s3 = platform.session().client("s3")
    s3.put_object(
        Bucket=BUCKET, Key="manifests/t.manifest", Body=json.dumps([{"prefix": f"s3://{BUCKET}/p/"}, relative]).encode()
    )
    name = f"esc-t-{uuid.uuid4().hex[:8]}"
    sm.create_transform_job(
        TransformJobName=name,
        ModelName=model,
        TransformInput={
            "DataSource": {
                "S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": f"s3://{BUCKET}/manifests/t.manifest"}
            },
            "ContentType": "text/csv",
        },
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/out/{name}"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    desc = _wait(lambda: sm.describe_transform_job(TransformJobName=name), "TransformJobStatus")
    assert desc["TransformJobStatus"] == "Failed"
    assert "ClientError: the S3 key " in desc["FailureReason"] and relative in desc["FailureReason"]
    assert victim.read_text() == "keep me" and not list(tmp_path.glob("*.out"))
