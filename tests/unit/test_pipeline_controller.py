"""The pipeline execution controller over a fake step launcher: parallelism, failure propagation,
caching, retries, stop, and going on after a restart (a new controller on the same store)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from opensage.pipelines.controller import KIND, ExecutionController
from opensage.pipelines.steps import FAILED, RUNNING, SUCCEEDED, StepRejected
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore, open_store

PIPELINE_ARN = "arn:aws:sagemaker:us-east-1:000000000000:pipeline/p"


class FakeLauncher:
    """Jobs that end when the test says so; ``refuse`` makes the next creations fail with that code."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.refuse: list[str] = []
        self.stopped: list[str] = []

    async def start(
        self, step_type: str, name: str, request: dict[str, Any], context: Mapping[str, str], parent_arn: str
    ) -> tuple[str, str]:
        if self.refuse:
            raise StepRejected(self.refuse.pop(0), "no capacity")
        self.jobs[name] = {"state": RUNNING, "request": request, "type": step_type}
        return name, f"arn:job/{name}"

    def state(self, step_type: str, name: str) -> tuple[str | None, str | None]:
        job = self.jobs.get(name)
        return (None, None) if job is None else (job["state"], job.get("reason"))

    def properties(self, step_type: str, name: str) -> dict[str, Any]:
        return {"ModelArtifacts": {"S3ModelArtifacts": f"s3://b/{name}/model.tar.gz"}, **self.jobs[name]["request"]}

    def stop(self, step_type: str, name: str) -> None:
        self.stopped.append(name)
        self.jobs[name]["state"] = "Stopped"

    def read_json(self, uri: str) -> Any:
        return {}

    def running(self) -> list[str]:
        return [n for n, j in self.jobs.items() if j["state"] == RUNNING]

    def end(self, name: str, state: str = SUCCEEDED, reason: str | None = None) -> None:
        self.jobs[name].update(state=state, reason=reason)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    s = open_store(f"sqlite:///{tmp_path / 'opensage.db'}", tmp_path / "master.key")
    yield s
    s.close()


def _training(name: str, **extra: Any) -> dict[str, Any]:
    return {"Name": name, "Type": "Training", "Arguments": {"HyperParameters": {"n": name}}, **extra}


def _execution(store: SqlStore, eid: str, steps: list[dict[str, Any]], **fields: Any) -> None:
    now = dt.datetime.now(dt.UTC)
    arn = f"{PIPELINE_ARN}/execution/{eid}"
    data = {
        "PipelineArn": PIPELINE_ARN,
        "PipelineExecutionArn": arn,
        "PipelineExecutionStatus": "Executing",
        "_Name": eid,
        "_Definition": json.dumps({"Version": "2020-12-01", "Steps": steps}),
        "_Parameters": {},
        "_Context": {"region": "us-east-1", "account": "000000000000"},
        "_Variables": {"PipelineExecutionId": eid, "PipelineExecutionArn": arn, "PipelineName": "p"},
        "_Steps": {},
        **fields,
    }
    store.create_resource(Resource(KIND, eid, arn, "Executing", now, now, data, parent_arn=PIPELINE_ARN))


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _steps(store: SqlStore, eid: str) -> dict[str, Any]:
    row = store.get_resource(KIND, eid)
    assert row is not None
    return row.data["_Steps"]


def _status(store: SqlStore, eid: str) -> str:
    row = store.get_resource(KIND, eid)
    assert row is not None
    return row.status


def _controller(store: SqlStore, launcher: FakeLauncher) -> ExecutionController:
    return ExecutionController(store, lambda: dt.datetime.now(dt.UTC), launcher, poll_interval_s=0.01)


def test_parallelism_limit_and_a_failure_that_stops_what_follows(store: SqlStore) -> None:
    launcher = FakeLauncher()
    steps = [_training("A"), _training("B"), _training("C"), _training("D", DependsOn=["A", "B", "C"])]
    _execution(store, "e1", steps, ParallelismConfiguration={"MaxParallelExecutionSteps": 2})

    async def scenario() -> None:
        controller = _controller(store, launcher)
        controller.launch("e1")
        await _until(lambda: len(launcher.running()) == 2)
        await asyncio.sleep(0.05)
        assert len(launcher.running()) == 2  # never more than two at once
        first = launcher.running()[0]
        launcher.end(first)
        await _until(lambda: len(launcher.jobs) == 3)
        for name in launcher.running():
            launcher.end(name, FAILED, "AlgorithmError: boom")
        await _until(lambda: _status(store, "e1") == "Failed")
        await controller.shutdown()

    asyncio.run(scenario())
    steps_done = _steps(store, "e1")
    assert "D" not in steps_done  # its dependencies failed: it never starts
    assert sorted(s["StepStatus"] for s in steps_done.values()) == ["Failed", "Failed", "Succeeded"]
    assert {s.get("FailureReason") for s in steps_done.values()} == {None, "AlgorithmError: boom"}


def test_a_cached_step_points_at_its_source_and_retries_back_off(store: SqlStore) -> None:
    launcher = FakeLauncher()
    cached = _training("T", CacheConfig={"Enabled": True, "ExpireAfter": "PT1H"})
    retry = {"ExceptionType": ["SageMaker.RESOURCE_LIMIT"], "IntervalSeconds": 0.05, "BackoffRate": 2, "MaxAttempts": 3}
    flaky = _training(
        "R",
        RetryPolicies=[retry],
        Arguments={"HyperParameters": {"m": {"Get": "Steps.T.ModelArtifacts.S3ModelArtifacts"}}},
    )

    async def scenario() -> None:
        controller = _controller(store, launcher)
        _execution(store, "e1", [cached, flaky])
        controller.launch("e1")
        await _until(lambda: len(launcher.running()) == 1)
        launcher.end(launcher.running()[0])
        await _until(lambda: len(launcher.running()) == 1 and "R" in _steps(store, "e1"))
        launcher.end(launcher.running()[0])
        await _until(lambda: _status(store, "e1") == "Succeeded")
        launcher.refuse = ["ResourceLimitExceeded", "ResourceLimitExceeded"]
        _execution(store, "e2", [cached, flaky])
        controller.launch("e2")
        await _until(lambda: _status(store, "e2") != "Executing" or bool(launcher.running()))
        launcher.end(launcher.running()[0])
        await _until(lambda: _status(store, "e2") == "Succeeded")
        await controller.shutdown()

    asyncio.run(scenario())
    first, second = _steps(store, "e1"), _steps(store, "e2")
    assert second["T"]["CacheHitResult"] == {"SourcePipelineExecutionArn": f"{PIPELINE_ARN}/execution/e1"}
    assert second["T"]["Metadata"] == first["T"]["Metadata"]
    assert second["R"]["AttemptCount"] == 3  # two refusals retried
    job = second["R"]["Metadata"]["TrainingJob"]["Arn"].rsplit("/", 1)[1]
    source = first["T"]["_Job"]  # the reference reads the cached step's source job
    assert launcher.jobs[job]["request"]["HyperParameters"]["m"] == f"s3://b/{source}/model.tar.gz"


def test_stop_and_going_on_after_a_restart(store: SqlStore) -> None:
    launcher = FakeLauncher()
    _execution(store, "e1", [_training("A"), _training("B", DependsOn=["A"])])
    _execution(store, "e2", [_training("X")])

    async def first_server() -> None:
        controller = _controller(store, launcher)
        controller.launch("e1")
        controller.launch("e2")
        await _until(lambda: len(launcher.running()) == 2)
        await controller.shutdown()  # the platform stops: both stay Executing

    async def second_server() -> None:
        controller = _controller(store, launcher)
        await controller.recover()
        a = _steps(store, "e1")["A"]["_Job"]
        launcher.end(
            a, FAILED, "InternalServerError: OpenSage restarted while this job was running; start the job again."
        )
        await _until(lambda: _steps(store, "e1")["A"]["AttemptCount"] == 2 and len(launcher.running()) == 2)
        launcher.end(_steps(store, "e1")["A"]["_Job"])
        await _until(lambda: _steps(store, "e1").get("B", {}).get("_Job") in launcher.jobs)  # recorded, then started
        launcher.end(_steps(store, "e1")["B"]["_Job"])
        await _until(lambda: _status(store, "e1") == "Succeeded")
        store.modify_resource(
            KIND,
            "e2",
            lambda r: ({**r.data, "PipelineExecutionStatus": "Stopping"}, "Stopping"),
            now=dt.datetime.now(dt.UTC),
        )
        controller.request_stop("e2")
        await _until(lambda: _status(store, "e2") == "Stopped")
        await controller.shutdown()

    asyncio.run(first_server())
    assert _status(store, "e1") == "Executing" and _status(store, "e2") == "Executing"
    asyncio.run(second_server())
    assert _steps(store, "e2")["X"]["StepStatus"] == "Stopped"
    assert launcher.stopped == [_steps(store, "e2")["X"]["_Job"]]
