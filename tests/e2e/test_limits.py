"""Limits end to end: quotas answered with ResourceLimitExceeded, archive bombs refused, the model cache cleaned."""

from __future__ import annotations

import gzip
import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from helpers import RunningPlatform, running_platform

pytestmark = pytest.mark.slow
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
BUCKET = "limit-tests"


def _artifact(tmp: Path) -> bytes:
    import xgboost as xgb

    x = np.random.default_rng(0).normal(size=(200, 4))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=(x[:, 0] > 0).astype(int)), 3)
    booster.save_model(str(tmp / "xgboost-model.ubj"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp / "xgboost-model.ubj", arcname="xgboost-model")
    return buf.getvalue()


def tar_bomb(unpacked: int = 1024**3) -> bytes:
    """A model.tar.gz of about 1 MB whose one member unpacks to ``unpacked`` bytes of zeros."""

    class Zeros(io.RawIOBase):
        def __init__(self, n: int) -> None:
            self.left = n

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            n = min(len(b), self.left)
            b[:n] = bytes(n)
            self.left -= n
            return n

    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        info = tarfile.TarInfo("xgboost-model")
        info.size = unpacked
        tar.addfile(info, io.BufferedReader(Zeros(unpacked), 1 << 20))
    return buf.getvalue()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("limits")
    with running_platform(root / "home", root / "aws") as running:
        s3 = running.session().client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="model.tar.gz", Body=_artifact(root))
        bomb = tar_bomb()
        assert len(bomb) < 2 * 1024 * 1024
        s3.put_object(Bucket=BUCKET, Key="bomb.tar.gz", Body=bomb)
        yield running


def _model(p: RunningPlatform, name: str, key: str) -> None:
    p.session().client("sagemaker").create_model(
        ModelName=name,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/{key}"},
        ExecutionRoleArn=_role(p),
    )


def _role(p: RunningPlatform) -> str:
    account = p.session().client("sts").get_caller_identity()["Account"]
    return f"arn:aws:iam::{account}:role/OpenSageExecutionRole"


def _sm(p: RunningPlatform) -> Any:
    return p.session().client("sagemaker")


def _config(sm: Any, name: str, model: str, count: int) -> None:
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InitialInstanceCount": count,
                "InstanceType": "ml.m5.large",
            }
        ],
    )


def _wait(sm: Any, name: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        desc = sm.describe_endpoint(EndpointName=name)
        if desc["EndpointStatus"] not in ("Creating", "Updating") or time.monotonic() > deadline:
            return desc
        time.sleep(0.5)


def _cache(p: RunningPlatform) -> list[Path]:
    root = p.home / "endpoints" / "_models"
    return sorted(root.iterdir()) if root.is_dir() else []


def test_twelve_instances_are_refused_with_resource_limit_exceeded(platform: RunningPlatform) -> None:
    sm = _sm(platform)
    _model(platform, "limits-twelve", "model.tar.gz")
    _config(sm, "limits-twelve", "limits-twelve", 12)
    with pytest.raises(ClientError) as err:
        sm.create_endpoint(EndpointName="limits-twelve", EndpointConfigName="limits-twelve")
    error = err.value.response["Error"]
    assert error["Code"] == "ResourceLimitExceeded"
    assert error["Message"].startswith(
        "The account-level service limit 'ml.m5.large for endpoint usage' is 8 Instances, with current "
        "utilization of 0 Instances and a request delta of 12 Instances."
    )
    assert "OPENSAGE_QUOTA_ENDPOINT_INSTANCES" in error["Message"]
    assert sm.list_endpoints(NameContains="limits-twelve")["Endpoints"] == []  # nothing recorded


def test_a_training_job_over_the_instance_quota_is_refused(platform: RunningPlatform) -> None:
    sm = _sm(platform)
    with pytest.raises(ClientError) as err:
        sm.create_training_job(
            TrainingJobName="limits-training",
            AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
            RoleArn=_role(platform),
            OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/out"},
            ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 12, "VolumeSizeInGB": 1},
            StoppingCondition={"MaxRuntimeInSeconds": 60},
        )
    assert err.value.response["Error"]["Code"] == "ResourceLimitExceeded"
    assert "'ml.m5.large for training job usage' is 8 Instances" in err.value.response["Error"]["Message"]
    assert sm.list_training_jobs(NameContains="limits-training")["TrainingJobSummaries"] == []


def test_a_tar_bomb_model_is_refused_and_leaves_nothing(platform: RunningPlatform) -> None:
    sm = _sm(platform)
    _model(platform, "limits-bomb", "bomb.tar.gz")
    _config(sm, "limits-bomb", "limits-bomb", 1)
    sm.create_endpoint(EndpointName="limits-bomb", EndpointConfigName="limits-bomb")
    desc = _wait(sm, "limits-bomb")
    assert desc["EndpointStatus"] == "Failed"
    assert "expands more than 100 times" in desc["FailureReason"], desc["FailureReason"]
    assert "bomb.tar.gz" in desc["FailureReason"]
    assert _cache(platform) == []  # neither the bomb nor its scratch directory stays
    sm.delete_endpoint(EndpointName="limits-bomb")


def test_the_model_cache_entry_goes_with_the_last_endpoint_that_uses_it(platform: RunningPlatform) -> None:
    sm = _sm(platform)
    _model(platform, "limits-cache", "model.tar.gz")
    _config(sm, "limits-cache", "limits-cache", 1)
    for name in ("limits-cache-1", "limits-cache-2"):
        sm.create_endpoint(EndpointName=name, EndpointConfigName="limits-cache")
    for name in ("limits-cache-1", "limits-cache-2"):
        assert _wait(sm, name)["EndpointStatus"] == "InService"
    assert len(_cache(platform)) == 1  # one directory shared by both
    sm.delete_endpoint(EndpointName="limits-cache-1")
    _gone(sm, "limits-cache-1")
    assert len(_cache(platform)) == 1  # the other endpoint still serves it
    sm.delete_endpoint(EndpointName="limits-cache-2")
    _gone(sm, "limits-cache-2")
    assert _cache(platform) == []


def _gone(sm: Any, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while sm.list_endpoints(NameContains=name)["Endpoints"]:
        assert time.monotonic() < deadline, f"{name} was not deleted"
        time.sleep(0.3)
