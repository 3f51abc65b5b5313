"""EventBridge Scheduler schedules that start pipelines: the SDK's ``put_triggers`` and boto3's scheduler."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from helpers import ApiServer


@pytest.fixture(scope="module")
def role(api: ApiServer) -> str:
    return api.platform.identity.default_role_arn


def _definition() -> str:
    """A pipeline of one condition step (nothing to run but the interpreter) with a string parameter."""
    return json.dumps(
        {
            "Version": "2020-12-01",
            "Parameters": [{"Name": "RunAt", "Type": "String", "DefaultValue": "never"}],
            "Steps": [
                {
                    "Name": "Check",
                    "Type": "Condition",
                    "Arguments": {
                        "Conditions": [{"Type": "Equals", "LeftValue": 1, "RightValue": 1}],
                        "IfSteps": [],
                        "ElseSteps": [],
                    },
                }
            ],
        }
    )


def _executions(sm: Any, pipeline: str) -> list[dict[str, Any]]:
    return sm.list_pipeline_executions(PipelineName=pipeline)["PipelineExecutionSummaries"]


def _wait_for_executions(sm: Any, pipeline: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _executions(sm, pipeline)
        if len(found) >= count:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{pipeline} has {len(_executions(sm, pipeline))} executions, not {count}")


def _at(seconds: float) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return f"at({moment.strftime('%Y-%m-%dT%H:%M:%S')})"


def test_sdk_put_triggers_starts_the_pipeline_on_time(
    api: ApiServer, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    from sagemaker.session import Session
    from sagemaker.workflow.condition_step import ConditionStep
    from sagemaker.workflow.conditions import ConditionEquals
    from sagemaker.workflow.parameters import ParameterString
    from sagemaker.workflow.pipeline import Pipeline
    from sagemaker.workflow.triggers import PipelineSchedule

    monkeypatch.setenv("AWS_ENDPOINT_URL", api.url)  # every client the SDK makes, the scheduler's too
    boto_session = boto3.Session(
        aws_access_key_id=api.access_key_id, aws_secret_access_key=api.secret, region_name="us-east-1"
    )
    session = Session(boto_session=boto_session)
    run_at = ParameterString(name="RunAt", default_value="never")
    pipeline = Pipeline(
        name="scheduled-by-sdk",
        parameters=[run_at],
        steps=[ConditionStep(name="Check", conditions=[ConditionEquals(left=run_at, right="never")], if_steps=[])],
        sagemaker_session=session,
    )
    pipeline.upsert(role_arn=role)
    start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    arns = pipeline.put_triggers([PipelineSchedule(name="in-two-seconds", at=start)], role_arn=role)
    assert arns == [f"arn:aws:scheduler:us-east-1:{api.platform.identity.account_id}:schedule/default/in-two-seconds"]
    trigger = pipeline.describe_trigger("in-two-seconds")
    assert trigger["Schedule_Expression"] == f"at({start.strftime('%Y-%m-%dT%H:%M:%S')})"
    assert trigger["Schedule_State"] == "ENABLED" and trigger["Schedule_Role"] == role

    sm = api.client("sagemaker")
    (execution,) = _wait_for_executions(sm, "scheduled-by-sdk", 1)
    described = sm.describe_pipeline_execution(PipelineExecutionArn=execution["PipelineExecutionArn"])
    assert described["PipelineExecutionDescription"] == "Started by an EventBridge Scheduler schedule"
    time.sleep(6)  # another turn or two of the runner: a one-time schedule fires once
    assert len(_executions(sm, "scheduled-by-sdk")) == 1

    pipeline.put_triggers([PipelineSchedule(name="in-two-seconds", rate=(5, "minutes"))], role_arn=role)  # upsert
    assert pipeline.describe_trigger("in-two-seconds")["Schedule_Expression"] == "rate(5 minutes)"
    pipeline.delete_triggers(["in-two-seconds", "never-made"])  # a missing one is skipped, as the SDK does
    with pytest.raises(ClientError) as missing:
        api.client("scheduler").get_schedule(Name="in-two-seconds")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_boto3_schedule_fills_context_attributes_and_deletes_itself(api: ApiServer, role: str) -> None:
    sm, scheduler = api.client("sagemaker"), api.client("scheduler")
    pipeline_arn = sm.create_pipeline(
        PipelineName="scheduled-by-boto3", PipelineDefinition=_definition(), RoleArn=role, ClientRequestToken="t" * 32
    )["PipelineArn"]
    expression = _at(1)
    scheduler.create_schedule(
        Name="once",
        ScheduleExpression=expression,
        FlexibleTimeWindow={"Mode": "OFF"},
        ActionAfterCompletion="DELETE",
        Target={
            "Arn": pipeline_arn,
            "RoleArn": role,
            "SageMakerPipelineParameters": {
                "PipelineParameterList": [{"Name": "RunAt", "Value": "<aws.scheduler.scheduled-time>"}]
            },
        },
    )
    assert scheduler.list_schedules(NamePrefix="on")["Schedules"][0]["Target"] == {"Arn": pipeline_arn}
    (execution,) = _wait_for_executions(sm, "scheduled-by-boto3", 1)
    params = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=execution["PipelineExecutionArn"])
    expected = expression[3:-1] + "Z"  # the moment it was scheduled for, as AWS writes it
    assert params["PipelineParameters"] == [{"Name": "RunAt", "Value": expected}]
    deadline = time.monotonic() + 15
    while scheduler.list_schedules(NamePrefix="once")["Schedules"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert scheduler.list_schedules(NamePrefix="once")["Schedules"] == []  # ActionAfterCompletion DELETE


def test_schedule_errors_and_groups(api: ApiServer, role: str) -> None:
    scheduler = api.client("scheduler")
    pipeline = f"arn:aws:sagemaker:us-east-1:{api.platform.identity.account_id}:pipeline/not-started"
    target = {"Arn": pipeline, "RoleArn": role}

    def code(**request: Any) -> tuple[str, str]:
        with pytest.raises(ClientError) as caught:
            scheduler.create_schedule(**{"FlexibleTimeWindow": {"Mode": "OFF"}, "Target": target, **request})
        return caught.value.response["Error"]["Code"], caught.value.response["Error"]["Message"]

    assert code(Name="bad", ScheduleExpression="every(5 minutes)")[0] == "ValidationException"
    cron_code, cron_message = code(Name="bad", ScheduleExpression="cron(0 12 * * * *)")
    assert cron_code == "ValidationException" and "day-of-week" in cron_message
    lambda_target = {"Arn": "arn:aws:lambda:us-east-1:111122223333:function:f", "RoleArn": role}
    target_code, target_message = code(Name="bad", ScheduleExpression="rate(1 hour)", Target=lambda_target)
    assert target_code == "ValidationException" and "SageMaker pipeline" in target_message
    assert code(Name="bad", ScheduleExpression="rate(1 hour)", FlexibleTimeWindow={"Mode": "FLEXIBLE"})[0] == (
        "ValidationException"
    )
    assert code(Name="bad", ScheduleExpression="rate(1 hour)", GroupName="nowhere")[0] == "ResourceNotFoundException"

    group_arn = scheduler.create_schedule_group(Name="nightly", Tags=[{"Key": "team", "Value": "ml"}])[
        "ScheduleGroupArn"
    ]
    assert scheduler.list_tags_for_resource(ResourceArn=group_arn)["Tags"] == [{"Key": "team", "Value": "ml"}]
    with pytest.raises(ClientError) as again:
        scheduler.create_schedule_group(Name="nightly")
    assert again.value.response["Error"]["Code"] == "ConflictException"
    scheduler.create_schedule(
        Name="daily",
        GroupName="nightly",
        ScheduleExpression="cron(0 2 * * ? *)",
        ScheduleExpressionTimezone="Europe/Berlin",
        FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15},
        State="DISABLED",
        Target=target,
    )
    assert code(Name="daily", GroupName="nightly", ScheduleExpression="rate(1 hour)")[0] == "ConflictException"
    got = scheduler.get_schedule(Name="daily", GroupName="nightly")
    assert (got["ScheduleExpressionTimezone"], got["State"], got["GroupName"]) == (
        "Europe/Berlin",
        "DISABLED",
        "nightly",
    )
    assert [s["Name"] for s in scheduler.list_schedules(GroupName="nightly", State="DISABLED")["Schedules"]] == [
        "daily"
    ]
    names = [g["Name"] for g in scheduler.list_schedule_groups()["ScheduleGroups"]]
    assert "default" in names and "nightly" in names
    with pytest.raises(ClientError) as default:
        scheduler.delete_schedule_group(Name="default")
    assert default.value.response["Error"]["Code"] == "ValidationException"
    scheduler.delete_schedule_group(Name="nightly")  # its schedules go with it
    assert scheduler.list_schedules(NamePrefix="daily")["Schedules"] == []
    with pytest.raises(ClientError) as gone:
        scheduler.get_schedule_group(Name="nightly")
    assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"
