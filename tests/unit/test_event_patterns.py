"""EventBridge event patterns: what is accepted, and which events match."""

from __future__ import annotations

from typing import Any

import pytest

from opensage.events.patterns import InvalidPattern, matches, parse

EVENT: dict[str, Any] = {
    "source": "aws.sagemaker",
    "detail-type": "SageMaker Model Package State Change",
    "resources": ["arn:aws:sagemaker:us-east-1:123456789012:model-package/churn/3"],
    "detail": {
        "ModelPackageGroupName": "churn",
        "ModelPackageVersion": 3,
        "ModelApprovalStatus": "Approved",
        "CustomerMetadataProperties": {"stage": "prod"},
        "ipAddress": "10.0.0.7",
        "tags": ["a", "b"],
    },
}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ({"source": ["aws.sagemaker"]}, True),
        ({"source": ["aws.ec2"]}, False),
        ({"source": ["aws.sagemaker"], "detail": {"ModelApprovalStatus": ["Approved"]}}, True),
        ({"detail": {"ModelApprovalStatus": ["Rejected", "PendingManualApproval"]}}, False),
        ({"detail": {"ModelPackageGroupName": [{"prefix": "ch"}]}}, True),
        ({"detail": {"ModelPackageGroupName": [{"prefix": {"equals-ignore-case": "CH"}}]}}, True),
        ({"detail": {"ModelPackageGroupName": [{"suffix": "urn"}]}}, True),
        ({"detail": {"ModelPackageGroupName": [{"equals-ignore-case": "CHURN"}]}}, True),
        ({"detail": {"ModelPackageGroupName": [{"wildcard": "c*n"}]}}, True),
        ({"detail": {"ModelPackageGroupName": [{"wildcard": "c*x"}]}}, False),
        ({"detail": {"ModelApprovalStatus": [{"anything-but": "Rejected"}]}}, True),
        ({"detail": {"ModelApprovalStatus": [{"anything-but": ["Approved", "Rejected"]}]}}, False),
        ({"detail": {"ModelApprovalStatus": [{"anything-but": {"prefix": "Pend"}}]}}, True),
        ({"detail": {"ModelPackageVersion": [{"numeric": [">", 2, "<=", 3]}]}}, True),
        ({"detail": {"ModelPackageVersion": [{"numeric": [">=", 4]}]}}, False),
        ({"detail": {"ModelPackageVersion": [3.0]}}, True),
        ({"detail": {"ApprovalDescription": [{"exists": False}]}}, True),
        ({"detail": {"ApprovalDescription": [{"exists": True}]}}, False),
        ({"detail": {"ModelApprovalStatus": [{"exists": True}]}}, True),
        ({"detail": {"CustomerMetadataProperties": {"stage": ["prod"]}}}, True),
        ({"detail": {"Missing": {"inner": [{"exists": False}]}}}, True),
        ({"detail": {"Missing": {"inner": ["x"]}}}, False),
        ({"detail": {"tags": ["b"]}}, True),
        ({"detail": {"ipAddress": [{"cidr": "10.0.0.0/24"}]}}, True),
        ({"detail": {"ipAddress": [{"cidr": "10.1.0.0/24"}]}}, False),
        ({"resources": [{"prefix": "arn:aws:sagemaker:us-east-1:123456789012:model-package/churn/"}]}, True),
        ({"$or": [{"source": ["aws.ec2"]}, {"detail": {"ModelPackageVersion": [3]}}]}, True),
        ({"$or": [{"source": ["aws.ec2"]}, {"detail": {"ModelPackageVersion": [4]}}]}, False),
    ],
)
def test_matching(pattern: dict[str, Any], expected: bool) -> None:
    import json

    assert matches(parse(json.dumps(pattern)), EVENT) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "non-empty JSON object"),
        ('{"source": "aws.sagemaker"}', "must be an array"),
        ('{"source": []}', "Empty arrays"),
        ('{"source": [{"begins": "x"}]}', "Unrecognized match type"),
        ('{"detail": {"v": [{"numeric": [">", "one"]}]}}', "numeric"),
        ('{"detail": {"v": [{"exists": "yes"}]}}', "true or false"),
        ('{"detail": {"ip": [{"cidr": "10.0.0.0/99"}]}}', "CIDR"),
        ('{"$or": [{"source": ["a"]}]}', "at least two"),
    ],
)
def test_invalid_patterns_are_refused_with_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidPattern, match=message):
        parse(text)
