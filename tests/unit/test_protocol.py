"""Protocol round trips: requests serialized by botocore parse back; our responses parse in botocore."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import parse_qs, parse_qsl, urlsplit

import botocore.session
import pytest
from botocore.awsrequest import HeadersDict
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from opensage.aws import parser, serializer
from opensage.aws.specs import load_specs
from opensage.errors import ServiceError

SESSION = botocore.session.get_session()


def _model(service: str):  # type: ignore[no-untyped-def]
    return SESSION.get_service_model(service)


def test_json_request_round_trip() -> None:
    op = _model("sagemaker").operation_model("CreateTrainingJob")
    params = {
        "TrainingJobName": "job-1",
        "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::123456789012:role/R",
        "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
        "HyperParameters": {"num_round": "10"},
        "Tags": [{"Key": "k", "Value": "v"}],
    }
    request = create_serializer("json").serialize_to_request(params, op)
    assert parser.parse_json(op, request["body"]) == params


def test_json_timestamps_parse_to_datetimes() -> None:
    op = _model("sagemaker").operation_model("ListTrainingJobs")
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    request = create_serializer("json").serialize_to_request({"CreationTimeAfter": when}, op)
    assert parser.parse_json(op, request["body"])["CreationTimeAfter"] == when


def test_json_response_parses_in_botocore() -> None:
    op = _model("sagemaker").operation_model("ListTrainingJobs")
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    output = {
        "TrainingJobSummaries": [
            {
                "TrainingJobName": "a",
                "TrainingJobArn": "arn",
                "CreationTime": when,
                "TrainingJobStatus": "Completed",
                "Internal": "dropped",
            }
        ],
        "NextToken": "t",
    }
    status, headers, body = serializer.serialize_json(op, output, "rid")
    parsed = create_parser("json").parse({"headers": headers, "status_code": status, "body": body}, op.output_shape)
    summary = parsed["TrainingJobSummaries"][0]
    assert summary["CreationTime"] == when and "Internal" not in summary
    assert parsed["NextToken"] == "t" and parsed["ResponseMetadata"]["RequestId"] == "rid"


def test_json_error_parses_in_botocore() -> None:
    err = ServiceError("ResourceInUse", "Training job x already exists.")
    status, headers, body = serializer.serialize_json_error(err, "rid")
    parsed = create_parser("json").parse({"headers": headers, "status_code": status, "body": body}, None)
    assert parsed["Error"] == {"Code": "ResourceInUse", "Message": "Training job x already exists."}
    assert json.loads(body)["__type"] == "ResourceInUse"


def test_query_request_round_trip_with_lists_and_maps() -> None:
    op = _model("iam").operation_model("CreateRole")
    params = {
        "RoleName": "R",
        "AssumeRolePolicyDocument": "{}",
        "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}],
        "MaxSessionDuration": 7200,
    }
    request = create_serializer("query").serialize_to_request(params, op)
    form = dict(
        parse_qsl(
            request["body"]
            if isinstance(request["body"], str)
            else "&".join(f"{k}={v}" for k, v in request["body"].items())
        )
    )
    assert parser.parse_query(op, form) == params


def test_query_response_and_error_parse_in_botocore() -> None:
    op = _model("iam").operation_model("GetRole")
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    role = {
        "Path": "/",
        "RoleName": "R",
        "RoleId": "AROA1",
        "Arn": "arn:aws:iam::1:role/R",
        "CreateDate": when,
        "Tags": [{"Key": "k", "Value": "v & <w>"}],
    }
    status, headers, body = serializer.serialize_query(op, {"Role": role}, "rid")
    parsed = create_parser("query").parse({"headers": headers, "status_code": status, "body": body}, op.output_shape)
    assert parsed["Role"]["CreateDate"] == when and parsed["Role"]["Tags"][0]["Value"] == "v & <w>"
    status, headers, body = serializer.serialize_query_error(ServiceError("NoSuchEntity", "no <role>", 404), "rid")
    parsed = create_parser("query").parse({"headers": headers, "status_code": status, "body": body}, None)
    assert parsed["Error"]["Code"] == "NoSuchEntity" and parsed["Error"]["Message"] == "no <role>"


def test_rest_json_runtime_request_and_response() -> None:
    spec = load_specs().get("sagemaker-runtime")
    op = spec.model.operation_model("InvokeEndpoint")
    params = {
        "EndpointName": "my-ep",
        "Body": b"1,2,3",
        "ContentType": "text/csv",
        "Accept": "text/csv",
        "TargetVariant": "v1",
        "CustomAttributes": "c=1",
    }
    request = create_serializer("rest-json").serialize_to_request(params, op)
    url = urlsplit(request["url_path"])
    match = spec.match_rest("POST", url.path, parse_qs(url.query))
    assert match == ("InvokeEndpoint", {"EndpointName": "my-ep"})
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert parser.parse_rest_json(op, match[1], {}, headers, request["body"]) == params
    out = {"Body": b"0.5", "ContentType": "text/csv", "InvokedProductionVariant": "v1"}
    status, headers, body = serializer.serialize_rest_json(op, out, "rid")
    parsed = create_parser("rest-json").parse(
        {"headers": HeadersDict(headers), "status_code": status, "body": body}, op.output_shape
    )
    assert parsed["Body"] in (b"0.5", "0.5") and parsed["InvokedProductionVariant"] == "v1"


def test_rest_json_model_error_carries_its_fields() -> None:
    op = load_specs().get("sagemaker-runtime").model.operation_model("InvokeEndpoint")
    err = ServiceError(
        "ModelError",
        "Received client error (400) from model",
        424,
        fields={"OriginalStatusCode": 400, "OriginalMessage": "bad input", "LogStreamArn": "arn"},
    )
    status, headers, body = serializer.serialize_rest_json_error(err, "rid")
    parsed = create_parser("rest-json").parse(
        {"headers": headers, "status_code": status, "body": body}, op.output_shape
    )
    assert parsed["Error"]["Code"] == "ModelError"
    assert json.loads(body)["OriginalStatusCode"] == 400


@pytest.mark.parametrize(
    "path", ["/endpoints/a/invocations", "/endpoints/a/async-invocations", "/endpoints/a/invocations-response-stream"]
)
def test_runtime_routes(path: str) -> None:
    assert load_specs().get("sagemaker-runtime").match_rest("POST", path, {}) is not None
