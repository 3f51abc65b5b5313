"""Ground Truth end to end: Cognito workforces and work teams, labeling jobs labeled through the worker portal's
HTTP calls, automated labeling by real training and batch transform jobs, stopping, and the errors for bad input."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from helpers import RunningPlatform, running_platform
from labeling_kit import (
    IMAGE_ALGORITHM,
    PORTAL,
    TEMPORARY,
    TEXT_ALGORITHM,
    labeling_request,
    make_team,
    png,
    put_job_files,
    read_manifest,
    wait_job,
    worker,
)

BUCKET = "labeling"
POSITIVE = ["great", "wonderful", "excellent", "lovely", "superb", "delightful", "fantastic", "brilliant"]
NEGATIVE = ["awful", "terrible", "dreadful", "horrible", "poor", "disappointing", "bad", "miserable"]
FILLER = ["the", "film", "was", "plot", "acting", "really", "and", "quite", "story", "ending", "music", "a"]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("labeling")
    with running_platform(root / "home", root / "aws") as running:
        running.session().client("s3").create_bucket(Bucket=BUCKET)
        yield running


@pytest.fixture(scope="module")
def team(platform: RunningPlatform) -> dict[str, Any]:
    return make_team(platform.session(), "annotators", ["ana", "ben"])


def _role(platform: RunningPlatform) -> str:
    account = platform.session().client("sts").get_caller_identity()["Account"]
    return f"arn:aws:iam::{account}:role/OpenSageExecutionRole"


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def test_workforce_team_and_cognito_users(platform: RunningPlatform, team: dict[str, Any]) -> None:
    session = platform.session()
    sm, idp = session.client("sagemaker"), session.client("cognito-idp")
    described = sm.describe_workteam(WorkteamName="annotators")["Workteam"]
    assert described["WorkteamArn"] == team["arn"] and ":workteam/private-crowd/annotators" in team["arn"]
    assert described["SubDomain"].endswith(PORTAL)
    assert described["MemberDefinitions"][0]["CognitoMemberDefinition"]["UserGroup"] == "annotators"
    force = sm.describe_workforce(WorkforceName="default")["Workforce"]  # made with the first Cognito team
    assert force["CognitoConfig"] == {"UserPool": team["pool"], "ClientId": team["client"]}
    assert described["WorkforceArn"] == force["WorkforceArn"]
    assert [t["WorkteamName"] for t in sm.list_workteams()["Workteams"]] == ["annotators"]
    users = idp.list_users_in_group(UserPoolId=team["pool"], GroupName="annotators")["Users"]
    assert sorted(u["Username"] for u in users) == ["ana", "ben"] and {u["UserStatus"] for u in users} == {"CONFIRMED"}

    with pytest.raises(ClientError) as exc:  # one private workforce per account and region
        config = {"UserPool": team["pool"], "ClientId": team["client"]}
        sm.create_workforce(WorkforceName="second", CognitoConfig=config)
    assert _error(exc)[0] == "ResourceLimitExceeded"
    bad = {"CognitoMemberDefinition": {"UserPool": team["pool"], "UserGroup": "nobody", "ClientId": team["client"]}}
    with pytest.raises(ClientError) as exc:
        sm.create_workteam(WorkteamName="ghosts", MemberDefinitions=[bad], Description="x")
    assert _error(exc)[0] == "ValidationException" and "nobody" in _error(exc)[1]
    with pytest.raises(ClientError) as exc:
        idp.admin_create_user(UserPoolId=team["pool"], Username="short", TemporaryPassword="abc")
    assert _error(exc)[0] == "InvalidPasswordException"

    # a new member signs in with a temporary password and chooses their own
    idp.create_group(UserPoolId=team["pool"], GroupName="reviewers")
    idp.admin_create_user(UserPoolId=team["pool"], Username="cara", TemporaryPassword=TEMPORARY)
    idp.admin_add_user_to_group(UserPoolId=team["pool"], Username="cara", GroupName="reviewers")
    reviewers = {"CognitoMemberDefinition": {**bad["CognitoMemberDefinition"], "UserGroup": "reviewers"}}
    definitions = [*described["MemberDefinitions"], reviewers]
    updated = sm.update_workteam(WorkteamName="annotators", MemberDefinitions=definitions)["Workteam"]
    assert len(updated["MemberDefinitions"]) == 2
    with worker(platform.api_url, "cara", TEMPORARY) as cara:
        assert "Jobs" in cara.get(f"{PORTAL}/").text
    assert idp.admin_get_user(UserPoolId=team["pool"], Username="cara")["UserStatus"] == "CONFIRMED"
    with worker(platform.api_url, "ana", team["password"]) as ana:
        assert ana.get(f"{PORTAL}/").status_code == 200
    refused = httpx.post(platform.api_url + f"{PORTAL}/sign-in", data={"username": "ana", "password": "nope-nope"})
    assert refused.status_code == 401 and "Incorrect" in refused.text


def _texts(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.choice(["positive", "negative"])
        words = rng.sample(FILLER, 6) + rng.sample(POSITIVE if label == "positive" else NEGATIVE, 2)
        rng.shuffle(words)
        out.append((" ".join(words), label))
    return out


def _label_all(client: Any, job: str, truth: dict[str, str], answer: Any = None, most: int = 10_000) -> int:
    done = 0
    while done < most:
        task = client.get(f"{PORTAL}/jobs/{job}/task").json()
        if task["done"]:
            break
        body = answer(task) if answer else {"label": truth[task["text"]]}
        r = client.post(task["submit"], json=body)
        assert r.status_code == 200, r.text
        done += 1
    return done


@pytest.mark.slow
def test_text_classification_with_automated_labeling(platform: RunningPlatform, team: dict[str, Any]) -> None:
    session = platform.session()
    sm, s3 = session.client("sagemaker"), session.client("s3")
    data = _texts(200, 1)
    truth = dict(data)
    name = "reviews-auto"
    put_job_files(s3, BUCKET, name, [{"source": text} for text, _ in data], ["positive", "negative"])
    request = labeling_request(name, team["arn"], _role(platform), BUCKET, "TextMultiClass")
    request["LabelingJobAlgorithmsConfig"] = {"LabelingJobAlgorithmSpecificationArn": TEXT_ALGORITHM}
    sm.create_labeling_job(**request)
    wait_job(sm, name, ("InProgress",))
    labeled = 0
    with worker(platform.api_url, "ana", team["password"]) as ana:
        while True:
            labeled += _label_all(ana, name, truth)
            desc = sm.describe_labeling_job(LabelingJobName=name)
            if desc["LabelingJobStatus"] != "InProgress":
                break
            time.sleep(0.5)  # a round of automated labeling runs; then the next batch is out
    desc = wait_job(sm, name, ("Completed",))
    counters = desc["LabelCounters"]
    assert counters["MachineLabeled"] > 0 and counters["HumanLabeled"] == labeled
    assert counters["TotalLabeled"] == 200 and counters["Unlabeled"] == 0
    assert desc["LabelingJobOutput"]["FinalActiveLearningModelArn"].endswith(f"model/{name}-al-model-1")
    lines = read_manifest(s3, desc["LabelingJobOutput"]["OutputDatasetS3Uri"])
    assert len(lines) == 200
    machine = [x for x in lines if x["label-metadata"]["human-annotated"] == "no"]
    assert len(machine) == counters["MachineLabeled"]
    right = sum(x["label-metadata"]["class-name"] == truth[x["source"]] for x in machine)
    assert right >= 0.9 * len(machine)
    for x in lines:
        meta = x["label-metadata"]
        assert meta["type"] == "groundtruth/text-classification" and meta["job-name"] == f"labeling-job/{name}"
        assert x["label"] == ["positive", "negative"].index(meta["class-name"]) and 0 < meta["confidence"] <= 1
    trained = sm.describe_training_job(TrainingJobName=f"{name}-al-train-1")
    assert trained["TrainingJobStatus"] == "Completed"


@pytest.mark.slow
def test_image_classification_with_automated_labeling(platform: RunningPlatform, team: dict[str, Any]) -> None:
    session = platform.session()
    sm, s3 = session.client("sagemaker"), session.client("s3")
    rng = random.Random(7)
    truth = {}
    for i in range(120):
        label = rng.choice(["warm", "cool"])
        shade = rng.randrange(150, 250)
        rgb = (shade, rng.randrange(20, 90), 30) if label == "warm" else (30, rng.randrange(20, 90), shade)
        s3.put_object(Bucket=BUCKET, Key=f"swatches/{i}.png", Body=png(16, 16, rgb), ContentType="image/png")
        truth[f"s3://{BUCKET}/swatches/{i}.png"] = label
    name = "swatches-auto"
    put_job_files(s3, BUCKET, name, [{"source-ref": ref} for ref in truth], ["warm", "cool"])
    request = labeling_request(name, team["arn"], _role(platform), BUCKET, "ImageMultiClass")
    request["LabelingJobAlgorithmsConfig"] = {"LabelingJobAlgorithmSpecificationArn": IMAGE_ALGORITHM}
    sm.create_labeling_job(**request)
    wait_job(sm, name, ("InProgress",))
    shown: dict[int, str] = {}
    with worker(platform.api_url, "ben", team["password"]) as ben:

        def answer(task: dict[str, Any]) -> dict[str, str]:
            image = ben.get(task["image"])  # what the worker sees: the image, through the portal
            assert image.status_code == 200 and image.headers["content-type"] == "image/png"
            assert image.content.startswith(b"\x89PNG")
            shown[task["index"]] = task["image"]
            return {"label": labels_by_index[task["index"]]}

        labels_by_index = {i: truth[f"s3://{BUCKET}/swatches/{i}.png"] for i in range(120)}
        while sm.describe_labeling_job(LabelingJobName=name)["LabelingJobStatus"] == "InProgress":
            _label_all(ben, name, {}, answer=answer)
            time.sleep(0.5)
    desc = wait_job(sm, name, ("Completed",))
    counters = desc["LabelCounters"]
    assert counters["MachineLabeled"] > 0 and counters["HumanLabeled"] == len(shown) < 120
    lines = read_manifest(s3, desc["LabelingJobOutput"]["OutputDatasetS3Uri"])
    machine = [x for x in lines if x["label-metadata"]["human-annotated"] == "no"]
    assert len(machine) == counters["MachineLabeled"]
    assert sum(x["label-metadata"]["class-name"] == truth[x["source-ref"]] for x in machine) >= 0.9 * len(machine)
    assert {x["label-metadata"]["type"] for x in lines} == {"groundtruth/image-classification"}


def test_stop_mid_way_keeps_what_was_labeled(platform: RunningPlatform, team: dict[str, Any]) -> None:
    session = platform.session()
    sm, s3 = session.client("sagemaker"), session.client("s3")
    data = _texts(10, 2)
    truth = dict(data)
    name = "reviews-stopped"
    put_job_files(s3, BUCKET, name, [{"source": text} for text, _ in data], ["positive", "negative"])
    sm.create_labeling_job(**labeling_request(name, team["arn"], _role(platform), BUCKET, "TextMultiClass"))
    wait_job(sm, name, ("InProgress",))
    with worker(platform.api_url, "ben", team["password"]) as ben:
        assert _label_all(ben, name, truth, most=3) == 3
        sm.stop_labeling_job(LabelingJobName=name)
        desc = wait_job(sm, name, ("Stopped",))
        assert ben.get(f"{PORTAL}/jobs/{name}/task").json()["done"]
    assert desc["LabelCounters"]["HumanLabeled"] == 3 and desc["LabelCounters"]["Unlabeled"] == 7
    lines = read_manifest(s3, desc["LabelingJobOutput"]["OutputDatasetS3Uri"])
    assert len(lines) == 3 and all(x["label-metadata"]["class-name"] == truth[x["source"]] for x in lines)
    listed = sm.list_labeling_jobs_for_workteam(WorkteamArn=team["arn"])["LabelingJobSummaryList"]
    assert any(j["LabelingJobName"] == name and j["LabelCounters"]["Total"] == 10 for j in listed)


def test_named_entities_and_multi_label_consolidated_over_two_workers(
    platform: RunningPlatform, team: dict[str, Any]
) -> None:
    session = platform.session()
    sm, s3 = session.client("sagemaker"), session.client("s3")
    text = "Ada Lovelace met Charles Babbage in London"
    name = "entities"
    put_job_files(s3, BUCKET, name, [{"source": text}], ["person", "place"])
    sm.create_labeling_job(**labeling_request(name, team["arn"], _role(platform), BUCKET, "NamedEntityRecognition", 2))
    wait_job(sm, name, ("InProgress",))
    ada = {"label": "person", "startOffset": 0, "endOffset": 12}
    london = {"label": "place", "startOffset": 35, "endOffset": 41}
    babbage = {"label": "person", "startOffset": 17, "endOffset": 32}
    with worker(platform.api_url, "ana", team["password"]) as ana, worker(
        platform.api_url, "ben", team["password"]
    ) as ben:
        assert _label_all(ana, name, {}, answer=lambda t: {"entities": [ada, london, babbage]}) == 1
        assert _label_all(ana, name, {}) == 0  # one answer per worker and object
        bad = ben.get(f"{PORTAL}/jobs/{name}/task").json()
        r = ben.post(bad["submit"], json={"entities": [{"label": "thing", "startOffset": 0, "endOffset": 3}]})
        assert r.status_code == 400 and "labels" in r.json()["message"]
        assert _label_all(ben, name, {}, answer=lambda t: {"entities": [ada, london]}) == 1
    desc = wait_job(sm, name, ("Completed",))
    (line,) = read_manifest(s3, desc["LabelingJobOutput"]["OutputDatasetS3Uri"])
    entities = line["label"]["annotations"]["entities"]
    assert [(e["startOffset"], e["label"]) for e in entities] == [(0, "person"), (35, "place")]  # Babbage: 1 of 2
    assert line["label-metadata"]["type"] == "groundtruth/text-span"
    assert line["label-metadata"]["entities"] == [{"confidence": 1.0}, {"confidence": 1.0}]


def test_bad_input_is_refused_or_fails_with_a_reason(platform: RunningPlatform, team: dict[str, Any]) -> None:
    session = platform.session()
    sm, s3 = session.client("sagemaker"), session.client("s3")
    role = _role(platform)
    custom = labeling_request("custom", team["arn"], role, BUCKET, "TextMultiClass")
    custom["HumanTaskConfig"]["PreHumanTaskLambdaArn"] = "arn:aws:lambda:us-east-1:111122223333:function:my-pre"
    del custom["HumanTaskConfig"]["AnnotationConsolidationConfig"]
    with pytest.raises(ClientError) as exc:
        sm.create_labeling_job(**custom)
    assert _error(exc)[0] == "ValidationException" and "PRE-TextMultiClass" in _error(exc)[1]
    unknown = labeling_request("no-team", team["arn"] + "x", role, BUCKET, "TextMultiClass")
    with pytest.raises(ClientError) as exc:
        sm.create_labeling_job(**unknown)
    assert "Workteam" in _error(exc)[1]
    boxes = labeling_request("auto-boxes", team["arn"], role, BUCKET, "BoundingBox")
    boxes["LabelingJobAlgorithmsConfig"] = {"LabelingJobAlgorithmSpecificationArn": TEXT_ALGORITHM}
    with pytest.raises(ClientError) as exc:
        sm.create_labeling_job(**boxes)
    assert "does not fit" in _error(exc)[1]
    assert sm.list_labeling_jobs(NameContains="auto-boxes")["LabelingJobSummaryList"] == []

    missing = labeling_request("missing-manifest", team["arn"], role, BUCKET, "TextMultiClass")
    sm.create_labeling_job(**missing)
    desc = wait_job(sm, "missing-manifest", ("Failed",))
    assert "input manifest" in desc["FailureReason"] and "missing-manifest/input.manifest" in desc["FailureReason"]
    s3.put_object(Bucket=BUCKET, Key="not-json/input.manifest", Body=b'{"source": "fine"}\nnot json\n')
    s3.put_object(Bucket=BUCKET, Key="not-json/categories.json", Body=b'{"labels": [{"label": "a"}]}')
    s3.put_object(Bucket=BUCKET, Key="not-json/instructions.template", Body=b"<p>hi</p>")
    sm.create_labeling_job(**labeling_request("not-json", team["arn"], role, BUCKET, "TextMultiClass"))
    assert "line 2" in wait_job(sm, "not-json", ("Failed",))["FailureReason"]
    with pytest.raises(ClientError) as exc:
        sm.create_labeling_job(**labeling_request("not-json", team["arn"], role, BUCKET, "TextMultiClass"))
    assert _error(exc)[0] == "ResourceInUse"


def test_max_concurrent_tasks_hold_back_the_second_worker(platform: RunningPlatform, team: dict[str, Any]) -> None:
    session = platform.session()
    sm, s3 = session.client("sagemaker"), session.client("s3")
    data = _texts(3, 3)
    name = "one-at-a-time"
    put_job_files(s3, BUCKET, name, [{"source": text} for text, _ in data], ["positive", "negative"])
    request = labeling_request(name, team["arn"], _role(platform), BUCKET, "TextMultiClass")
    request["HumanTaskConfig"]["MaxConcurrentTaskCount"] = 1
    sm.create_labeling_job(**request)
    wait_job(sm, name, ("InProgress",))
    with worker(platform.api_url, "ana", team["password"]) as ana, worker(
        platform.api_url, "ben", team["password"]
    ) as ben:
        first = ana.get(f"{PORTAL}/jobs/{name}/task").json()
        assert ana.get(f"{PORTAL}/jobs/{name}/task").json()["index"] == first["index"]  # the same lease again
        assert ben.get(f"{PORTAL}/jobs/{name}/task").json()["done"]  # one object out to workers at a time
        stolen = ben.post(first["submit"], json={"label": "positive"})
        assert stolen.status_code == 400 and "no longer yours" in stolen.json()["message"]
        assert ana.post(first["submit"], json={"label": dict(data)[first["text"]]}).status_code == 200
        second = ben.get(f"{PORTAL}/jobs/{name}/task").json()
        assert not second["done"] and second["index"] != first["index"]
        assert ben.post(second["submit"] + "/decline").json() == {"released": True}
        assert ana.get(f"{PORTAL}/jobs/{name}/task").json()["index"] == second["index"]
    sm.stop_labeling_job(LabelingJobName=name)
    assert wait_job(sm, name, ("Stopped",))["LabelCounters"]["HumanLabeled"] == 1


def test_a_crash_of_the_platform_loses_no_answer(tmp_path: Any) -> None:
    home, aws = tmp_path / "home", tmp_path / "aws"
    data = _texts(5, 4)
    truth = dict(data)
    name = "survives"
    with running_platform(home, aws) as first:
        port = first.port
        session = first.session()
        session.client("s3").create_bucket(Bucket=BUCKET)
        crew = make_team(session, "crew", ["dee"])
        put_job_files(session.client("s3"), BUCKET, name, [{"source": t} for t, _ in data], ["positive", "negative"])
        session.client("sagemaker").create_labeling_job(
            **labeling_request(name, crew["arn"], _role(first), BUCKET, "TextMultiClass")
        )
        wait_job(session.client("sagemaker"), name, ("InProgress",))
        with worker(first.api_url, "dee", crew["password"]) as dee:
            assert _label_all(dee, name, truth, most=2) == 2
            cookies = dict(dee.cookies)
        first.proc.kill()  # no shutdown: the server dies
        first.proc.wait()
    with running_platform(home, aws, port=port) as second:
        sm, s3 = second.session().client("sagemaker"), second.session().client("s3")
        assert sm.describe_labeling_job(LabelingJobName=name)["LabelCounters"]["HumanLabeled"] == 2
        with httpx.Client(base_url=second.api_url, cookies=cookies, timeout=30) as dee:  # the session still holds
            assert _label_all(dee, name, truth) == 3
        desc = wait_job(sm, name, ("Completed",))
        lines = read_manifest(s3, desc["LabelingJobOutput"]["OutputDatasetS3Uri"])
        assert sorted(x["source"] for x in lines) == sorted(truth)
        assert all(x["label-metadata"]["class-name"] == truth[x["source"]] for x in lines)


def test_stop_in_the_middle_of_an_automated_labeling_round(platform: RunningPlatform, team: dict[str, Any]) -> None:
    session = platform.session()
    sm, s3 = session.client("sagemaker"), session.client("s3")
    data = _texts(100, 5)
    truth = dict(data)
    name = "reviews-auto-stopped"
    put_job_files(s3, BUCKET, name, [{"source": text} for text, _ in data], ["positive", "negative"])
    request = labeling_request(name, team["arn"], _role(platform), BUCKET, "TextMultiClass")
    request["LabelingJobAlgorithmsConfig"] = {"LabelingJobAlgorithmSpecificationArn": TEXT_ALGORITHM}
    sm.create_labeling_job(**request)
    wait_job(sm, name, ("InProgress",))
    with worker(platform.api_url, "ana", team["password"]) as ana:
        assert _label_all(ana, name, truth) == 30  # the validation set (10) and the first batch (20)
    sm.stop_labeling_job(LabelingJobName=name)  # while the first round trains, or just after
    desc = wait_job(sm, name, ("Stopped",), timeout=60)
    assert desc["LabelCounters"]["HumanLabeled"] == 30
    lines = read_manifest(s3, desc["LabelingJobOutput"]["OutputDatasetS3Uri"])
    assert len(lines) == desc["LabelCounters"]["TotalLabeled"]
    train = f"{name}-al-train-1"[:63]
    status = sm.describe_training_job(TrainingJobName=train)["TrainingJobStatus"]
    assert status in ("Stopped", "Completed", "Stopping")
