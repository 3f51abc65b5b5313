"""The jobs' state machines, driven with a scripted compute backend and a clock the test moves.

No process runs and no time passes: the backend says when containers end and how, the clock says
what time it is, and each test reads the job's record as DescribeTrainingJob would answer it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opensage import states
from opensage.compute.base import ContainerState, Handle, JobSpec, JobStatus
from opensage.controller import RESTART_REASON, SHUTDOWN_REASON
from opensage.jobs.processing import KIND as PROCESSING
from opensage.jobs.processing import ProcessingEngine
from opensage.jobs.specs import ProcessingJobSpec, TrainingJobSpec, initial_description
from opensage.jobs.training import KIND as TRAINING
from opensage.jobs.training import TrainingEngine
from opensage.jobs.transform import KIND as TRANSFORM
from opensage.jobs.transform import TransformEngine
from opensage.logstore import LogStore
from opensage.serving.fleet import FleetError
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore, open_store

XGBOOST = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
SKLEARN = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


class FakeClock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class ScriptedBackend:
    """Containers that run until the test ends them; ``stop`` ends them as SIGTERM would."""

    name = "scripted"

    def __init__(self) -> None:
        self.specs: list[JobSpec] = []
        self.states: dict[str, list[ContainerState]] = {}
        self.stopped: list[str] = []
        self.cleaned: list[str] = []
        self.on_submit: Callable[[JobSpec], None] = lambda spec: None

    def submit(self, spec: JobSpec) -> Handle:
        self.specs.append(spec)
        self.states[spec.job_id] = [ContainerState(c.host, running=True) for c in spec.containers]
        self.on_submit(spec)
        return {"backend": self.name, "job_id": spec.job_id}

    def end(self, job_id: str, exit_code: int = 0, *, out_of_memory: bool = False) -> None:
        self.states[job_id] = [
            ContainerState(c.host, False, exit_code, out_of_memory, 1 << 30) for c in self.states[job_id]
        ]

    def poll(self, handle: Handle) -> JobStatus:
        return JobStatus(list(self.states[handle["job_id"]]))

    def stop(self, handle: Handle, grace_s: float) -> None:
        self.stopped.append(handle["job_id"])
        if handle["job_id"] in self.states:
            self.end(handle["job_id"], -15)

    def cleanup(self, handle: Handle) -> None:
        self.cleaned.append(handle["job_id"])

    def end_job(self, job_id: str) -> int:
        return 0


class RecordingS3:
    """Keeps what is uploaded (the jobs' only use of S3 when they have no input channels)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def upload_file(self, path: str, bucket: str, key: str) -> None:
        self.objects[f"s3://{bucket}/{key}"] = Path(path).read_bytes()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    s = open_store(f"sqlite:///{tmp_path / 'opensage.db'}", tmp_path / "master.key")
    yield s
    s.engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


def _training(store: SqlStore, backend: ScriptedBackend, clock: FakeClock, tmp_path: Path) -> TrainingEngine:
    logs = LogStore(tmp_path / "logs", clock)
    return TrainingEngine(
        store, RecordingS3(), backend, logs, tmp_path / "training", clock, poll_interval_s=0.01, stop_grace_s=0.1
    )


def _training_request(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": XGBOOST, "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::000000000000:role/SageMakerRole",
        "HyperParameters": {"num_round": "10", "objective": "binary:logistic"},
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        **extra,
    }


async def _create(engine: TrainingEngine, name: str, **extra: Any) -> None:
    spec = TrainingJobSpec.from_request(_training_request(name, **extra))
    await engine.create(spec, f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}")


async def _until(check: Callable[[], Awaitable[bool] | bool], timeout: float = 60.0) -> None:
    """Let the engine's task run until ``check`` holds (real time passes only for the event loop)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, "the job did not get there"
        await asyncio.sleep(0.01)


def _row(store: SqlStore, kind: str, name: str) -> Resource:
    row = store.get_resource(kind, name)
    assert row is not None
    return row


def _secondaries(row: Resource) -> list[str]:
    return [t["Status"] for t in row.data["SecondaryStatusTransitions"]]


def _submitted(backend: ScriptedBackend, job_id: str) -> Callable[[], bool]:
    return lambda: job_id in backend.states


def test_training_completes_and_times_come_from_the_clock(
    store: SqlStore, backend: ScriptedBackend, clock: FakeClock, tmp_path: Path
) -> None:
    async def scenario() -> None:
        engine = _training(store, backend, clock, tmp_path)
        await _create(engine, "done")
        await _until(lambda: "_Handle" in _row(store, TRAINING, "done").data)  # saved for crash recovery
        assert _row(store, TRAINING, "done").data["_Handle"] == {"backend": "scripted", "job_id": "training-job/done"}
        clock.advance(42)
        backend.end("training-job/done", 0)
        await _until(lambda: _row(store, TRAINING, "done").status == "Completed")
        await engine.shutdown()

    asyncio.run(scenario())
    row = _row(store, TRAINING, "done")
    assert _secondaries(row) == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert row.data["TrainingTimeInSeconds"] == 42 and row.data["BillableTimeInSeconds"] == 42
    assert row.data["ModelArtifacts"]["S3ModelArtifacts"] == "s3://bucket/out/done/output/model.tar.gz"
    assert "_Handle" not in row.data
    assert backend.cleaned == ["training-job/done"]
    container = backend.specs[0].containers[0]
    assert container.host == "algo-1" and container.env["SM_CURRENT_HOST"] == "algo-1"
    assert container.peers == (("algo-1", "127.0.0.1"),)


def test_training_failure_reason_comes_from_the_failure_file(
    store: SqlStore, backend: ScriptedBackend, clock: FakeClock, tmp_path: Path
) -> None:
    def write_failure(spec: JobSpec) -> None:
        (spec.containers[0].cwd / "output" / "failure").write_text("ValueError: label column missing")

    backend.on_submit = write_failure

    async def scenario() -> None:
        engine = _training(store, backend, clock, tmp_path)
        await _create(engine, "broken")
        await _until(_submitted(backend, "training-job/broken"))
        backend.end("training-job/broken", 1)
        await _until(lambda: _row(store, TRAINING, "broken").status == "Failed")
        await engine.shutdown()

    asyncio.run(scenario())
    row = _row(store, TRAINING, "broken")
    assert row.data["FailureReason"] == "ValueError: label column missing"
    assert _secondaries(row)[-1] == "Failed"


def test_training_out_of_memory_names_the_instance_type(
    store: SqlStore, backend: ScriptedBackend, clock: FakeClock, tmp_path: Path
) -> None:
    async def scenario() -> None:
        engine = _training(store, backend, clock, tmp_path)
        await _create(engine, "oom")
        await _until(_submitted(backend, "training-job/oom"))
        backend.end("training-job/oom", -9, out_of_memory=True)
        await _until(lambda: _row(store, TRAINING, "oom").status == "Failed")
        await engine.shutdown()

    asyncio.run(scenario())
    reason = _row(store, TRAINING, "oom").data["FailureReason"]
    assert reason.startswith("OutOfMemoryError:") and "ml.m5.large" in reason


def test_training_stop_request_from_another_thread_ends_stopped(
    store: SqlStore, backend: ScriptedBackend, clock: FakeClock, tmp_path: Path
) -> None:
    async def scenario() -> None:
        engine = _training(store, backend, clock, tmp_path)
        await _create(engine, "halt")
        await _until(_submitted(backend, "training-job/halt"))
        change = states.transition(TRAINING, "Stopping", clock(), secondary="Stopping")
        store.modify_resource(TRAINING, "halt", change, now=clock())
        assert await asyncio.to_thread(engine.request_stop, "halt")  # as the provider's worker thread does
        await _until(lambda: _row(store, TRAINING, "halt").status == "Stopped")
        await _until(lambda: not engine.running("halt"))  # the run's task ends just after its record
        assert not engine.request_stop("halt")  # nothing runs it any more
        await engine.shutdown()

    asyncio.run(scenario())
    row = _row(store, TRAINING, "halt")
    assert backend.stopped == ["training-job/halt"]
    assert _secondaries(row)[-2:] == ["Stopping", "Stopped"]
    assert "ModelArtifacts" in row.data  # a stopped job keeps what it wrote, as SageMaker's do


def test_training_past_its_max_runtime_is_stopped(
    store: SqlStore, backend: ScriptedBackend, clock: FakeClock, tmp_path: Path
) -> None:
    async def scenario() -> None:
        engine = _training(store, backend, clock, tmp_path)
        await _create(engine, "slow")
        await _until(_submitted(backend, "training-job/slow"))
        clock.advance(601)
        await _until(lambda: _row(store, TRAINING, "slow").status == "Stopped")
        await engine.shutdown()

    asyncio.run(scenario())
    assert _secondaries(_row(store, TRAINING, "slow"))[-1] == "MaxRuntimeExceeded"
    assert backend.stopped == ["training-job/slow"]


def test_shutdown_fails_running_jobs_and_recovery_ends_what_was_left(
    store: SqlStore, backend: ScriptedBackend, clock: FakeClock, tmp_path: Path
) -> None:
    async def running_then_shutdown() -> None:
        engine = _training(store, backend, clock, tmp_path)
        await _create(engine, "busy")
        await _until(_submitted(backend, "training-job/busy"))
        await engine.shutdown()

    asyncio.run(running_then_shutdown())
    assert _row(store, TRAINING, "busy").data["FailureReason"] == SHUTDOWN_REASON

    # What a crashed server leaves: one job running (with its process handle), one being stopped.
    now = clock()
    for name, status in (("orphan", "InProgress"), ("halting", "Stopping")):
        data = initial_description(TrainingJobSpec.from_request(_training_request(name)), f"arn:{name}", now)
        data.update(TrainingJobStatus=status, _Handle={"job_id": f"training-job/{name}"})
        store.create_resource(Resource(TRAINING, name, f"arn:{name}", status, now, now, data))
        backend.states[f"training-job/{name}"] = [ContainerState("algo-1", running=True)]

    async def restart() -> None:
        await _training(store, backend, clock, tmp_path).recover()

    asyncio.run(restart())
    assert _row(store, TRAINING, "orphan").status == "Failed"
    assert _row(store, TRAINING, "orphan").data["FailureReason"] == RESTART_REASON
    assert _row(store, TRAINING, "halting").status == "Stopped"
    assert {"training-job/orphan", "training-job/halting"} <= set(backend.stopped)


def test_processing_runs_its_entrypoint_and_reports_a_nonzero_exit(
    store: SqlStore, backend: ScriptedBackend, clock: FakeClock, tmp_path: Path
) -> None:
    async def scenario() -> None:
        logs = LogStore(tmp_path / "logs", clock)
        engine = ProcessingEngine(
            store, RecordingS3(), backend, logs, tmp_path / "processing", clock, poll_interval_s=0.01
        )
        for name in ("ok", "bad"):
            request = {
                "ProcessingJobName": name,
                "AppSpecification": {"ImageUri": SKLEARN, "ContainerEntrypoint": ["python3", "-c", "pass"]},
                "ProcessingResources": {
                    "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}
                },
                "RoleArn": "arn:aws:iam::000000000000:role/R",
                "Tags": [{"Key": "team", "Value": "a"}],
            }
            arn = f"arn:aws:sagemaker:us-east-1:000000000000:processing-job/{name}"
            await engine.create(ProcessingJobSpec.from_request(request), arn, parent_arn="arn:parent")
        await _until(lambda: {"processing-job/ok", "processing-job/bad"} <= set(backend.states))
        backend.end("processing-job/ok", 0)
        backend.end("processing-job/bad", 2)
        await _until(lambda: all(_row(store, PROCESSING, n).status != "InProgress" for n in ("ok", "bad")))
        await engine.shutdown()

    asyncio.run(scenario())
    assert _row(store, PROCESSING, "ok").status == "Completed"
    bad = _row(store, PROCESSING, "bad")
    assert bad.status == "Failed" and "exit" in bad.data["FailureReason"].lower()
    spec = next(s for s in backend.specs if s.job_id == "processing-job/ok")
    assert spec.containers[0].argv[-3:] == ("python3", "-c", "pass")
    ok = _row(store, PROCESSING, "ok")
    assert ok.parent_arn == "arn:parent" and "Tags" not in ok.data and "ProcessingEndTime" in ok.data
    assert sorted(r.name for r in store.list_resources(PROCESSING, parent_arn="arn:parent")) == ["bad", "ok"]


class BlockingEndpoints:
    """Model servers that never come up until told to fail (what a transform job waits on first)."""

    def __init__(self) -> None:
        self.fail: dict[str, asyncio.Event] = {}
        self.starts: list[str] = []

    async def start_servers(self, name: str, *args: Any) -> Any:
        self.starts.append(name)
        await self.fail.setdefault(name, asyncio.Event()).wait()
        raise FleetError("ClientError: the model's servers did not start: test")

    async def stop_servers(self, *args: Any) -> None:
        return None


def _transform_row(store: SqlStore, clock: FakeClock, name: str) -> None:
    now = clock()
    data = {
        "TransformJobName": name,
        "TransformJobArn": f"arn:aws:sagemaker:us-east-1:000000000000:transform-job/{name}",
        "TransformJobStatus": "InProgress",
        "ModelName": "m",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in"}}},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        "TransformOutput": {"S3OutputPath": "s3://b/out"},
    }
    store.create_resource(Resource(TRANSFORM, name, data["TransformJobArn"], "InProgress", now, now, data))


def test_transform_stop_fail_shutdown_and_stop_before_it_ran(
    store: SqlStore, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opensage.jobs import channels

    monkeypatch.setattr(channels, "list_channel", lambda *args: [])  # an empty input prefix

    async def scenario() -> None:
        endpoints = BlockingEndpoints()
        engine = TransformEngine(store, RecordingS3(), endpoints, tmp_path / "transform", clock)  # type: ignore[arg-type]
        for name in ("stopped", "failed", "never-ran", "at-shutdown"):
            _transform_row(store, clock, name)
        engine.launch("never-ran")
        assert engine.request_stop("never-ran")  # before its task had a chance to start
        engine.launch("stopped")
        engine.launch("failed")
        engine.launch("at-shutdown")
        await _until(lambda: {"transform-stopped", "transform-failed"} <= set(endpoints.starts))
        assert await asyncio.to_thread(engine.request_stop, "stopped")
        await _until(lambda: _row(store, TRANSFORM, "stopped").status == "Stopped")
        endpoints.fail["transform-failed"].set()
        await _until(lambda: _row(store, TRANSFORM, "failed").status == "Failed")
        await _until(lambda: _row(store, TRANSFORM, "never-ran").status == "Stopped")
        await engine.shutdown()

    asyncio.run(scenario())
    assert "did not start" in _row(store, TRANSFORM, "failed").data["FailureReason"]
    assert "TransformEndTime" in _row(store, TRANSFORM, "never-ran").data
    assert _row(store, TRANSFORM, "at-shutdown").data.get("FailureReason") == SHUTDOWN_REASON


def test_transform_recovery(store: SqlStore, clock: FakeClock, tmp_path: Path) -> None:
    _transform_row(store, clock, "left")
    _transform_row(store, clock, "leaving")
    store.modify_resource(TRANSFORM, "leaving", states.transition(TRANSFORM, "Stopping", clock()), now=clock())

    async def restart() -> None:
        await TransformEngine(store, RecordingS3(), BlockingEndpoints(), tmp_path, clock).recover()  # type: ignore[arg-type]

    asyncio.run(restart())
    assert _row(store, TRANSFORM, "left").data["FailureReason"] == RESTART_REASON
    assert _row(store, TRANSFORM, "leaving").status == "Stopped"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 0, "VolumeSizeInGB": 1}}, "InstanceCount"),
        ({"HyperParameters": {"num_round": "1\x00"}}, "'num_round' contains a NUL byte"),
    ],
    ids=["instance-count-0", "nul-hyperparameter"],
)
def test_a_definition_that_cannot_run_fails_as_a_client_error(
    store: SqlStore, backend: ScriptedBackend, clock: FakeClock, tmp_path: Path, extra: dict[str, Any], words: str
) -> None:
    """What the API refuses can still arrive from a tuning job's definition: it fails the job, not the platform."""

    async def scenario() -> None:
        engine = _training(store, backend, clock, tmp_path)
        await _create(engine, "bad", **extra)
        await _until(lambda: _row(store, TRAINING, "bad").status == "Failed")
        await engine.shutdown()

    asyncio.run(scenario())
    reason = _row(store, TRAINING, "bad").data["FailureReason"]
    assert reason.startswith("ClientError: ") and words in reason and not backend.specs


def test_recovery_keeps_what_a_crashed_servers_job_logged_after_the_crash(
    store: SqlStore, backend: ScriptedBackend, clock: FakeClock, tmp_path: Path
) -> None:
    from opensage.jobs.engine import LogTail

    now = clock()
    data = initial_description(TrainingJobSpec.from_request(_training_request("crashed")), "arn:crashed", now)
    data["_Handle"] = {"job_id": "training-job/crashed"}
    store.create_resource(Resource(TRAINING, "crashed", "arn:crashed", "InProgress", now, now, data))
    backend.states["training-job/crashed"] = [ContainerState("algo-1", running=True)]
    log_path = tmp_path / "training" / "crashed" / "logs" / "algo-1.log"
    log_path.parent.mkdir(parents=True)
    log_path.write_text("epoch 1\nepoch 2\n")
    engine = _training(store, backend, clock, tmp_path)
    tail = LogTail(log_path, "/aws/sagemaker/TrainingJobs", "crashed/algo-1-1")
    assert tail.read() == ["epoch 1", "epoch 2"]
    engine.logs.put_events(tail.group, tail.stream, [(0, "epoch 1"), (0, "epoch 2")])
    tail.commit()  # the server sent these two, then was killed; the container went on:
    with log_path.open("a") as f:
        f.write("epoch 3\nlast words without a newline")

    asyncio.run(engine.recover())
    page = engine.logs.get_events("/aws/sagemaker/TrainingJobs", "crashed/algo-1-1", start_from_head=True)
    assert [e.message for e in page.events] == [
        "epoch 1",
        "epoch 2",
        "epoch 3",
        "last words without a newline",
    ]
    assert not log_path.parent.exists()  # the job's directory is gone once its log is kept
