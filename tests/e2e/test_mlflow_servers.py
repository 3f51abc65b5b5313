"""SageMaker managed MLflow end to end: tracking servers over boto3, each a real ``mlflow server`` that the real
MLflow client with the ``sagemaker-mlflow`` plugin reaches through the platform (SigV4 for ``sagemaker-mlflow``,
routed by the ARN header), artifacts in the platform's S3, the UI through a presigned URL, Stop/Start, a platform
restart, Delete."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from helpers import RunningPlatform, console_client, running_platform

pytest.importorskip("mlflow")
pytest.importorskip("sagemaker_mlflow")

BUCKET = "mlflow-tests"
ARN_HEADER = "x-mlflow-sm-tracking-server-arn"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _error(call: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return err.value.response["Error"]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("mlflow")
    with running_platform(root / "home", root / "aws") as running:
        running.session().client("s3").create_bucket(Bucket=BUCKET)
        yield running
        sm = running.session().client("sagemaker")
        for summary in sm.list_mlflow_tracking_servers()["TrackingServerSummaries"]:
            if summary["TrackingServerStatus"] != "Deleting":
                sm.delete_mlflow_tracking_server(TrackingServerName=summary["TrackingServerName"])


def _sm(platform: RunningPlatform) -> Any:
    return platform.session().client("sagemaker")


def _role_arn(platform: RunningPlatform) -> str:
    account = platform.session().client("sts").get_caller_identity()["Account"]
    return f"arn:aws:iam::{account}:role/OpenSageExecutionRole"


def wait_status(sm: Any, name: str, wanted: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        desc = sm.describe_mlflow_tracking_server(TrackingServerName=name)
        if desc["TrackingServerStatus"] == wanted:
            return dict(desc)
        assert not desc["TrackingServerStatus"].endswith("Failed"), desc
        assert time.monotonic() < deadline, desc
        time.sleep(0.5)


def server_pid(platform: RunningPlatform, name: str) -> int:
    return int((platform.home / "mlflow" / name.lower() / "server.pid").read_text())


def gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


def create(platform: RunningPlatform, name: str, prefix: str = "") -> str:
    sm = _sm(platform)
    arn = sm.create_mlflow_tracking_server(
        TrackingServerName=name,
        ArtifactStoreUri=f"s3://{BUCKET}/{prefix or name}",
        RoleArn=_role_arn(platform),
        TrackingServerSize="Small",
        Tags=[{"Key": "team", "Value": "risk"}],
    )["TrackingServerArn"]
    return str(arn)


LOG_RUN = """
import mlflow, os
mlflow.set_tracking_uri({arn!r})
mlflow.set_experiment("churn")
with mlflow.start_run(run_name="first") as run:
    mlflow.log_param("eta", 0.2)
    for step in range(3):
        mlflow.log_metric("auc", 0.8 + step / 100, step=step)
    with open("notes.txt", "w") as f:
        f.write("hello from a run")
    mlflow.log_artifact("notes.txt")
print("RUN", run.info.run_id, run.info.artifact_uri)
"""

READ_RUN = """
import json, mlflow
mlflow.set_tracking_uri({arn!r})
client = mlflow.MlflowClient()
run = client.get_run({run_id!r})
history = [m.value for m in client.get_metric_history({run_id!r}, "auc")]
path = client.download_artifacts({run_id!r}, "notes.txt", ".")
names = [e.name for e in client.search_experiments()]
got = {{"params": run.data.params, "auc": history, "notes": open(path).read(), "experiments": names}}
print("READ", json.dumps(got))
"""


def log_run(platform: RunningPlatform, arn: str, cwd: Path) -> tuple[str, str]:
    out = platform.run_python(LOG_RUN.format(arn=arn), cwd)
    line = next(x for x in out.splitlines() if x.startswith("RUN "))
    _, run_id, artifact_uri = line.split()
    return run_id, artifact_uri


def read_run(platform: RunningPlatform, arn: str, run_id: str, cwd: Path) -> dict[str, Any]:
    out = platform.run_python(READ_RUN.format(arn=arn, run_id=run_id), cwd)
    return dict(json.loads(next(x for x in out.splitlines() if x.startswith("READ "))[5:]))


def test_bad_requests_answer_aws_errors(platform: RunningPlatform) -> None:
    sm, role = _sm(platform), _role_arn(platform)
    name = _name("bad")
    err = _error(
        sm.create_mlflow_tracking_server, TrackingServerName=name, ArtifactStoreUri="https://x/y", RoleArn=role
    )
    assert err["Code"] == "ValidationException" and "s3://" in err["Message"]
    err = _error(
        sm.create_mlflow_tracking_server,
        TrackingServerName=name,
        ArtifactStoreUri="s3://no-such-bucket-here/mlflow",
        RoleArn=role,
    )
    assert err["Code"] == "ValidationException" and "no-such-bucket-here" in err["Message"]
    assert "does not exist" in err["Message"]
    err = _error(
        sm.create_mlflow_tracking_server,
        TrackingServerName=name,
        ArtifactStoreUri=f"s3://{BUCKET}/x",
        RoleArn=role.replace("OpenSageExecutionRole", "NoSuchRole"),
    )
    assert err["Code"] == "ValidationException" and "NoSuchRole" in err["Message"]
    err = _error(
        sm.create_mlflow_tracking_server,
        TrackingServerName=name,
        ArtifactStoreUri=f"s3://{BUCKET}/x",
        RoleArn=role,
        TrackingServerSize="Huge",
    )
    assert err["Code"] == "ValidationException"
    for call in (
        sm.describe_mlflow_tracking_server,
        sm.start_mlflow_tracking_server,
        sm.stop_mlflow_tracking_server,
        sm.delete_mlflow_tracking_server,
        sm.create_presigned_mlflow_tracking_server_url,
    ):
        err = _error(call, TrackingServerName=name)
        assert err["Code"] == "ResourceNotFound" and name in err["Message"], call
    assert name not in {s["TrackingServerName"] for s in sm.list_mlflow_tracking_servers()["TrackingServerSummaries"]}


def _signed(url: str, arn: str | None, key: str, secret: str, service: str = "sagemaker-mlflow") -> httpx.Response:
    body = json.dumps({"max_results": 5}).encode()
    headers = {"Content-Type": "application/json"}
    if arn is not None:
        headers[ARN_HEADER] = arn
    request = AWSRequest("POST", url, data=body, headers=headers)
    SigV4Auth(Credentials(key, secret), service, "us-east-1").add_auth(request)
    return httpx.post(url, content=body, headers=dict(request.headers.items()))


@pytest.mark.slow
def test_tracking_server_with_the_mlflow_client(platform: RunningPlatform, tmp_path: Path) -> None:
    sm = _sm(platform)
    name = _name("Churn")  # names are unique in any case; the ARN has it in lower case, as AWS's ARNs do
    arn = create(platform, name)
    assert arn.endswith(f":mlflow-tracking-server/{name.lower()}")
    assert sm.describe_mlflow_tracking_server(TrackingServerName=name)["TrackingServerStatus"] == "Creating"
    err = _error(
        sm.create_mlflow_tracking_server,
        TrackingServerName=name.lower(),
        ArtifactStoreUri=f"s3://{BUCKET}/again",
        RoleArn=_role_arn(platform),
    )
    assert err["Code"] == "ValidationException" and "already exists" in err["Message"]
    desc = wait_status(sm, name, "Created")
    assert desc["IsActive"] == "Active" and desc["TrackingServerArn"] == arn
    assert desc["ArtifactStoreUri"] == f"s3://{BUCKET}/{name}" and desc["TrackingServerSize"] == "Small"
    assert desc["TrackingServerName"] == name and desc["MlflowVersion"]
    assert desc["TrackingServerUrl"].endswith(f"/_opensage/mlflow/ui/{name.lower()}/")
    assert desc["CreationTime"] <= desc["LastModifiedTime"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "risk"}]
    listed = sm.list_mlflow_tracking_servers(TrackingServerStatus="Created", SortBy="Name")["TrackingServerSummaries"]
    assert name in [s["TrackingServerName"] for s in listed]
    assert name not in [
        s["TrackingServerName"]
        for s in sm.list_mlflow_tracking_servers(TrackingServerStatus="Stopped")["TrackingServerSummaries"]
    ]
    err = _error(sm.start_mlflow_tracking_server, TrackingServerName=name)
    assert err["Code"] == "ConflictException" and "Created" in err["Message"]

    env = platform.shell_env()
    assert env["SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT"] == platform.api_url + "/_opensage/mlflow"
    run_id, artifact_uri = log_run(platform, arn, tmp_path)
    assert artifact_uri.startswith(f"s3://{BUCKET}/{name}/")
    keys = [o["Key"] for o in platform.session().client("s3").list_objects_v2(Bucket=BUCKET, Prefix=name)["Contents"]]
    assert any(k.endswith("/artifacts/notes.txt") for k in keys), keys
    got = read_run(platform, arn, run_id, tmp_path)
    assert got["params"] == {"eta": "0.2"} and got["auc"] == pytest.approx([0.8, 0.81, 0.82])
    assert got["notes"] == "hello from a run" and "churn" in got["experiments"]

    # the front checks the signature and the ARN before anything reaches the server
    url = env["SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT"] + "/api/2.0/mlflow/experiments/search"
    creds = platform.session().get_credentials()
    ok = _signed(url, arn, creds.access_key, creds.secret_key)
    assert ok.status_code == 200 and "churn" in ok.text
    bad = _signed(url, arn, creds.access_key, "not-the-secret")
    assert bad.status_code == 403 and bad.json()["__type"] == "InvalidSignatureException"
    unknown = _signed(url, arn, "AKIANOTAKEY12345678", creds.secret_key)
    assert unknown.status_code == 403 and unknown.json()["__type"] == "UnrecognizedClientException"
    other = _signed(url, arn, creds.access_key, creds.secret_key, service="sagemaker")
    assert other.status_code == 403 and "sagemaker-mlflow" in other.json()["message"]
    missing = _signed(url, arn.replace(name.lower(), "no-such-server"), creds.access_key, creds.secret_key)
    assert missing.status_code == 404 and missing.json()["__type"] == "ResourceNotFound"
    nameless = _signed(url, None, creds.access_key, creds.secret_key)
    assert nameless.status_code == 400 and ARN_HEADER in nameless.json()["message"]
    unsigned = httpx.post(url, json={}, headers={ARN_HEADER: arn})
    assert unsigned.status_code == 403 and unsigned.json()["__type"] == "MissingAuthenticationTokenException"

    # stop: the process ends and the API says so; start: the runs are still there
    pid = server_pid(platform, name)
    sm.stop_mlflow_tracking_server(TrackingServerName=name)
    assert wait_status(sm, name, "Stopped")["IsActive"] == "Inactive"
    assert gone(pid)
    err = _error(sm.stop_mlflow_tracking_server, TrackingServerName=name)
    assert err["Code"] == "ConflictException" and "Stopped" in err["Message"]
    stopped = _signed(url, arn, creds.access_key, creds.secret_key)
    assert stopped.status_code == 409 and "StartMlflowTrackingServer" in stopped.json()["message"]
    sm.start_mlflow_tracking_server(TrackingServerName=name)
    wait_status(sm, name, "Started")
    assert read_run(platform, arn, run_id, tmp_path)["params"] == {"eta": "0.2"}

    # a process that dies while its server should run is started again
    pid = server_pid(platform, name)
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while _signed(url, arn, creds.access_key, creds.secret_key).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert server_pid(platform, name) != pid
    assert sm.describe_mlflow_tracking_server(TrackingServerName=name)["TrackingServerStatus"] == "Started"

    err = _error(sm.update_mlflow_tracking_server, TrackingServerName=name, ArtifactStoreUri="s3://missing-bucket/x")
    assert err["Code"] == "ValidationException" and "missing-bucket" in err["Message"]
    sm.update_mlflow_tracking_server(TrackingServerName=name, WeeklyMaintenanceWindowStart="Sun:02:00")
    desc = wait_status(sm, name, "Updated")
    assert desc["WeeklyMaintenanceWindowStart"] == "Sun:02:00"
    before = server_pid(platform, name)
    sm.update_mlflow_tracking_server(TrackingServerName=name, ArtifactStoreUri=f"s3://{BUCKET}/{name}-v2")
    assert sm.describe_mlflow_tracking_server(TrackingServerName=name)["TrackingServerStatus"] == "Updating"
    desc = wait_status(sm, name, "Updated")  # a new artifact root: a new process
    assert desc["ArtifactStoreUri"] == f"s3://{BUCKET}/{name}-v2" and server_pid(platform, name) != before
    assert gone(before)

    pid = server_pid(platform, name)
    sm.delete_mlflow_tracking_server(TrackingServerName=name)
    assert gone(pid)
    deadline = time.monotonic() + 30
    while any(s["TrackingServerName"] == name for s in sm.list_mlflow_tracking_servers()["TrackingServerSummaries"]):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert not (platform.home / "mlflow" / name.lower()).exists()
    assert sm.list_tags(ResourceArn=arn)["Tags"] == []


@pytest.mark.slow
def test_the_ui_opens_through_a_presigned_url(platform: RunningPlatform) -> None:
    sm = _sm(platform)
    name = _name("ui")
    create(platform, name)
    wait_status(sm, name, "Created")
    authorized = sm.create_presigned_mlflow_tracking_server_url(
        TrackingServerName=name, ExpiresInSeconds=5, SessionExpirationDurationInSeconds=1800
    )["AuthorizedUrl"]
    assert authorized.startswith(platform.api_url + f"/_opensage/mlflow/ui/{name}/auth?authToken=")
    ui = platform.api_url + f"/_opensage/mlflow/ui/{name}/"
    assert httpx.get(ui).status_code == 403 and "CreatePresignedMlflowTrackingServerUrl" in httpx.get(ui).text
    with httpx.Client() as browser:
        signed_in = browser.get(authorized)
        assert signed_in.status_code == 303 and signed_in.headers["location"].endswith(f"/ui/{name}/")
        page = browser.get(ui)
        assert page.status_code == 200 and "<title>MLflow</title>" in page.text
        script = page.text.split('src="', 1)[1].split('"', 1)[0]  # the UI's links are relative
        assert browser.get(ui + script).status_code == 200
        ajax = browser.post(ui + "ajax-api/2.0/mlflow/experiments/search", json={"max_results": 10})
        assert ajax.status_code == 200 and "Default" in ajax.text
    keys = platform.session().get_credentials()
    console = console_client(platform.api_url, keys.access_key, keys.secret_key)
    try:
        listing = console.get("/console/mlflow-tracking-servers").text
        assert f'data-server="{name}"' in listing and f"/mlflow-tracking-servers/{name}/open" in listing
        opened = console.get(f"/console/mlflow-tracking-servers/{name}/open")
        assert (
            opened.status_code in (302, 303)
            and f"/_opensage/mlflow/ui/{name}/auth?authToken=" in opened.headers["location"]
        )
    finally:
        console.close()
    other = sm.create_presigned_mlflow_tracking_server_url(TrackingServerName=name)["AuthorizedUrl"]
    foreign = other.replace(f"/ui/{name}/", "/ui/someone-else/")
    assert httpx.get(foreign).status_code == 403
    time.sleep(5.5)
    expired = httpx.get(authorized)
    assert expired.status_code == 403 and "expired" in expired.text
    sm.delete_mlflow_tracking_server(TrackingServerName=name)


@pytest.mark.slow
def test_a_restart_brings_back_the_servers_that_ran(tmp_path: Path) -> None:
    home, aws = tmp_path / "home", tmp_path / "aws"
    running_name, stopped_name = _name("kept"), _name("parked")
    with running_platform(home, aws) as first:
        first.session().client("s3").create_bucket(Bucket=BUCKET)
        sm = _sm(first)
        arn = create(first, running_name)
        create(first, stopped_name)
        wait_status(sm, running_name, "Created")
        wait_status(sm, stopped_name, "Created")
        sm.stop_mlflow_tracking_server(TrackingServerName=stopped_name)
        wait_status(sm, stopped_name, "Stopped")
        run_id, _ = log_run(first, arn, tmp_path)
        pid = server_pid(first, running_name)
    assert gone(pid, timeout=5)  # the platform's shutdown ended it
    with running_platform(home, aws, port=first.port) as second:
        sm = _sm(second)
        assert wait_status(sm, running_name, "Created")["IsActive"] == "Active"
        assert sm.describe_mlflow_tracking_server(TrackingServerName=stopped_name)["TrackingServerStatus"] == "Stopped"
        assert gone(server_pid(second, stopped_name), timeout=1)  # not started again
        got = read_run(second, arn, run_id, tmp_path)
        assert got["params"] == {"eta": "0.2"} and got["notes"] == "hello from a run"
        pid = server_pid(second, running_name)
        os.kill(second.proc.pid, signal.SIGKILL)  # a platform that dies without stopping leaves it running
        second.proc.wait(10)
        assert not gone(pid, timeout=1)
    with running_platform(home, aws, port=first.port) as third:
        assert gone(pid)  # the next start ends what the dead one left, and starts its own
        sm = _sm(third)
        assert wait_status(sm, running_name, "Created")["IsActive"] == "Active"
        assert read_run(third, arn, run_id, tmp_path)["auc"] == pytest.approx([0.8, 0.81, 0.82])
        pid = server_pid(third, running_name)
        for name in (running_name, stopped_name):
            sm.delete_mlflow_tracking_server(TrackingServerName=name)
        assert gone(pid)


JOB_LOGS = """
import mlflow, os
mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_ARN"])
mlflow.set_experiment("from-a-job")
with mlflow.start_run(run_name=os.environ["TRAINING_JOB_NAME"]):
    mlflow.log_param("job", os.environ["TRAINING_JOB_NAME"])
    mlflow.log_metric("accuracy", 0.87)
"""


@pytest.mark.slow
def test_a_training_job_logs_to_a_tracking_server_named_in_its_environment(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    sm = _sm(platform)
    name = _name("jobs")
    arn = create(platform, name)
    wait_status(sm, name, "Created")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text(JOB_LOGS)
    out = platform.run_python(
        f"""
        import sagemaker
        from sagemaker.sklearn import SKLearn
        est = SKLearn(entry_point="train.py", source_dir="src", framework_version="1.2-1", py_version="py3",
                      instance_count=1, instance_type="ml.m5.large", role=sagemaker.get_execution_role(),
                      environment={{"MLFLOW_TRACKING_ARN": "{arn}"}})
        est.fit(logs=False)
        print("JOB", est.latest_training_job.name)
        """,
        tmp_path,
        timeout=600,
    )
    job = next(line.split()[1] for line in out.splitlines() if line.startswith("JOB "))
    read = platform.run_python(
        f"""
        import mlflow
        mlflow.set_tracking_uri("{arn}")
        runs = mlflow.search_runs(experiment_names=["from-a-job"], output_format="list")
        print("FOUND", [(r.data.params["job"], r.data.metrics["accuracy"]) for r in runs])
        """,
        tmp_path,
    )
    assert f"FOUND [('{job}', 0.87)]" in read, read[-2000:]
    sm.delete_mlflow_tracking_server(TrackingServerName=name)
