"""Asynchronous inference end to end: the SDK v2's AsyncPredictor, boto3 InvokeEndpointAsync, a restart."""

from __future__ import annotations

import io
import sqlite3
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
BUCKET = "async-tests"


def _artifact(tmp: Path) -> bytes:
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=(x[:, 0] > 0).astype(int)), 5)
    path = tmp / "xgboost-model.ubj"
    booster.save_model(str(path))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(path, arcname="xgboost-model")
    return buf.getvalue()


def _seed(p: RunningPlatform, tmp: Path) -> None:
    s3 = p.session().client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="model.tar.gz", Body=_artifact(tmp))


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("async")
    # scaling policies and alarms are evaluated every 2 s instead of every minute (scale-out from zero)
    env = {"OPENSAGE_AUTOSCALING_INTERVAL_S": "2"}
    with running_platform(root / "home", root / "aws", extra_env=env) as running:
        _seed(running, root)
        yield running


SDK_SCRIPT = """
    import boto3, sagemaker
    from sagemaker.async_inference import AsyncInferenceConfig, WaiterConfig
    from sagemaker.async_inference.async_inference_response import AsyncInferenceResponse
    from sagemaker.deserializers import CSVDeserializer
    from sagemaker.exceptions import AsyncInferenceModelError
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor
    from sagemaker.predictor_async import AsyncPredictor
    from sagemaker.serializers import CSVSerializer

    import time
    started = time.monotonic()
    session = sagemaker.Session()
    account = boto3.client("sts").get_caller_identity()["Account"]
    model = Model(
        image_uri="{image}", model_data="s3://{bucket}/model.tar.gz",
        role=f"arn:aws:iam::{{account}}:role/OpenSageExecutionRole", sagemaker_session=session,
        predictor_cls=Predictor,
    )
    predictor = model.deploy(
        initial_instance_count=1, instance_type="ml.m5.large", serializer=CSVSerializer(),
        deserializer=CSVDeserializer(),
        async_inference_config=AsyncInferenceConfig(
            output_path="s3://{bucket}/out", failure_path="s3://{bucket}/failed",
            max_concurrent_invocations_per_instance=2,
        ),
        wait=False,
    )
    session.wait_for_endpoint(predictor.endpoint_name, poll=0.5)  # the SDK's default polls every 30 s
    assert isinstance(predictor, AsyncPredictor), type(predictor)
    print("DEPLOYED", time.monotonic() - started)
    # the SDK waits for the output and the failure key in two threads, and the one that finds nothing
    # runs to its last attempt before the script can end: 30 attempts, 0.25 s apart
    waiter = WaiterConfig(max_attempts=30, delay=0.25)
    rows = "\\n".join(f"{{(i % 7) - 3}},0,0,0" for i in range(2000))
    response = predictor.predict_async(data=rows)
    assert isinstance(response, AsyncInferenceResponse)
    print("OUTPUT", response.output_path)
    print("FAILURE", response.failure_path)
    result = response.get_result(waiter)
    scores = [float(v) for row in result for v in row if v]  # one CSV line, or one line per row
    print("ROWS", len(scores))
    print("FIRST", scores[0], scores[6])
    print("PREDICTED", time.monotonic() - started)
    bad = predictor.predict_async(data="1,2")
    try:
        bad.get_result(waiter)
    except AsyncInferenceModelError as exc:
        print("MODELERROR", str(exc).replace("\\n", " ")[:300])
    print("FAILED", time.monotonic() - started)
    described = session.sagemaker_client.describe_endpoint(EndpointName=predictor.endpoint_name)
    print("DESCRIBED", described["AsyncInferenceConfig"])
    predictor.delete_endpoint()
    print("DELETED", time.monotonic() - started)
"""


def _printed(out: str, key: str) -> str:
    return next(line.split(" ", 1)[1] for line in out.splitlines() if line.startswith(key + " "))


def test_async_predictor_predicts_2000_rows_and_reports_a_model_error(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    out = platform.run_python(SDK_SCRIPT.format(image=IMAGE, bucket=BUCKET), tmp_path)
    assert _printed(out, "OUTPUT").startswith(f"s3://{BUCKET}/out/") and _printed(out, "OUTPUT").endswith(".out")
    assert _printed(out, "FAILURE").startswith(f"s3://{BUCKET}/failed/")
    assert _printed(out, "FAILURE").endswith("-error.out")
    assert _printed(out, "ROWS") == "2000"
    low, high = (float(v) for v in _printed(out, "FIRST").split())
    assert low < 0.5 < high  # row 0 is -3, row 6 is +3
    assert "MODELERROR" in out and "feature" in _printed(out, "MODELERROR").lower()
    described = _printed(out, "DESCRIBED")
    assert "'MaxConcurrentInvocationsPerInstance': 2" in described and f"s3://{BUCKET}/failed" in described


def _async_endpoint(p: RunningPlatform, count: int = 1) -> str:
    sm = p.session().client("sagemaker")
    account = p.session().client("sts").get_caller_identity()["Account"]
    suffix = uuid.uuid4().hex[:8]
    sm.create_model(
        ModelName=f"m-{suffix}",
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/model.tar.gz"},
        ExecutionRoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
    )
    sm.create_endpoint_config(
        EndpointConfigName=f"c-{suffix}",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": f"m-{suffix}", "InstanceType": "ml.m5.large",
             "InitialInstanceCount": count}
        ],
        AsyncInferenceConfig={
            "OutputConfig": {"S3OutputPath": f"s3://{BUCKET}/boto-out", "S3FailurePath": f"s3://{BUCKET}/boto-failed"},
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
        },
    )
    sm.create_endpoint(EndpointName=f"ep-{suffix}", EndpointConfigName=f"c-{suffix}")
    return f"ep-{suffix}"


def _wait_object(s3: Any, uri: str, timeout: float = 90) -> bytes:
    bucket, key = uri[5:].split("/", 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError:
            assert time.monotonic() < deadline, f"{uri} never appeared"
            time.sleep(0.2)


def test_invoke_endpoint_async_answers_202_with_locations_and_checks_its_input(platform: RunningPlatform) -> None:
    session = platform.session()
    rt, s3 = session.client("sagemaker-runtime"), session.client("s3")
    name = _async_endpoint(platform)
    s3.put_object(Bucket=BUCKET, Key="in/one.csv", Body=b"3,0,0,0\n-3,0,0,0")
    answer = rt.invoke_endpoint_async(
        EndpointName=name, InputLocation=f"s3://{BUCKET}/in/one.csv", ContentType="text/csv",
        InferenceId="my-inference-1", RequestTTLSeconds=600, InvocationTimeoutSeconds=30,
    )
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert answer["InferenceId"] == "my-inference-1"
    assert answer["OutputLocation"].startswith(f"s3://{BUCKET}/boto-out/")
    assert answer["FailureLocation"].startswith(f"s3://{BUCKET}/boto-failed/")
    scores = [float(v) for v in _wait_object(s3, answer["OutputLocation"]).decode().replace("\n", ",").split(",") if v]
    assert scores[0] > 0.5 > scores[1]
    missing = rt.invoke_endpoint_async(EndpointName=name, InputLocation=f"s3://{BUCKET}/in/nothing-here.csv")
    assert b"nothing-here.csv" in _wait_object(s3, missing["FailureLocation"])
    with pytest.raises(ClientError) as info:
        rt.invoke_endpoint_async(EndpointName="no-such-endpoint", InputLocation=f"s3://{BUCKET}/in/one.csv")
    assert info.value.response["Error"]["Code"] == "ValidationError"


def test_a_real_time_endpoint_refuses_async_invocations_and_bad_configs_are_refused(platform: RunningPlatform) -> None:
    sm, rt = platform.session().client("sagemaker"), platform.session().client("sagemaker-runtime")
    account = platform.session().client("sts").get_caller_identity()["Account"]
    sm.create_model(
        ModelName="rt-model", PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/model.tar.gz"},
        ExecutionRoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
    )
    variant = {"VariantName": "AllTraffic", "ModelName": "rt-model", "InstanceType": "ml.m5.large",
               "InitialInstanceCount": 1}
    with pytest.raises(ClientError) as info:
        sm.create_endpoint_config(
            EndpointConfigName="bad-async", ProductionVariants=[variant],
            AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "https://example.com/results"}},
        )
    assert "S3OutputPath must be an S3 URI" in info.value.response["Error"]["Message"]
    sm.create_endpoint_config(EndpointConfigName="rt-config", ProductionVariants=[variant])
    sm.create_endpoint(EndpointName="rt-endpoint", EndpointConfigName="rt-config")
    with pytest.raises(ClientError) as info:
        rt.invoke_endpoint_async(EndpointName="rt-endpoint", InputLocation=f"s3://{BUCKET}/in/one.csv")
    assert "not an asynchronous endpoint" in info.value.response["Error"]["Message"]
    sm.delete_endpoint(EndpointName="rt-endpoint")


def _in_service(sm: Any, name: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while (status := sm.describe_endpoint(EndpointName=name)["EndpointStatus"]) != "InService":
        assert status in ("Creating", "Updating") and time.monotonic() < deadline, status
        time.sleep(0.1)


def _backlog(p: RunningPlatform, name: str, timeout: float = 30) -> tuple[float, float]:
    """The newest ApproximateBacklogSize and HasBacklogWithoutCapacity (Maximum) once the backlog shows."""
    import datetime as dt

    cw = p.session().client("cloudwatch")
    deadline = time.monotonic() + timeout
    while True:
        now = dt.datetime.now(dt.UTC)
        found = []
        for metric in ("ApproximateBacklogSize", "HasBacklogWithoutCapacity"):
            points = cw.get_metric_statistics(
                Namespace="AWS/SageMaker", MetricName=metric, Dimensions=[{"Name": "EndpointName", "Value": name}],
                StartTime=now - dt.timedelta(minutes=5), EndTime=now + dt.timedelta(minutes=1), Period=60,
                Statistics=["Maximum"],
            )["Datapoints"]
            found.append(max((d["Maximum"] for d in points), default=0.0))
        if found[0] >= 5 or time.monotonic() > deadline:
            return found[0], found[1]
        time.sleep(0.5)


def test_an_async_endpoint_scales_to_zero_and_back_when_its_backlog_grows(platform: RunningPlatform) -> None:
    """AWS's recipe: MinCapacity 0, and a step-scaling policy run by an alarm on HasBacklogWithoutCapacity."""
    session = platform.session()
    sm, rt, s3 = session.client("sagemaker"), session.client("sagemaker-runtime"), session.client("s3")
    scaling, cw = session.client("application-autoscaling"), session.client("cloudwatch")
    name = _async_endpoint(platform)
    _in_service(sm, name)
    resource = f"endpoint/{name}/variant/AllTraffic"
    dimension = "sagemaker:variant:DesiredInstanceCount"
    scaling.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dimension, MinCapacity=0, MaxCapacity=1
    )
    sm.update_endpoint_weights_and_capacities(
        EndpointName=name, DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 0}]
    )
    _in_service(sm, name)
    assert sm.describe_endpoint(EndpointName=name)["ProductionVariants"][0]["CurrentInstanceCount"] == 0
    policy = scaling.put_scaling_policy(
        PolicyName="from-zero", ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dimension,
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity", "MetricAggregationType": "Maximum", "Cooldown": 60,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
        },
    )["PolicyARN"]
    cw.put_metric_alarm(
        AlarmName=f"{name}-backlog", Namespace="AWS/SageMaker", MetricName="HasBacklogWithoutCapacity",
        Dimensions=[{"Name": "EndpointName", "Value": name}], Statistic="Maximum", Period=60, EvaluationPeriods=1,
        Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="missing",
        AlarmActions=[policy],
    )
    s3.put_object(Bucket=BUCKET, Key="in/from-zero.csv", Body=b"3,0,0,0")
    answer = rt.invoke_endpoint_async(
        EndpointName=name, InputLocation=f"s3://{BUCKET}/in/from-zero.csv", ContentType="text/csv"
    )
    assert float(_wait_object(s3, answer["OutputLocation"], timeout=90).decode().strip()) > 0.5
    assert sm.describe_endpoint(EndpointName=name)["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    activities = scaling.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=resource)
    assert any("from 0 to 1" in a["Cause"] for a in activities["ScalingActivities"]), activities
    with pytest.raises(ClientError) as info:  # a real-time endpoint keeps at least one instance
        scaling.register_scalable_target(
            ServiceNamespace="sagemaker", ResourceId="endpoint/rt-endpoint/variant/AllTraffic",
            ScalableDimension=dimension, MinCapacity=0, MaxCapacity=1,
        )
    assert info.value.response["Error"]["Code"] == "ValidationException"


def _queued(home: Path) -> int:
    with sqlite3.connect(home / "opensage.db") as db:
        return int(db.execute("SELECT count(*) FROM resources WHERE kind = 'async-invocation'").fetchone()[0])


def test_queued_requests_survive_a_platform_restart(tmp_path: Path) -> None:
    home, aws = tmp_path / "home", tmp_path / "aws"
    with running_platform(home, aws) as first:
        _seed(first, tmp_path)
        session = first.session()
        rt, s3 = session.client("sagemaker-runtime"), session.client("s3")
        name = _async_endpoint(first)
        sm = session.client("sagemaker")
        _in_service(sm, name)
        sm.update_endpoint_weights_and_capacities(
            EndpointName=name, DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 0}]
        )
        _in_service(sm, name)  # scaled to zero instances: the requests wait in the queue
        locations = []
        for i in range(5):
            s3.put_object(Bucket=BUCKET, Key=f"in/{i}.csv", Body=f"{i - 2},0,0,0".encode())
            answer = rt.invoke_endpoint_async(
                EndpointName=name, InputLocation=f"s3://{BUCKET}/in/{i}.csv", ContentType="text/csv"
            )
            locations.append(answer["OutputLocation"])
        assert _backlog(first, name) == (5.0, 1.0)
        port = first.port
    assert _queued(home) == 5  # stopped with every request still queued
    with running_platform(home, aws, port=port) as again:
        s3 = again.session().client("s3")
        scores = [float(_wait_object(s3, uri).decode().strip()) for uri in locations]
    assert scores[0] < 0.5 < scores[4]
    assert _queued(home) == 0
