"""The monitoring scheduler on a controllable clock: an hourly schedule fires on the hour (once for the hours a
stopped platform missed), each execution's window and status, an empty window's reason, schedule parsing."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opensage.monitor import schedules
from opensage.monitor.scheduler import EXECUTION, SCHEDULE, MonitorScheduler
from opensage.store.entities import Resource
from opensage.store.metrics import MetricStore
from opensage.store.sql import SqlStore, open_store
from opensage.timestamps import epoch

ARN = "arn:aws:sagemaker:us-east-1:123456789012"
DEST = "s3://bucket/capture"


class Clock:
    def __init__(self, moment: dt.datetime) -> None:
        self.now = moment

    def __call__(self) -> dt.datetime:
        return self.now


class Objects:
    """An S3 of a few keys: what the scheduler lists and reads."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], bytes] = {}

    def list_objects_v2(self, Bucket: str, Prefix: str, Delimiter: str = "", MaxKeys: int = 1000) -> dict:  # noqa: N803
        keys = sorted(k for b, k in self.keys if b == Bucket and k.startswith(Prefix))
        if Delimiter:
            prefixes = sorted({Prefix + k[len(Prefix) :].split(Delimiter, 1)[0] + Delimiter for k in keys})
            return {"CommonPrefixes": [{"Prefix": p} for p in prefixes]}
        return {"KeyCount": len(keys[:MaxKeys]), "Contents": [{"Key": k} for k in keys[:MaxKeys]]}

    def get_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803
        import io

        return {"Body": io.BytesIO(self.keys[(Bucket, Key)])}


class Processing:
    """Records each processing job the scheduler makes, ending it at once as the analyzer would."""

    def __init__(self, store: SqlStore, s3: Objects, clock: Clock) -> None:
        self.store, self.s3, self.clock = store, s3, clock
        self.requests: list[dict[str, Any]] = []
        self.violations: list[dict[str, str]] = []

    def on_end(self, listener: Any) -> None:
        pass

    async def create(self, spec: Any, arn: str, *, parent_arn: str | None = None) -> None:
        request = dict(spec.document)
        self.requests.append(request)
        out = request["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
        bucket, key = out[5:].split("/", 1)
        self.s3.keys[(bucket, f"{key}/constraint_violations.json")] = json.dumps(
            {"violations": self.violations}
        ).encode()
        data = {**request, "ProcessingJobArn": arn, "ProcessingJobStatus": "Completed"}
        now = self.clock()
        self.store.create_resource(Resource("processing-job", spec.name, arn, "Completed", now, now, data, parent_arn))


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[SqlStore]:
    s = open_store(f"sqlite:///{tmp_path / 'db'}", tmp_path / "master.key")
    yield s
    s.close()


def _setup(store: SqlStore, clock: Clock, expression: str = "cron(0 * ? * * *)") -> None:
    now = clock()
    store.create_resource(
        Resource(
            "endpoint-config",
            "cfg",
            f"{ARN}:endpoint-config/cfg",
            "",
            now,
            now,
            {"DataCaptureConfig": {"EnableCapture": True, "DestinationS3Uri": DEST}},
        )
    )
    store.create_resource(
        Resource("endpoint", "ep", f"{ARN}:endpoint/ep", "InService", now, now, {"EndpointConfigName": "cfg"})
    )
    definition = {
        "MonitoringInputs": [{"EndpointInput": {"EndpointName": "ep", "LocalPath": "/opt/ml/processing/input"}}],
        "MonitoringOutputConfig": {
            "MonitoringOutputs": [
                {"S3Output": {"S3Uri": "s3://bucket/reports", "LocalPath": "/opt/ml/processing/output"}}
            ]
        },
        "MonitoringResources": {
            "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5}
        },
        "MonitoringAppSpecification": {
            "ImageUri": "1.dkr.ecr.us-east-1.amazonaws.com/sagemaker-model-monitor-analyzer"
        },
        "BaselineConfig": {"ConstraintsResource": {"S3Uri": "s3://bucket/base/constraints.json"}},
        "RoleArn": "arn:aws:iam::123456789012:role/R",
    }
    data = {
        "MonitoringScheduleName": "hourly",
        "MonitoringScheduleStatus": "Scheduled",
        "CreationTime": epoch(now),
        "EndpointName": "ep",
        "MonitoringScheduleConfig": {
            "ScheduleConfig": {"ScheduleExpression": expression},
            "MonitoringJobDefinition": definition,
        },
    }
    store.create_resource(
        Resource(SCHEDULE, "hourly", f"{ARN}:monitoring-schedule/hourly", "Scheduled", now, now, data)
    )


def _capture(s3: Objects, hour: dt.datetime) -> None:
    s3.keys[("bucket", f"capture/ep/AllTraffic/{hour:%Y/%m/%d/%H}/00-00-000-x.jsonl")] = b"{}\n"


def _executions(store: SqlStore) -> list[dict[str, Any]]:
    rows = store.list_resources(EXECUTION, descending=False)
    return [r.data for r in rows]


def test_an_hourly_schedule_fires_on_the_hour_and_once_after_a_restart(store: SqlStore) -> None:
    clock = Clock(dt.datetime(2026, 3, 1, 10, 20, tzinfo=dt.UTC))
    s3 = Objects()
    _setup(store, clock)
    for hour in (10, 13):
        _capture(s3, dt.datetime(2026, 3, 1, hour, tzinfo=dt.UTC))
    processing = Processing(store, s3, clock)
    scheduler = MonitorScheduler(store, clock, processing, s3, MetricStore(store))  # type: ignore[arg-type]

    asyncio.run(scheduler.turn())
    assert _executions(store) == []  # nothing is due before 11:00
    clock.now = dt.datetime(2026, 3, 1, 11, 0, 20, tzinfo=dt.UTC)
    processing.violations = [
        {
            "feature_name": "f2",
            "constraint_check_type": "baseline_drift_check",
            "description": "Baseline drift distance: 0.5 exceeds threshold: 0.1",
        }
    ]
    asyncio.run(scheduler.turn())
    asyncio.run(scheduler.turn())  # the second turn concludes what the first started, and fires nothing new
    (first,) = _executions(store)
    assert first["ScheduledTime"] == epoch(dt.datetime(2026, 3, 1, 11, tzinfo=dt.UTC))
    assert first["MonitoringExecutionStatus"] == "CompletedWithViolations"
    env = processing.requests[0]["Environment"]
    assert (env["start_time"], env["end_time"]) == ("2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z")
    assert env["baseline_constraints"] == "/opt/ml/processing/baseline/constraints/constraints.json"
    inputs = [i["S3Input"] for i in processing.requests[0]["ProcessingInputs"]]
    assert inputs[0]["S3Uri"] == "s3://bucket/capture/ep/AllTraffic/2026/03/01/10/"
    assert inputs[0]["LocalPath"] == "/opt/ml/processing/input/ep/AllTraffic/2026/03/01/10"
    output = processing.requests[0]["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    assert output == "s3://bucket/reports/ep/hourly/2026/03/01/11"

    clock.now = dt.datetime(2026, 3, 1, 11, 40, tzinfo=dt.UTC)
    asyncio.run(scheduler.turn())
    assert len(_executions(store)) == 1
    # the platform was down from 11:40 to 14:05: a new scheduler makes one run, for 14:00, not three
    clock.now = dt.datetime(2026, 3, 1, 14, 5, tzinfo=dt.UTC)
    processing.violations = []
    restarted = MonitorScheduler(store, clock, processing, s3, MetricStore(store))  # type: ignore[arg-type]
    asyncio.run(restarted.turn())
    asyncio.run(restarted.turn())
    executions = _executions(store)
    assert [e["ScheduledTime"] for e in executions] == [
        epoch(dt.datetime(2026, 3, 1, h, tzinfo=dt.UTC)) for h in (11, 14)
    ]
    assert executions[1]["MonitoringExecutionStatus"] == "Completed"
    summary = store.get_resource(SCHEDULE, "hourly").data["LastMonitoringExecutionSummary"]  # type: ignore[union-attr]
    assert summary["MonitoringExecutionStatus"] == "Completed" and summary["ProcessingJobArn"].startswith(ARN)


def test_an_hour_without_captured_data_fails_saying_where_and_when(store: SqlStore) -> None:
    clock = Clock(dt.datetime(2026, 3, 1, 10, 20, tzinfo=dt.UTC))
    s3 = Objects()
    _setup(store, clock)
    _capture(s3, dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC))
    processing = Processing(store, s3, clock)
    scheduler = MonitorScheduler(store, clock, processing, s3, None)  # type: ignore[arg-type]
    clock.now = dt.datetime(2026, 3, 1, 11, 1, tzinfo=dt.UTC)
    asyncio.run(scheduler.turn())
    (execution,) = _executions(store)
    assert execution["MonitoringExecutionStatus"] == "Failed"
    assert execution["FailureReason"].startswith(
        "Job inputs had no data: no captured records under s3://bucket/capture/ep/ for the window "
        "2026-03-01T10:00:00Z to 2026-03-01T11:00:00Z"
    )
    assert processing.requests == []


def test_a_one_off_schedule_runs_once_over_its_window(store: SqlStore) -> None:
    clock = Clock(dt.datetime(2026, 3, 1, 10, 20, tzinfo=dt.UTC))
    s3 = Objects()
    _setup(store, clock, "NOW")
    row = store.get_resource(SCHEDULE, "hourly")
    assert row is not None
    config = row.data["MonitoringScheduleConfig"]
    config["ScheduleConfig"].update(DataAnalysisStartTime="-PT1H", DataAnalysisEndTime="-PT0H")
    store.update_resource(SCHEDULE, "hourly", data={**row.data, "MonitoringScheduleConfig": config}, now=clock())
    _capture(s3, dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC))
    processing = Processing(store, s3, clock)
    scheduler = MonitorScheduler(store, clock, processing, s3, None)  # type: ignore[arg-type]
    for _ in range(3):
        asyncio.run(scheduler.turn())
    (execution,) = _executions(store)
    assert execution["MonitoringExecutionStatus"] == "Completed"
    env = processing.requests[0]["Environment"]
    assert (env["start_time"], env["end_time"]) == ("2026-03-01T09:20:00Z", "2026-03-01T10:20:00Z")


@pytest.mark.parametrize(
    ("config", "phrase"),
    [
        ({"ScheduleExpression": "cron(0 * * * *)"}, "six fields"),
        ({"ScheduleExpression": "cron(0/15 * ? * * *)"}, "at most hourly"),
        ({"ScheduleExpression": "NOW"}, "needs DataAnalysisStartTime"),
        ({"ScheduleExpression": "NOW", "DataAnalysisStartTime": "PT1H", "DataAnalysisEndTime": "-PT0H"}, "negative"),
        ({"ScheduleExpression": "NOW", "DataAnalysisStartTime": "-PT1H", "DataAnalysisEndTime": "-PT2H"}, "before"),
        ({"ScheduleExpression": "hourly"}, "not a cron expression"),
    ],
)
def test_bad_schedule_configs_say_what_to_fix(config: dict[str, str], phrase: str) -> None:
    with pytest.raises(schedules.ScheduleError, match=phrase):
        schedules.parse(config)


def test_daily_and_every_six_hours() -> None:
    daily = schedules.parse({"ScheduleExpression": "cron(0 8 ? * * *)"})
    start = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)
    assert daily.due(start, start + dt.timedelta(hours=22)) is None
    assert daily.due(start, start + dt.timedelta(hours=23, minutes=5)) == dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC)
    six = schedules.parse({"ScheduleExpression": "cron(0 */6 ? * * *)"})
    assert six.due(start, start + dt.timedelta(hours=4)) == dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    assert schedules.offset("-P1DT2H", "x") == -dt.timedelta(days=1, hours=2)
