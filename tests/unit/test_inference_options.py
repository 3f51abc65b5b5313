"""Unit tests of the inference options' pure parts: result keys, config checks, described variants, counts."""

from __future__ import annotations

from typing import Any

import pytest

from opensage.serving import options
from opensage.serving.asyncinference import AsyncSettings
from opensage.serving.serverless import wanted_servers
from opensage.serving.specs import VariantSpec


def test_async_result_keys_follow_the_output_and_failure_paths() -> None:
    settings = AsyncSettings.of(
        {"OutputConfig": {"S3OutputPath": "s3://b/out/", "S3FailurePath": "s3://b/failed"},
         "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 3}}
    )
    assert settings is not None and settings.per_instance == 3
    assert settings.locations("id-1") == ("s3://b/out/id-1.out", "s3://b/failed/id-1-error.out")
    named = settings.locations("id-1", "day/1", "mine.out")
    assert named == ("s3://b/out/day/1/mine.out", "s3://b/failed/mine-error.out")
    plain = AsyncSettings.of({"OutputConfig": {"S3OutputPath": "s3://b/out"}})
    assert plain is not None and plain.per_instance == 4 and plain.failure_path is None
    assert plain.locations("x")[1] == "s3://b/out/x-error.out"  # errors beside the outputs
    assert AsyncSettings.of(None) is None


def _variant(**config: Any) -> dict[str, Any]:
    return {"VariantName": "v", "ModelName": "m", "ServerlessConfig": {"MaxConcurrency": 2, **config}}


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"ProductionVariants": [_variant(MemorySizeInMB=1500)]}, "1 GB steps"),
        ({"ProductionVariants": [_variant(MemorySizeInMB=1024, ProvisionedConcurrency=3)]}, "must not be greater"),
        ({"ProductionVariants": [{**_variant(MemorySizeInMB=1024), "InstanceType": "ml.m5.large"}]}, "leave out"),
        (
            {"ProductionVariants": [_variant(MemorySizeInMB=1024)],
             "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": "s3://b/o"}}},
            "cannot have serverless variants",
        ),
        (
            {"ProductionVariants": [{"VariantName": "v", "InstanceType": "ml.m5.large"}],
             "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": "s3://b/o", "S3FailurePath": "https://x/y"}}},
            "S3FailurePath must be an S3 URI",
        ),
    ],
)
def test_bad_inference_options_are_named(request_: dict[str, Any], message: str) -> None:
    problem = options.config_problem(request_)
    assert problem is not None and message in problem


def test_good_inference_options_pass() -> None:
    serverless = {"ProductionVariants": [_variant(MemorySizeInMB=6144, ProvisionedConcurrency=2)]}
    assert options.config_problem(serverless) is None
    assert options.config_problem({"ProductionVariants": [{"VariantName": "v", "InstanceType": "ml.m5.large"}]}) is None


def test_describe_shows_serverless_configs_instead_of_counts_and_the_async_config() -> None:
    config = {"ProductionVariants": [_variant(MemorySizeInMB=2048)], "AsyncInferenceConfig": {"OutputConfig": {}}}
    answer = {"ProductionVariants": [{"VariantName": "v", "CurrentInstanceCount": 0, "DesiredInstanceCount": 0}]}
    options.describe(answer, config)
    (variant,) = answer["ProductionVariants"]
    assert "CurrentInstanceCount" not in variant
    assert variant["CurrentServerlessConfig"] == {"MaxConcurrency": 2, "MemorySizeInMB": 2048}
    assert variant["DesiredServerlessConfig"] == variant["CurrentServerlessConfig"]
    assert answer["AsyncInferenceConfig"] == {"OutputConfig": {}}


def test_a_serverless_variant_starts_with_its_provisioned_concurrency() -> None:
    assert VariantSpec.from_document(_variant(MemorySizeInMB=1024)).initial_count == 0
    assert VariantSpec.from_document(_variant(MemorySizeInMB=1024, ProvisionedConcurrency=2)).initial_count == 2
    assert VariantSpec.from_document({"VariantName": "v", "ModelName": "m"}).initial_count == 1


@pytest.mark.parametrize(
    ("max_concurrency", "provisioned", "busiest", "wanted"),
    [(5, 0, 0, 0), (5, 0, 3, 3), (5, 0, 9, 5), (5, 2, 0, 2), (5, 2, 4, 4)],
)
def test_a_serverless_variant_keeps_its_recent_peak(
    max_concurrency: int, provisioned: int, busiest: int, wanted: int
) -> None:
    assert wanted_servers(max_concurrency, provisioned, busiest) == wanted
