"""What the labeling tests share: a Cognito workforce with members, a work team, and workers signed in to the portal."""

from __future__ import annotations

import contextlib
import json
import re
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx

PORTAL = "/_opensage/labeling"
REGION = "us-east-1"
PRE = f"arn:aws:lambda:{REGION}:432418664414:function:PRE-{{}}"
ACS = f"arn:aws:lambda:{REGION}:432418664414:function:ACS-{{}}"
ALGORITHMS = f"arn:aws:sagemaker:{REGION}:027400017018:labeling-job-algorithm-specification"
TEXT_ALGORITHM = f"{ALGORITHMS}/text-classification"
IMAGE_ALGORITHM = f"{ALGORITHMS}/image-classification"
TEMPORARY = "Temporary-1"


def make_team(
    session: Any, team: str, members: list[str], password: str = "Worker-pass-1", pool: str = "", client: str = ""
) -> dict[str, Any]:
    """A group holding ``members`` (their passwords set) in a user pool with an app client (new ones unless given),
    and a work team of it."""
    idp, sm = session.client("cognito-idp"), session.client("sagemaker")
    if not pool:
        pool = idp.create_user_pool(PoolName=f"{team}-pool")["UserPool"]["Id"]
        client = idp.create_user_pool_client(UserPoolId=pool, ClientName=f"{team}-client")["UserPoolClient"]["ClientId"]
    idp.create_group(UserPoolId=pool, GroupName=team)
    for member in members:
        idp.admin_create_user(UserPoolId=pool, Username=member, TemporaryPassword=TEMPORARY, MessageAction="SUPPRESS",
                              UserAttributes=[{"Name": "email", "Value": f"{member}@example.com"}])  # fmt: skip
        idp.admin_add_user_to_group(UserPoolId=pool, Username=member, GroupName=team)
        idp.admin_set_user_password(UserPoolId=pool, Username=member, Password=password, Permanent=True)
    definition = {"CognitoMemberDefinition": {"UserPool": pool, "UserGroup": team, "ClientId": client}}
    arn = sm.create_workteam(WorkteamName=team, MemberDefinitions=[definition], Description=f"{team} members")[
        "WorkteamArn"
    ]
    return {"pool": pool, "client": client, "arn": arn, "password": password}


@contextlib.contextmanager
def worker(api_url: str, username: str, password: str) -> Iterator[httpx.Client]:
    """An HTTP client signed in to the worker portal as ``username``."""
    with httpx.Client(base_url=api_url, timeout=30, follow_redirects=False) as client:
        yield _signed_in(client, username, password)


def _signed_in(client: httpx.Client, username: str, password: str) -> httpx.Client:
    r = client.post(f"{PORTAL}/sign-in", data={"username": username, "password": password})
    if r.status_code == 200 and 'name="change"' in r.text:  # a temporary password: choose one
        change = re.search(r'name="change" value="([^"]+)"', r.text)
        assert change is not None
        r = client.post(f"{PORTAL}/new-password", data={"change": change.group(1), "password": password + "x",
                                                          "confirm": password + "x"})  # fmt: skip
    assert r.status_code == 303, r.text
    return client


def labeling_request(name: str, team_arn: str, role: str, bucket: str, task: str, workers: int = 1) -> dict[str, Any]:
    return {
        "LabelingJobName": name,
        "LabelAttributeName": "label",
        "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": f"s3://{bucket}/{name}/input.manifest"}}},
        "OutputConfig": {"S3OutputPath": f"s3://{bucket}/output/"},
        "RoleArn": role,
        "LabelCategoryConfigS3Uri": f"s3://{bucket}/{name}/categories.json",
        "HumanTaskConfig": {
            "WorkteamArn": team_arn,
            "UiConfig": {"UiTemplateS3Uri": f"s3://{bucket}/{name}/instructions.template"},
            "PreHumanTaskLambdaArn": PRE.format(task),
            "TaskTitle": f"Label {name}",
            "TaskDescription": "Choose the label that fits",
            "NumberOfHumanWorkersPerDataObject": workers,
            "TaskTimeLimitInSeconds": 300,
            "AnnotationConsolidationConfig": {"AnnotationConsolidationLambdaArn": ACS.format(task)},
        },
    }


def put_job_files(s3: Any, bucket: str, name: str, lines: list[dict[str, Any]], labels: list[str]) -> None:
    s3.put_object(Bucket=bucket, Key=f"{name}/input.manifest", Body="".join(json.dumps(x) + "\n" for x in lines))
    categories = {"document-version": "2018-11-28", "labels": [{"label": label} for label in labels]}
    s3.put_object(Bucket=bucket, Key=f"{name}/categories.json", Body=json.dumps(categories))
    template = (
        '<script src="https://assets.crowd.aws/crowd-html-elements.js"></script><crowd-form>'
        '<crowd-classifier name="crowd-classifier" categories="{{ task.input.labels | to_json | escape }}" '
        'header="Which label fits best?"><classification-target>{{ task.input.taskObject }}</classification-target>'
        "<full-instructions header='Help'>Read it all, then choose.</full-instructions>"
        "<short-instructions>Pick the one label that fits.</short-instructions></crowd-classifier></crowd-form>"
    )
    s3.put_object(Bucket=bucket, Key=f"{name}/instructions.template", Body=template)


def wait_job(sm: Any, name: str, statuses: tuple[str, ...], timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        desc = sm.describe_labeling_job(LabelingJobName=name)
        if desc["LabelingJobStatus"] in statuses:
            return desc
        assert time.monotonic() < deadline, desc
        time.sleep(0.3)


def read_manifest(s3: Any, uri: str) -> list[dict[str, Any]]:
    bucket, _, key = uri[5:].partition("/")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour PNG (made here, without an imaging library)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body
