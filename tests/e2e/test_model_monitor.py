"""Model Monitor end to end with the SageMaker SDK v2 as its docs write it: a captured endpoint, a baseline,
a one-off schedule whose execution reports the one drifted feature, drift metrics in CloudWatch, bad input."""

from __future__ import annotations

import io
import json
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
BUCKET = "monitor-tests"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
FEATURES = 4
DRIFTED = 2  # the feature the traffic shifts


def _rows(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, FEATURES))
    x[:, DRIFTED] += shift
    return x


def _artifact(tmp: Path) -> bytes:
    import xgboost as xgb

    x = _rows(300, 0)
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=(x[:, 0] > 0).astype(int)), 5)
    booster.save_model(str(tmp / "xgboost-model.ubj"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp / "xgboost-model.ubj", arcname="xgboost-model")
    return buf.getvalue()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("monitor")
    with running_platform(root / "home", root / "aws") as running:
        s3 = running.session().client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="model.tar.gz", Body=_artifact(root))
        header = ",".join(f"f{i}" for i in range(FEATURES))
        body = "\n".join(",".join(f"{v:.5f}" for v in row) for row in _rows(2000, 1))
        s3.put_object(Bucket=BUCKET, Key="baseline/train.csv", Body=f"{header}\n{body}\n".encode())
        yield running


FLOW = """
import json, time
import numpy as np
import sagemaker
from sagemaker import image_uris
from sagemaker.model import Model
from sagemaker.model_monitor import CronExpressionGenerator, DataCaptureConfig, DefaultModelMonitor
from sagemaker.model_monitor.dataset_format import DatasetFormat
from sagemaker.predictor import Predictor
from sagemaker.serializers import CSVSerializer

session = sagemaker.Session()
role = sagemaker.get_execution_role()
bucket = "{bucket}"
capture = DataCaptureConfig(enable_capture=True, sampling_percentage=100,
                            destination_s3_uri=f"s3://{{bucket}}/capture")
model = Model(image_uri="{image}", model_data=f"s3://{{bucket}}/model.tar.gz", role=role,
              predictor_cls=Predictor)
endpoint = "monitored-{suffix}"
predictor = model.deploy(initial_instance_count=1, instance_type="ml.m5.large", endpoint_name=endpoint,
                         data_capture_config=capture, serializer=CSVSerializer())
rows = np.random.default_rng(2).normal(size=(400, {features}))
rows[:, {drifted}] += 3.0
for chunk in np.array_split(rows, 40):
    predictor.predict(chunk)

monitor = DefaultModelMonitor(role=role, instance_count=1, instance_type="ml.m5.xlarge",
                              volume_size_in_gb=20, max_runtime_in_seconds=1800)
monitor.suggest_baseline(baseline_dataset=f"s3://{{bucket}}/baseline/train.csv",
                         dataset_format=DatasetFormat.csv(header=True),
                         output_s3_uri=f"s3://{{bucket}}/baseline-results", wait=True, logs=False)
stats = monitor.baseline_statistics().body_dict
constraints = monitor.suggested_constraints().body_dict
print("BASELINE", json.dumps({{"features": [f["name"] for f in stats["features"]],
                               "types": [f["inferred_type"] for f in constraints["features"]]}}))
time.sleep(3)  # the capture files are written every two seconds
monitor.create_monitoring_schedule(
    monitor_schedule_name=f"{{endpoint}}-schedule", endpoint_input=predictor.endpoint_name,
    output_s3_uri=f"s3://{{bucket}}/reports", statistics=monitor.baseline_statistics(),
    constraints=monitor.suggested_constraints(), schedule_cron_expression=CronExpressionGenerator.now(),
    data_analysis_start_time="-PT1H", data_analysis_end_time="-PT0H", enable_cloudwatch_metrics=True)
deadline = time.time() + 180
while True:
    executions = monitor.list_executions()
    status = executions[-1].describe()["ProcessingJobStatus"] if executions else None
    if status in ("Completed", "Failed", "Stopped"):
        break
    assert time.time() < deadline, "no execution ended"
    time.sleep(2)
summary = session.sagemaker_client.list_monitoring_executions(
    MonitoringScheduleName=f"{{endpoint}}-schedule")["MonitoringExecutionSummaries"]
while summary[0]["MonitoringExecutionStatus"] in ("Pending", "InProgress"):
    time.sleep(1)
    summary = session.sagemaker_client.list_monitoring_executions(
        MonitoringScheduleName=f"{{endpoint}}-schedule")["MonitoringExecutionSummaries"]
violations = executions[-1].constraint_violations().body_dict["violations"]
print("EXECUTION", json.dumps({{"status": summary[0]["MonitoringExecutionStatus"], "violations": violations,
                                "schedule": monitor.describe_schedule()["MonitoringScheduleStatus"]}}))
"""


def test_sdk_flow_reports_exactly_the_drifted_feature(platform: RunningPlatform, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    code = FLOW.format(bucket=BUCKET, image=IMAGE, suffix=suffix, features=FEATURES, drifted=DRIFTED)
    out = platform.run_python(code, tmp_path, timeout=400)
    baseline = json.loads(out.split("BASELINE ", 1)[1].splitlines()[0])
    assert baseline == {"features": ["f0", "f1", "f2", "f3"], "types": ["Fractional"] * 4}
    result = json.loads(out.split("EXECUTION ", 1)[1].splitlines()[0])
    assert result["status"] == "CompletedWithViolations", result
    assert [(v["feature_name"], v["constraint_check_type"]) for v in result["violations"]] == [
        (f"f{DRIFTED}", "baseline_drift_check")
    ]
    cloudwatch = platform.session().client("cloudwatch")
    metrics = cloudwatch.list_metrics(Namespace="aws/sagemaker/Endpoints/data-metrics")["Metrics"]
    names = {m["MetricName"] for m in metrics}
    assert {f"feature_baseline_drift_f{i}" for i in range(FEATURES)} <= names
    dims = {d["Name"]: d["Value"] for d in metrics[0]["Dimensions"]}
    assert dims == {"Endpoint": f"monitored-{suffix}", "MonitoringSchedule": f"monitored-{suffix}-schedule"}
    _console_shows_the_drift(platform, f"monitored-{suffix}", [{"Name": k, "Value": v} for k, v in dims.items()])


def _console_shows_the_drift(platform: RunningPlatform, endpoint: str, dimensions: list[dict[str, str]]) -> None:
    """The endpoint's console page: the schedule, its execution, the one violation, a chart per feature, the alarm."""
    import html
    import re

    import httpx

    platform.session().client("cloudwatch").put_metric_alarm(
        AlarmName=f"{endpoint}-drift", Namespace="aws/sagemaker/Endpoints/data-metrics",
        MetricName=f"feature_baseline_drift_f{DRIFTED}", Dimensions=dimensions, Statistic="Maximum", Period=60,
        EvaluationPeriods=1, Threshold=0.1, ComparisonOperator="GreaterThanThreshold",
    )
    credentials = platform.session().get_credentials()
    with httpx.Client(base_url=platform.api_url, timeout=30) as console:
        token = re.search(r'name="csrf" value="([^"]+)"', console.get("/console/signin").text)
        assert token
        console.post("/console/signin", data={"csrf": token.group(1), "access_key_id": credentials.access_key,
                                              "secret": credentials.secret_key})
        page = console.get(f"/console/endpoints/{endpoint}").text
    section = re.search(r'<section class="card" id="monitoring">(.*?)</section>', page, re.S)
    assert section, page[-2000:]
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", section.group(1))).split())
    assert f"{endpoint}-schedule" in text and "CompletedWithViolations" in text, text[:1500]
    violations = re.search(r'<table class="monitoring-violations">(.*?)</table>', section.group(1), re.S)
    assert violations
    cells = re.findall(r'<td class="mono">(f\d)</td><td class="mono">(\w+)</td>', violations.group(1))
    assert cells == [(f"f{DRIFTED}", "baseline_drift_check")]
    figure_re = r'<figure class="drift-chart( violated)?" data-feature="(f\d)">(.*?)</figure>'
    figures = re.findall(figure_re, section.group(1), re.S)
    assert [(name, bool(flag)) for flag, name, _ in figures] == [(f"f{i}", i == DRIFTED) for i in range(FEATURES)]
    for _, _, figure in figures:  # both distributions drawn
        assert 'class="bar baseline"' in figure and 'class="bar current"' in figure
    drift = {name: float(re.findall(r'class="drift-distance">([\d.]+)', f)[0]) for _, name, f in figures}
    assert max(drift, key=drift.__getitem__) == f"f{DRIFTED}", drift
    assert f"{endpoint}-drift" in text and f"f{DRIFTED}" in text


def _definition(platform: RunningPlatform, endpoint: str) -> dict[str, Any]:
    account = platform.session().client("sts").get_caller_identity()["Account"]
    return {
        "MonitoringInputs": [{"EndpointInput": {"EndpointName": endpoint, "LocalPath": "/opt/ml/processing/input"}}],
        "MonitoringOutputConfig": {
            "MonitoringOutputs": [{"S3Output": {"S3Uri": f"s3://{BUCKET}/out", "LocalPath": "/opt/ml/processing/o"}}]
        },
        "MonitoringResources": {
            "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5}
        },
        "MonitoringAppSpecification": {
            "ImageUri": "156813124566.dkr.ecr.us-east-1.amazonaws.com/sagemaker-model-monitor-analyzer"
        },
        "RoleArn": f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
    }


def test_bad_schedules_are_refused_with_reasons(platform: RunningPlatform) -> None:
    sm = platform.session().client("sagemaker")
    with pytest.raises(ClientError) as missing:
        sm.create_monitoring_schedule(
            MonitoringScheduleName="on-nothing",
            MonitoringScheduleConfig={
                "ScheduleConfig": {"ScheduleExpression": "cron(0 * ? * * *)"},
                "MonitoringJobDefinition": _definition(platform, "no-such-endpoint"),
            },
        )
    assert "Endpoint no-such-endpoint does not exist" in missing.value.response["Error"]["Message"]
    for expression, phrase in (
        ("cron(0 * * * *)", "six fields"),
        ("cron(*/5 * ? * * *)", "at most hourly"),
        ("every hour", "not a cron expression"),
    ):
        with pytest.raises(ClientError) as bad:
            sm.create_monitoring_schedule(
                MonitoringScheduleName="bad-cron",
                MonitoringScheduleConfig={
                    "ScheduleConfig": {"ScheduleExpression": expression},
                    "MonitoringJobDefinition": _definition(platform, "no-such-endpoint"),
                },
            )
        assert bad.value.response["Error"]["Code"] == "ValidationException"
        assert phrase in bad.value.response["Error"]["Message"], bad.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as gone:
        sm.describe_monitoring_schedule(MonitoringScheduleName="never-made")
    assert gone.value.response["Error"]["Code"] == "ResourceNotFound"


def test_an_empty_window_fails_saying_which_prefix_and_window(platform: RunningPlatform) -> None:
    sm = platform.session().client("sagemaker")
    endpoints = [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]]
    if not endpoints:
        pytest.skip("needs the SDK flow's endpoint")
    name = f"empty-{uuid.uuid4().hex[:6]}"
    sm.create_monitoring_schedule(
        MonitoringScheduleName=name,
        MonitoringScheduleConfig={
            "ScheduleConfig": {
                "ScheduleExpression": "NOW",
                "DataAnalysisStartTime": "-P3D",
                "DataAnalysisEndTime": "-P2D",
            },
            "MonitoringJobDefinition": _definition(platform, endpoints[0]),
        },
    )
    deadline = time.monotonic() + 60
    while True:
        summaries = sm.list_monitoring_executions(MonitoringScheduleName=name)["MonitoringExecutionSummaries"]
        if summaries and summaries[0]["MonitoringExecutionStatus"] == "Failed":
            break
        assert time.monotonic() < deadline, summaries
        time.sleep(0.5)
    reason = summaries[0]["FailureReason"]
    assert f"s3://{BUCKET}/capture/{endpoints[0]}/" in reason and "for the window" in reason, reason
    assert (
        sm.describe_monitoring_schedule(MonitoringScheduleName=name)["LastMonitoringExecutionSummary"][
            "MonitoringExecutionStatus"
        ]
        == "Failed"
    )
    sm.delete_monitoring_schedule(MonitoringScheduleName=name)


QUALITY_PIPELINE = """
import json, time
import sagemaker
from sagemaker.model_monitor.dataset_format import DatasetFormat
from sagemaker.workflow.check_job_config import CheckJobConfig
from sagemaker.workflow.pipeline import Pipeline
from sagemaker.workflow.quality_check_step import DataQualityCheckConfig, QualityCheckStep

session = sagemaker.Session()
role = sagemaker.get_execution_role()
bucket = "{bucket}"
check_job = CheckJobConfig(role=role, instance_count=1, instance_type="ml.m5.xlarge", sagemaker_session=session)


def config(dataset, output):
    return DataQualityCheckConfig(baseline_dataset=f"s3://{{bucket}}/{{dataset}}",
                                  dataset_format=DatasetFormat.csv(header=True),
                                  output_s3_uri=f"s3://{{bucket}}/checks/{{output}}")


first = QualityCheckStep(name="Baseline", quality_check_config=config("baseline/train.csv", "baseline"),
                         check_job_config=check_job, skip_check=True, register_new_baseline=True)
supplied = dict(supplied_baseline_statistics=first.properties.CalculatedBaselineStatistics,
                supplied_baseline_constraints=first.properties.CalculatedBaselineConstraints)
same = QualityCheckStep(name="SameData", quality_check_config=config("baseline/train.csv", "same"),
                        check_job_config=check_job, **supplied)
drifted = QualityCheckStep(name="Drifted", quality_check_config=config("drifted/train.csv", "drifted"),
                           check_job_config=check_job, **supplied)
pipeline = Pipeline(name="quality-{suffix}", steps=[first, same, drifted], sagemaker_session=session)
pipeline.upsert(role_arn=role)
execution = pipeline.start()
try:
    execution.wait(delay=2, max_attempts=150)
except Exception as exc:
    print("WAIT", type(exc).__name__)
steps = {{s["StepName"]: s for s in execution.list_steps()}}
print("STEPS", json.dumps({{name: {{"status": s["StepStatus"], "reason": s.get("FailureReason", ""),
                                    "check": s.get("Metadata", {{}}).get("QualityCheck", {{}})}}
                          for name, s in steps.items()}}, default=str))
"""


def test_pipeline_quality_check_steps_baseline_and_catch_drift(platform: RunningPlatform, tmp_path: Path) -> None:
    s3 = platform.session().client("s3")
    header = ",".join(f"f{i}" for i in range(FEATURES))
    body = "\n".join(",".join(f"{v:.5f}" for v in row) for row in _rows(2000, 3, shift=3.0))
    s3.put_object(Bucket=BUCKET, Key="drifted/train.csv", Body=f"{header}\n{body}\n".encode())
    code = QUALITY_PIPELINE.format(bucket=BUCKET, suffix=uuid.uuid4().hex[:6])
    out = platform.run_python(code, tmp_path, timeout=400)
    steps = json.loads(out.split("STEPS ", 1)[1].splitlines()[0])
    assert steps["Baseline"]["status"] == "Succeeded", steps
    check = steps["Baseline"]["check"]
    calculated = f"s3://{BUCKET}/checks/baseline/constraints.json"
    assert check["CalculatedBaselineConstraints"] == calculated
    assert check["BaselineUsedForDriftCheckConstraints"] == calculated  # registered as the new baseline
    assert check["SkipCheck"] is True and "ViolationReport" not in check
    assert steps.get("SameData", {}).get("status") == "Succeeded", steps
    assert steps["SameData"]["check"]["BaselineUsedForDriftCheckConstraints"] == calculated
    assert steps["SameData"]["check"]["ViolationReport"] == f"s3://{BUCKET}/checks/same/constraint_violations.json"
    assert steps["Drifted"]["status"] == "Failed", steps
    reason = steps["Drifted"]["reason"]
    assert reason.startswith("ClientError: Quality check failed: 1 constraint violation(s)"), reason
    assert f"f{DRIFTED}: baseline_drift_check" in reason
