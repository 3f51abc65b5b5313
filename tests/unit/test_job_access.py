"""A job's own key: made for the job's user code, deleted when the job ends or, after a crash, at the next start."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from opensage.compute.base import ContainerSpec, JobSpec
from opensage.jobs.access import JobAccess, with_env
from opensage.store.entities import Resource
from opensage.store.sql import open_store

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _job(store, name: str, status: str) -> Resource:  # type: ignore[no-untyped-def]
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}"
    return store.create_resource(Resource("training-job", name, arn, status, NOW, NOW, {"TrainingJobName": name}))


def test_keys_go_with_their_jobs(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db'}", tmp_path / "master.key")
    forgotten: list[str] = []
    access = JobAccess(store, "123456789012", {"AWS_ENDPOINT_URL_SAGEMAKER": "http://127.0.0.1:1"}, forgotten.append)
    ended = access.grant("training-job", "ended", "arn:ended")  # its job ended while no server ran
    _job(store, "ended", "Completed")
    store.watchers.append(access.watch)
    running = _job(store, "running", "InProgress")
    env = access.grant("training-job", "running", running.arn)
    assert env["TRAINING_JOB_ARN"] == running.arn and env["AWS_ENDPOINT_URL_SAGEMAKER"] == "http://127.0.0.1:1"
    assert store.get_access_key(env["AWS_ACCESS_KEY_ID"]) is not None
    orphan = access.grant("processing-job", "gone", "arn:gone")
    assert access.sweep() == 2  # the running job keeps its key
    assert store.get_access_key(ended["AWS_ACCESS_KEY_ID"]) is None
    assert store.get_access_key(orphan["AWS_ACCESS_KEY_ID"]) is None
    assert store.get_access_key(env["AWS_ACCESS_KEY_ID"]) is not None

    store.modify_resource("training-job", "running", lambda r: (r.data, "Completed"), now=NOW)
    assert store.get_access_key(env["AWS_ACCESS_KEY_ID"]) is None
    assert env["AWS_ACCESS_KEY_ID"] in forgotten


def test_the_jobs_own_variables_win() -> None:
    container = ContainerSpec("algo-1", ("train",), {"AWS_REGION": "eu-west-1"}, Path("/tmp"), Path("/tmp/log"))
    spec = with_env(JobSpec("training-job/x", (container,)), {"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "AK"})
    assert spec.containers[0].env == {"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AK"}
