"""Which stored changes are SageMaker events, what they carry, and what a rule's targets are given."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from opensage.events import targets
from opensage.events.sagemaker import events_for
from opensage.store.entities import Resource

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
ARN = "arn:aws:sagemaker:us-east-1:123456789012:training-job/job-1"


def _row(kind: str, data: dict[str, Any], status: str = "") -> Resource:
    return Resource(kind, "job-1", ARN, status, NOW, NOW, data)


def _events(before: Resource | None, after: Resource) -> list[dict[str, Any]]:
    return events_for(before, after, "us-east-1", "123456789012", NOW)


def test_a_training_job_is_an_event_when_its_status_changes_only() -> None:
    running = _row("training-job", {"TrainingJobName": "job-1", "TrainingJobStatus": "InProgress", "CreationTime": 1.5})
    done = _row("training-job", {**running.data, "TrainingJobStatus": "Completed", "_Private": 1})
    assert len(_events(None, running)) == 1
    assert _events(running, _row("training-job", {**running.data, "SecondaryStatus": "Training"})) == []
    (event,) = _events(running, done)
    assert event["detail-type"] == "SageMaker Training Job State Change" and event["source"] == "aws.sagemaker"
    assert event["resources"] == [ARN] and event["time"] == "2024-05-01T12:00:00Z"
    assert event["detail"]["TrainingJobStatus"] == "Completed" and event["detail"]["CreationTime"] == 1500
    assert "_Private" not in event["detail"]


def test_a_model_package_is_an_event_on_every_change_creation_included() -> None:
    package = _row("model-package", {"ModelPackageGroupName": "g", "ModelApprovalStatus": "PendingManualApproval"})
    approved = _row("model-package", {**package.data, "ModelApprovalStatus": "Approved"})
    assert [e["detail"]["ModelApprovalStatus"] for e in _events(None, package)] == ["PendingManualApproval"]
    assert [e["detail"]["ModelApprovalStatus"] for e in _events(package, approved)] == ["Approved"]
    assert _events(approved, approved) == []


def test_a_pipeline_execution_and_its_steps() -> None:
    base = {"PipelineArn": "arn:p", "PipelineExecutionStatus": "Executing", "CreationTime": 0.0, "_Steps": {}}
    started = _row("pipeline-execution", base, "Executing")
    step = {"StepStatus": "Executing", "StartTime": 1.0}
    stepping = _row("pipeline-execution", {**base, "_Steps": {"Train": step}}, "Executing")
    done = _row("pipeline-execution", {**base, "PipelineExecutionStatus": "Succeeded", "LastModifiedTime": 9.0,
                                       "_Steps": {"Train": {**step, "StepStatus": "Succeeded"}}})  # fmt: skip
    (first,) = _events(None, started)
    assert first["detail"]["currentPipelineExecutionStatus"] == "Executing"
    (step_event,) = _events(started, stepping)
    assert step_event["detail-type"] == "SageMaker Model Building Pipeline Execution Step Status Change"
    assert step_event["detail"]["stepName"] == "Train" and step_event["detail"]["currentStepStatus"] == "Executing"
    kinds = sorted(e["detail-type"] for e in _events(stepping, done))
    assert kinds == [
        "SageMaker Model Building Pipeline Execution Status Change",
        "SageMaker Model Building Pipeline Execution Step Status Change",
    ]
    status = next(e for e in _events(stepping, done) if "currentPipelineExecutionStatus" in e["detail"])
    assert status["detail"]["previousPipelineExecutionStatus"] == "Executing"
    assert status["detail"]["executionEndTime"] == "1970-01-01T00:00:09Z"


EVENT = {"id": "e1", "detail": {"arn": "pkg/3", "n": 3, "note": 'say "hi"', "list": [1, 2]}}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ({}, json.dumps(EVENT)),
        ({"Input": '{"fixed": true}'}, '{"fixed": true}'),
        ({"InputPath": "$.detail.list"}, "[1, 2]"),
        ({"InputPath": "$.detail.list[1]"}, "2"),
        (
            {
                "InputTransformer": {
                    "InputPathsMap": {"a": "$.detail.arn", "n": "$.detail.n"},
                    "InputTemplate": '{"p": <a>, "n": <n>}',
                }
            },
            '{"p": "pkg/3", "n": 3}',
        ),
        (
            {
                "InputTransformer": {
                    "InputPathsMap": {"a": "$.detail.arn", "q": "$.detail.note"},
                    "InputTemplate": "<a> says <q>",
                }
            },
            'pkg/3 says say \\"hi\\"',
        ),
        (
            {"InputTransformer": {"InputPathsMap": {"m": "$.detail.missing"}, "InputTemplate": '{"m": <m>}'}},
            '{"m": null}',
        ),
    ],
)
def test_target_input(target: dict[str, Any], expected: str) -> None:
    assert targets.target_input(target, EVENT) == expected


def test_pipeline_parameters_take_event_values_by_path() -> None:
    target = {"SageMakerPipelineParameters": {"PipelineParameterList": [
        {"Name": "Package", "Value": "$.detail.arn"}, {"Name": "N", "Value": "$.detail.n"},
        {"Name": "Stage", "Value": "staging"}]}}  # fmt: skip
    assert targets.pipeline_parameters(target, EVENT) == [
        {"Name": "Package", "Value": "pkg/3"},
        {"Name": "N", "Value": "3"},
        {"Name": "Stage", "Value": "staging"},
    ]
    missing = {"SageMakerPipelineParameters": {"PipelineParameterList": [{"Name": "X", "Value": "$.detail.nope"}]}}
    with pytest.raises(LookupError, match=r"\$\.detail\.nope"):
        targets.pipeline_parameters(missing, EVENT)


def test_target_kinds() -> None:
    assert targets.kind_of("arn:aws:sagemaker:us-east-1:123456789012:pipeline/deploy") == "pipeline"
    assert targets.kind_of("arn:aws:logs:us-east-1:123456789012:log-group:/aws/events/x:*") == "log-group"
    with pytest.raises(targets.UnsupportedTarget, match="SageMaker pipeline"):
        targets.kind_of("arn:aws:lambda:us-east-1:123456789012:function:f")
