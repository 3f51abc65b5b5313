"""The console's endpoint page shows each endpoint's inference options, read from a running platform over HTTP:
the models loaded on a multi-model endpoint, an asynchronous endpoint's backlog and paths, a serverless
variant's cold and warm state, a variant's scalable target, policies and activities, and data capture."""

from __future__ import annotations

import html as htmllib
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from helpers import RunningPlatform, running_platform, xgboost_artifact

pytestmark = pytest.mark.slow
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
BUCKET = "console-options"
MODEL = f"s3://{BUCKET}/model.tar.gz"
INSTANCE = {"InstanceType": "ml.m5.large", "InitialInstanceCount": 1}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("console-options")
    # the autoscaler looks at targets and policies every second instead of every minute
    with running_platform(root / "home", root / "aws", extra_env={"OPENSAGE_AUTOSCALING_INTERVAL_S": "1"}) as p:
        s3 = p.session().client("s3")
        s3.create_bucket(Bucket=BUCKET)
        artifact = xgboost_artifact(root)
        s3.put_object(Bucket=BUCKET, Key="model.tar.gz", Body=artifact)
        s3.put_object(Bucket=BUCKET, Key="mme/first.tar.gz", Body=artifact)
        yield p


@pytest.fixture(scope="module")
def sm(platform: RunningPlatform) -> Any:
    return platform.session().client("sagemaker")


def _role(platform: RunningPlatform) -> str:
    account = platform.session().client("sts").get_caller_identity()["Account"]
    return f"arn:aws:iam::{account}:role/OpenSageExecutionRole"


def _create(platform: RunningPlatform, sm: Any, name: str, container: dict[str, Any], **config: Any) -> None:
    """Model, endpoint config and endpoint ``name``; the endpoint is left Creating."""
    sm.create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=_role(platform))
    variant = {"VariantName": "AllTraffic", "ModelName": name, **config.pop("variant", INSTANCE)}
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant], **config)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)


def _in_service(sm: Any, name: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while (desc := sm.describe_endpoint(EndpointName=name))["EndpointStatus"] in ("Creating", "Updating"):
        assert time.monotonic() < deadline, f"{name} is still {desc['EndpointStatus']}"
        time.sleep(0.2)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")


@pytest.fixture(scope="module")
def deployed(platform: RunningPlatform, sm: Any) -> dict[str, str]:
    """The endpoints the tests look at, created together so that their model servers start side by side."""
    names = {kind: f"opts-{kind}-{uuid.uuid4().hex[:6]}" for kind in ("mme", "serverless", "scaled")}
    _create(platform, sm, names["mme"], {"Image": IMAGE, "Mode": "MultiModel", "ModelDataUrl": f"s3://{BUCKET}/mme/"})
    _create(
        platform,
        sm,
        names["serverless"],
        {"Image": IMAGE, "ModelDataUrl": MODEL},
        variant={"ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 3}},
    )
    _create(
        platform,
        sm,
        names["scaled"],
        {"Image": IMAGE, "ModelDataUrl": MODEL},
        DataCaptureConfig={
            "EnableCapture": True,
            "InitialSamplingPercentage": 50,
            "DestinationS3Uri": f"s3://{BUCKET}/capture",
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        },
    )
    return names


@pytest.fixture(scope="module")
def console(platform: RunningPlatform) -> Iterator[httpx.Client]:
    """A console session signed in with the platform's access key."""
    credentials = platform.session().get_credentials()
    with httpx.Client(base_url=platform.api_url, follow_redirects=False, timeout=30) as client:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/signin").text)
        assert token
        r = client.post(
            "/console/signin",
            data={"csrf": token.group(1), "access_key_id": credentials.access_key, "secret": credentials.secret_key},
        )
        assert r.status_code == 303, r.text[:500]
        yield client


def _page(console: httpx.Client, name: str) -> str:
    r = console.get(f"/console/endpoints/{name}")
    assert r.status_code == 200, r.text[:500]
    return r.text


def _section(page: str, section: str) -> str:
    match = re.search(rf'<section class="card" id="{section}">(.*?)</section>', page, re.S)
    assert match, f"no {section} section"
    return match.group(1)


def _text(fragment: str) -> str:
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def test_a_multi_model_endpoint_shows_the_models_each_instance_loaded(
    console: httpx.Client, sm: Any, platform: RunningPlatform, deployed: dict[str, str]
) -> None:
    name = deployed["mme"]
    _in_service(sm, name)
    page = _page(console, name)
    assert "none yet" in _section(page, "multi-model")
    rt = platform.session().client("sagemaker-runtime")
    rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body="1.5,0,0,0", TargetModel="first.tar.gz")
    page = _page(console, name)
    loaded = _section(page, "multi-model")
    assert re.search(r"<td>AllTraffic</td><td>1</td>\s*<td class=\"loaded-models\">.*first\.tar\.gz", loaded, re.S)
    # a plain real-time endpoint's options otherwise: nothing to scale, nothing captured
    assert "Autoscaling: none" in _text(_section(page, "autoscaling"))
    assert _text(_section(page, "data-capture")) == "Data capture Data capture: off"
    assert 'id="async-inference"' not in page and 'id="serverless"' not in page


def test_an_async_endpoint_shows_its_backlog_and_output_paths(
    console: httpx.Client, sm: Any, platform: RunningPlatform
) -> None:
    name = f"opts-async-{uuid.uuid4().hex[:6]}"
    _create(
        platform,
        sm,
        name,
        {"Image": IMAGE, "ModelDataUrl": MODEL},
        AsyncInferenceConfig={
            "OutputConfig": {
                "S3OutputPath": f"s3://{BUCKET}/async-out",
                "S3FailurePath": f"s3://{BUCKET}/async-failed",
            },
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
        },
    )
    s3 = platform.session().client("s3")
    s3.put_object(Bucket=BUCKET, Key="async-in/rows.csv", Body=b"1.5,0,0,0\n-1.5,0,0,0")
    rt = platform.session().client("sagemaker-runtime")
    answer = rt.invoke_endpoint_async(
        EndpointName=name, InputLocation=f"s3://{BUCKET}/async-in/rows.csv", ContentType="text/csv"
    )
    early = _page(console, name)
    if 'data-status="Creating"' in early:  # no model server yet: the request waits in the queue
        assert re.search(r'id="async-backlog">1<.*id="async-queued">1<.*id="async-in-flight">0<', early, re.S)
    _in_service(sm, name)
    bucket, key = answer["OutputLocation"][5:].split("/", 1)
    deadline = time.monotonic() + 60
    while "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=key):
        assert time.monotonic() < deadline, "no async result"
        time.sleep(0.2)
    section = _section(_page(console, name), "async-inference")
    assert re.search(r'id="async-backlog">0<.*id="async-queued">0<.*id="async-in-flight">0<', section, re.S)
    assert f"s3://{BUCKET}/async-out/" in section and f"s3://{BUCKET}/async-failed/" in section
    assert f'href="/console/storage/{BUCKET}?prefix=async-out/"' in section
    assert re.search(r'id="async-per-instance">2<', section)
    assert "the default" not in section
    sm.delete_endpoint(EndpointName=name)


def test_a_serverless_endpoint_shows_cold_then_warm(
    console: httpx.Client, sm: Any, platform: RunningPlatform, deployed: dict[str, str]
) -> None:
    name = deployed["serverless"]
    _in_service(sm, name)
    section = _section(_page(console, name), "serverless")
    assert re.search(r'serverless-state">cold<.*serverless-instances">0<', section, re.S)
    assert re.findall(r'<td class="num">(\d+)</td>', section) == ["1024", "3", "0"]
    rt = platform.session().client("sagemaker-runtime")
    rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body="1.5,0,0,0")  # a cold start
    section = _section(_page(console, name), "serverless")
    assert re.search(r'serverless-state">warm<.*serverless-instances">1<', section, re.S)


def test_autoscaling_shows_target_policy_and_activities(
    console: httpx.Client, sm: Any, platform: RunningPlatform, deployed: dict[str, str]
) -> None:
    name = deployed["scaled"]
    _in_service(sm, name)
    aas = platform.session().client("application-autoscaling")
    resource = f"endpoint/{name}/variant/AllTraffic"
    target = {"ServiceNamespace": "sagemaker", "ResourceId": resource}
    dimension = {"ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
    aas.register_scalable_target(**target, **dimension, MinCapacity=1, MaxCapacity=3)
    aas.put_scaling_policy(
        **target,
        **dimension,
        PolicyName="invocations-per-instance",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 70.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": 300,
        },
    )
    section = _section(_page(console, name), "autoscaling")
    assert re.search(r'scaling-min">1<.*scaling-max">3<', section, re.S)
    assert "<b>invocations-per-instance</b>" in section and "TargetTrackingScaling" in section
    assert "SageMakerVariantInvocationsPerInstance at 70, scale-in cooldown 300 s" in section
    assert "No scaling activity yet." in section
    # a new minimum above the variant's count: the autoscaler brings it up to 2 and records why
    aas.register_scalable_target(**target, **dimension, MinCapacity=2, MaxCapacity=3)
    deadline = time.monotonic() + 30
    while not aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=resource)["ScalingActivities"]:
        assert time.monotonic() < deadline, "no scaling activity"
        time.sleep(0.2)
    _in_service(sm, name)
    section = _section(_page(console, name), "autoscaling")
    assert re.search(r'scaling-min">2<', section)
    row = r"<tr><td>([^<]+ UTC)</td><td>(.*?)</td><td>([^<]*)</td><td class=\"muted\">([^<]*)</td>"
    rows = re.findall(row, section)
    assert len(rows) == 1 and "Successful" in rows[0][1]
    assert rows[0][2] == "Setting desired instance count to 2."
    assert "minimum capacity was set to 2" in htmllib.unescape(rows[0][3])
    steps = json.loads(htmllib.unescape(re.search(r"data-steps='([^']+)'", section).group(1)))  # type: ignore[union-attr]
    assert steps["instances"][0] == 1 and steps["instances"][-1] == 2
    marked = [(x, c) for x, c in zip(steps["x"], steps["activities"], strict=True) if c is not None]
    assert len(marked) == 1 and marked[0][1] == 2
    assert steps["x"][-1] - steps["x"][0] == pytest.approx(1800, abs=1)


def test_data_capture_links_to_the_captured_data(console: httpx.Client, sm: Any, deployed: dict[str, str]) -> None:
    name = deployed["scaled"]
    _in_service(sm, name)
    section = _section(_page(console, name), "data-capture")
    assert 'id="capture-state">on<' in section and 'id="capture-percentage">50<' in section
    assert f'href="/console/storage/{BUCKET}?prefix=capture/{name}/"' in section
    assert f"s3://{BUCKET}/capture/{name}/" in section
    browse = console.get(f"/console/storage/{BUCKET}?prefix=capture/{name}/")
    assert browse.status_code == 200
