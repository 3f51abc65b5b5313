"""The account's quotas (:mod:`opensage.quotas`) checked where a Create request is validated.

A request over a quota is refused with ``ResourceLimitExceeded`` before anything is recorded or
started, its message in SageMaker's words (limit, current utilization, request delta).

LIMITATIONS: the check and the record that follows are not one transaction, so two requests at the
same moment may both pass; ``UpdateEndpoint`` and ``UpdateEndpointWeightsAndCapacities`` are not checked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from opensage import quotas
from opensage.errors import limit_exceeded
from opensage.jobs import processing, training, transform
from opensage.serving.endpoints import CONFIG, ENDPOINT
from opensage.states import EndpointStatus, JobStatus
from opensage.store.sql import SqlStore

ACTIVE_JOB = (JobStatus.IN_PROGRESS, JobStatus.STOPPING)


def training_instances(desc: Mapping[str, Any]) -> Counter[str]:
    """Instances by type that a training job (request or record) asks for."""
    resources = desc.get("ResourceConfig") or {}
    groups = resources.get("InstanceGroups") or [resources]
    return _count((g.get("InstanceType", ""), g.get("InstanceCount", 1)) for g in groups)


def processing_instances(desc: Mapping[str, Any]) -> Counter[str]:
    cluster = (desc.get("ProcessingResources") or {}).get("ClusterConfig") or {}
    return _count([(cluster.get("InstanceType", ""), cluster.get("InstanceCount", 1))])


def transform_instances(desc: Mapping[str, Any]) -> Counter[str]:
    resources = desc.get("TransformResources") or {}
    return _count([(resources.get("InstanceType", ""), resources.get("InstanceCount", 1))])


def config_instances(config: Mapping[str, Any]) -> Counter[str]:
    """Instances by type of an endpoint configuration's (instance-based) variants."""
    return _count(
        (v["InstanceType"], v.get("InitialInstanceCount", 1))
        for v in config.get("ProductionVariants") or []
        if v.get("InstanceType")
    )


def _count(pairs: Iterable[tuple[str, Any]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for itype, n in pairs:
        if itype:
            counts[itype] += int(n or 0)
    return counts


class QuotaChecks:
    """Raises ResourceLimitExceeded for a request that would take the account over a quota."""

    def __init__(self, store: SqlStore, values: Mapping[str, int]) -> None:
        self.store = store
        self.values = {**quotas.defaults(), **values}

    def _check(self, key: str, used: int, delta: int, instance_type: str = "") -> None:
        value = self.values[key]
        if used + delta > value:
            raise limit_exceeded(quotas.exceeded_message(quotas.BY_KEY[key], instance_type, value, used, delta))

    def job(self, kind: str, request: Mapping[str, Any]) -> None:
        """A new training, processing or transform job (``kind``: its resource kind)."""
        prefix, counter = _JOBS[kind]
        active = [r for s in ACTIVE_JOB for r in self.store.list_resources(kind, status=s)]
        self._check(f"{prefix}_jobs", len(active), 1)
        used: Counter[str] = Counter()
        for row in active:
            used.update(counter(row.data))
        for itype, n in sorted(counter(request).items()):
            self._check(f"{prefix}_instances", used[itype], n, itype)

    def endpoint(self, config: Mapping[str, Any]) -> None:
        """A new endpoint serving ``config`` (an endpoint configuration's document)."""
        rows = self.store.list_resources(ENDPOINT)
        self._check("endpoints", len(rows), 1)
        used: Counter[str] = Counter()
        for row in rows:
            if row.status == EndpointStatus.FAILED:
                continue
            served = self.store.get_resource(CONFIG, row.data.get("EndpointConfigName", ""))
            if served is not None:
                used.update(config_instances(served.data))
        for itype, n in sorted(config_instances(config).items()):
            self._check("endpoint_instances", used[itype], n, itype)


_JOBS = {
    training.KIND: ("training", training_instances),
    processing.KIND: ("processing", processing_instances),
    transform.KIND: ("transform", transform_instances),
}
