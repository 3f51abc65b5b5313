"""``opensage up`` as a user runs it: the written profile, S3, the SageMaker SDK, the CLI."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from botocore.exceptions import ClientError

from helpers import RunningPlatform, running_platform

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("platform")
    with running_platform(root / "home", root / "aws") as running:
        yield running
    assert running.proc.returncode == 0, "opensage up did not stop cleanly on Ctrl-C"


def test_profile_reaches_every_service(platform: RunningPlatform) -> None:
    session = platform.session()
    ident = session.client("sts").get_caller_identity()
    assert ident["Arn"].endswith(":assumed-role/OpenSageExecutionRole/opensage")
    assert session.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
    assert (
        session.client("iam")
        .get_role(RoleName="OpenSageExecutionRole")["Role"]["Arn"]
        .endswith(":role/OpenSageExecutionRole")
    )


def test_profile_does_not_clobber_other_profiles(tmp_path: Path) -> None:
    aws = tmp_path / "aws"
    aws.mkdir()
    (aws / "config").write_text("[default]\nregion = eu-west-1\n\n[profile work]\nregion = us-west-2\n")
    (aws / "credentials").write_text("[work]\naws_access_key_id = AKIAWORK\naws_secret_access_key = s\n")
    with running_platform(tmp_path / "home", aws) as running:
        config = (aws / "config").read_text()
        running.cli("up", "--home", str(running.home), "--detach")  # refused (already running), changes nothing
    assert "[profile work]\nregion = us-west-2" in config and "[default]\nregion = eu-west-1" in config
    assert config.count("[profile opensage]") == 1 and config.count("[services opensage]") == 1
    creds = (aws / "credentials").read_text()
    assert "aws_access_key_id = AKIAWORK" in creds and creds.count("[opensage]") == 1


def test_s3_round_trip_of_a_100_mb_file(platform: RunningPlatform, tmp_path: Path) -> None:
    s3 = platform.session().client("s3")
    source = tmp_path / "big.bin"
    with open(source, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1024 * 1024))
    s3.create_bucket(Bucket="roundtrip")
    try:
        s3.upload_file(str(source), "roundtrip", "data/big.bin")
        listed = s3.list_objects_v2(Bucket="roundtrip", Prefix="data/")["Contents"]
        assert [(o["Key"], o["Size"]) for o in listed] == [("data/big.bin", 100 * 1024 * 1024)]
        target = tmp_path / "back.bin"
        s3.download_file("roundtrip", "data/big.bin", str(target))
        assert target.read_bytes() == source.read_bytes()
    finally:
        s3.delete_object(Bucket="roundtrip", Key="data/big.bin")
        s3.delete_bucket(Bucket="roundtrip")
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket="roundtrip")
    assert exc.value.response["Error"]["Code"] == "404"


def test_s3_rejects_a_wrong_secret(platform: RunningPlatform) -> None:
    s3 = platform.session().client("s3", aws_access_key_id=_key(platform)[0], aws_secret_access_key="wrong")
    with pytest.raises(ClientError) as exc:
        s3.list_buckets()
    assert exc.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


SDK_SCRIPT = """
import sagemaker
session = sagemaker.Session()
bucket = session.default_bucket()
uri = session.upload_data({path!r}, key_prefix="sdk-test")
print("BUCKET", bucket)
print("URI", uri)
print("ROLE", sagemaker.get_execution_role())
print("ACCOUNT", session.account_id())
"""


def test_sagemaker_sdk_session_unchanged(platform: RunningPlatform, tmp_path: Path) -> None:
    """Plain SDK code after `eval "$(opensage env)"`: default bucket, upload, execution role, account."""
    data = tmp_path / "train.csv"
    data.write_text("1,2,3\n4,5,6\n")
    result = subprocess.run(
        [sys.executable, "-c", SDK_SCRIPT.format(path=str(data))],
        env=platform.shell_env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.split(" ", 1)[0].isupper())
    account = platform.session().client("sts").get_caller_identity()["Account"]
    assert lines["BUCKET"] == f"sagemaker-us-east-1-{account}"
    assert lines["URI"] == f"s3://sagemaker-us-east-1-{account}/sdk-test/train.csv"
    assert lines["ROLE"] == f"arn:aws:iam::{account}:role/OpenSageExecutionRole"
    assert lines["ACCOUNT"] == account
    body = platform.session().client("s3").get_object(Bucket=lines["BUCKET"], Key="sdk-test/train.csv")["Body"]
    assert body.read() == b"1,2,3\n4,5,6\n"


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_aws_cli(platform: RunningPlatform) -> None:
    env = platform.shell_env()
    result = subprocess.run(["aws", "s3", "ls"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "sagemaker-us-east-1-" in result.stdout


def _key(platform: RunningPlatform) -> tuple[str, str]:
    text = Path(platform.env["AWS_SHARED_CREDENTIALS_FILE"]).read_text()
    section = text.split("[opensage]", 1)[1]
    values = dict(line.split(" = ", 1) for line in section.strip().splitlines()[:2])
    return values["aws_access_key_id"], values["aws_secret_access_key"]


def test_keys_cli_creates_and_deletes_working_keys(platform: RunningPlatform) -> None:
    home = str(platform.home)
    out = platform.cli("keys", "create", "--home", home, "--description", "ci").stdout
    values = dict(line.split(" = ", 1) for line in out.strip().splitlines())
    key_id, secret = values["aws_access_key_id"], values["aws_secret_access_key"]
    assert key_id in platform.cli("keys", "list", "--home", home).stdout
    session = platform.session()
    sts = session.client("sts", aws_access_key_id=key_id, aws_secret_access_key=secret)
    assert sts.get_caller_identity()["Account"]
    s3 = session.client("s3", aws_access_key_id=key_id, aws_secret_access_key=secret)
    deadline = time.monotonic() + 15
    while True:  # the object store picks up new keys within a few seconds
        try:
            s3.list_buckets()
            break
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    result = platform.cli("keys", "delete", "--home", home, key_id)
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 15
    while True:
        try:
            sts.get_caller_identity()
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "InvalidClientTokenId"
            break
        assert time.monotonic() < deadline, "a deleted key kept working"
        time.sleep(0.5)


def test_second_up_on_the_same_home_is_refused(platform: RunningPlatform) -> None:
    result = platform.cli("up", "--home", str(platform.home), "--port", str(platform.port + 100))
    assert result.returncode == 1
    assert "already running" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_port_in_use_is_refused(platform: RunningPlatform, tmp_path: Path) -> None:
    result = platform.cli("up", "--home", str(tmp_path / "other"), "--port", str(platform.port))
    assert result.returncode == 1
    assert f"Port {platform.port} (API)" in result.stderr and "--port" in result.stderr


def test_detached_up_on_a_port_in_use_says_why_once(platform: RunningPlatform, tmp_path: Path) -> None:
    result = platform.cli("up", "--detach", "--home", str(tmp_path / "other"), "--port", str(platform.port))
    assert result.returncode == 1
    assert result.stderr.count("opensage: error:") == 1 and f"Port {platform.port} (API)" in result.stderr


def test_deleting_an_unknown_key_says_it_does_not_exist(platform: RunningPlatform) -> None:
    result = platform.cli("keys", "delete", "--home", str(platform.home), "AKIADOESNOTEXIST0000")
    assert result.returncode == 1
    assert "no access key AKIADOESNOTEXIST0000" in result.stderr and "last access key" not in result.stderr


def test_foreign_directory_is_refused(platform: RunningPlatform, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    result = platform.cli("up", "--home", str(foreign))
    assert result.returncode == 1 and "not made by OpenSage" in result.stderr
    assert (foreign / "notes.txt").read_text() == "mine" and sorted(os.listdir(foreign)) == ["notes.txt"]


def test_restart_keeps_objects_roles_and_keys(tmp_path: Path) -> None:
    home, aws = tmp_path / "home", tmp_path / "aws"
    with running_platform(home, aws) as first:
        session = first.session()
        session.client("s3").create_bucket(Bucket="keep")
        session.client("s3").put_object(Bucket="keep", Key="k", Body=b"kept")
        session.client("iam").create_role(RoleName="Kept", AssumeRolePolicyDocument="{}")
        port = first.port
        store_pids = [p.pid for p in psutil.Process(first.proc.pid).children(recursive=True)]
    assert first.proc.returncode == 0
    assert store_pids and not any(psutil.pid_exists(pid) for pid in store_pids), "a child process outlived `up`"
    with running_platform(home, aws, port=port) as second:
        session = second.session()
        assert session.client("s3").get_object(Bucket="keep", Key="k")["Body"].read() == b"kept"
        assert session.client("iam").get_role(RoleName="Kept")["Role"]["RoleName"] == "Kept"


def test_object_store_is_restarted_when_it_dies(platform: RunningPlatform) -> None:
    s3 = platform.session().client("s3")
    s3.create_bucket(Bucket="survivor")
    s3.put_object(Bucket="survivor", Key="k", Body=b"still here")
    weed = [p for p in psutil.Process(platform.proc.pid).children(recursive=True) if p.name() == "weed"]
    assert len(weed) == 1
    os.kill(weed[0].pid, signal.SIGKILL)
    deadline = time.monotonic() + 90  # a busy machine starts it slowly
    while True:
        try:
            assert s3.get_object(Bucket="survivor", Key="k")["Body"].read() == b"still here"
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_api_coverage_lists_served_operations_without_a_platform(tmp_path: Path) -> None:
    """`opensage api-coverage` reads the provider classes: no platform runs, the home is not created."""
    import json

    from helpers import platform_env

    env = platform_env(tmp_path / "home", tmp_path / "aws")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "opensage", "api-coverage", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    text = cli()
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    sagemaker = next(line for line in lines if line.startswith("sagemaker: "))
    served, _, total = sagemaker.removeprefix("sagemaker: ").partition(" of ")
    assert 0 < int(served) < int(total)
    assert "  CreateTrainingJob" in lines and "  InvokeEndpoint" in lines
    assert lines.index("  InvokeEndpoint") > lines.index(next(x for x in lines if x.startswith("sagemaker-runtime: ")))
    assert "  CreateRepository" in lines and "  GetAuthorizationToken" in lines  # ECR, served in part
    ecr = next(line for line in lines if line.startswith("ecr: "))
    assert 0 < int(ecr.removeprefix("ecr: ").split(" of ")[0]) < int(ecr.split(" of ")[1])

    machine = cli("--json")
    assert machine.returncode == 0, machine.stderr
    data = json.loads(machine.stdout)
    assert "CreateTrainingJob" in data["sagemaker"]["served"] and len(data["sagemaker"]["served"]) == int(served)
    assert data["sagemaker"]["operations"] == int(total)
    assert "InvokeEndpoint" in data["sagemaker-runtime"]["served"]
    assert not (tmp_path / "home").exists()


def test_detach_status_down(tmp_path: Path) -> None:
    from helpers import free_base_port, platform_env

    env = platform_env(tmp_path / "home", tmp_path / "aws")
    port = str(free_base_port())

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "opensage", *args], env=env, capture_output=True, text=True, timeout=120
        )

    up = cli("up", "--detach", "--port", port)
    try:
        assert up.returncode == 0, up.stderr
        assert "export AWS_PROFILE=opensage" in up.stdout
        status = cli("status")
        assert status.returncode == 0 and "is running" in status.stdout
        assert re.search(r"account \d{12}\)", status.stdout), status.stdout  # a signed health request
    finally:
        down = cli("down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert cli("status").returncode == 3


def test_an_external_s3_store_replaces_the_embedded_one(tmp_path: Path) -> None:
    """`--s3-endpoint` with that store's keys: nothing embedded, one profile works for the API and S3."""
    from helpers import free_base_port
    from opensage.objects.seaweed import EmbeddedStore

    base = free_base_port()
    external = EmbeddedStore(tmp_path / "external", "127.0.0.1", base + 1, base + 10, tmp_path / "external.log")
    external.write_identities([("AKIAEXTERNAL00000001", "external-secret")])
    external.start()
    try:
        external.wait_ready()
        env = {"OPENSAGE_S3_ACCESS_KEY_ID": "AKIAEXTERNAL00000001", "OPENSAGE_S3_SECRET_ACCESS_KEY": "external-secret"}
        with running_platform(
            tmp_path / "home", tmp_path / "aws", extra_args=("--s3-endpoint", external.endpoint_url), extra_env=env
        ) as running:
            children = psutil.Process(running.proc.pid).children(recursive=True)
            assert not [p for p in children if p.name() == "weed"], "an embedded store was started"
            session = running.session()
            assert session.client("s3").meta.endpoint_url == external.endpoint_url
            assert session.client("sts").get_caller_identity()["Account"]
            session.client("s3").put_object(
                Bucket=session.client("s3").list_buckets()["Buckets"][0]["Name"], Key="k", Body=b"external"
            )
    finally:
        external.stop()
