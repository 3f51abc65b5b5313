"""Batch transform end to end with boto3 and the SageMaker SDK."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
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
BUCKET = "transform-tests"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    import xgboost as xgb

    root = tmp_path_factory.mktemp("transform")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=(x[:, 0] > 0).astype(int)), 10)
    booster.save_model(str(root / "model.ubj"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(root / "model.ubj", arcname="xgboost-model")
    with running_platform(root / "home", root / "aws") as running:
        s3 = running.session().client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="model.tar.gz", Body=buf.getvalue())
        account = running.session().client("sts").get_caller_identity()["Account"]
        running.session().client("sagemaker").create_model(
            ModelName="transform-model",
            PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/model.tar.gz"},
            ExecutionRoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        )
        running.booster = booster  # type: ignore[attr-defined]
        yield running


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4)).round(4)


def _csv(rows: np.ndarray) -> bytes:
    return "\n".join(",".join(f"{v:g}" for v in r) for r in rows).encode() + b"\n"


def _job(platform: RunningPlatform, prefix: str, **extra: Any) -> dict[str, Any]:
    sm = platform.session().client("sagemaker")
    name = f"tr-{uuid.uuid4().hex[:10]}"
    params: dict[str, Any] = {
        "TransformJobName": name,
        "ModelName": "transform-model",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/{prefix}"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        "TransformOutput": {"S3OutputPath": f"s3://{BUCKET}/out/{name}", "AssembleWith": "Line", "Accept": "text/csv"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    }
    params.update(extra)
    sm.create_transform_job(**params)
    deadline = time.monotonic() + 120
    while True:
        desc = sm.describe_transform_job(TransformJobName=name)
        if desc["TransformJobStatus"] in ("Completed", "Failed", "Stopped"):
            return desc
        assert time.monotonic() < deadline
        time.sleep(0.2)


def _output(platform: RunningPlatform, key: str) -> list[str]:
    body = platform.session().client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    return body.strip().split("\n")


def test_multi_file_multi_record_two_instances_in_order(platform: RunningPlatform) -> None:
    import xgboost as xgb

    s3 = platform.session().client("s3")
    parts = {f"multi/part-{i}.csv": _rows(300, i) for i in range(3)}
    for key, rows in parts.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=_csv(rows))
    desc = _job(
        platform,
        "multi/",
        BatchStrategy="MultiRecord",
        MaxPayloadInMB=1,
        MaxConcurrentTransforms=2,
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 2},
    )
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["TransformStartTime"] <= desc["TransformEndTime"]
    name = desc["TransformJobName"]
    booster = platform.booster  # type: ignore[attr-defined]
    for key, rows in parts.items():
        got = [float(v) for v in _output(platform, f"out/{name}/{key.split('/', 1)[1]}.out")]
        expected = booster.predict(xgb.DMatrix(rows.astype(np.float32)))
        assert np.allclose(got, expected, atol=1e-5), key


def test_filters_and_join_source(platform: RunningPlatform) -> None:
    rows = _rows(50, 7)
    with_ids = "\n".join(f"id{i}," + ",".join(f"{v:g}" for v in r) for i, r in enumerate(rows)).encode()
    platform.session().client("s3").put_object(Bucket=BUCKET, Key="ids/data.csv", Body=with_ids)
    desc = _job(
        platform,
        "ids/",
        BatchStrategy="SingleRecord",
        DataProcessing={"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"},
    )
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    lines = _output(platform, f"out/{desc['TransformJobName']}/data.csv.out")
    assert len(lines) == 50 and lines[0].startswith("id0,") and len(lines[0].split(",")) == 2
    assert [line.split(",")[0] for line in lines] == [f"id{i}" for i in range(50)]


def test_json_lines_filters_and_join_source(platform: RunningPlatform) -> None:
    """JSON records: InputFilter picks the features, the answer joins the input as SageMakerOutput."""
    import json

    import xgboost as xgb

    rows = _rows(20, 8)
    body = "\n".join(json.dumps({"id": f"r{i}", "features": r.tolist()}) for i, r in enumerate(rows))
    platform.session().client("s3").put_object(Bucket=BUCKET, Key="jsonl/data.jsonl", Body=body.encode())
    desc = _job(
        platform,
        "jsonl/",
        BatchStrategy="SingleRecord",
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/jsonl/"}},
            "ContentType": "application/jsonlines",
            "SplitType": "Line",
        },
        TransformOutput={
            "S3OutputPath": f"s3://{BUCKET}/out/jsonl",
            "AssembleWith": "Line",
            "Accept": "application/jsonlines",
        },
        DataProcessing={
            "InputFilter": "$.features",
            "JoinSource": "Input",
            "OutputFilter": "$['id','SageMakerOutput']",
        },
    )
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    records = [json.loads(line) for line in _output(platform, "out/jsonl/data.jsonl.out")]
    expected = platform.booster.predict(xgb.DMatrix(rows.astype(np.float32)))  # type: ignore[attr-defined]
    assert [r["id"] for r in records] == [f"r{i}" for i in range(20)]
    assert set(records[0]) == {"id", "SageMakerOutput"}
    assert np.allclose([r["SageMakerOutput"]["score"] for r in records], expected, atol=1e-5)


def test_a_rejected_record_fails_the_job_naming_file_and_records(platform: RunningPlatform) -> None:
    bad = _csv(_rows(5, 1)) + b"1,2,3\n" + _csv(_rows(5, 2))
    platform.session().client("s3").put_object(Bucket=BUCKET, Key="bad/input.csv", Body=bad)
    desc = _job(platform, "bad/", BatchStrategy="SingleRecord")
    assert desc["TransformJobStatus"] == "Failed"
    assert "bad/input.csv" in desc["FailureReason"] and "records 6-6" in desc["FailureReason"]
    assert "expects 4 features" in desc["FailureReason"]


def test_missing_input_and_missing_model(platform: RunningPlatform) -> None:
    desc = _job(platform, "nothing-here/")
    assert desc["TransformJobStatus"] == "Failed" and "No S3 objects found" in desc["FailureReason"]
    with pytest.raises(ClientError) as exc:
        _job(platform, "multi/", ModelName="no-such-model")
    assert "Could not find model" in str(exc.value)


SDK_TRANSFORM = """
import sagemaker
from sagemaker import image_uris
from sagemaker.estimator import Estimator
from sagemaker.inputs import TrainingInput
from sagemaker.transformer import Transformer
session = sagemaker.Session()
image = image_uris.retrieve("xgboost", session.boto_region_name, "1.7-1")
est = Estimator(image, sagemaker.get_execution_role(), instance_count=1, instance_type="ml.m5.large",
                output_path="s3://{bucket}/sdk-train", hyperparameters={{"objective": "binary:logistic",
                "num_round": 5}})
est.fit({{"train": TrainingInput("s3://{bucket}/sdk-train-data/", content_type="text/csv")}}, logs=False)
t = est.transformer(instance_count=2, instance_type="ml.m5.large", strategy="MultiRecord", assemble_with="Line",
                    accept="text/csv", output_path="s3://{bucket}/sdk-out")
t.transform("s3://{bucket}/sdk-multi/", content_type="text/csv", split_type="Line")
t.wait()
print("STATUS", t.sagemaker_session.describe_transform_job(t.latest_transform_job.name)["TransformJobStatus"])
joined = Transformer(model_name="transform-model", instance_count=1, instance_type="ml.m5.large",
                     assemble_with="Line", accept="text/csv", output_path="s3://{bucket}/sdk-joined")
joined.transform("s3://{bucket}/ids/", content_type="text/csv", split_type="Line", input_filter="$[1:]",
                 join_source="Input", output_filter="$[0,-1]", wait=True, logs=False)
print("JOINED", joined.sagemaker_session.describe_transform_job(joined.latest_transform_job.name)
      ["TransformJobStatus"])
"""


def test_sdk_transformer(platform: RunningPlatform, tmp_path: Path) -> None:
    """estimator.transformer() over three files on two instances, and Transformer(model_name=...) with a join."""
    s3 = platform.session().client("s3")
    train = _rows(200, 20)
    labelled = np.column_stack([(train[:, 0] > 0).astype(int), train])
    s3.put_object(Bucket=BUCKET, Key="sdk-train-data/train.csv", Body=_csv(labelled))
    for i in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"sdk-multi/part-{i}.csv", Body=_csv(_rows(100, 30 + i)))
    ids = "\n".join(f"id{i}," + ",".join(f"{v:g}" for v in r) for i, r in enumerate(_rows(30, 9))).encode()
    s3.put_object(Bucket=BUCKET, Key="ids/data.csv", Body=ids)
    result = subprocess.run(
        [sys.executable, "-c", SDK_TRANSFORM.format(bucket=BUCKET)],
        env=platform.shell_env(),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "STATUS Completed" in result.stdout and "JOINED Completed" in result.stdout
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="sdk-out/")["Contents"]]
    assert sorted(keys) == [f"sdk-out/part-{i}.csv.out" for i in range(3)]
    assert all(len(_output(platform, key)) == 100 for key in keys)
    joined = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="sdk-joined/")["Contents"]]
    lines = _output(platform, joined[0])
    assert len(lines) == 30 and [line.split(",")[0] for line in lines] == [f"id{i}" for i in range(30)]
    assert all(0.0 <= float(line.split(",")[1]) <= 1.0 for line in lines)


def test_gzip_input(platform: RunningPlatform) -> None:
    import gzip

    rows = _rows(40, 11)
    platform.session().client("s3").put_object(Bucket=BUCKET, Key="gz/data.csv.gz", Body=gzip.compress(_csv(rows)))
    desc = _job(
        platform,
        "gz/",
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/gz/"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
            "CompressionType": "Gzip",
        },
    )
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert len(_output(platform, f"out/{desc['TransformJobName']}/data.csv.gz.out")) == 40


def test_stop_midway(platform: RunningPlatform) -> None:
    platform.session().client("s3").put_object(Bucket=BUCKET, Key="long/data.csv", Body=_csv(_rows(20000, 3)))
    sm = platform.session().client("sagemaker")
    name = f"tr-{uuid.uuid4().hex[:10]}"
    sm.create_transform_job(
        TransformJobName=name,
        ModelName="transform-model",
        BatchStrategy="SingleRecord",
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/long/"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/out/{name}"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    time.sleep(3)
    sm.stop_transform_job(TransformJobName=name)
    deadline = time.monotonic() + 60
    while (desc := sm.describe_transform_job(TransformJobName=name))["TransformJobStatus"] in (
        "InProgress",
        "Stopping",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert desc["TransformJobStatus"] == "Stopped"
