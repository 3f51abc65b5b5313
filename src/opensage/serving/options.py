"""The inference options of an endpoint config: checks at CreateEndpointConfig, and what DescribeEndpoint adds.

``AsyncInferenceConfig`` (:mod:`~opensage.serving.asyncinference`) and a variant's
``ServerlessConfig`` (:mod:`~opensage.serving.serverless`) are kept in the endpoint config as given;
DescribeEndpoint shows the endpoint's AsyncInferenceConfig, and for a serverless variant its
Current/DesiredServerlessConfig in place of instance counts, as AWS does.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from opensage.serving import asyncinference

MEMORY_SIZES = tuple(range(1024, 6145, 1024))


def serverless_problem(variant: Mapping[str, Any]) -> str | None:
    """What is wrong with a production variant's ServerlessConfig (None: nothing, or it has none)."""
    config = variant.get("ServerlessConfig")
    if config is None:
        return None
    name = variant.get("VariantName")
    memory = int(config.get("MemorySizeInMB", 0))
    if memory not in MEMORY_SIZES:
        sizes = ", ".join(str(m) for m in MEMORY_SIZES)
        return f"Variant {name}: ServerlessConfig.MemorySizeInMB must be one of {sizes} (1 GB steps); got {memory}."
    provisioned = config.get("ProvisionedConcurrency")
    if provisioned is not None and int(provisioned) > int(config["MaxConcurrency"]):
        return (
            f"Variant {name}: ServerlessConfig.ProvisionedConcurrency ({provisioned}) must not be greater than "
            f"MaxConcurrency ({config['MaxConcurrency']})."
        )
    if variant.get("InstanceType") or variant.get("InitialInstanceCount") is not None:
        return (
            f"Variant {name} has a ServerlessConfig: leave out InstanceType and InitialInstanceCount "
            "(a serverless variant has no instances of its own)."
        )
    return None


def config_problem(request: Mapping[str, Any]) -> str | None:
    """What is wrong with a CreateEndpointConfig request's inference options (None: nothing)."""
    variants = request.get("ProductionVariants") or []
    for variant in variants:
        problem = serverless_problem(variant)
        if problem:
            return problem
    if request.get("AsyncInferenceConfig") is not None:
        if any(v.get("ServerlessConfig") is not None for v in variants):
            return "An endpoint config with an AsyncInferenceConfig cannot have serverless variants; give InstanceType."
        return asyncinference.validate(request["AsyncInferenceConfig"])
    return None


def describe(answer: dict[str, Any], config: Mapping[str, Any] | None) -> None:
    """Add to DescribeEndpoint's ``answer`` what the endpoint config ``config`` says of its options."""
    if not config:
        return
    if config.get("AsyncInferenceConfig") is not None:
        answer["AsyncInferenceConfig"] = copy.deepcopy(config["AsyncInferenceConfig"])
    serverless = {
        v["VariantName"]: v["ServerlessConfig"]
        for v in config.get("ProductionVariants") or []
        if v.get("ServerlessConfig") is not None
    }
    for variant in answer.get("ProductionVariants") or []:
        if variant.get("VariantName") in serverless:
            settings = serverless[variant["VariantName"]]
            variant.pop("CurrentInstanceCount", None)
            variant.pop("DesiredInstanceCount", None)
            variant["CurrentServerlessConfig"] = copy.deepcopy(settings)
            variant["DesiredServerlessConfig"] = copy.deepcopy(settings)
