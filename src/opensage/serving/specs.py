"""Typed specs of what endpoints serve: an endpoint config's production variants, and an endpoint.

Built once from a validated request (``CreateEndpointConfig``, ``CreateEndpoint``), with AWS's
defaults filled in; the endpoint controller builds fleets from them, and the platform's own
creators (a pipeline's deploy step, a tuning job's "deploy best") make them without a wire request.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opensage.states import EndpointStatus
from opensage.timestamps import epoch, jsonable


@dataclass(frozen=True, slots=True)
class VariantSpec:
    """One production variant: which model, on which instances, with what share of the traffic."""

    name: str
    model_name: str
    instance_type: str
    initial_count: int
    initial_weight: float
    serverless: Mapping[str, Any] | None = None

    @classmethod
    def from_document(cls, variant: Mapping[str, Any]) -> VariantSpec:
        return cls(
            variant["VariantName"],
            variant["ModelName"],
            variant.get("InstanceType") or "local",
            _initial_count(variant),
            float(variant.get("InitialVariantWeight", 1.0)),
            variant.get("ServerlessConfig"),
        )


def _initial_count(variant: Mapping[str, Any]) -> int:
    """A variant's first instance count; a serverless one starts with its ProvisionedConcurrency (or none)."""
    serverless = variant.get("ServerlessConfig")
    if serverless is not None:
        return int(serverless.get("ProvisionedConcurrency") or 0)
    return int(variant.get("InitialInstanceCount", 1))


@dataclass(frozen=True, slots=True)
class EndpointConfigSpec:
    name: str
    variants: tuple[VariantSpec, ...]
    document: Mapping[str, Any]

    @classmethod
    def from_request(cls, request: Mapping[str, Any]) -> EndpointConfigSpec:
        """The spec of a CreateEndpointConfig request (without ``Tags``), with each variant's defaults."""
        document = jsonable({k: v for k, v in request.items() if k != "Tags"})
        for variant in document["ProductionVariants"]:
            variant.setdefault("InitialVariantWeight", 1.0)
            if variant.get("ServerlessConfig") is None:
                variant.setdefault("InitialInstanceCount", 1)
        return cls.from_document(document)

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> EndpointConfigSpec:
        """The spec of a stored endpoint config."""
        variants = tuple(VariantSpec.from_document(v) for v in document["ProductionVariants"])
        return cls(document["EndpointConfigName"], variants, document)

    def initial_description(self, arn: str, now: dt.datetime) -> dict[str, Any]:
        """DescribeEndpointConfig: the request plus its ARN and creation time."""
        return {**copy.deepcopy(dict(self.document)), "EndpointConfigArn": arn, "CreationTime": epoch(now)}


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    name: str
    config_name: str

    @classmethod
    def from_request(cls, request: Mapping[str, Any]) -> EndpointSpec:
        return cls(request["EndpointName"], request["EndpointConfigName"])

    def initial_description(self, arn: str, now: dt.datetime) -> dict[str, Any]:
        """DescribeEndpoint right after CreateEndpoint (Creating)."""
        return {
            "EndpointName": self.name,
            "EndpointArn": arn,
            "EndpointConfigName": self.config_name,
            "EndpointStatus": EndpointStatus.CREATING,
            "CreationTime": epoch(now),
            "LastModifiedTime": epoch(now),
        }
