"""Labels the console derives from documents: an endpoint's type (real-time, async, serverless, multi-model)
from its config and models, and the host a log stream belongs to."""

from __future__ import annotations

from typing import Any

from opensage.console.endpoints import endpoint_types
from opensage.console.logs import host_of

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def _variant(model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"VariantName": "v", "ModelName": model, **extra}


def _model(**container: Any) -> dict[str, Any]:
    return {"ModelName": "m", "PrimaryContainer": {"Image": IMAGE, **container}}


def test_a_plain_config_is_real_time() -> None:
    config = {"ProductionVariants": [_variant(InstanceType="ml.m5.large", InitialInstanceCount=1)]}
    assert endpoint_types(config, {"m": _model()}) == ["real-time"]
    assert endpoint_types(config, {}) == ["real-time"]  # its model deleted meanwhile
    assert endpoint_types(config, {"m": _model(Mode="SingleModel")}) == ["real-time"]


def test_async_serverless_and_multi_model() -> None:
    async_config = {
        "ProductionVariants": [_variant()],
        "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": "s3://b/out/"}},
    }
    assert endpoint_types(async_config, {"m": _model()}) == ["async"]
    serverless = {"ProductionVariants": [_variant(ServerlessConfig={"MemorySizeInMB": 2048, "MaxConcurrency": 1})]}
    assert endpoint_types(serverless, {"m": _model()}) == ["serverless"]
    two = {"ProductionVariants": [_variant("a"), {**_variant("b"), "VariantName": "w"}]}
    multi = {"ModelName": "b", "Containers": [{"Image": IMAGE}, {"Image": IMAGE, "Mode": "MultiModel"}]}
    assert endpoint_types(two, {"a": _model(), "b": multi}) == ["multi-model"]
    both = {**async_config, "ProductionVariants": [_variant()]}
    assert endpoint_types(both, {"m": _model(Mode="MultiModel")}) == ["async", "multi-model"]


def test_log_stream_hosts() -> None:
    assert host_of("job/algo-2-1796196402") == "algo-2"
    assert host_of("job/AllTraffic-1") == "AllTraffic-1"
    assert host_of("job/algo-1") == "algo-1"
