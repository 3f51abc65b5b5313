"""The fleet model: an endpoint's production variants, their model-server instances, and what they mean.

A :class:`Fleet` is what one endpoint config became: per variant, its weight, the
:class:`ServerTemplate` every one of its model servers is started from (built once, when the
variant is built, so restarts and scale-ups start the same server) and its :class:`Instance` list.
Instances are runtime state (health, requests in flight, a kept-alive connection) and change in
place; everything else here is plain data. The errors the serving engine raises on purpose live
here too, so that the router, the launcher and the controller share them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opensage.compute import instances
from opensage.compute.base import Handle, free_port
from opensage.errors import OpenSageError
from opensage.images.container import ContainerImage
from opensage.serving.upstream import Upstream

if TYPE_CHECKING:
    from opensage.serving.multimodel import VariantModels

# Named in the message for an unknown type; every one of them is known to compute.instances (a unit
# test checks), so the hint never points to a type that fails in its turn.
INSTANCE_TYPE_EXAMPLES = ("local", "ml.m5.large", "ml.m5.xlarge", "ml.c5.xlarge", "ml.r5.large", "ml.g4dn.xlarge")


class FleetError(OpenSageError):
    """A fleet cannot be built; the message is the endpoint's FailureReason."""


class NoEndpoint(OpenSageError):
    """No endpoint of that name is serving."""


class NoVariant(OpenSageError):
    """The request's TargetVariant is not a variant of the endpoint."""


class NotReady(OpenSageError):
    """The endpoint exists but has no instance that may take the request."""


def unknown_instance_type(name: str) -> str:
    """The message for an instance type OpenSage does not know, naming ones it does."""
    return (
        f"The instance type '{name}' is not one OpenSage knows; use local, local_gpu or an ml.* type such as "
        f"{', '.join(INSTANCE_TYPE_EXAMPLES[1:])}."
    )


def instance_type(name: str, variant: str) -> instances.InstanceType:
    """The instance type called ``name`` for variant ``variant``.

    Raises:
        FleetError: OpenSage does not know the type (never a silent fallback to ``local``).
    """
    itype = instances.lookup(name)
    if itype is None:
        raise FleetError(f"Variant {variant}: {unknown_instance_type(name)}")
    return itype


@dataclass(frozen=True, slots=True)
class ServerTemplate:
    """Everything needed to start one more model server of a variant."""

    owner: str  # names the compute job: "endpoint/<name>" or "transform-<job>"
    variant: str
    model_name: str
    image: str  # the image URI as the model gives it
    instance_type: instances.InstanceType
    argv: tuple[str, ...]
    env: Mapping[str, str]
    base: Path  # mounted at /opt/ml; holds model/, code/ and the instances' logs
    isolated: bool  # EnableNetworkIsolation: no network, reached over a Unix socket
    model_prefix: str | None = None  # a multi-model endpoint's S3 prefix (Mode MultiModel): models by TargetModel
    model_cache: bool = True  # MultiModelConfig.ModelCacheSetting: Disabled unloads a model after each request
    container: ContainerImage | None = None  # one of the registry's images, which servers run in (on a port)
    model_dir: Path | None = None  # the unpacked model, bound at /opt/ml/model in such a server


@dataclass(slots=True)
class Instance:
    """One model-server process of a variant, as the router and the health loop see it."""

    host: str
    port: int
    log_path: Path
    handle: Handle | None = None
    outstanding: int = 0
    healthy: bool = False
    log_offset: int = 0
    upstream: Upstream | None = None
    socket: str | None = None  # a Unix socket instead of the port: the model server has no network
    retired: bool = False  # taken out of its variant (scale-down, an old fleet): drains, then stops

    def connection(self) -> Upstream:
        if self.upstream is None:
            self.upstream = Upstream("127.0.0.1", self.port, unix_path=self.socket)
        return self.upstream


def new_instance(template: ServerTemplate, n: int) -> Instance:
    """The ``n``-th instance of a variant (not started), reached over a Unix socket.

    Every model server listens on a Unix socket in a directory of its own (mode 0700) rather than on
    a loopback port, so no other user's process can send it a request past the router's SigV4 check.
    """
    if template.container is not None:  # an image's server listens where SAGEMAKER_BIND_TO_PORT says
        return Instance(f"{template.variant}-{n}", free_port(), template.base / f"instance-{n}.log")
    socket_path = str(Path(tempfile.mkdtemp(prefix="opensage-model-", dir="/tmp")) / "s.sock")
    port = 0 if template.isolated else free_port()
    return Instance(f"{template.variant}-{n}", port, template.base / f"instance-{n}.log", socket=socket_path)


@dataclass(slots=True)
class Variant:
    """A production variant: its weight changes at once (UpdateEndpointWeightsAndCapacities), its
    instance list in place (scaling, replacement)."""

    name: str
    weight: float
    template: ServerTemplate
    instances: list[Instance] = field(default_factory=list)
    models: VariantModels | None = None  # a multi-model variant's loaded models (serving.multimodel)


@dataclass(slots=True)
class Fleet:
    config_name: str
    variants: dict[str, Variant]
    directory: Path

    def instances(self) -> list[Instance]:
        return [i for v in self.variants.values() for i in v.instances]

    def handles(self) -> list[Handle]:
        return [i.handle for i in self.instances() if i.handle]


@dataclass(frozen=True, slots=True)
class InstanceHealth:
    """What the console shows of one model server."""

    n: int
    port: int
    healthy: bool
    outstanding: int


def variant_health(fleet: Fleet) -> dict[str, list[InstanceHealth]]:
    return {
        v.name: [InstanceHealth(k + 1, i.port, i.healthy, i.outstanding) for k, i in enumerate(v.instances)]
        for v in fleet.variants.values()
    }


def variant_description(v: Variant, now: float) -> dict[str, Any]:
    """DescribeEndpoint's ProductionVariants entry for ``v``."""
    count = len(v.instances)
    image = v.template.image
    return {
        "VariantName": v.name,
        "DeployedImages": [{"SpecifiedImage": image, "ResolvedImage": image, "ResolutionTime": now}],
        "CurrentWeight": v.weight,
        "DesiredWeight": v.weight,
        "CurrentInstanceCount": count,
        "DesiredInstanceCount": count,
    }


def fleet_fields(fleet: Fleet, now: float) -> dict[str, Any]:
    """The endpoint document's members that describe its fleet (``_Handles`` lets a restart end them)."""
    return {
        "ProductionVariants": [variant_description(v, now) for v in fleet.variants.values()],
        "_Handles": fleet.handles(),
    }

