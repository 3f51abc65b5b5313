"""Pipeline definitions: parsing and validation, expressions, the scheduler's plan, retry and cache policies."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from opensage.pipelines import definition as pd
from opensage.pipelines import expressions as ex
from opensage.pipelines import policies

SAMPLE = Path(__file__).parent / "sample_pipeline_definition.json"  # as SDK 2.257 emits it


def _doc(steps: list[dict[str, Any]], parameters: list[dict[str, Any]] | None = None) -> str:
    return json.dumps({"Version": "2020-12-01", "Parameters": parameters or [], "Steps": steps})


def _step(name: str, **extra: Any) -> dict[str, Any]:
    return {"Name": name, "Type": "Training", "Arguments": extra.pop("Arguments", {}), **extra}


@pytest.mark.skipif(not SAMPLE.exists(), reason="the SDK's sample definition is not on this machine")
def test_the_sdks_sample_definition_parses_into_its_dag() -> None:
    d = pd.parse(SAMPLE.read_text())
    assert d.parameters["MseThreshold"].default == 6.0
    assert d.upstream["Train"] == {"Preprocess"}
    assert d.upstream["Evaluate"] == {"Train"}
    assert d.upstream["CheckMse"] == {"Evaluate"}
    assert d.steps["MseTooHigh"].condition == "CheckMse" and d.steps["MseTooHigh"].branch is True
    assert d.order.index("Preprocess") < d.order.index("Train") < d.order.index("CheckMse")


@pytest.mark.parametrize(
    ("steps", "parameters", "message"),
    [
        ([_step("A", DependsOn=["B"])], None, "Step 'A': DependsOn names a step 'B' that does not exist"),
        ([_step("A", Arguments={"X": {"Get": "Steps.B.ModelArtifacts"}})], None, "no step 'B'"),
        ([_step("A", Arguments={"X": {"Get": "Parameters.P"}})], None, "no parameter 'P'"),
        ([_step("A", Arguments={"X": {"Get": "Execution.Nope"}})], None, "no such execution variable"),
        ([_step("A", DependsOn=["B"]), _step("B", DependsOn=["A"])], None, "cycle"),
        ([_step("A"), _step("A")], None, "used twice"),
        ([{"Name": "A", "Type": "Bogus"}], None, "unknown step Type 'Bogus'"),
        ([{"Name": "A", "Type": "Lambda"}], None, "Step 'A' is of type Lambda: AWS Lambda is not available"),
        ([], None, "non-empty list of Steps"),
        ([_step("A", CacheConfig={"Enabled": True, "ExpireAfter": "30d"})], None, "Step 'A': CacheConfig.ExpireAfter"),
        ([_step("A")], [{"Name": "P", "Type": "Integer", "DefaultValue": "x"}], "Parameter 'P': DefaultValue"),
        (
            [
                {
                    "Name": "C",
                    "Type": "Condition",
                    "Arguments": {
                        "Conditions": [
                            {
                                "Type": "Not",
                                "Condition": {
                                    "Type": "Equals",
                                    "LeftValue": {"Get": "Parameters.P"},
                                    "RightValue": True,
                                },
                            }
                        ],
                    },
                }
            ],
            [{"Name": "P", "Type": "Float", "DefaultValue": 1.0}],
            "Step 'C': Conditions[0].Condition (Equals) compares LeftValue of type Number with RightValue of type Bool",
        ),
        (
            [
                _step(
                    "E",
                    Arguments={"X": {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.T.PropertyFiles.R"}, "Path": "a"}}},
                ),
                _step("T"),
            ],
            None,
            "step 'T' declares no such property file",
        ),
    ],
)
def test_bad_definitions_are_refused_saying_where(steps: Any, parameters: Any, message: str) -> None:
    with pytest.raises(pd.InvalidDefinition) as err:
        pd.parse(_doc(steps, parameters))
    assert message in str(err.value)


def test_paths_and_lists_by_name_or_position() -> None:
    assert ex.tokens("A.B['train'].C[0].D") == ["A", "B", "train", "C", 0, "D"]
    desc = {
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "train", "S3Output": {"S3Uri": "s3://b/t"}}]},
        "FinalMetricDataList": [{"MetricName": "validation:auc", "Value": 0.9}],
    }
    scope = ex.Scope({"P": 3}, {"PipelineExecutionId": "abc"}, lambda step: desc)
    get = {"Get": "Steps.S.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"}
    assert ex.evaluate(get, scope) == "s3://b/t"
    assert ex.evaluate({"Get": "Steps.S.FinalMetricDataList['validation:auc'].Value"}, scope) == 0.9
    assert ex.evaluate({"Get": "Steps.S.FinalMetricDataList[0].Value"}, scope) == 0.9
    join = {
        "Std:Join": {"On": "/", "Values": ["s3:/", {"Get": "Execution.PipelineExecutionId"}, {"Get": "Parameters.P"}]}
    }
    assert ex.evaluate(join, scope) == "s3://abc/3"
    with pytest.raises(ex.ExpressionError, match="no element named 'x'"):
        ex.evaluate({"Get": "Steps.S.ProcessingOutputConfig.Outputs['x']"}, scope)


def test_json_get_over_a_property_file() -> None:
    scope = ex.Scope({}, {}, lambda s: {}, property_file=lambda s, n: {"m": {"mse": [{"v": 2.5}]}})
    get = {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.E.PropertyFiles.R"}, "Path": "m.mse[0].v"}}
    assert ex.evaluate(get, scope) == 2.5


@pytest.mark.parametrize(
    ("cond", "outcome"),
    [
        ({"Type": "GreaterThanOrEqualTo", "LeftValue": 6.5, "RightValue": 6}, True),
        ({"Type": "LessThan", "LeftValue": "5", "RightValue": 6.0}, True),  # a numeric string meets a number
        ({"Type": "Equals", "LeftValue": "a", "RightValue": "a"}, True),
        ({"Type": "Equals", "LeftValue": True, "RightValue": "false"}, False),
        ({"Type": "In", "QueryValue": 2, "Values": [1, 2.0]}, True),
        ({"Type": "Not", "Condition": {"Type": "LessThanOrEqualTo", "LeftValue": 1, "RightValue": 2}}, False),
        (
            {
                "Type": "Or",
                "Conditions": [
                    {"Type": "GreaterThan", "LeftValue": 1, "RightValue": 2},
                    {"Type": "Equals", "LeftValue": "x", "RightValue": "x"},
                ],
            },
            True,
        ),
    ],
)
def test_conditions(cond: dict[str, Any], outcome: bool) -> None:
    assert ex.condition(cond, ex.Scope({}, {}, lambda s: {})) is outcome


def test_conditions_refuse_what_cannot_be_compared() -> None:
    with pytest.raises(ex.ExpressionError, match="cannot compare"):
        ex.condition({"Type": "GreaterThan", "LeftValue": "abc", "RightValue": 1}, ex.Scope({}, {}, lambda s: {}))


def test_parameters_arrive_as_strings_and_become_their_type() -> None:
    assert ex.coerce_parameter("Integer", "3", "n") == 3
    assert ex.coerce_parameter("Float", "0.5", "f") == 0.5
    assert ex.coerce_parameter("Boolean", "True", "b") is True
    with pytest.raises(ex.ExpressionError, match="'3.5' is not a valid Integer"):
        ex.coerce_parameter("Integer", "3.5", "n")


def test_plan_runs_what_is_ready_and_skips_the_branch_not_taken() -> None:
    cond = {
        "Name": "C",
        "Type": "Condition",
        "Arguments": {
            "Conditions": [{"Type": "Equals", "LeftValue": 1, "RightValue": 1}],
            "IfSteps": [_step("Yes")],
            "ElseSteps": [_step("No")],
        },
    }
    d = pd.parse(_doc([_step("A"), _step("B"), {**cond, "DependsOn": ["A"]}, _step("Last", DependsOn=["No"])]))
    assert pd.plan(d, {}, {}) == (["A", "B"], set())
    assert pd.plan(d, {"A": "Succeeded", "B": "Executing"}, {})[0] == ["C"]
    ready, never = pd.plan(d, {"A": "Succeeded", "B": "Succeeded", "C": "Succeeded"}, {"C": True})
    assert ready == ["Yes"] and never == {"No", "Last"}
    ready, never = pd.plan(d, {"A": "Failed"}, {})
    assert "C" in never and ready == ["B"]


def test_retry_policy_backoff_and_limits() -> None:
    p = [{"ExceptionType": [policies.RESOURCE_LIMIT], "IntervalSeconds": 2, "BackoffRate": 3.0, "MaxAttempts": 2}]
    assert policies.next_retry(p, policies.RESOURCE_LIMIT, 1, 0) == 2.0
    assert policies.next_retry(p, policies.RESOURCE_LIMIT, 2, 2) == 6.0
    assert policies.next_retry(p, policies.RESOURCE_LIMIT, 3, 8) is None  # two retries made
    assert policies.next_retry(p, policies.INTERNAL, 1, 0) is None
    assert policies.next_retry(p, None, 1, 0) is None
    expiring = [{"ExceptionType": [policies.INTERNAL], "IntervalSeconds": 30, "ExpireAfterMin": 1}]
    assert policies.next_retry(expiring, policies.INTERNAL, 1, 0) == 30.0
    assert policies.next_retry(expiring, policies.INTERNAL, 2, 30) is None  # 30 + 60 s is past a minute
    assert policies.classify("ResourceLimitExceeded", "") == policies.RESOURCE_LIMIT
    assert policies.classify(None, "InternalServerError: boom") == policies.INTERNAL
    assert policies.classify(None, "AlgorithmError: exit 1") is None


def test_cache_keys_ignore_what_names_the_execution() -> None:
    a = {"AppSpecification": {"ImageUri": "i"}, "ProcessingOutputConfig": {"Outputs": [{"S3Uri": "s3://b/run-1"}]}}
    b = {"AppSpecification": {"ImageUri": "i"}, "ProcessingOutputConfig": {"Outputs": [{"S3Uri": "s3://b/run-2"}]}}
    assert policies.cache_key("Processing", a) == policies.cache_key("Processing", b)
    c = {**a, "Environment": {"X": "1"}}
    assert policies.cache_key("Processing", a) != policies.cache_key("Processing", c)
    assert policies.duration("P30D") == dt.timedelta(days=30)
    assert policies.duration("PT1H30M") == dt.timedelta(hours=1, minutes=30)
    with pytest.raises(ValueError):
        policies.duration("30 days")
