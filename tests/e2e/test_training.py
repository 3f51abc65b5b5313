"""Training jobs end to end: boto3 and the SageMaker SDK against a running OpenSage."""

from __future__ import annotations

import contextlib
import io
import json
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
BUCKET = "training-tests"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("training")
    with running_platform(root / "home", root / "aws") as running:
        running.session().client("s3").create_bucket(Bucket=BUCKET)
        yield running


def _dataset(rows: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    return x, y


def _csv(x: np.ndarray, y: np.ndarray) -> bytes:
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack([y, x]), delimiter=",", fmt="%.6g")
    return buf.getvalue().encode()


def _put(platform: RunningPlatform, key: str, body: bytes) -> str:
    platform.session().client("s3").put_object(Bucket=BUCKET, Key=key, Body=body)
    return f"s3://{BUCKET}/{key}"


def _channel(name: str, uri: str, distribution: str = "FullyReplicated") -> dict[str, Any]:
    return {
        "ChannelName": name,
        "ContentType": "text/csv",
        "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": distribution}
        },
    }


def _create(
    platform: RunningPlatform,
    channels: list[dict[str, Any]],
    hps: dict[str, str] | None = None,
    *,
    image: str = IMAGE,
    count: int = 1,
    max_runtime: int = 3600,
    role: str | None = None,
) -> str:
    sm = platform.session().client("sagemaker")
    account = platform.session().client("sts").get_caller_identity()["Account"]
    name = f"job-{uuid.uuid4().hex[:10]}"
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
        RoleArn=role or f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        InputDataConfig=channels,
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": count, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": max_runtime},
        HyperParameters=hps or {"objective": "binary:logistic", "num_round": "20", "max_depth": "3"},
    )
    return name


def _wait(platform: RunningPlatform, name: str, timeout: float = 120) -> dict[str, Any]:
    sm = platform.session().client("sagemaker")
    deadline = time.monotonic() + timeout
    while True:
        desc = sm.describe_training_job(TrainingJobName=name)
        if desc["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            return desc
        assert time.monotonic() < deadline, f"job {name} still {desc['TrainingJobStatus']}"
        time.sleep(0.1)


def _model(platform: RunningPlatform, uri: str) -> Any:
    import xgboost as xgb

    bucket, key = uri[5:].split("/", 1)
    blob = platform.session().client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        names = tar.getnames()
        assert "xgboost-model" in names, names
        member = tar.extractfile("xgboost-model")
        assert member is not None
        raw = member.read()
    from opensage.images.xgboost.serve import load_model_bytes

    booster = load_model_bytes(raw)
    assert isinstance(booster, xgb.Booster)
    return booster


def test_xgboost_job_completes_with_model_metrics_and_logs(platform: RunningPlatform) -> None:
    import xgboost as xgb

    x, y = _dataset()
    train = _put(platform, "binary/train/train.csv", _csv(x[:1500], y[:1500]))
    validation = _put(platform, "binary/validation/validation.csv", _csv(x[1500:], y[1500:]))
    name = _create(
        platform,
        [_channel("train", train.rsplit("/", 1)[0]), _channel("validation", validation)],
        {"objective": "binary:logistic", "num_round": "30", "max_depth": "3", "eval_metric": "logloss,auc"},
    )
    desc = _wait(platform, name)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert [t["Status"] for t in desc["SecondaryStatusTransitions"]] == [
        "Starting",
        "Downloading",
        "Training",
        "Uploading",
        "Completed",
    ]
    assert desc["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{BUCKET}/output/{name}/output/model.tar.gz"
    assert desc["TrainingTimeInSeconds"] >= 1 and desc["BillableTimeInSeconds"] >= 1
    assert desc["TrainingStartTime"] <= desc["TrainingEndTime"]
    metrics = {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}
    assert {"train:logloss", "validation:logloss", "validation:auc"} <= set(metrics), metrics
    assert metrics["validation:auc"] > 0.95
    booster = _model(platform, desc["ModelArtifacts"]["S3ModelArtifacts"])
    accuracy = ((booster.predict(xgb.DMatrix(x[1500:])) > 0.5) == y[1500:]).mean()
    assert accuracy > 0.9
    logs = platform.session().client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=name)
    assert [s["logStreamName"].split("/")[1].rsplit("-", 1)[0] for s in streams["logStreams"]] == ["algo-1"]
    events = logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs",
        logStreamName=streams["logStreams"][0]["logStreamName"],
        startFromHead=True,
    )
    text = "\n".join(e["message"] for e in events["events"])
    assert "Downloaded 1 file(s)" in text and "validation-auc" in text
    listed = platform.session().client("sagemaker").list_training_jobs(NameContains=name)["TrainingJobSummaries"]
    assert [(j["TrainingJobName"], j["TrainingJobStatus"]) for j in listed] == [(name, "Completed")]
    # every round's metrics, in CloudWatch as SageMaker publishes them
    import datetime as dt

    cw = platform.session().client("cloudwatch")
    host = [{"Name": "Host", "Value": f"{name}/algo-1"}]
    names = {
        m["MetricName"] for m in cw.list_metrics(Namespace="/aws/sagemaker/TrainingJobs", Dimensions=host)["Metrics"]
    }
    assert {"train:logloss", "validation:logloss", "validation:auc"} <= names
    now = dt.datetime.now(dt.UTC)
    points = cw.get_metric_statistics(
        Namespace="/aws/sagemaker/TrainingJobs",
        MetricName="validation:auc",
        Dimensions=host,
        StartTime=now - dt.timedelta(minutes=10),
        EndTime=now + dt.timedelta(minutes=1),
        Period=60,
        Statistics=["SampleCount", "Maximum"],
    )["Datapoints"]
    assert sum(p["SampleCount"] for p in points) == 30 and max(p["Maximum"] for p in points) > 0.95


def test_two_instances_with_sharded_data(platform: RunningPlatform) -> None:
    x, y = _dataset(2000, seed=1)
    for i in range(4):
        _put(platform, f"sharded/part-{i}.csv", _csv(x[i::4], y[i::4]))
    name = _create(platform, [_channel("train", f"s3://{BUCKET}/sharded/", "ShardedByS3Key")], count=2)
    desc = _wait(platform, name)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["BillableTimeInSeconds"] == 2 * desc["TrainingTimeInSeconds"]
    streams = (
        platform.session()
        .client("logs")
        .describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=name)["logStreams"]
    )
    assert sorted(s["logStreamName"].split("/")[1].rsplit("-", 1)[0] for s in streams) == ["algo-1", "algo-2"]
    _model(platform, desc["ModelArtifacts"]["S3ModelArtifacts"])


def _long_job(platform: RunningPlatform, max_runtime: int = 3600) -> str:
    x, y = _dataset(20000, seed=2)
    uri = _put(platform, "long/train.csv", _csv(x, y))
    return _create(
        platform,
        [_channel("train", uri)],
        {"objective": "binary:logistic", "num_round": "100000", "max_depth": "8", "eta": "0.01"},
        max_runtime=max_runtime,
    )


def _wait_for_secondary(platform: RunningPlatform, name: str, status: str) -> None:
    sm = platform.session().client("sagemaker")
    deadline = time.monotonic() + 60
    while sm.describe_training_job(TrainingJobName=name)["SecondaryStatus"] != status:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_stop_training_job(platform: RunningPlatform) -> None:
    name = _long_job(platform)
    _wait_for_secondary(platform, name, "Training")
    sm = platform.session().client("sagemaker")
    sm.stop_training_job(TrainingJobName=name)
    desc = _wait(platform, name)
    assert desc["TrainingJobStatus"] == "Stopped" and desc["SecondaryStatus"] == "Stopped"
    with pytest.raises(ClientError) as exc:
        sm.stop_training_job(TrainingJobName=name)
    assert "status Stopped" in str(exc.value)


STOPPED_SCRIPT = (  # one line: ContainerEntrypoint members are single-line strings
    "import os, pathlib, time; model = pathlib.Path(os.environ['SM_MODEL_DIR']); "
    "(model / 'weights.txt').write_text('after epoch 3'); "
    "[print(f'epoch={e} loss={1 / e:.3f}', flush=True) for e in (1, 2, 3)]; time.sleep(600)"
)


def test_a_stopped_job_keeps_its_model_and_metrics(platform: RunningPlatform) -> None:
    """As on SageMaker: StopTrainingJob uploads /opt/ml/model as it is and records the metrics logged so far."""
    sm = platform.session().client("sagemaker")
    account = platform.session().client("sts").get_caller_identity()["Account"]
    name = f"stopped-{uuid.uuid4().hex[:8]}"
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={
            "TrainingImage": IMAGE,
            "TrainingInputMode": "File",
            "ContainerEntrypoint": ["python3", "-c", STOPPED_SCRIPT],
            "MetricDefinitions": [{"Name": "train:loss", "Regex": "loss=([0-9.]+)"}],
        },
        RoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    logs = platform.session().client("logs")
    deadline = time.monotonic() + 60
    while True:  # the script has written its model and logged its last metric
        streams = logs.describe_log_streams(
            logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=f"{name}/algo-1"
        )["logStreams"]
        events = (
            logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=streams[0]["logStreamName"])[
                "events"
            ]
            if streams
            else []
        )
        if any("epoch=3" in e["message"] for e in events):
            break
        assert time.monotonic() < deadline, f"{name} logged no third epoch: {events}"
        time.sleep(0.1)
    sm.stop_training_job(TrainingJobName=name)
    desc = _wait(platform, name)
    assert desc["TrainingJobStatus"] == "Stopped" and desc["SecondaryStatus"] == "Stopped", desc
    assert [(m["MetricName"], m["Value"]) for m in desc["FinalMetricDataList"]] == [("train:loss", 0.333)]
    uri = desc["ModelArtifacts"]["S3ModelArtifacts"]
    assert uri == f"s3://{BUCKET}/output/{name}/output/model.tar.gz"
    blob = platform.session().client("s3").get_object(Bucket=BUCKET, Key=uri.split("/", 3)[3])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        member = tar.extractfile("weights.txt")
        assert member is not None and member.read() == b"after epoch 3"


def test_max_runtime_is_enforced(platform: RunningPlatform) -> None:
    name = _long_job(platform, max_runtime=2)
    desc = _wait(platform, name)
    assert desc["TrainingJobStatus"] == "Stopped" and desc["SecondaryStatus"] == "MaxRuntimeExceeded"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("empty-prefix", "No S3 objects found under S3 URL"),
        ("header-row", "header.csv"),
        ("non-numeric", "line 3"),
        ("unknown-hyperparameter", "colour"),
        ("bad-value", "max_depth"),
        ("no-train-channel", "train"),
        ("unknown-image", "is not one OpenSage provides"),
        ("label-out-of-range", "num_class"),
    ],
)
def test_bad_input_fails_with_a_reason(platform: RunningPlatform, case: str, reason: str) -> None:
    x, y = _dataset(200, seed=3)
    good = _put(platform, f"bad/{case}/good.csv", _csv(x, y))
    hps = {"objective": "binary:logistic", "num_round": "5"}
    channels = [_channel("train", good)]
    image = IMAGE
    if case == "empty-prefix":
        channels = [_channel("train", f"s3://{BUCKET}/nothing-here/")]
    elif case == "header-row":
        channels = [_channel("train", _put(platform, "bad/header.csv", b"label,a,b\n1,2,3\n0,1,1\n"))]
    elif case == "non-numeric":
        channels = [_channel("train", _put(platform, "bad/nonnum.csv", b"1,2,3\n0,1,1\n1,abc,3\n"))]
    elif case == "unknown-hyperparameter":
        hps["colour"] = "blue"
    elif case == "bad-value":
        hps["max_depth"] = "deep"
    elif case == "no-train-channel":
        channels = [_channel("validation", good)]
    elif case == "unknown-image":
        image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-own-image:1"
    elif case == "label-out-of-range":
        hps = {"objective": "multi:softmax", "num_class": "2", "num_round": "5"}
        channels = [_channel("train", _put(platform, "bad/labels.csv", b"0,1\n1,2\n5,3\n"))]
    desc = _wait(platform, _create(platform, channels, hps, image=image))
    assert desc["TrainingJobStatus"] == "Failed"
    assert reason in desc["FailureReason"], desc["FailureReason"]
    assert desc["SecondaryStatusTransitions"][-1]["Status"] == "Failed"


def test_create_rejects_a_missing_role_and_duplicate_names(platform: RunningPlatform) -> None:
    x, y = _dataset(200)
    uri = _put(platform, "dup/train.csv", _csv(x, y))
    account = platform.session().client("sts").get_caller_identity()["Account"]
    with pytest.raises(ClientError) as exc:
        _create(platform, [_channel("train", uri)], role=f"arn:aws:iam::{account}:role/NoSuchRole")
    assert exc.value.response["Error"]["Code"] == "ValidationException" and "NoSuchRole" in str(exc.value)
    name = _create(platform, [_channel("train", uri)])
    sm = platform.session().client("sagemaker")
    desc = sm.describe_training_job(TrainingJobName=name)
    with pytest.raises(ClientError) as exc:
        sm.create_training_job(
            TrainingJobName=name,
            AlgorithmSpecification=desc["AlgorithmSpecification"],
            RoleArn=desc["RoleArn"],
            OutputDataConfig=desc["OutputDataConfig"],
            ResourceConfig=desc["ResourceConfig"],
            StoppingCondition=desc["StoppingCondition"],
        )
    assert exc.value.response["Error"]["Code"] == "ResourceInUse" and "already exists" in str(exc.value)
    with pytest.raises(ClientError) as exc:
        sm.describe_training_job(TrainingJobName="no-such-job")
    assert exc.value.response["Error"]["Code"] == "ValidationException" and "Could not find" in str(exc.value)
    _wait(platform, name)


SDK_FIT = """
import sagemaker
from sagemaker import image_uris
from sagemaker.estimator import Estimator
from sagemaker.inputs import TrainingInput
session = sagemaker.Session()
bucket = session.default_bucket()
train = session.upload_data({path!r}, bucket=bucket, key_prefix="sdk-fit/train")
image = image_uris.retrieve("xgboost", session.boto_region_name, "1.7-1")
est = Estimator(image, sagemaker.get_execution_role(), instance_count=1, instance_type="ml.m5.xlarge",
                output_path=f"s3://{{bucket}}/sdk-fit/output", sagemaker_session=session)
est.set_hyperparameters(objective="binary:logistic", num_round=10, max_depth=3)
est.fit({{"train": TrainingInput(train, content_type="csv")}}, logs=True)
print("MODEL_DATA", est.model_data)
from sagemaker.predictor import Predictor
from sagemaker.serializers import CSVSerializer
predictor = est.deploy(initial_instance_count=1, instance_type="ml.m5.large", serializer=CSVSerializer())
print("PREDICTION", predictor.predict([[2.0, 1.0, 0, 0, 0], [-2.0, -1.0, 0, 0, 0]]).decode().replace("\\n", ","))
again = Predictor(predictor.endpoint_name, sagemaker_session=session, serializer=CSVSerializer())
print("ATTACHED", again.predict([2.0, 1.0, 0, 0, 0]).decode())
predictor.delete_model()
predictor.delete_endpoint()
print("DELETED", predictor.endpoint_name)
"""


def test_sagemaker_sdk_fit_deploy_predict_delete(platform: RunningPlatform, tmp_path: Path) -> None:
    """The seeds' central flow with the unchanged SDK v2 (deploy() itself waits 30 s between its polls)."""
    x, y = _dataset(500, seed=4)
    data = tmp_path / "train.csv"
    data.write_bytes(_csv(x, y))
    result = subprocess.run(
        [sys.executable, "-c", SDK_FIT.format(path=str(data))],
        env=platform.shell_env(),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = result.stdout
    assert "train-logloss" in out  # the training log, streamed by fit(logs=True)
    assert "Completed - Training job completed" in out
    model_data = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("MODEL_DATA ")][0]
    assert model_data.endswith("/output/model.tar.gz") and "/sdk-fit/output/" in model_data
    _model(platform, model_data)
    import re

    values = dict(re.findall(r"(PREDICTION|ATTACHED) (\S+)", out))  # deploy() prints progress without a newline
    assert "PREDICTION" in values, out[-1500:]
    first, second = (float(v) for v in values["PREDICTION"].split(","))
    assert first > 0.5 > second and float(values["ATTACHED"]) > 0.5
    endpoint = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("DELETED ")][0]
    endpoints = platform.session().client("sagemaker").list_endpoints()["Endpoints"]
    assert endpoint not in [e["EndpointName"] for e in endpoints]


LINEAR_LEARNER = """
import json
import numpy as np
import sagemaker
from sagemaker import LinearLearner
session = sagemaker.Session()
rng = np.random.default_rng(0)
x = rng.normal(size=(800, 6)).astype("float32")
y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("float32")
ll = LinearLearner(role=sagemaker.get_execution_role(), instance_count=1, instance_type="ml.m5.large",
                   predictor_type="binary_classifier", epochs=5, sagemaker_session=session)
train = ll.record_set(x[:600], labels=y[:600])
test = ll.record_set(x[600:], labels=y[600:], channel="test")
ll.fit([train, test], mini_batch_size=100, logs=False)
print("MODEL_DATA", ll.model_data)
predictor = ll.deploy(initial_instance_count=1, instance_type="ml.m5.large", wait=False)
session.wait_for_endpoint(predictor.endpoint_name, poll=1)
records = predictor.predict(x[700:])
labels = [r.label["predicted_label"].float32_tensor.values[0] for r in records]
scores = [r.label["score"].float32_tensor.values[0] for r in records]
job = session.sagemaker_client.describe_training_job(TrainingJobName=ll.latest_training_job.name)
print("RESULT", json.dumps({"accuracy": float(np.mean(np.array(labels) == y[700:])), "n": len(records),
                            "scores": [min(scores), max(scores)],
                            "metrics": sorted(m["MetricName"] for m in job.get("FinalMetricDataList", []))}))
predictor.delete_endpoint()
"""


def test_linear_learner_record_set_fit_deploy_predict(platform: RunningPlatform, tmp_path: Path) -> None:
    """The built-in Linear Learner as the SDK's own estimator drives it: RecordIO-protobuf in S3, protobuf out."""
    out = platform.run_python(LINEAR_LEARNER, tmp_path, timeout=300)
    assert "/output/model.tar.gz" in out.split("MODEL_DATA ", 1)[1].splitlines()[0]
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert result["n"] == 100 and result["accuracy"] >= 0.9, result
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)  # the script's data
    x = rng.normal(size=(800, 6)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("float32")
    theirs = LogisticRegression().fit(x[:600], y[:600]).score(x[700:], y[700:])
    assert result["accuracy"] >= theirs - 0.03, (result, theirs)  # as good as scikit-learn's on the same data
    assert 0.0 <= result["scores"][0] <= result["scores"][1] <= 1.0
    assert "test:binary_classification_accuracy" in result["metrics"], result


KMEANS = """
import json
import numpy as np
import sagemaker
from sagemaker import KMeans
session = sagemaker.Session()
rng = np.random.default_rng(1)
truth = np.array([[0, 0, 0], [8, 8, 0], [0, 8, 8]], dtype="float32")
x = np.vstack([c + rng.normal(scale=0.5, size=(300, 3)) for c in truth]).astype("float32")
rng.shuffle(x)
km = KMeans(role=sagemaker.get_execution_role(), instance_count=1, instance_type="ml.m5.large", k=3,
            eval_metrics=["msd", "ssd"], sagemaker_session=session)
km.fit([km.record_set(x[:800]), km.record_set(x[800:], channel="test")], logs=False)
predictor = km.deploy(initial_instance_count=1, instance_type="ml.m5.large", wait=False)
session.wait_for_endpoint(predictor.endpoint_name, poll=1)
records = predictor.predict(truth)
job = session.sagemaker_client.describe_training_job(TrainingJobName=km.latest_training_job.name)
print("RESULT", json.dumps({
    "clusters": [r.label["closest_cluster"].float32_tensor.values[0] for r in records],
    "distances": [r.label["distance_to_cluster"].float32_tensor.values[0] for r in records],
    "metrics": {m["MetricName"]: m["Value"] for m in job.get("FinalMetricDataList", [])}}))
predictor.delete_endpoint()
"""


def test_kmeans_record_set_fit_deploy_predict(platform: RunningPlatform, tmp_path: Path) -> None:
    """The built-in K-Means as the SDK's KMeans drives it: three clear clusters found, each center near its truth."""
    result = json.loads(platform.run_python(KMEANS, tmp_path, timeout=300).split("RESULT ", 1)[1].splitlines()[0])
    assert sorted(result["clusters"]) == [0.0, 1.0, 2.0], result  # each true center in a cluster of its own
    assert max(result["distances"]) < 0.3, result
    assert set(result["metrics"]) == {"test:msd", "test:ssd"} and result["metrics"]["test:msd"] < 1.0, result
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(1)  # the script's data
    truth = np.array([[0, 0, 0], [8, 8, 0], [0, 8, 8]], dtype="float32")
    x = np.vstack([c + rng.normal(scale=0.5, size=(300, 3)) for c in truth]).astype("float32")
    rng.shuffle(x)
    fitted = KMeans(n_clusters=3, n_init=10, random_state=0).fit(x[:800])
    theirs = -fitted.score(x[800:]) / len(x[800:])  # scikit-learn's inertia per test record
    assert result["metrics"]["test:msd"] <= theirs * 1.05, (result, theirs)


PCA = """
import json
import numpy as np
import sagemaker
from sagemaker import PCA
session = sagemaker.Session()
rng = np.random.default_rng(2)
latent = rng.normal(size=(600, 2)) * [4.0, 1.5]
basis = np.linalg.qr(rng.normal(size=(6, 6)))[0][:2]
x = (latent @ basis + rng.normal(scale=0.05, size=(600, 6)) + 3.0).astype("float32")
pca = PCA(role=sagemaker.get_execution_role(), instance_count=1, instance_type="ml.m5.large", num_components=2,
          algorithm_mode="randomized", input_mode="Pipe", sagemaker_session=session)
pca.fit(pca.record_set(x), mini_batch_size=100, logs=False)
predictor = pca.deploy(initial_instance_count=1, instance_type="ml.m5.large", wait=False)
session.wait_for_endpoint(predictor.endpoint_name, poll=1)
records = predictor.predict(x[:20])
print("RESULT", json.dumps({"projections": [list(r.label["projection"].float32_tensor.values) for r in records],
                            "hyperparameters": pca.hyperparameters()}))
predictor.delete_endpoint()
"""


def test_pca_record_set_fit_deploy_predict(platform: RunningPlatform, tmp_path: Path) -> None:
    """The built-in PCA as the SDK's PCA drives it, in Pipe mode: the projections equal scikit-learn's."""
    from sklearn.decomposition import PCA as SkPCA

    result = json.loads(platform.run_python(PCA, tmp_path, timeout=300).split("RESULT ", 1)[1].splitlines()[0])
    assert result["hyperparameters"]["mini_batch_size"] == "100"
    rng = np.random.default_rng(2)
    latent = rng.normal(size=(600, 2)) * [4.0, 1.5]
    basis = np.linalg.qr(rng.normal(size=(6, 6)))[0][:2]
    x = (latent @ basis + rng.normal(scale=0.05, size=(600, 6)) + 3.0).astype("float32")
    theirs = SkPCA(n_components=2).fit(x.astype(np.float64)).transform(x[:20].astype(np.float64))
    ours = np.array(result["projections"])
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), atol=1e-2)


KNN = """
import json
import numpy as np
import sagemaker
from sagemaker import KNN
session = sagemaker.Session()
rng = np.random.default_rng(5)
x = rng.normal(size=(900, 4)).astype("float32")
y = ((x[:, 0] > 0).astype(int) + (x[:, 1] > 0)).astype("float32")
knn = KNN(role=sagemaker.get_execution_role(), instance_count=1, instance_type="ml.m5.large", k=7,
          sample_size=700, predictor_type="classifier", sagemaker_session=session)
knn.fit([knn.record_set(x[:700], labels=y[:700]), knn.record_set(x[700:], labels=y[700:], channel="test")],
        mini_batch_size=100, logs=False)
predictor = knn.deploy(initial_instance_count=1, instance_type="ml.m5.large", wait=False)
session.wait_for_endpoint(predictor.endpoint_name, poll=1)
records = predictor.predict(x[700:])
job = session.sagemaker_client.describe_training_job(TrainingJobName=knn.latest_training_job.name)
print("RESULT", json.dumps({"labels": [r.label["predicted_label"].float32_tensor.values[0] for r in records],
                            "metrics": {m["MetricName"]: m["Value"] for m in job.get("FinalMetricDataList", [])}}))
predictor.delete_endpoint()
"""


def test_knn_record_set_fit_deploy_predict(platform: RunningPlatform, tmp_path: Path) -> None:
    """The built-in k-NN as the SDK's KNN drives it: as accurate as scikit-learn's on the same data."""
    from sklearn.neighbors import KNeighborsClassifier

    result = json.loads(platform.run_python(KNN, tmp_path, timeout=300).split("RESULT ", 1)[1].splitlines()[0])
    rng = np.random.default_rng(5)
    x = rng.normal(size=(900, 4)).astype("float32")
    y = ((x[:, 0] > 0).astype(int) + (x[:, 1] > 0)).astype("float32")
    theirs = KNeighborsClassifier(7).fit(x[:700], y[:700]).predict(x[700:])
    ours = np.array(result["labels"])
    assert len(ours) == 200 and np.mean(ours == theirs) > 0.97, result
    assert abs(result["metrics"]["test:accuracy"] - float(np.mean(ours == y[700:]))) < 1e-6, result


FACTORIZATION_MACHINES = """
import io, json
import boto3
import numpy as np
import sagemaker
from scipy import sparse
from sagemaker import image_uris
from sagemaker.amazon.common import write_spmatrix_to_sparse_tensor
from sagemaker.deserializers import JSONDeserializer
from sagemaker.estimator import Estimator
from sagemaker.serializers import JSONSerializer
session = sagemaker.Session()
rng = np.random.default_rng(7)
users, items, n = 30, 20, 2400
taste_u, taste_i = rng.normal(size=(users, 3)), rng.normal(size=(items, 3))
u, i = rng.integers(0, users, n), rng.integers(0, items, n)
y = ((taste_u[u] * taste_i[i]).sum(axis=1) > 0).astype("float32")
x = sparse.lil_matrix((n, users + items), dtype="float32")
x[np.arange(n), u] = 1
x[np.arange(n), users + i] = 1
bucket = session.default_bucket()
for channel, part in (("train", slice(0, 2000)), ("test", slice(2000, None))):
    buf = io.BytesIO()
    write_spmatrix_to_sparse_tensor(buf, x[part].tocsr(), y[part])
    buf.seek(0)
    boto3.client("s3").upload_fileobj(buf, bucket, f"fm/{channel}/data.pbr")
image = image_uris.retrieve("factorization-machines", session.boto_region_name)
fm = Estimator(image, sagemaker.get_execution_role(), instance_count=1, instance_type="ml.m5.large",
               output_path=f"s3://{bucket}/fm/output", sagemaker_session=session)
fm.set_hyperparameters(feature_dim=users + items, num_factors=8, predictor_type="binary_classifier", epochs=20,
                       mini_batch_size=100, factors_lr=0.05, linear_lr=0.05, factors_init_sigma=0.1)
fm.fit({"train": f"s3://{bucket}/fm/train/", "test": f"s3://{bucket}/fm/test/"}, logs=False)
predictor = fm.deploy(initial_instance_count=1, instance_type="ml.m5.large", serializer=JSONSerializer(),
                      deserializer=JSONDeserializer(), wait=False)
session.wait_for_endpoint(predictor.endpoint_name, poll=1)
answers = predictor.predict({"instances": [{"features": row} for row in x[2000:2100].toarray().tolist()]})
job = session.sagemaker_client.describe_training_job(TrainingJobName=fm.latest_training_job.name)
print("RESULT", json.dumps({
    "accuracy": float(np.mean([a["predicted_label"] for a in answers["predictions"]] == y[2000:2100])),
    "scores": [a["score"] for a in answers["predictions"]],
    "metrics": {m["MetricName"]: m["Value"] for m in job.get("FinalMetricDataList", [])}}))
predictor.delete_endpoint()
"""


def test_factorization_machines_sparse_fit_deploy_predict(platform: RunningPlatform, tmp_path: Path) -> None:
    """The built-in Factorization Machines as a recommender notebook drives it: sparse one-hot records in S3."""
    out = platform.run_python(FACTORIZATION_MACHINES, tmp_path, timeout=300)
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert result["accuracy"] > 0.8 and all(0 <= s <= 1 for s in result["scores"]), result
    metrics = result["metrics"]
    assert metrics["test:binary_classification_accuracy"] > 0.8, metrics
    assert {"test:binary_f_beta", "test:binary_classification_cross_entropy",
            "train:binary_classification_cross_entropy"} <= set(metrics), metrics


RANDOM_CUT_FOREST = """
import json
import numpy as np
import sagemaker
from sagemaker import RandomCutForest
session = sagemaker.Session()
rng = np.random.default_rng(9)
x = rng.normal(size=(2000, 3)).astype("float32")
rcf = RandomCutForest(role=sagemaker.get_execution_role(), instance_count=1, instance_type="ml.m5.large",
                      num_samples_per_tree=256, num_trees=50, sagemaker_session=session)
rcf.fit(rcf.record_set(x), logs=False)
predictor = rcf.deploy(initial_instance_count=1, instance_type="ml.m5.large", wait=False)
session.wait_for_endpoint(predictor.endpoint_name, poll=1)
probe = np.vstack([x[:20], np.full((2, 3), 6.0, dtype="float32")])
records = predictor.predict(probe)
print("RESULT", json.dumps([r.label["score"].float32_tensor.values[0] for r in records]))
predictor.delete_endpoint()
"""


def test_random_cut_forest_record_set_fit_deploy_predict(platform: RunningPlatform, tmp_path: Path) -> None:
    """The built-in Random Cut Forest as the SDK drives it: the far points score well above the ordinary ones."""
    found = json.loads(platform.run_python(RANDOM_CUT_FOREST, tmp_path, timeout=300).split("RESULT ", 1)[1]
                       .splitlines()[0])
    ordinary, far = np.array(found[:20]), np.array(found[20:])
    assert len(found) == 22 and far.min() > ordinary.mean() + 3 * ordinary.std(), found


IP_INSIGHTS = """
import json
import boto3
import numpy as np
import sagemaker
from sagemaker import image_uris
from sagemaker.deserializers import JSONDeserializer
from sagemaker.estimator import Estimator
from sagemaker.inputs import TrainingInput
from sagemaker.serializers import CSVSerializer
session = sagemaker.Session()
rng = np.random.default_rng(11)

def events(n, own=True):
    users = rng.integers(0, 40, n)
    nets = users if own else (users + rng.integers(1, 40, n)) % 40
    return [f"user-{u},{20 + s}.{s}.{rng.integers(0, 256)}.{rng.integers(1, 255)}" for u, s in zip(users, nets)]

bucket = session.default_bucket()
s3 = boto3.client("s3")
s3.put_object(Bucket=bucket, Key="ipi/train/events.csv", Body="\\n".join(events(4000)) + "\\n")
s3.put_object(Bucket=bucket, Key="ipi/validation/events.csv", Body="\\n".join(events(400)) + "\\n")
est = Estimator(image_uris.retrieve("ipinsights", session.boto_region_name), sagemaker.get_execution_role(),
                instance_count=1, instance_type="ml.m5.large", output_path=f"s3://{bucket}/ipi/output",
                sagemaker_session=session)
est.set_hyperparameters(num_entity_vectors=100, vector_dim=16, epochs=10, mini_batch_size=500, learning_rate=0.01)
est.fit({"train": TrainingInput(f"s3://{bucket}/ipi/train/", content_type="text/csv"),
         "validation": TrainingInput(f"s3://{bucket}/ipi/validation/", content_type="text/csv")}, logs=False)
predictor = est.deploy(initial_instance_count=1, instance_type="ml.m5.large", serializer=CSVSerializer(),
                       deserializer=JSONDeserializer(), wait=False)
session.wait_for_endpoint(predictor.endpoint_name, poll=1)
usual, unusual = events(100), events(100, own=False)
answers = predictor.predict("\\n".join(usual + unusual))["predictions"]
job = session.sagemaker_client.describe_training_job(TrainingJobName=est.latest_training_job.name)
print("RESULT", json.dumps({"dots": [a["dot_product"] for a in answers],
                            "metrics": {m["MetricName"]: m["Value"] for m in job.get("FinalMetricDataList", [])}}))
predictor.delete_endpoint()
"""


def test_ip_insights_fit_deploy_predict(platform: RunningPlatform, tmp_path: Path) -> None:
    """The built-in IP Insights as its tutorial drives it: CSV events in S3, dot products out of the endpoint."""
    result = json.loads(platform.run_python(IP_INSIGHTS, tmp_path, timeout=300).split("RESULT ", 1)[1].splitlines()[0])
    dots = np.array(result["dots"])
    assert len(dots) == 200 and dots[:100].mean() > dots[100:].mean() + 1.0, result
    assert result["metrics"]["validation:discriminator_auc"] > 0.85, result


def test_a_crash_of_the_server_loses_no_job_record(tmp_path: Path) -> None:
    """kill -9 of `opensage up` mid-job: after the restart the job is Failed with a reason, its process gone."""
    import os
    import signal

    import psutil

    home, aws = tmp_path / "home", tmp_path / "aws"
    with running_platform(home, aws) as first:
        first.session().client("s3").create_bucket(Bucket=BUCKET)
        name = _long_job(first)
        _wait_for_secondary(first, name, "Training")
        deadline = time.monotonic() + 30  # "Training" is recorded just before the process starts
        workers: list[psutil.Process] = []
        while not workers and time.monotonic() < deadline:
            for p in psutil.Process(first.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):  # a short-lived helper that ended meanwhile
                    if "xgboost" in " ".join(p.cmdline()):
                        workers.append(p)
            time.sleep(0.05)
        assert workers
        os.killpg(first.proc.pid, signal.SIGKILL)  # the server and the store crash; the training process lives on
        first.proc.wait()
        port = first.port
    with running_platform(home, aws, port=port) as second:
        desc = _wait(second, name, timeout=30)
        assert desc["TrainingJobStatus"] == "Failed" and "restarted" in desc["FailureReason"]
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, "the orphaned training process was not stopped"


def test_down_after_a_crash_ends_what_the_server_left(tmp_path: Path) -> None:
    """kill -9 of the server alone: `opensage down` ends its object store and its job's process."""
    import os
    import signal

    import psutil

    from opensage.server import PID_FILE

    home, aws = tmp_path / "home", tmp_path / "aws"
    with running_platform(home, aws) as first:
        first.session().client("s3").create_bucket(Bucket=BUCKET)
        name = _long_job(first)
        _wait_for_secondary(first, name, "Training")
        deadline = time.monotonic() + 30
        left: list[psutil.Process] = []
        def command(proc: psutil.Process) -> str:  # '' for a process that has ended meanwhile
            with contextlib.suppress(psutil.Error):
                return " ".join(proc.cmdline())
            return ""

        while not any("xgboost" in command(p) for p in left) and time.monotonic() < deadline:
            left = psutil.Process(first.proc.pid).children(recursive=True)
            time.sleep(0.05)
        left = [p for p in left if command(p)]
        assert any("weed" in command(p) for p in left) and any("xgboost" in command(p) for p in left)
        os.kill(first.proc.pid, signal.SIGKILL)  # the server alone: its store and its job live on
        first.proc.wait()
        down = first.cli("down")
        assert down.returncode == 0 and "had ended without stopping" in down.stdout, down.stdout + down.stderr
        assert "object store" in down.stdout and "job and model-server processes" in down.stdout
        _, alive = psutil.wait_procs(left, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
        assert not (home / PID_FILE).exists()
        assert first.cli("down").stdout.startswith("OpenSage is not running")


def test_manifest_channel_and_checkpoints(platform: RunningPlatform) -> None:
    import json

    x, y = _dataset(400, seed=5)
    _put(platform, "manifest/parts/a.csv", _csv(x[:200], y[:200]))
    _put(platform, "manifest/parts/b.csv", _csv(x[200:], y[200:]))
    _put(platform, "checkpoints/in/previous.ckpt", b"from an earlier run")
    manifest = _put(
        platform,
        "manifest/train.manifest",
        json.dumps([{"prefix": f"s3://{BUCKET}/manifest/parts/"}, "a.csv", "b.csv"]).encode(),
    )
    channel = {
        "ChannelName": "train",
        "ContentType": "text/csv",
        "DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": manifest}},
    }
    sm = platform.session().client("sagemaker")
    account = platform.session().client("sts").get_caller_identity()["Account"]
    name = f"job-{uuid.uuid4().hex[:10]}"
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        RoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        InputDataConfig=[channel],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
        HyperParameters={"objective": "binary:logistic", "num_round": "5"},
        CheckpointConfig={"S3Uri": f"s3://{BUCKET}/checkpoints/in"},
    )
    desc = _wait(platform, name)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    logs = platform.session().client("logs")
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=name)[
        "logStreams"
    ][0]["logStreamName"]
    text = "\n".join(
        e["message"]
        for e in logs.get_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream, startFromHead=True
        )["events"]
    )
    assert "Downloaded 2 file(s)" in text and "Restored 1 checkpoint file(s)" in text
    assert "Saved 1 checkpoint file(s)" in text


SDK_RULES = """
import json, sagemaker
from sagemaker import image_uris
from sagemaker.debugger import ProfilerRule, Rule, rule_configs
from sagemaker.estimator import Estimator
from sagemaker.inputs import TrainingInput
session = sagemaker.Session()
bucket = session.default_bucket()
train = session.upload_data({train!r}, bucket=bucket, key_prefix="sdk-rules/train")
validation = session.upload_data({validation!r}, bucket=bucket, key_prefix="sdk-rules/validation")
rules = [
    Rule.sagemaker(rule_configs.loss_not_decreasing()),
    Rule.sagemaker(rule_configs.overfit()),
    Rule.sagemaker(rule_configs.overtraining()),
    Rule.sagemaker(rule_configs.class_imbalance()),
    ProfilerRule.sagemaker(rule_configs.ProfilerReport()),
]
est = Estimator(image_uris.retrieve("xgboost", session.boto_region_name, "1.7-1"), sagemaker.get_execution_role(),
                instance_count=1, instance_type="ml.m5.xlarge", output_path=f"s3://{{bucket}}/sdk-rules/output",
                rules=rules, sagemaker_session=session)
est.set_hyperparameters(objective="binary:logistic", num_round=30, max_depth=6, eval_metric="logloss")
est.fit({{"train": TrainingInput(train, content_type="csv"),
          "validation": TrainingInput(validation, content_type="csv")}}, logs=False)
print("RULES", json.dumps(est.latest_training_job.rule_job_summary(), default=str))
"""


def test_debugger_rules_of_the_xgboost_tutorial(platform: RunningPlatform, tmp_path: Path) -> None:
    """The SDK's built-in rules: the loss rules are evaluated over the job's metrics, the others say why not."""
    x, y = _dataset(1000, seed=5)
    (tmp_path / "train.csv").write_bytes(_csv(x[:800], y[:800]))
    (tmp_path / "validation.csv").write_bytes(_csv(x[800:], y[800:]))
    out = platform.run_python(
        SDK_RULES.format(train=str(tmp_path / "train.csv"), validation=str(tmp_path / "validation.csv")), tmp_path
    )
    line = [line for line in out.splitlines() if line.startswith("RULES ")][0]
    statuses = {s["RuleConfigurationName"]: s for s in json.loads(line.removeprefix("RULES "))}
    assert set(statuses) == {"LossNotDecreasing", "Overfit", "Overtraining", "ClassImbalance", "ProfilerReport"}
    for name in ("LossNotDecreasing", "Overfit", "Overtraining"):
        assert statuses[name]["RuleEvaluationStatus"] in ("NoIssuesFound", "IssuesFound"), statuses[name]
    assert statuses["LossNotDecreasing"]["RuleEvaluationStatus"] == "NoIssuesFound"  # 30 rounds of falling loss
    for name in ("ClassImbalance", "ProfilerReport"):
        assert statuses[name]["RuleEvaluationStatus"] == "Error"
        assert "does not evaluate" in statuses[name]["StatusDetails"]


@pytest.mark.parametrize(
    ("member", "value", "message"),
    [
        (
            "ResourceConfig",
            {"InstanceGroups": [{"InstanceType": "ml.m5.large", "InstanceCount": 1, "InstanceGroupName": "a"}]},
            "heterogeneous clusters",
        ),
        ("TensorBoardOutputConfig", {"S3OutputPath": "s3://b/tb"}, "TensorBoard"),
        ("RemoteDebugConfig", {"EnableRemoteDebug": True}, "remote debugging"),
    ],
)
def test_members_that_cannot_be_applied_are_refused(
    platform: RunningPlatform, member: str, value: dict[str, Any], message: str
) -> None:
    sm = platform.session().client("sagemaker")
    account = platform.session().client("sts").get_caller_identity()["Account"]
    request: dict[str, Any] = {
        "TrainingJobName": f"refused-{uuid.uuid4().hex[:8]}",
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
    }
    request[member] = {**request.get(member, {}), **value}
    with pytest.raises(ClientError) as exc:
        sm.create_training_job(**request)
    assert exc.value.response["Error"]["Code"] == "ValidationException" and message in str(exc.value)
    assert request["TrainingJobName"] not in [
        j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]
    ]
