"""SageMaker Search's expressions over records: paths, operators, nested filters, sub-expressions."""

from __future__ import annotations

from typing import Any

import pytest

from opensage.errors import ServiceError
from opensage.providers.sagemaker.search import lookup, matches

JOB: dict[str, Any] = {
    "TrainingJobName": "xgb-churn-1",
    "TrainingJobStatus": "Completed",
    "CreationTime": 1_700_000_000.0,
    "HyperParameters": {"eta": "0.3", "max.depth": "6"},
    "FinalMetricDataList": [{"MetricName": "validation:auc", "Value": 0.91}],
    "InputDataConfig": [{"ChannelName": "train", "ContentType": "text/csv"}, {"ChannelName": "validation"}],
    "Tags": [{"Key": "team", "Value": "risk"}],
    "EnableNetworkIsolation": False,
}


def _f(name: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"Name": name, "Operator": op, **({"Value": value} if value is not None else {})}


def test_paths_reach_tags_metrics_and_keys_with_dots() -> None:
    assert lookup(JOB, "Tags.team") == "risk"
    assert lookup(JOB, "Metrics.validation:auc") == 0.91
    assert lookup(JOB, "HyperParameters.max.depth") == "6"


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (_f("TrainingJobName", "Equals", "xgb-churn-1"), True),
        (_f("TrainingJobName", "Contains", "CHURN"), True),
        (_f("TrainingJobName", "NotEquals", "xgb-churn-1"), False),
        (_f("Metrics.validation:auc", "GreaterThan", "0.9"), True),
        (_f("Metrics.validation:auc", "LessThanOrEqualTo", "0.5"), False),
        (_f("HyperParameters.eta", "Equals", "0.3"), True),
        (_f("CreationTime", "GreaterThan", "2023-01-01T00:00:00Z"), True),
        (_f("CreationTime", "LessThan", "2023-01-01T00:00:00Z"), False),
        (_f("TrainingJobStatus", "In", "Failed, Completed"), True),
        (_f("Tags.owner", "Exists"), False),
        (_f("Tags.owner", "NotExists"), True),
        (_f("EnableNetworkIsolation", "Equals", "false"), True),
        (_f("InputDataConfig.ChannelName", "Equals", "validation"), True),
    ],
)
def test_operators(flt: dict[str, Any], expected: bool) -> None:
    assert matches(JOB, {"Filters": [flt]}) is expected


def test_nested_filters_need_one_element_matching_all_of_them() -> None:
    nested = {
        "NestedPropertyName": "InputDataConfig",
        "Filters": [
            _f("InputDataConfig.ChannelName", "Equals", "train"),
            _f("InputDataConfig.ContentType", "Equals", "text/csv"),
        ],
    }
    assert matches(JOB, {"NestedFilters": [nested]})
    nested["Filters"][0]["Value"] = "validation"
    assert not matches(JOB, {"NestedFilters": [nested]})


def test_sub_expressions_and_or() -> None:
    no, yes = _f("TrainingJobStatus", "Equals", "Failed"), _f("Tags.team", "Equals", "risk")
    assert not matches(JOB, {"Filters": [no, yes]})
    assert matches(JOB, {"Filters": [no, yes], "Operator": "Or"})
    assert matches(JOB, {"SubExpressions": [{"Filters": [no]}, {"Filters": [yes]}], "Operator": "Or"})
    assert not matches(JOB, {"SubExpressions": [{"Filters": [no]}, {"Filters": [yes]}]})


def test_a_time_that_is_not_one_is_refused() -> None:
    with pytest.raises(ServiceError, match="ISO 8601"):
        matches(JOB, {"Filters": [_f("CreationTime", "GreaterThan", "yesterday")]})
