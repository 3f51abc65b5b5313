"""The model registry end to end: groups, versioned packages, approval, listing, Search, and deploying a
package with boto3 and with the SageMaker SDK's ``Model.register`` and ``ModelPackage(...).deploy()``."""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from helpers import ApiServer, RunningPlatform, running_platform

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
BUCKET = "registry-tests"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _spec(url: str = "s3://bucket/model.tar.gz") -> dict[str, Any]:
    return {
        "Containers": [{"Image": IMAGE, "ModelDataUrl": url, "Environment": {"A": "1"}}],
        "SupportedContentTypes": ["text/csv"],
        "SupportedResponseMIMETypes": ["text/csv"],
        "SupportedRealtimeInferenceInstanceTypes": ["ml.m5.large"],
    }


def _version(sm: Any, group: str, status: str = "PendingManualApproval", **extra: Any) -> str:
    return sm.create_model_package(
        ModelPackageGroupName=group, InferenceSpecification=_spec(), ModelApprovalStatus=status, **extra
    )["ModelPackageArn"]


def test_versions_count_up_per_group_and_describe_answers_what_was_registered(api: ApiServer) -> None:
    sm = api.client("sagemaker")
    group = _name("Churn")
    arn = sm.create_model_package_group(ModelPackageGroupName=group, ModelPackageGroupDescription="churn models")[
        "ModelPackageGroupArn"
    ]
    assert arn.endswith(f":model-package-group/{group.lower()}")
    assert sm.describe_model_package_group(ModelPackageGroupName=group)["ModelPackageGroupStatus"] == "Completed"
    metrics = {"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": "s3://b/metrics.json"}}}
    first = _version(
        sm,
        group,
        ModelMetrics=metrics,
        CustomerMetadataProperties={"owner": "ml-team"},
        DriftCheckBaselines={"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": "s3://b/s"}}},
    )
    second = _version(sm, group, status="Approved")
    assert first.endswith(f":model-package/{group.lower()}/1") and second.endswith(f"/{group.lower()}/2")
    desc = sm.describe_model_package(ModelPackageName=first)
    assert desc["ModelPackageGroupName"] == group and desc["ModelPackageVersion"] == 1
    assert desc["ModelPackageStatus"] == "Completed" and desc["ModelApprovalStatus"] == "PendingManualApproval"
    assert desc["ModelMetrics"] == metrics and desc["CustomerMetadataProperties"] == {"owner": "ml-team"}
    assert desc["InferenceSpecification"]["Containers"][0]["Image"] == IMAGE
    assert "DriftCheckBaselines" in desc
    with pytest.raises(ClientError) as err:
        sm.create_model_package(ModelPackageGroupName=_name("nogroup"), InferenceSpecification=_spec())
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "CreateModelPackageGroup" in err.value.response["Error"]["Message"]


def test_approval_with_a_note_and_the_latest_approved_version(api: ApiServer) -> None:
    sm = api.client("sagemaker")
    group = _name("fraud")
    sm.create_model_package_group(ModelPackageGroupName=group)
    arns = [_version(sm, group) for _ in range(3)]
    sm.update_model_package(ModelPackageArn=arns[0], ModelApprovalStatus="Approved", ApprovalDescription="ok")
    sm.update_model_package(ModelPackageArn=arns[1], ModelApprovalStatus="Approved", ApprovalDescription="better")
    sm.update_model_package(
        ModelPackageArn=arns[2],
        ModelApprovalStatus="Rejected",
        ApprovalDescription="AUC dropped",
        CustomerMetadataProperties={"reviewer": "kim"},
    )
    desc = sm.describe_model_package(ModelPackageName=arns[2])
    assert desc["ModelApprovalStatus"] == "Rejected" and desc["ApprovalDescription"] == "AUC dropped"
    assert desc["CustomerMetadataProperties"] == {"reviewer": "kim"}
    sm.update_model_package(ModelPackageArn=arns[2], CustomerMetadataPropertiesToRemove=["reviewer"])
    assert sm.describe_model_package(ModelPackageName=arns[2])["CustomerMetadataProperties"] == {}
    latest = sm.list_model_packages(
        ModelPackageGroupName=group,
        ModelApprovalStatus="Approved",
        SortBy="CreationTime",
        SortOrder="Descending",
        MaxResults=1,
    )["ModelPackageSummaryList"]
    assert [s["ModelPackageArn"] for s in latest] == [arns[1]]
    every = sm.get_paginator("list_model_packages").paginate(
        ModelPackageGroupName=group, PaginationConfig={"PageSize": 2}
    )
    assert sorted(s["ModelPackageVersion"] for p in every for s in p["ModelPackageSummaryList"]) == [1, 2, 3]
    with pytest.raises(ClientError) as err:
        sm.delete_model_package_group(ModelPackageGroupName=group)
    assert "delete them" in err.value.response["Error"]["Message"]
    for arn in arns:
        sm.delete_model_package(ModelPackageName=arn)
    sm.delete_model_package_group(ModelPackageGroupName=group)
    with pytest.raises(ClientError):
        sm.describe_model_package_group(ModelPackageGroupName=group)


def test_unversioned_packages_and_group_listing(api: ApiServer) -> None:
    sm = api.client("sagemaker")
    name = _name("standalone")
    arn = sm.create_model_package(ModelPackageName=name, InferenceSpecification=_spec())["ModelPackageArn"]
    assert arn.endswith(f":model-package/{name.lower()}")
    assert sm.describe_model_package(ModelPackageName=name)["ModelPackageName"] == name
    listed = sm.list_model_packages(NameContains=name)["ModelPackageSummaryList"]
    assert [s["ModelPackageArn"] for s in listed] == [arn]
    groups = [_name("listed") for _ in range(2)]
    for g in groups:
        sm.create_model_package_group(ModelPackageGroupName=g)
    found = sm.list_model_package_groups(NameContains="listed-", SortBy="Name", SortOrder="Ascending")
    names = [s["ModelPackageGroupName"] for s in found["ModelPackageGroupSummaryList"]]
    assert [n for n in names if n in groups] == sorted(groups)
    with pytest.raises(ClientError) as err:
        sm.create_model_package(ModelPackageGroupName=groups[0], InferenceSpecification={"Containers": [{}]})
    assert "Image" in err.value.response["Error"]["Message"]


def test_a_model_from_a_pending_package_is_refused(api: ApiServer) -> None:
    sm = api.client("sagemaker")
    group = _name("pending")
    sm.create_model_package_group(ModelPackageGroupName=group)
    arn = _version(sm, group)
    with pytest.raises(ClientError) as err:
        sm.create_model(ModelName=_name("m"), PrimaryContainer={"ModelPackageName": arn})
    assert "Approved" in err.value.response["Error"]["Message"]
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    model = _name("m")
    sm.create_model(ModelName=model, PrimaryContainer={"ModelPackageName": arn})
    container = sm.describe_model(ModelName=model)["PrimaryContainer"]
    assert container["ModelPackageName"] == arn and container["Image"] == IMAGE


# --- deploying a registered model (object store and model servers) ---------------------------------------


def _artifact(tmp: Path) -> bytes:
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=(x[:, 0] > 0).astype(int)), 5)
    path = tmp / "xgboost-model.ubj"
    booster.save_model(str(path))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(path, arcname="xgboost-model")
    return buf.getvalue()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("registry")
    with running_platform(root / "home", root / "aws") as running:
        s3 = running.session().client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="model.tar.gz", Body=_artifact(root))
        yield running


def _wait_endpoint(sm: Any, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        desc = sm.describe_endpoint(EndpointName=name)
        if desc["EndpointStatus"] not in ("Creating", "Updating"):
            return desc
        assert time.monotonic() < deadline, desc
        time.sleep(0.5)


@pytest.mark.slow
def test_sdk_register_then_model_package_deploy_serves_the_model(platform: RunningPlatform, tmp_path: Path) -> None:
    group = _name("sdk-group")
    endpoint = _name("registered")
    out = platform.run_python(
        f"""
        import sagemaker
        from sagemaker.model import Model, ModelPackage

        session = sagemaker.Session()
        role = sagemaker.get_execution_role()
        model = Model(image_uri="{IMAGE}", model_data="s3://{BUCKET}/model.tar.gz", role=role,
                      sagemaker_session=session)
        registered = model.register(content_types=["text/csv"], response_types=["text/csv"],
                                    inference_instances=["ml.m5.large"], transform_instances=["ml.m5.large"],
                                    model_package_group_name="{group}", approval_status="PendingManualApproval")
        arn = registered.model_package_arn
        print("ARN", arn)
        latest = session.sagemaker_client.list_model_packages(ModelPackageGroupName="{group}")
        assert latest["ModelPackageSummaryList"][0]["ModelPackageArn"] == arn
        ModelPackage(role=role, model_package_arn=arn, sagemaker_session=session).deploy(
            initial_instance_count=1, instance_type="ml.m5.large", endpoint_name="{endpoint}", wait=False)
        print("STATUS", session.sagemaker_client.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"])
        """,
        tmp_path,
    )
    assert "STATUS Approved" in out  # deploy() approved the pending version itself, as on AWS
    session = platform.session()
    sm, runtime = session.client("sagemaker"), session.client("sagemaker-runtime")
    assert _wait_endpoint(sm, endpoint)["EndpointStatus"] == "InService"
    answer = runtime.invoke_endpoint(EndpointName=endpoint, ContentType="text/csv", Body="1.5,0,0,0\n-1.5,0,0,0")
    scores = [float(v) for v in answer["Body"].read().decode().replace("\n", ",").split(",") if v.strip()]
    assert scores[0] > 0.5 > scores[1]
    sm.delete_endpoint(EndpointName=endpoint)


def test_search_over_packages_and_groups_as_the_sdk_and_console_use_it(api: ApiServer) -> None:
    sm = api.client("sagemaker")
    group = _name("searched")
    sm.create_model_package_group(ModelPackageGroupName=group, Tags=[{"Key": "team", "Value": "risk"}])
    arns = [_version(sm, group) for _ in range(3)]
    sm.update_model_package(ModelPackageArn=arns[1], ModelApprovalStatus="Approved")
    found = sm.search(
        Resource="ModelPackageGroup",
        SearchExpression={"Filters": [{"Name": "ModelPackageGroupName", "Operator": "Equals", "Value": group}]},
    )
    assert [r["ModelPackageGroup"]["ModelPackageGroupName"] for r in found["Results"]] == [group]
    assert found["Results"][0]["ModelPackageGroup"]["Tags"] == [{"Key": "team", "Value": "risk"}]
    approved = sm.search(
        Resource="ModelPackage",
        SearchExpression={
            "Filters": [
                {"Name": "ModelPackageGroupName", "Operator": "Equals", "Value": group},
                {"Name": "ModelApprovalStatus", "Operator": "Equals", "Value": "Approved"},
            ]
        },
    )
    assert [r["ModelPackage"]["ModelPackageArn"] for r in approved["Results"]] == [arns[1]]
    pages = sm.get_paginator("search").paginate(
        Resource="ModelPackage",
        SearchExpression={"Filters": [{"Name": "ModelPackageGroupName", "Operator": "Equals", "Value": group}]},
        SortBy="ModelPackageVersion",
        SortOrder="Ascending",
        PaginationConfig={"PageSize": 2},
    )
    versions = [r["ModelPackage"]["ModelPackageVersion"] for p in pages for r in p["Results"]]
    assert versions == [1, 2, 3]
    with pytest.raises(ClientError) as err:
        sm.search(Resource="FeatureGroup")
    assert "searchable" in err.value.response["Error"]["Message"]


# --- CI/CD promotion: approving a version deploys it through an EventBridge rule and a pipeline -----------


def _deploy_pipeline(role: str, staging: str, production: str) -> dict[str, Any]:
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": {"Get": "Steps.CreateModel.ModelName"},
        "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large",
    }
    return {
        "Version": "2020-12-01",
        "Metadata": {},
        "Parameters": [
            {"Name": "ModelPackageArn", "Type": "String"},
            {"Name": "StagingEndpoint", "Type": "String", "DefaultValue": staging},
            {"Name": "ProductionEndpoint", "Type": "String", "DefaultValue": production},
        ],
        "Steps": [
            {
                "Name": "CreateModel",
                "Type": "Model",
                "Arguments": {
                    "PrimaryContainer": {"ModelPackageName": {"Get": "Parameters.ModelPackageArn"}},
                    "ExecutionRoleArn": role,
                },
            },
            {"Name": "EndpointConfig", "Type": "EndpointConfig", "Arguments": {"ProductionVariants": [variant]}},
            {
                "Name": "Staging",
                "Type": "Endpoint",
                "Arguments": {
                    "EndpointName": {"Get": "Parameters.StagingEndpoint"},
                    "EndpointConfigName": {"Get": "Steps.EndpointConfig.EndpointConfigName"},
                },
            },
            {
                "Name": "StagingInService",
                "Type": "Condition",
                "Arguments": {
                    "Conditions": [
                        {
                            "Type": "Equals",
                            "LeftValue": {"Get": "Steps.Staging.EndpointStatus"},
                            "RightValue": "InService",
                        }
                    ],
                    "IfSteps": [
                        {
                            "Name": "Production",
                            "Type": "Endpoint",
                            "Arguments": {
                                "EndpointName": {"Get": "Parameters.ProductionEndpoint"},
                                "EndpointConfigName": {"Get": "Steps.EndpointConfig.EndpointConfigName"},
                            },
                        }
                    ],
                    "ElseSteps": [{"Name": "StagingFailed", "Type": "Fail", "Arguments": {"ErrorMessage": "staging"}}],
                },
            },
        ],
    }


@pytest.mark.slow
def test_approval_starts_the_deploy_pipeline_through_eventbridge_and_production_serves_it(
    platform: RunningPlatform,
) -> None:
    import json

    session = platform.session()
    sm, events, runtime = session.client("sagemaker"), session.client("events"), session.client("sagemaker-runtime")
    account = session.client("sts").get_caller_identity()["Account"]
    role = f"arn:aws:iam::{account}:role/OpenSageExecutionRole"
    group, pipeline = _name("promoted"), _name("deploy")
    staging, production = _name("staging"), _name("production")
    pipeline_arn = sm.create_pipeline(
        PipelineName=pipeline, RoleArn=role, PipelineDefinition=json.dumps(_deploy_pipeline(role, staging, production))
    )["PipelineArn"]
    rule = _name("promote")
    pattern = {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Model Package State Change"],
        "detail": {"ModelPackageGroupName": [group], "ModelApprovalStatus": ["Approved"]},
    }
    events.put_rule(Name=rule, EventPattern=json.dumps(pattern))
    parameters = [{"Name": "ModelPackageArn", "Value": "$.detail.ModelPackageArn"}]
    events.put_targets(
        Rule=rule,
        Targets=[
            {"Id": "deploy", "Arn": pipeline_arn, "RoleArn": role,
             "SageMakerPipelineParameters": {"PipelineParameterList": parameters}}
        ],
    )  # fmt: skip
    watch = {"source": ["aws.sagemaker"], "detail-type": ["SageMaker Endpoint State Change"],
             "detail": {"EndpointName": [staging, production]}}  # fmt: skip
    events.put_rule(Name=rule + "-endpoints", EventPattern=json.dumps(watch))
    log_arn = f"arn:aws:logs:us-east-1:{account}:log-group:/aws/events/{rule}"
    transformer = {"InputPathsMap": {"e": "$.detail.EndpointName", "s": "$.detail.EndpointStatus"},
                   "InputTemplate": "<e> <s>"}  # fmt: skip
    events.put_targets(
        Rule=rule + "-endpoints", Targets=[{"Id": "log", "Arn": log_arn, "InputTransformer": transformer}]
    )
    sm.create_model_package_group(ModelPackageGroupName=group)
    arn = sm.create_model_package(
        ModelPackageGroupName=group, InferenceSpecification=_spec(f"s3://{BUCKET}/model.tar.gz")
    )["ModelPackageArn"]
    time.sleep(1)  # a pending version is an event too, which the rule does not match
    assert sm.list_pipeline_executions(PipelineName=pipeline)["PipelineExecutionSummaries"] == []
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved", ApprovalDescription="AUC 0.9")
    deadline = time.monotonic() + 120
    while True:
        runs = sm.list_pipeline_executions(PipelineName=pipeline)["PipelineExecutionSummaries"]
        status = runs[0]["PipelineExecutionStatus"] if runs else None
        if status in ("Succeeded", "Failed", "Stopped"):
            break
        assert time.monotonic() < deadline, runs
        time.sleep(0.5)
    execution = runs[0]["PipelineExecutionArn"]
    steps = sm.list_pipeline_execution_steps(PipelineExecutionArn=execution)["PipelineExecutionSteps"]
    assert status == "Succeeded", steps
    assert {s["StepName"]: s["StepStatus"] for s in steps}["Production"] == "Succeeded"
    for endpoint in (staging, production):
        model = sm.describe_endpoint_config(EndpointConfigName=sm.describe_endpoint(EndpointName=endpoint)[
            "EndpointConfigName"])["ProductionVariants"][0]["ModelName"]  # fmt: skip
        assert sm.describe_model(ModelName=model)["PrimaryContainer"]["ModelPackageName"] == arn
    answer = runtime.invoke_endpoint(EndpointName=production, ContentType="text/csv", Body="1.5,0,0,0\n-1.5,0,0,0")
    scores = [float(v) for v in answer["Body"].read().decode().replace("\n", ",").split(",") if v.strip()]
    assert scores[0] > 0.5 > scores[1]
    logs, lines = session.client("logs"), []
    for _ in range(50):  # the last event may still be on its way
        got = logs.get_log_events(logGroupName=f"/aws/events/{rule}", logStreamName=rule + "-endpoints")
        lines = [e["message"] for e in got["events"]]
        if len(lines) >= 4:
            break
        time.sleep(0.1)
    assert lines == [f"{staging} Creating", f"{staging} InService", f"{production} Creating", f"{production} InService"]
    for endpoint in (staging, production):
        sm.delete_endpoint(EndpointName=endpoint)


# --- the console's model registry -----------------------------------------------------------------------


def test_console_shows_versions_metrics_side_by_side_and_approves_with_a_note(platform: RunningPlatform) -> None:
    import json
    import re

    import httpx

    session = platform.session()
    sm, s3 = session.client("sagemaker"), session.client("s3")
    group = _name("console-group")
    sm.create_model_package_group(ModelPackageGroupName=group, ModelPackageGroupDescription="credit scoring")
    arns = []
    for version, auc in ((1, 0.81), (2, 0.87)):
        key = f"{group}/v{version}/evaluation.json"
        report = {"binary_classification_metrics": {"auc": {"value": auc}, "accuracy": {"value": auc - 0.1}}}
        s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(report).encode())
        metrics = {"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": f"s3://{BUCKET}/{key}"}}}
        arns.append(_version(sm, group, ModelMetrics=metrics, CustomerMetadataProperties={"data": f"2024-0{version}"}))
    credentials = session.get_credentials()
    with httpx.Client(base_url=platform.api_url, follow_redirects=False, timeout=30) as client:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/signin").text).group(1)  # type: ignore[union-attr]
        form = {"csrf": token, "access_key_id": credentials.access_key, "secret": credentials.secret_key}
        signed = client.post("/console/signin", data={**form, "next": "/console/"})
        assert signed.status_code == 303
        listing = client.get("/console/model-registry")
        assert listing.status_code == 200 and group in listing.text
        page = client.get(f"/console/model-registry/{group}")
        assert page.status_code == 200, page.text[:500]
        html = page.text
        row = re.search(r"binary_classification_metrics\.auc</th>(.*?)</tr>", html, re.S)
        assert row and re.findall(r">([0-9.]+)<", row.group(1)) == ["0.81", "0.87"]
        assert "2024-01" in html and "2024-02" in html and "credit scoring" in html
        csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
        approved = client.post(
            f"/console/model-registry/{group}/2/approval", data={"csrf": csrf, "status": "Approved", "note": "best AUC"}
        )
        assert approved.status_code == 303
        rejected = client.post(
            f"/console/model-registry/{group}/1/approval", data={"csrf": csrf, "status": "Rejected", "note": "older"}
        )
        assert rejected.status_code == 303
    second = sm.describe_model_package(ModelPackageName=arns[1])
    assert second["ModelApprovalStatus"] == "Approved" and second["ApprovalDescription"] == "best AUC"
    assert sm.describe_model_package(ModelPackageName=arns[0])["ModelApprovalStatus"] == "Rejected"
