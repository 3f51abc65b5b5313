"""Serverless inference end to end: the SDK v2's ServerlessInferenceConfig, a cold start, a burst, scale to zero."""

from __future__ import annotations

import datetime as dt
import io
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from helpers import RunningPlatform, is_model_server, running_platform

pytestmark = pytest.mark.slow
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
BUCKET = "serverless-tests"
IDLE_S = 8.0
ENDPOINT = "serverless-ep"


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


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("serverless")
    # a serverless variant's servers stop after 8 idle seconds instead of 5 minutes
    with running_platform(root / "home", root / "aws", extra_env={"OPENSAGE_SERVERLESS_IDLE_S": str(IDLE_S)}) as p:
        s3 = p.session().client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="model.tar.gz", Body=_artifact(root))
        yield p


def _servers(home: Path) -> int:
    found = 0
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        with_home = str(home) in (proc.info["cwd"] or "")
        if with_home and is_model_server(proc.info["cmdline"] or []):
            found += 1
    return found


def _wait_servers(home: Path, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _servers(home) != count:
        if time.monotonic() > deadline:
            log = (home.parent / f"{home.name}-up.log").read_text(errors="replace").splitlines()
            scaling = [line for line in log if "serverless" in line or "Traceback" in line or "Error" in line]
            raise AssertionError(f"{_servers(home)} model servers, not {count}; the platform's log:\n"
                                 + "\n".join(scaling[-40:]))
        time.sleep(0.2)


SDK_SCRIPT = """
    import time, boto3, sagemaker
    from sagemaker.deserializers import CSVDeserializer
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import CSVSerializer
    from sagemaker.serverless import ServerlessInferenceConfig

    session = sagemaker.Session()
    account = boto3.client("sts").get_caller_identity()["Account"]
    model = Model(
        image_uri="{image}", model_data="s3://{bucket}/model.tar.gz", predictor_cls=Predictor,
        role=f"arn:aws:iam::{{account}}:role/OpenSageExecutionRole", sagemaker_session=session,
    )
    predictor = model.deploy(
        serverless_inference_config=ServerlessInferenceConfig(memory_size_in_mb=2048, max_concurrency=2),
        endpoint_name="{endpoint}", serializer=CSVSerializer(), deserializer=CSVDeserializer(), wait=False,
    )
    session.wait_for_endpoint("{endpoint}", poll=0.5)  # the SDK's default polls every 30 s
    print("READY")
    import sys; sys.stdout.flush()
    time.sleep(2)  # the test counts the model servers meanwhile: none
    started = time.monotonic()
    cold = predictor.predict("3,0,0,0")
    print("COLD", time.monotonic() - started, cold[0][0])
    started = time.monotonic()
    warm = predictor.predict("-3,0,0,0")
    print("WARM", time.monotonic() - started, warm[0][0])
    variant = session.sagemaker_client.describe_endpoint(EndpointName="{endpoint}")["ProductionVariants"][0]
    print("VARIANT", sorted(variant), variant["CurrentServerlessConfig"])
"""


def _printed(out: str, key: str) -> list[str]:
    return next(line.split()[1:] for line in out.splitlines() if line.startswith(key + " "))


def test_sdk_deploys_serverless_and_the_first_request_starts_a_server(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    import subprocess
    import sys
    import textwrap

    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SDK_SCRIPT.format(image=IMAGE, bucket=BUCKET, endpoint=ENDPOINT))],
        env=platform.shell_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("READY"):
            assert _servers(platform.home) == 0  # InService with no model server while idle
    _, err = proc.communicate(timeout=180)
    out = "".join(lines)
    assert proc.returncode == 0, err[-3000:]
    cold_s, cold_score = (float(v) for v in _printed(out, "COLD"))
    _, warm_score = (float(v) for v in _printed(out, "WARM"))
    assert cold_score > 0.5 > warm_score
    assert cold_s < 45  # the request waited for its server instead of failing
    variant = " ".join(_printed(out, "VARIANT"))
    assert "CurrentInstanceCount" not in variant and "'MemorySizeInMB': 2048, 'MaxConcurrency': 2" in variant
    assert _servers(platform.home) == 1
    setup = _setup_times(platform)
    assert setup and 0 < setup[0] < 45e6  # ModelSetupTime, in microseconds
    _wait_servers(platform.home, 0, timeout=IDLE_S + 20)  # scaled back to zero after the idle period


def _setup_times(p: RunningPlatform, timeout: float = 10) -> list[float]:
    cw = p.session().client("cloudwatch")
    deadline = time.monotonic() + timeout
    while True:
        now = dt.datetime.now(dt.UTC)
        points = cw.get_metric_statistics(
            Namespace="AWS/SageMaker", MetricName="ModelSetupTime",
            Dimensions=[{"Name": "EndpointName", "Value": ENDPOINT}, {"Name": "VariantName", "Value": "AllTraffic"}],
            StartTime=now - dt.timedelta(minutes=5), EndTime=now + dt.timedelta(minutes=1), Period=60,
            Statistics=["Maximum"],
        )["Datapoints"]
        if points or time.monotonic() > deadline:
            return [d["Maximum"] for d in points]
        time.sleep(0.5)


def test_a_burst_over_max_concurrency_is_throttled(platform: RunningPlatform) -> None:
    _wait_servers(platform.home, 0, timeout=IDLE_S + 30)
    rt = platform.session().client("sagemaker-runtime", config=Config(retries={"total_max_attempts": 1}))
    outcomes: Counter[str] = Counter()
    barrier = threading.Barrier(8)

    def one() -> None:
        barrier.wait()
        try:
            rt.invoke_endpoint(EndpointName=ENDPOINT, ContentType="text/csv", Body="3,0,0,0")
            outcomes["ok"] += 1
        except ClientError as exc:
            outcomes[exc.response["Error"]["Code"]] += 1
            assert exc.response["Error"]["Message"] == "Rate exceeded"
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # the 8 arrive during a cold start: MaxConcurrency (2) of them wait for it, the other 6 are throttled
    assert outcomes["ok"] >= 2 and outcomes["ThrottlingException"] >= 1 and sum(outcomes.values()) == 8, outcomes
    assert outcomes["ok"] + outcomes["ThrottlingException"] == 8, outcomes
    assert 1 <= _servers(platform.home) <= 2  # never more servers than MaxConcurrency


def test_serverless_configs_are_checked(platform: RunningPlatform) -> None:
    sm = platform.session().client("sagemaker")
    account = platform.session().client("sts").get_caller_identity()["Account"]
    sm.create_model(
        ModelName="checked", PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/model.tar.gz"},
        ExecutionRoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
    )
    bad: list[tuple[dict[str, Any], str]] = [
        ({"MemorySizeInMB": 1536, "MaxConcurrency": 2}, "1 GB steps"),
        ({"MemorySizeInMB": 1024, "MaxConcurrency": 2, "ProvisionedConcurrency": 3}, "must not be greater"),
    ]
    for config, message in bad:
        with pytest.raises(ClientError) as info:
            sm.create_endpoint_config(
                EndpointConfigName="bad-serverless",
                ProductionVariants=[{"VariantName": "v", "ModelName": "checked", "ServerlessConfig": config}],
            )
        assert message in info.value.response["Error"]["Message"]
