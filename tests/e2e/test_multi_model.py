"""Multi-model endpoints end to end: the SDK v2's MultiDataModel, TargetModel with boto3, the /models contract
behind them, their CloudWatch metrics; and the router sending a request on when its instance dies."""

from __future__ import annotations

import io
import os
import re
import signal
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from botocore.exceptions import ClientError

from helpers import RunningPlatform, is_model_server, running_platform

pytestmark = pytest.mark.slow
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
BUCKET = "multi-model-tests"
BODY = "1.5,0,0,0\n-1.5,0,0,0"


def _artifact(tmp: Path, rounds: int) -> bytes:
    """A small XGBoost model.tar.gz (trained once per module; copied under several names)."""
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=(x[:, 0] > 0).astype(int)), rounds)
    path = tmp / f"xgboost-model-{rounds}.ubj"
    booster.save_model(str(path))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(path, arcname="xgboost-model")
    return buf.getvalue()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("multimodel")
    with running_platform(root / "home", root / "aws") as running:
        s3 = running.session().client("s3")
        s3.create_bucket(Bucket=BUCKET)
        (root / "strong.tar.gz").write_bytes(_artifact(root, 8))
        (root / "weak.tar.gz").write_bytes(_artifact(root, 1))
        running.artifacts = root  # type: ignore[attr-defined]
        yield running


def _clients(p: RunningPlatform) -> tuple[Any, Any]:
    session = p.session()
    return session.client("sagemaker"), session.client("sagemaker-runtime")


def _deploy(p: RunningPlatform, container: dict[str, Any], count: int = 1) -> str:
    sm, _ = _clients(p)
    name = f"mme-{uuid.uuid4().hex[:8]}"
    account = p.session().client("sts").get_caller_identity()["Account"]
    role = f"arn:aws:iam::{account}:role/OpenSageExecutionRole"
    sm.create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=role)
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InstanceType": "ml.m5.large"}
    variant["InitialInstanceCount"] = count
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    deadline = time.monotonic() + 90
    while (desc := sm.describe_endpoint(EndpointName=name))["EndpointStatus"] == "Creating":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return name


def _upload(p: RunningPlatform, key: str, which: str) -> None:
    p.session().client("s3").upload_file(str(p.artifacts / f"{which}.tar.gz"), BUCKET, key)  # type: ignore[attr-defined]


def _scores(rt: Any, name: str, target: str) -> list[float]:
    answer = rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=BODY, TargetModel=target)
    return [float(v) for v in answer["Body"].read().decode().split(",")]


def test_multi_data_model_of_the_sdk_v2(platform: RunningPlatform, tmp_path: Path) -> None:
    """MultiDataModel.deploy over three models, add_model after deploy (from a file, then twelve copies from S3),
    predict(target_model=...) on every one, list_models: unchanged SDK v2 code."""
    prefix = f"s3://{BUCKET}/sdk-{uuid.uuid4().hex[:6]}/"
    for n, which in enumerate(("strong", "weak", "strong"), start=1):
        _upload(platform, f"{prefix[len(f's3://{BUCKET}/'):]}model-{n}.tar.gz", which)
    local = platform.artifacts / "weak.tar.gz"  # type: ignore[attr-defined]
    out = platform.run_python(
        f"""
        import sagemaker
        from sagemaker.multidatamodel import MultiDataModel
        from sagemaker.serializers import CSVSerializer
        from sagemaker.deserializers import CSVDeserializer
        from sagemaker.predictor import Predictor
        session = sagemaker.Session()
        mdm = MultiDataModel(name="mdm-sdk-{uuid.uuid4().hex[:6]}", model_data_prefix="{prefix}", image_uri="{IMAGE}",
                             role=sagemaker.get_execution_role(), sagemaker_session=session, predictor_cls=Predictor)
        predictor = mdm.deploy(initial_instance_count=1, instance_type="ml.m5.large",
                               serializer=CSVSerializer(), deserializer=CSVDeserializer())
        for n in (1, 2, 3):
            print("PREDICTION", n, predictor.predict([[1.5, 0, 0, 0]], target_model=f"model-{{n}}.tar.gz")[0][0])
        mdm.add_model("{local}", "model-4.tar.gz")
        print("PREDICTION", 4, predictor.predict([[1.5, 0, 0, 0]], target_model="model-4.tar.gz")[0][0])
        for n in range(5, 17):
            mdm.add_model("{prefix}model-1.tar.gz", f"model-{{n}}.tar.gz")
        for n in range(5, 17):
            print("PREDICTION", n, predictor.predict([[1.5, 0, 0, 0]], target_model=f"model-{{n}}.tar.gz")[0][0])
        print("MODELS", sorted(mdm.list_models()))
        predictor.delete_endpoint()
        """,
        tmp_path,
    )
    predictions = {int(n): float(v) for n, v in re.findall(r"(?:^|[-!])PREDICTION (\d+) (\S+)$", out, re.MULTILINE)}
    assert sorted(predictions) == list(range(1, 17))
    strong, weak = predictions[1], predictions[2]
    assert strong > weak > 0.5  # eight rounds are surer than one
    assert predictions[3] == predictions[4 + 1] == strong and predictions[4] == weak
    assert all(predictions[n] == strong for n in range(5, 17))
    models = re.findall(r"^MODELS (.*)$", out, re.MULTILINE)[0]
    assert all(f"'model-{n}.tar.gz'" in models for n in range(1, 17))


def test_target_model_errors_are_the_callers_and_name_it(platform: RunningPlatform) -> None:
    sm, rt = _clients(platform)
    prefix = f"errors-{uuid.uuid4().hex[:6]}"
    _upload(platform, f"{prefix}/a.tar.gz", "strong")
    name = _deploy(platform, {"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/{prefix}/", "Mode": "MultiModel"})
    with pytest.raises(ClientError) as err:
        _scores(rt, name, "missing.tar.gz")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert f"key: {prefix}/missing.tar.gz" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=BODY)
    assert "TargetModel" in err.value.response["Error"]["Message"]
    platform.session().client("s3").put_object(Bucket=BUCKET, Key=f"{prefix}/corrupt.tar.gz", Body=b"not a tarball")
    with pytest.raises(ClientError) as err:
        _scores(rt, name, "corrupt.tar.gz")
    assert "corrupt.tar.gz" in err.value.response["Error"]["Message"]
    assert len(_scores(rt, name, "a.tar.gz")) == 2  # the endpoint serves on
    with pytest.raises(ClientError) as err:  # a prefix is not a model.tar.gz, and the reverse
        sm.create_model(
            ModelName=f"bad-{uuid.uuid4().hex[:6]}",
            PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/{prefix}/a.tar.gz", "Mode": "MultiModel"},
        )
    assert "S3 prefix" in err.value.response["Error"]["Message"]
    single = {"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/{prefix}/a.tar.gz"}
    one = _deploy(platform, single)
    with pytest.raises(ClientError) as err:
        _scores(rt, one, "a.tar.gz")
    assert "not a multi-model endpoint" in err.value.response["Error"]["Message"]
    sm.delete_endpoint(EndpointName=one)
    sm.delete_endpoint(EndpointName=name)


def test_a_batch_transform_of_a_multi_model_model_fails_saying_why(platform: RunningPlatform) -> None:
    sm, _ = _clients(platform)
    name = f"mme-transform-{uuid.uuid4().hex[:6]}"
    account = platform.session().client("sts").get_caller_identity()["Account"]
    container = {"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/anything/", "Mode": "MultiModel"}
    role = f"arn:aws:iam::{account}:role/OpenSageExecutionRole"
    sm.create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=role)
    platform.session().client("s3").put_object(Bucket=BUCKET, Key="transform-in/rows.csv", Body=BODY.encode())
    sm.create_transform_job(
        TransformJobName=name,
        ModelName=name,
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/transform-in"}}},
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/transform-out/"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    deadline = time.monotonic() + 60
    while (desc := sm.describe_transform_job(TransformJobName=name))["TransformJobStatus"] == "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert desc["TransformJobStatus"] == "Failed" and "multi-model" in desc["FailureReason"], desc


def _loads_per_instance(platform: RunningPlatform, name: str) -> dict[str, int]:
    logs = platform.session().client("logs")
    group = f"/aws/sagemaker/Endpoints/{name}"
    out: dict[str, int] = {}
    try:
        streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    except logs.exceptions.ResourceNotFoundException:  # the instances' first lines are not shipped yet
        return out
    for stream in streams:
        events = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"])["events"]
        out[stream["logStreamName"]] = sum(1 for e in events if re.search(r"model m\w+ loaded from", e["message"]))
    return out


def test_targets_stick_to_an_instance_new_names_are_served_and_metrics_say_so(platform: RunningPlatform) -> None:
    sm, rt = _clients(platform)
    prefix = f"routing-{uuid.uuid4().hex[:6]}"
    for key in ("a", "b", "c", "d"):
        _upload(platform, f"{prefix}/{key}.tar.gz", "strong")
    name = _deploy(platform, {"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/{prefix}", "Mode": "MultiModel"}, 2)
    for _ in range(5):
        for key in ("a", "b", "c", "d"):
            _scores(rt, name, f"{key}.tar.gz")
    strong = _scores(rt, name, "a.tar.gz")
    _upload(platform, f"{prefix}/a-v2.tar.gz", "weak")  # a new version, under a new name
    assert _scores(rt, name, "a-v2.tar.gz") != strong
    assert _scores(rt, name, "a.tar.gz") == strong
    deadline = time.monotonic() + 20
    while sum((loads := _loads_per_instance(platform, name)).values()) < 5:
        assert time.monotonic() < deadline, loads
        time.sleep(0.5)
    assert sum(loads.values()) == 5, loads  # each model loaded once, on one instance, however often it is used
    cw = platform.session().client("cloudwatch")
    dims = [{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": "AllTraffic"}]
    import datetime as dt

    now = dt.datetime.now(dt.UTC)

    def stats(metric: str) -> dict[str, float]:
        points = cw.get_metric_statistics(
            Namespace="AWS/SageMaker", MetricName=metric, Dimensions=dims, Period=3600,
            StartTime=now - dt.timedelta(hours=1), EndTime=now + dt.timedelta(minutes=5),
            Statistics=["SampleCount", "Sum", "Maximum"],
        )["Datapoints"]
        return points[0] if points else {}

    deadline = time.monotonic() + 20
    while not stats("LoadedModelCount") or stats("ModelCacheHit").get("SampleCount", 0) < 23:
        assert time.monotonic() < deadline, (stats("LoadedModelCount"), stats("ModelCacheHit"))
        time.sleep(1)
    hits = stats("ModelCacheHit")
    assert hits["SampleCount"] == 23 and hits["Sum"] == 23 - 5  # five first uses, the rest hits
    assert stats("ModelLoadingWaitTime")["SampleCount"] == 5 and stats("ModelLoadingWaitTime")["Maximum"] > 0
    assert stats("LoadedModelCount")["Maximum"] >= 2
    sm.delete_endpoint(EndpointName=name)


def _model_servers(platform: RunningPlatform, endpoint: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.Process(platform.proc.pid).children(recursive=True):
        try:
            if is_model_server(proc.cmdline()) and endpoint in proc.cwd().split("/"):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.mark.parametrize("multi_model", [False, True], ids=["single-model", "multi-model"])
def test_requests_in_flight_on_a_killed_instance_go_to_another(platform: RunningPlatform, multi_model: bool) -> None:
    """No request fails when one of two instances is killed under load: the router sends it on."""
    _, rt = _clients(platform)
    prefix = f"kill-{uuid.uuid4().hex[:6]}"
    _upload(platform, f"{prefix}/model.tar.gz", "strong")
    container = {"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/{prefix}/model.tar.gz"}
    if multi_model:
        container.update(ModelDataUrl=f"s3://{BUCKET}/{prefix}/", Mode="MultiModel")
    name = _deploy(platform, container, 2)
    target = {"TargetModel": "model.tar.gz"} if multi_model else {}
    errors: list[str] = []
    done = threading.Event()

    def load() -> None:
        while not done.is_set():
            try:
                rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=BODY, **target)
            except ClientError as exc:
                errors.append(str(exc))

    rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=BODY, **target)  # loaded, when multi-model
    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    servers = _model_servers(platform, name)
    assert len(servers) == 2
    if multi_model:  # the one that holds the model (the only one that loaded XGBoost) takes every request
        servers.sort(key=lambda s: not any("xgboost" in m.path for m in s.memory_maps()))
    os.kill(servers[0].pid, signal.SIGKILL)
    time.sleep(1.5)
    done.set()
    for t in threads:
        t.join()
    assert errors == []
    _clients(platform)[0].delete_endpoint(EndpointName=name)
