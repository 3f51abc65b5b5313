"""The service models we serve, loaded from botocore's own ``service-2.json`` files.

A :class:`ServiceSpec` knows how to find an operation from what arrives on the wire: the
``X-Amz-Target`` prefix (AWS JSON), the ``Action``/``Version`` form fields (query) or the method
and path (REST-JSON).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from urllib.parse import unquote

import botocore.session
from botocore.model import OperationModel, ServiceModel

# botocore name -> the protocol we speak for it. CloudWatch lists several protocols; we serve its
# JSON and query forms. A service without a provider yet is still routed here, so that its calls
# answer NotImplemented naming the operation instead of leaving for AWS.
SERVED_SERVICES: dict[str, tuple[str, ...]] = {
    "sagemaker": ("json",),
    "sagemaker-runtime": ("rest-json",),
    "sts": ("query",),
    "iam": ("query",),
    "logs": ("json",),
    "kms": ("json",),
    "cloudwatch": ("smithy-rpc-v2-cbor", "json", "query"),
    "sagemaker-metrics": ("rest-json",),
    "application-autoscaling": ("json",),
    "events": ("json",),
    "scheduler": ("rest-json",),
    "ecr": ("json",),
    "cognito-idp": ("json",),
}

_LABEL = re.compile(r"\{([^}]+?)(\+?)\}")


@dataclass(frozen=True, slots=True)
class RestRoute:
    method: str
    regex: re.Pattern[str]
    operation: str
    literal_query: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class ServiceSpec:
    name: str
    model: ServiceModel
    protocols: tuple[str, ...]
    routes: list[RestRoute] = field(default_factory=list)

    @property
    def target_prefix(self) -> str | None:
        return self.model.metadata.get("targetPrefix")

    @property
    def api_version(self) -> str:
        return self.model.api_version

    @property
    def signing_name(self) -> str:
        return self.model.signing_name or self.model.endpoint_prefix

    def operation(self, name: str) -> OperationModel | None:
        if name not in self.model.operation_names:
            return None
        return self.model.operation_model(name)

    def match_rest(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[str, dict[str, str]] | None:
        """Find the REST operation for ``method path``; returns its name and the URI labels."""
        for route in self.routes:
            if route.method != method:
                continue
            m = route.regex.fullmatch(path)
            if m is None:
                continue
            if any(query.get(k, [None])[0] != v for k, v in route.literal_query):
                continue
            return route.operation, {k: unquote(v) for k, v in m.groupdict().items()}
        return None


def _compile_route(method: str, request_uri: str, operation: str) -> RestRoute:
    path, _, literal = request_uri.partition("?")
    pattern = ""
    pos = 0
    for m in _LABEL.finditer(path):
        pattern += re.escape(path[pos : m.start()])
        name = m.group(1)
        group = re.sub(r"\W", "_", name)
        pattern += f"(?P<{group}>.+)" if m.group(2) else f"(?P<{group}>[^/]+)"
        pos = m.end()
    pattern += re.escape(path[pos:])
    literal_query = tuple((k, v) for k, _, v in (part.partition("=") for part in literal.split("&") if part))
    return RestRoute(method, re.compile(pattern), operation, literal_query)


def _build(name: str, model: ServiceModel, protocols: Iterable[str]) -> ServiceSpec:
    spec = ServiceSpec(name, model, tuple(protocols))
    if "rest-json" in spec.protocols:
        for op_name in model.operation_names:
            http = model.operation_model(op_name).http
            spec.routes.append(_compile_route(http["method"], http["requestUri"], op_name))
        # Longer literal paths first so that "/a/{b}/c" is tried before "/a/{b+}".
        spec.routes.sort(key=lambda r: -len(r.regex.pattern))
    return spec


@dataclass(slots=True)
class Specs:
    """Every served service, with the indexes the router needs."""

    services: dict[str, ServiceSpec]
    by_target: dict[str, ServiceSpec]
    by_version: dict[str, list[ServiceSpec]]
    by_signing_name: dict[str, ServiceSpec]
    rest: list[ServiceSpec]  # REST services, in the order their paths are tried

    def get(self, name: str) -> ServiceSpec:
        return self.services[name]


@cache
def load_specs() -> Specs:
    """Load the served models once per process (they are read-only)."""
    session = botocore.session.get_session()
    services: dict[str, ServiceSpec] = {}
    for name, protocols in SERVED_SERVICES.items():
        services[name] = _build(name, session.get_service_model(name), protocols)
    by_target = {s.target_prefix: s for s in services.values() if s.target_prefix}
    by_version: dict[str, list[ServiceSpec]] = {}
    for s in services.values():
        if "query" in s.protocols:
            by_version.setdefault(s.api_version, []).append(s)
    by_signing: dict[str, ServiceSpec] = {}
    for s in services.values():  # SageMaker Runtime and Metrics sign as "sagemaker" too: SageMaker keeps the name
        by_signing.setdefault(s.signing_name, s)
    by_signing["monitoring"] = services["cloudwatch"]
    rest = [s for s in services.values() if "rest-json" in s.protocols]
    return Specs(services, by_target, by_version, by_signing, rest)
