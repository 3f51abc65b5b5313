"""EventBridge with boto3: rules and targets, patterns, the platform's own events and PutEvents delivered
to a CloudWatch Logs log group, and a rule whose target is a SageMaker pipeline."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers import ApiServer

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _account(api: ApiServer) -> str:
    return str(api.platform.identity.account_id)


def _log_group_arn(api: ApiServer, group: str) -> str:
    return f"arn:aws:logs:us-east-1:{_account(api)}:log-group:{group}"


def _messages(api: ApiServer, group: str, stream: str, count: int, timeout: float = 10) -> list[str]:
    logs = api.client("logs")
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = [e["message"] for e in logs.get_log_events(logGroupName=group, logStreamName=stream)["events"]]
        except ClientError:
            found = []
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


APPROVED = json.dumps(
    {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Model Package State Change"],
        "detail": {"ModelApprovalStatus": ["Approved"]},
    }
)


def test_rules_and_targets_are_kept_listed_and_removed(api: ApiServer) -> None:
    events = api.client("events")
    rule = _name("promote")
    arn = events.put_rule(Name=rule, EventPattern=APPROVED, Description="deploy approved models")["RuleArn"]
    assert arn == f"arn:aws:events:us-east-1:{_account(api)}:rule/{rule}"
    desc = events.describe_rule(Name=rule)
    assert desc["State"] == "ENABLED" and desc["EventBusName"] == "default" and json.loads(desc["EventPattern"])
    events.disable_rule(Name=rule)
    assert events.describe_rule(Name=rule)["State"] == "DISABLED"
    events.enable_rule(Name=rule)
    assert [r["Name"] for r in events.list_rules(NamePrefix=rule)["Rules"]] == [rule]
    pipeline = f"arn:aws:sagemaker:us-east-1:{_account(api)}:pipeline/deploy"
    answer = events.put_targets(
        Rule=rule,
        Targets=[
            {
                "Id": "deploy",
                "Arn": pipeline,
                "RoleArn": f"arn:aws:iam::{_account(api)}:role/OpenSageExecutionRole",
                "SageMakerPipelineParameters": {
                    "PipelineParameterList": [{"Name": "ModelPackageArn", "Value": "$.detail.ModelPackageArn"}]
                },
            },
            {"Id": "audit", "Arn": _log_group_arn(api, "/aws/events/audit")},
            {"Id": "queue", "Arn": f"arn:aws:sqs:us-east-1:{_account(api)}:q"},
        ],
    )
    assert answer["FailedEntryCount"] == 1 and answer["FailedEntries"][0]["TargetId"] == "queue"
    assert "SageMaker pipeline" in answer["FailedEntries"][0]["ErrorMessage"]
    assert [t["Id"] for t in events.list_targets_by_rule(Rule=rule)["Targets"]] == ["deploy", "audit"]
    assert rule in events.list_rule_names_by_target(TargetArn=pipeline)["RuleNames"]
    with pytest.raises(ClientError) as err:
        events.delete_rule(Name=rule)
    assert "has targets" in err.value.response["Error"]["Message"]
    events.remove_targets(Rule=rule, Ids=["deploy", "audit"])
    events.delete_rule(Name=rule)
    with pytest.raises(ClientError) as err:
        events.describe_rule(Name=rule)
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_patterns_are_checked_and_tested(api: ApiServer) -> None:
    events = api.client("events")
    with pytest.raises(ClientError) as err:
        events.put_rule(Name=_name("bad"), EventPattern='{"source": "aws.sagemaker"}')
    assert err.value.response["Error"]["Code"] == "InvalidEventPatternException"
    event = {
        "id": "1", "account": _account(api), "source": "aws.sagemaker", "time": "2024-01-01T00:00:00Z",
        "region": "us-east-1", "resources": [], "detail-type": "SageMaker Model Package State Change",
        "detail": {"ModelApprovalStatus": "Approved"},
    }  # fmt: skip
    assert events.test_event_pattern(EventPattern=APPROVED, Event=json.dumps(event))["Result"] is True
    event["detail"] = {"ModelApprovalStatus": "Rejected"}
    assert events.test_event_pattern(EventPattern=APPROVED, Event=json.dumps(event))["Result"] is False


def test_an_approval_is_an_event_a_rule_delivers_and_a_pending_version_is_not(api: ApiServer) -> None:
    events, sm = api.client("events"), api.client("sagemaker")
    rule, log_group = _name("approved"), _name("/aws/events/approvals")
    events.put_rule(Name=rule, EventPattern=APPROVED)
    transformer = {
        "InputPathsMap": {"arn": "$.detail.ModelPackageArn", "note": "$.detail.ApprovalDescription"},
        "InputTemplate": '{"approved": <arn>, "note": <note>}',
    }
    events.put_targets(Rule=rule, Targets=[{"Id": "log", "Arn": _log_group_arn(api, log_group),
                                            "InputTransformer": transformer}])  # fmt: skip
    group = _name("events-group")
    sm.create_model_package_group(ModelPackageGroupName=group)
    spec = {"Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://b/model.tar.gz"}]}
    arn = sm.create_model_package(ModelPackageGroupName=group, InferenceSpecification=spec)["ModelPackageArn"]
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved", ApprovalDescription="AUC 0.91")
    found = _messages(api, log_group, rule, 1)
    assert [json.loads(m) for m in found] == [{"approved": arn, "note": "AUC 0.91"}]


def test_put_events_reach_the_rules_that_match_them(api: ApiServer) -> None:
    events = api.client("events")
    rule, log_group = _name("custom"), _name("/aws/events/custom")
    events.put_rule(
        Name=rule, EventPattern=json.dumps({"source": ["my.app"], "detail": {"score": [{"numeric": [">", 0.8]}]}})
    )
    events.put_targets(
        Rule=rule, Targets=[{"Id": "log", "Arn": _log_group_arn(api, log_group), "InputPath": "$.detail"}]
    )
    answer = events.put_events(
        Entries=[
            {"Source": "my.app", "DetailType": "Scored", "Detail": json.dumps({"score": 0.9, "n": 1})},
            {"Source": "my.app", "DetailType": "Scored", "Detail": json.dumps({"score": 0.1, "n": 2})},
            {"Source": "aws.sagemaker", "DetailType": "Forged", "Detail": "{}"},
        ]
    )
    assert answer["FailedEntryCount"] == 1 and answer["Entries"][2]["ErrorCode"] == "NotAuthorizedForSourceException"
    assert all("EventId" in e for e in answer["Entries"][:2])
    assert [json.loads(m) for m in _messages(api, log_group, rule, 1)] == [{"score": 0.9, "n": 1}]
    cloudwatch = api.client("cloudwatch")
    now = dt.datetime.now(dt.UTC)
    stats = {
        name: cloudwatch.get_metric_statistics(
            Namespace="AWS/Events", MetricName=name, Dimensions=[{"Name": "RuleName", "Value": rule}],
            StartTime=now - dt.timedelta(minutes=5), EndTime=now + dt.timedelta(minutes=1), Period=60,
            Statistics=["Sum"],
        )["Datapoints"]
        for name in ("TriggeredRules", "Invocations", "FailedInvocations")
    }  # fmt: skip
    assert {name: sum(p["Sum"] for p in points) for name, points in stats.items()} == {
        "TriggeredRules": 1, "Invocations": 1, "FailedInvocations": 0,
    }  # fmt: skip
    events.disable_rule(Name=rule)
    events.put_events(Entries=[{"Source": "my.app", "DetailType": "Scored", "Detail": json.dumps({"score": 0.95})}])
    time.sleep(0.5)
    assert len(_messages(api, log_group, rule, 2, timeout=0.5)) == 1


def _pipeline(sm: Any, api: ApiServer, name: str) -> str:
    definition = {
        "Version": "2020-12-01",
        "Metadata": {},
        "Parameters": [{"Name": "ModelPackageArn", "Type": "String", "DefaultValue": "none"}],
        "Steps": [
            {"Name": "Reject", "Type": "Fail", "Arguments": {"ErrorMessage": {"Get": "Parameters.ModelPackageArn"}}}
        ],
    }
    return str(
        sm.create_pipeline(
            PipelineName=name,
            PipelineDefinition=json.dumps(definition),
            RoleArn=f"arn:aws:iam::{_account(api)}:role/OpenSageExecutionRole",
        )["PipelineArn"]
    )


def test_a_pipeline_target_starts_an_execution_with_the_event_s_values(api: ApiServer) -> None:
    events, sm = api.client("events"), api.client("sagemaker")
    pipeline = _name("on-approval")
    pipeline_arn = _pipeline(sm, api, pipeline)
    rule = _name("start-pipeline")
    events.put_rule(Name=rule, EventPattern=json.dumps({"source": ["my.registry"]}))
    events.put_targets(
        Rule=rule,
        Targets=[
            {
                "Id": "pipeline",
                "Arn": pipeline_arn,
                "RoleArn": f"arn:aws:iam::{_account(api)}:role/OpenSageExecutionRole",
                "SageMakerPipelineParameters": {
                    "PipelineParameterList": [{"Name": "ModelPackageArn", "Value": "$.detail.arn"}]
                },
            }
        ],
    )
    events.put_events(Entries=[{"Source": "my.registry", "DetailType": "Approved", "Detail": '{"arn": "pkg-7"}'}])
    deadline = time.monotonic() + 10
    while not (runs := sm.list_pipeline_executions(PipelineName=pipeline)["PipelineExecutionSummaries"]):
        assert time.monotonic() < deadline, "no execution started"
        time.sleep(0.1)
    execution = runs[0]["PipelineExecutionArn"]
    params = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=execution)["PipelineParameters"]
    assert params == [{"Name": "ModelPackageArn", "Value": "pkg-7"}]


def test_pipeline_execution_and_step_status_changes_are_events(api: ApiServer) -> None:
    events, sm = api.client("events"), api.client("sagemaker")
    pipeline = _name("watched")
    pipeline_arn = _pipeline(sm, api, pipeline)
    rule, log_group = _name("pipeline-status"), _name("/aws/events/pipelines")
    pattern = {
        "source": ["aws.sagemaker"],
        "detail-type": [
            "SageMaker Model Building Pipeline Execution Status Change",
            "SageMaker Model Building Pipeline Execution Step Status Change",
        ],
        "detail": {"pipelineArn": [pipeline_arn]},
    }
    events.put_rule(Name=rule, EventPattern=json.dumps(pattern))
    events.put_targets(Rule=rule, Targets=[{"Id": "log", "Arn": _log_group_arn(api, log_group)}])
    execution = sm.start_pipeline_execution(
        PipelineName=pipeline, PipelineParameters=[{"Name": "ModelPackageArn", "Value": "stop here"}]
    )["PipelineExecutionArn"]
    deadline = time.monotonic() + 20
    while True:
        seen = [json.loads(m) for m in _messages(api, log_group, rule, 1, timeout=0.2)]
        statuses = [e["detail"].get("currentPipelineExecutionStatus") for e in seen]
        if "Failed" in statuses or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert statuses[0] == "Executing" and "Failed" in statuses, seen
    final = seen[statuses.index("Failed")]["detail"]
    assert final["pipelineExecutionArn"] == execution and final["previousPipelineExecutionStatus"] == "Executing"
    steps = [e["detail"] for e in seen if e["detail-type"].endswith("Step Status Change")]
    assert steps and {s["stepName"] for s in steps} == {"Reject"}
    assert steps[-1]["currentStepStatus"] == "Failed"
