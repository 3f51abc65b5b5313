"""Notebook instances end to end: boto3 against a real ``opensage up``; each InService instance a real JupyterLab
opened through a presigned URL, a kernel driven over its websocket that uses the SageMaker SDK against the platform
with no set-up, lifecycle scripts (OnCreate once, OnStart at every start) with their output in CloudWatch Logs, the
volume kept across stop and start, and the AWS errors for what is asked in the wrong state."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
from botocore.exceptions import ClientError

from helpers import RunningPlatform, running_platform
from notebook_helpers import (
    LOG_GROUP,
    b64,
    error_of,
    jupyter_pids,
    new_name,
    role_arn,
    run_in_kernel,
    sagemaker,
    sign_in,
    wait_deleted,
    wait_failed,
    wait_status,
)

pytest.importorskip("jupyterlab")

ON_CREATE = "set -e\necho created >> $SAGEMAKER_WORKING_DIR/created.txt\necho on-create ran\n"
ON_START = "set -e\necho started >> /home/ec2-user/SageMaker/starts.txt\necho on-start ran\n"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("notebooks")
    with running_platform(root / "home", root / "aws") as running:
        yield running
        sm = running.session().client("sagemaker")
        for summary in sm.list_notebook_instances()["NotebookInstances"]:
            name, status = summary["NotebookInstanceName"], summary["NotebookInstanceStatus"]
            if status in ("InService", "Pending"):
                sm.stop_notebook_instance(NotebookInstanceName=name)
            if status != "Deleting":
                wait_status(sm, name, ("Stopped", "Failed"))
                sm.delete_notebook_instance(NotebookInstanceName=name)


@pytest.mark.slow
def test_notebook_instance_lifecycle_kernel_and_volume(platform: RunningPlatform) -> None:
    sm, role = sagemaker(platform), role_arn(platform)
    config, name = new_name("lcc"), new_name("nb")
    sm.create_notebook_instance_lifecycle_config(
        NotebookInstanceLifecycleConfigName=config,
        OnCreate=[{"Content": b64(ON_CREATE)}],
        OnStart=[{"Content": b64(ON_START)}],
    )
    arn = sm.create_notebook_instance(
        NotebookInstanceName=name,
        InstanceType="ml.t3.medium",
        RoleArn=role,
        LifecycleConfigName=config,
        Tags=[{"Key": "team", "Value": "ml"}],
    )["NotebookInstanceArn"]
    assert arn.endswith(f":notebook-instance/{name}")
    assert sm.describe_notebook_instance(NotebookInstanceName=name)["NotebookInstanceStatus"] == "Pending"
    desc = wait_status(sm, name, ("InService",))
    assert desc["NotebookInstanceLifecycleConfigName"] == config and desc["RoleArn"] == role
    assert desc["Url"].endswith(f"/_opensage/notebooks/{name}/") and desc["VolumeSizeInGB"] == 5
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ml"}]
    listed = sm.list_notebook_instances(StatusEquals="InService", NameContains=name)["NotebookInstances"]
    assert [n["NotebookInstanceName"] for n in listed] == [name]
    assert sm.list_notebook_instances(NotebookInstanceLifecycleConfigNameContains="nomatch")["NotebookInstances"] == []

    logs = platform.session().client("logs")
    for stream, line in (("LifecycleConfigOnCreate", "on-create ran"), ("LifecycleConfigOnStart", "on-start ran")):
        events = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=f"{name}/{stream}")["events"]
        assert [e["message"] for e in events] == [line]

    # Update and Delete need a stopped instance, as on AWS.
    err = error_of(sm.update_notebook_instance, NotebookInstanceName=name, VolumeSizeInGB=10)
    assert err["Code"] == "ValidationException" and "Stopped" in err["Message"]
    err = error_of(sm.delete_notebook_instance, NotebookInstanceName=name)
    assert err["Code"] == "ValidationException" and "StopNotebookInstance" in err["Message"]

    client = sign_in(sm, name)
    base = f"{platform.api_url}/_opensage/notebooks/{name}/"
    output = run_in_kernel(
        client,
        base,
        "import json, os, sagemaker\n"
        "seen = [sagemaker.Session().default_bucket(), sagemaker.get_execution_role(), os.getcwd()]\n"
        "open('kept.txt', 'w').write('still here')\n"
        "print('RESULT ' + json.dumps(seen))\n",
    )
    account = platform.session().client("sts").get_caller_identity()["Account"]
    result = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert result, output
    bucket, role_seen, cwd = json.loads(result[-1].removeprefix("RESULT "))
    assert bucket == f"sagemaker-{platform.session().region_name}-{account}"
    assert platform.session().client("s3").head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert role_seen == role and cwd == "/home/ec2-user/SageMaker"
    contents = client.get(f"{base}api/contents/kept.txt", params={"content": "1"}).json()
    assert contents["content"] == "still here"
    pids = jupyter_pids(platform, name)
    assert pids
    deadline = time.monotonic() + 30  # JupyterLab's own log, shipped every few seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(ClientError):
            shipped = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=f"{name}/jupyter.log")["events"]
            if any("Kernel started" in e["message"] for e in shipped):
                break
        time.sleep(0.5)
    else:
        raise AssertionError("JupyterLab's log did not reach CloudWatch Logs")

    sm.stop_notebook_instance(NotebookInstanceName=name)
    wait_status(sm, name, ("Stopped",))
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    stopped = client.get(f"{base}api/contents")
    assert stopped.status_code == 409 and "StartNotebookInstance" in stopped.text
    client.close()
    sm.update_notebook_instance(NotebookInstanceName=name, VolumeSizeInGB=10)
    assert wait_status(sm, name, ("Stopped",))["VolumeSizeInGB"] == 10

    sm.start_notebook_instance(NotebookInstanceName=name)
    wait_status(sm, name, ("InService",))
    client = sign_in(sm, name)
    volume = platform.home / "notebooks" / name / "SageMaker"
    assert (volume / "kept.txt").read_text() == "still here"
    assert (volume / "created.txt").read_text() == "created\n"  # OnCreate ran once
    assert (volume / "starts.txt").read_text() == "started\nstarted\n"  # OnStart at each start
    assert client.get(f"{base}api/contents/kept.txt").status_code == 200
    client.close()
    events = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=f"{name}/LifecycleConfigOnStart")["events"]
    assert [e["message"] for e in events] == ["on-start ran", "on-start ran"]

    err = error_of(sm.delete_notebook_instance_lifecycle_config, NotebookInstanceLifecycleConfigName=config)
    assert err["Code"] == "ResourceInUse" and name in err["Message"]
    pids = jupyter_pids(platform, name)
    sm.stop_notebook_instance(NotebookInstanceName=name)
    wait_status(sm, name, ("Stopped",))
    sm.delete_notebook_instance(NotebookInstanceName=name)
    wait_deleted(sm, name)
    assert not (platform.home / "notebooks" / name).exists()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    sm.delete_notebook_instance_lifecycle_config(NotebookInstanceLifecycleConfigName=config)


@pytest.mark.slow
def test_presigned_url_expires_and_sessions_are_checked(platform: RunningPlatform) -> None:
    from opensage.notebooks.front import issue_url_token, sign_in_path, signing_key
    from opensage.store.sql import open_store

    sm = sagemaker(platform)
    name = new_name("nb")
    sm.create_notebook_instance(NotebookInstanceName=name, InstanceType="ml.t3.medium", RoleArn=role_arn(platform))
    wait_status(sm, name, ("InService",))
    base = f"{platform.api_url}/_opensage/notebooks/{name}/"
    anonymous = httpx.Client(trust_env=False, timeout=30)
    refused = anonymous.get(f"{base}lab")
    assert refused.status_code == 403 and "CreatePresignedNotebookInstanceUrl" in refused.text
    assert anonymous.get(f"{base}?authToken=forged.token").status_code == 403

    url = sm.create_presigned_notebook_instance_url(NotebookInstanceName=name)["AuthorizedUrl"]
    other = new_name("nb")
    foreign = anonymous.get(url.replace(f"/notebooks/{name}/", f"/notebooks/{other}/"))
    assert foreign.status_code == 403 and "not a sign-in link" in foreign.text

    # A URL handed out 10 minutes ago, signed with the platform's own key: past its 5 minutes.
    store = open_store(f"sqlite:///{platform.home / 'opensage.db'}", platform.home / "master.key")
    try:
        old = issue_url_token(signing_key(store), name, time.time() - 600, 300, 3600)
    finally:
        store.close()
    expired = anonymous.get(platform.api_url + sign_in_path(name, old))
    assert expired.status_code == 403 and "expired" in expired.text and "set-cookie" not in expired.headers

    signed = sign_in(sm, name)
    assert signed.get(f"{base}api/status").json()["kernels"] == 0
    cross = signed.post(f"{base}api/kernels", json={"name": "python3"}, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403
    signed.close()
    anonymous.close()
    sm.stop_notebook_instance(NotebookInstanceName=name)
    wait_status(sm, name, ("Stopped",))
    sm.delete_notebook_instance(NotebookInstanceName=name)
    wait_deleted(sm, name)


@pytest.mark.slow
def test_failing_lifecycle_script_fails_the_instance(platform: RunningPlatform) -> None:
    sm = sagemaker(platform)
    config, name = new_name("lcc"), new_name("nb")
    script = "echo installing\necho 'error: package xyz not found' >&2\nexit 3\n"
    sm.create_notebook_instance_lifecycle_config(
        NotebookInstanceLifecycleConfigName=config, OnStart=[{"Content": b64(script)}]
    )
    sm.create_notebook_instance(
        NotebookInstanceName=name, InstanceType="ml.t3.medium", RoleArn=role_arn(platform), LifecycleConfigName=config
    )
    desc = wait_failed(sm, name)
    assert "OnStart script exited with code 3" in desc["FailureReason"]
    assert "error: package xyz not found" in desc["FailureReason"]
    events = (
        platform.session()
        .client("logs")
        .get_log_events(logGroupName=LOG_GROUP, logStreamName=f"{name}/LifecycleConfigOnStart")["events"]
    )
    assert [e["message"] for e in events] == ["installing", "error: package xyz not found"]
    assert not jupyter_pids(platform, name)
    sm.delete_notebook_instance(NotebookInstanceName=name)  # a Failed instance can be deleted
    wait_deleted(sm, name)
    sm.delete_notebook_instance_lifecycle_config(NotebookInstanceLifecycleConfigName=config)


@pytest.mark.slow
def test_code_repository_that_cannot_be_cloned(platform: RunningPlatform) -> None:
    sm = sagemaker(platform)
    repo, name = new_name("repo"), new_name("nb")
    url = "https://127.0.0.1:9/nobody/nothing.git"  # nothing listens on the discard port
    arn = sm.create_code_repository(CodeRepositoryName=repo, GitConfig={"RepositoryUrl": url, "Branch": "main"})[
        "CodeRepositoryArn"
    ]
    described = sm.describe_code_repository(CodeRepositoryName=repo)
    assert described["CodeRepositoryArn"] == arn and described["GitConfig"] == {"RepositoryUrl": url, "Branch": "main"}
    names = [r["CodeRepositoryName"] for r in sm.list_code_repositories(NameContains=repo)["CodeRepositorySummaryList"]]
    assert names == [repo]
    sm.create_notebook_instance(
        NotebookInstanceName=name, InstanceType="ml.t3.medium", RoleArn=role_arn(platform), DefaultCodeRepository=repo
    )
    desc = wait_failed(sm, name)
    assert desc["FailureReason"].startswith(f"Could not clone the code repository {url}")
    assert "127.0.0.1" in desc["FailureReason"] and desc["DefaultCodeRepository"] == repo
    err = error_of(sm.delete_code_repository, CodeRepositoryName=repo)
    assert err["Code"] == "ResourceInUse"
    sm.delete_notebook_instance(NotebookInstanceName=name)
    wait_deleted(sm, name)
    sm.delete_code_repository(CodeRepositoryName=repo)
    assert "Cannot find CodeRepository" in error_of(sm.describe_code_repository, CodeRepositoryName=repo)["Message"]


def test_bad_requests_say_what_to_fix(platform: RunningPlatform) -> None:
    sm, role = sagemaker(platform), role_arn(platform)
    missing = error_of(sm.describe_notebook_instance, NotebookInstanceName="no-such-notebook")
    assert missing["Code"] == "ValidationException" and "RecordNotFound" in missing["Message"]
    for call in (sm.start_notebook_instance, sm.stop_notebook_instance, sm.create_presigned_notebook_instance_url):
        assert error_of(call, NotebookInstanceName="no-such-notebook")["Code"] == "ValidationException"
    err = error_of(
        sm.create_notebook_instance,
        NotebookInstanceName=new_name("nb"),
        InstanceType="ml.t3.medium",
        RoleArn=role,
        LifecycleConfigName="no-such-config",
    )
    assert err["Code"] == "ValidationException" and "CreateNotebookInstanceLifecycleConfig" in err["Message"]
    err = error_of(
        sm.create_notebook_instance,
        NotebookInstanceName=new_name("nb"),
        InstanceType="ml.t3.medium",
        RoleArn=role.replace("OpenSageExecutionRole", "NoSuchRole"),
    )
    assert err["Code"] == "ValidationException" and "Could not assume role" in err["Message"]
    bad = error_of(
        sm.create_notebook_instance_lifecycle_config,
        NotebookInstanceLifecycleConfigName=new_name("lcc"),
        OnStart=[{"Content": "not base64 !"}],
    )
    assert bad["Code"] == "ValidationException" and "base64" in bad["Message"]

    config = new_name("lcc")
    sm.create_notebook_instance_lifecycle_config(NotebookInstanceLifecycleConfigName=config)
    dup = error_of(sm.create_notebook_instance_lifecycle_config, NotebookInstanceLifecycleConfigName=config)
    assert dup["Code"] == "ValidationException" and "already exists" in dup["Message"]
    sm.update_notebook_instance_lifecycle_config(
        NotebookInstanceLifecycleConfigName=config, OnStart=[{"Content": b64("echo hi\n")}]
    )
    desc = sm.describe_notebook_instance_lifecycle_config(NotebookInstanceLifecycleConfigName=config)
    assert desc["OnStart"] == [{"Content": b64("echo hi\n")}] and "OnCreate" not in desc
    listed = sm.list_notebook_instance_lifecycle_configs(NameContains=config, SortBy="LastModifiedTime")
    assert [c["NotebookInstanceLifecycleConfigName"] for c in listed["NotebookInstanceLifecycleConfigs"]] == [config]
    sm.delete_notebook_instance_lifecycle_config(NotebookInstanceLifecycleConfigName=config)
    gone = error_of(sm.describe_notebook_instance_lifecycle_config, NotebookInstanceLifecycleConfigName=config)
    assert gone["Code"] == "ValidationException" and "does not exist" in gone["Message"]
    repo = new_name("repo")
    sm.create_code_repository(CodeRepositoryName=repo, GitConfig={"RepositoryUrl": "https://example.com/a/b.git"})
    dup = error_of(sm.create_code_repository, CodeRepositoryName=repo, GitConfig={"RepositoryUrl": "https://x.org/y"})
    assert dup["Code"] == "ValidationException" and "already exists" in dup["Message"]
    sm.delete_code_repository(CodeRepositoryName=repo)


@pytest.mark.slow
def test_name_taken_and_restart_keeps_instances(tmp_path: Any) -> None:
    home, aws = tmp_path / "home", tmp_path / "aws"
    with running_platform(home, aws) as first:
        sm, role = sagemaker(first), role_arn(first)
        running, stopped = new_name("nb"), new_name("nb")
        for name in (running, stopped):
            sm.create_notebook_instance(NotebookInstanceName=name, InstanceType="ml.t3.medium", RoleArn=role)
        err = error_of(
            sm.create_notebook_instance, NotebookInstanceName=running, InstanceType="ml.t3.medium", RoleArn=role
        )
        assert err["Code"] == "ValidationException" and "already exists" in err["Message"]
        for name in (running, stopped):
            wait_status(sm, name, ("InService",))
        sm.stop_notebook_instance(NotebookInstanceName=stopped)
        wait_status(sm, stopped, ("Stopped",))
        (home / "notebooks" / running / "SageMaker" / "work.ipynb").write_text("{}")
        before = jupyter_pids(first, running)
    assert before and not any(psutil.pid_exists(p) for p in before)  # `opensage down` ends them
    with running_platform(home, aws, port=first.port) as second:
        sm = sagemaker(second)
        wait_status(sm, running, ("InService",))
        assert sm.describe_notebook_instance(NotebookInstanceName=stopped)["NotebookInstanceStatus"] == "Stopped"
        client = sign_in(sm, running)
        listing = client.get(f"{second.api_url}/_opensage/notebooks/{running}/api/contents").json()
        client.close()
        assert "work.ipynb" in [item["name"] for item in listing["content"]]
        sm.stop_notebook_instance(NotebookInstanceName=running)
        for name in (running, stopped):
            wait_status(sm, name, ("Stopped",))
            sm.delete_notebook_instance(NotebookInstanceName=name)
            wait_deleted(sm, name)


@pytest.mark.slow
def test_console_creates_opens_stops_and_deletes(platform: RunningPlatform) -> None:
    import re

    from helpers import console_client

    creds = platform.session().get_credentials()
    console = console_client(platform.api_url, creds.access_key, creds.secret_key)
    sm, name = sagemaker(platform), new_name("nb")
    try:
        page = console.get("/console/notebook-instances")
        assert page.status_code == 200 and "Create a notebook instance" in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        form = {"csrf": csrf.group(1), "name": name, "instance_type": "ml.t3.medium", "lifecycle_config": ""}
        assert console.post("/console/notebook-instances/new", data=form).status_code == 303
        wait_status(sm, name, ("InService",))
        listed = console.get("/console/notebook-instances").text
        assert name in listed and f"/console/notebook-instances/{name}/open" in listed
        opened = console.get(f"/console/notebook-instances/{name}/open")
        assert opened.status_code == 303 and "authToken=" in opened.headers["location"]
        with httpx.Client(follow_redirects=True, trust_env=False, timeout=60) as browser:
            lab = browser.get(opened.headers["location"])
            assert lab.status_code == 200 and "JupyterLab" in lab.text
        refused = console.post(f"/console/notebook-instances/{name}/delete", data={"csrf": csrf.group(1)})
        assert refused.status_code == 303 and "error=" in refused.headers["location"]
        console.post(f"/console/notebook-instances/{name}/stop", data={"csrf": csrf.group(1)})
        wait_status(sm, name, ("Stopped",))
        assert (
            console.post(f"/console/notebook-instances/{name}/delete", data={"csrf": csrf.group(1)}).status_code == 303
        )
        wait_deleted(sm, name)
    finally:
        console.close()


KERNEL_FIT = """
import json, random
import sagemaker
from sagemaker import image_uris
from sagemaker.estimator import Estimator
from sagemaker.inputs import TrainingInput
random.seed(0)
with open("train.csv", "w") as f:
    for _ in range(200):
        x = random.uniform(-3, 3)
        f.write(f"{int(x > 0)},{x},{random.random()}\\n")
session = sagemaker.Session()
train = session.upload_data("train.csv", key_prefix="notebook-fit/train")
image = image_uris.retrieve("xgboost", session.boto_region_name, "1.7-1")
est = Estimator(image, sagemaker.get_execution_role(), instance_count=1, instance_type="ml.m5.xlarge")
est.set_hyperparameters(objective="binary:logistic", num_round=5, max_depth=2)
est.fit({"train": TrainingInput(train, content_type="csv")}, logs=False)
print("RESULT " + json.dumps([est.latest_training_job.name, est.model_data]))
"""


@pytest.mark.slow
def test_estimator_fit_from_a_kernel_needs_no_setup(platform: RunningPlatform) -> None:
    sm, name = sagemaker(platform), new_name("nb")
    sm.create_notebook_instance(NotebookInstanceName=name, InstanceType="ml.t3.medium", RoleArn=role_arn(platform))
    wait_status(sm, name, ("InService",))
    client = sign_in(sm, name)
    try:
        output = run_in_kernel(client, f"{platform.api_url}/_opensage/notebooks/{name}/", KERNEL_FIT, timeout=300)
    finally:
        client.close()
    result = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert result, output
    job, model_data = json.loads(result[-1].removeprefix("RESULT "))
    assert sm.describe_training_job(TrainingJobName=job)["TrainingJobStatus"] == "Completed"
    assert model_data.startswith("s3://sagemaker-") and model_data.endswith("/output/model.tar.gz")
    sm.stop_notebook_instance(NotebookInstanceName=name)
    wait_status(sm, name, ("Stopped",))
    sm.delete_notebook_instance(NotebookInstanceName=name)
    wait_deleted(sm, name)


@pytest.mark.slow
def test_code_repositories_are_cloned_into_the_volume(platform: RunningPlatform, tmp_path: Any) -> None:
    """A Git repository served over HTTPS (git's dumb protocol, the platform's own certificate for 127.0.0.1)."""
    import functools
    import http.server
    import ssl
    import subprocess
    import threading

    source = tmp_path / "work"
    source.mkdir()
    (source / "README.md").write_text("hello from git\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(source)], check=True)
    subprocess.run([*git, "-C", str(source), "add", "README.md"], check=True)
    subprocess.run([*git, "-C", str(source), "commit", "-q", "-m", "first"], check=True)
    served = tmp_path / "served"
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(served / "analysis.git")], check=True)
    subprocess.run(["git", "-C", str(served / "analysis.git"), "update-server-info"], check=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(platform.home / "tls" / "server.pem", platform.home / "tls" / "server-key.pem")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sm, name, repo = sagemaker(platform), new_name("nb"), new_name("repo")
    url = f"https://127.0.0.1:{server.server_address[1]}/analysis.git"
    try:
        sm.create_code_repository(CodeRepositoryName=repo, GitConfig={"RepositoryUrl": url, "Branch": "main"})
        sm.create_notebook_instance(
            NotebookInstanceName=name,
            InstanceType="ml.t3.medium",
            RoleArn=role_arn(platform),
            DefaultCodeRepository=repo,
            AdditionalCodeRepositories=[url.replace("analysis.git", "analysis.git/")],
        )
        wait_status(sm, name, ("InService",))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert (
        platform.home / "notebooks" / name / "SageMaker" / "analysis" / "README.md"
    ).read_text() == "hello from git\n"
    listed = sm.list_notebook_instances(DefaultCodeRepositoryContains=repo)["NotebookInstances"]
    assert [n["NotebookInstanceName"] for n in listed] == [name]
    sm.stop_notebook_instance(NotebookInstanceName=name)
    wait_status(sm, name, ("Stopped",))
    sm.delete_notebook_instance(NotebookInstanceName=name)
    wait_deleted(sm, name)
    sm.delete_code_repository(CodeRepositoryName=repo)
