"""Endpoints: the controller that turns endpoint configs into serving fleets and keeps them serving.

An endpoint's fleet is built from its endpoint config: per variant, a server template
(:mod:`~opensage.serving.launcher`, with the artifact from :mod:`~opensage.serving.artifacts`) and
the variant's instance count of model servers started from it; the endpoint is InService once every
server answers ``/ping`` (:mod:`~opensage.serving.health`). ``invoke`` routes a request with
:func:`~opensage.serving.router.pick` and forwards the body over a kept-alive connection. Updates
are blue/green: the new fleet must answer ``/ping`` before traffic moves; the old one drains, then
stops; a failed update leaves the old fleet serving. Scaling changes a variant's instance list in
place: new servers join once healthy, extra ones leave the router at once and stop after draining.
Every status write is a transition of :mod:`opensage.states` applied with the store's
compare-and-set, so a DeleteEndpoint racing the controller's writes wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import random
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from opensage.compute.base import ComputeBackend
from opensage.controller import Controller
from opensage.errors import NotFound
from opensage.logstore import LogStore
from opensage.objects.transfer import Expansion
from opensage.serving.artifacts import ModelCache
from opensage.serving.fleet import (
    Fleet,
    FleetError,
    Instance,
    InstanceHealth,
    NoEndpoint,
    NotReady,
    NoVariant,
    ServerTemplate,
    Variant,
    fleet_fields,
    variant_description,
    variant_health,
)
from opensage.serving.forward import Answer, forward
from opensage.serving.health import READY_TIMEOUT_S, wait_ready, watch
from opensage.serving.launcher import LOG_GROUP, MODEL, Launcher
from opensage.serving.multimodel import MultiModels
from opensage.serving.specs import EndpointConfigSpec, EndpointSpec, VariantSpec
from opensage.states import EndpointStatus
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch as _epoch

log = logging.getLogger(__name__)
ENDPOINT, CONFIG = "endpoint", "endpoint-config"
INVOKE_TIMEOUT_S = 60.0
# How long a request to an endpoint that is coming back after a restart waits for its fleet (below
# botocore's default 60-s read timeout, so that the client sees the answer, not its own timeout).
RESTORE_HOLD_S = 45.0
INTERRUPTED_UPDATE = "Update failed and was rolled back: OpenSage restarted while the endpoint was updating."
_S = EndpointStatus


def _reason(exc: Exception) -> str:
    """A FailureReason: a FleetError says it for the user; anything else is the platform's fault."""
    if isinstance(exc, FleetError):
        return str(exc)
    return f"InternalServerError: {type(exc).__name__}: {exc}"


class EndpointEngine(Controller):
    """The endpoints' controller: builds, updates, scales, routes to and deletes their fleets."""

    KIND = ENDPOINT

    def __init__(
        self,
        store: SqlStore,
        s3: Any,
        backend: ComputeBackend,
        logs: LogStore,
        work_dir: Path,
        clock: Callable[[], dt.datetime],
        rng: random.Random | None = None,
        archive_bounds: Expansion | None = None,
    ) -> None:
        super().__init__(store, clock)
        self.work_dir = work_dir
        self.launcher = Launcher(store, backend, ModelCache(s3, work_dir / "_models", archive_bounds), logs, clock)
        self._models_in_use: dict[Path, Path] = {}  # a template's base -> the cached model directory it links
        self._preparing = 0  # templates being prepared: no cached model is pruned meanwhile
        self._closing = False  # at shutdown the cache stays whole, for the restart
        self._rng = rng or random.Random()
        self.multi_models = MultiModels(s3, archive_bounds)  # multi-model variants' loaded models
        self._fleets: dict[str, Fleet] = {}
        self._health: asyncio.Task[None] | None = None
        self._starting: set[str] = set()
        self._restoring: dict[str, asyncio.Event] = {}  # endpoints coming back after a restart -> set when done

    # --- reads for providers and the console --------------------------------------------------------

    def is_serving(self, name: str) -> bool:
        """Whether endpoint ``name`` has a fleet taking requests."""
        return name in self._fleets

    def serving_config(self, name: str) -> str | None:
        """The endpoint config that endpoint ``name``'s fleet serves (None: no fleet serves)."""
        fleet = self._fleets.get(name)
        return fleet.config_name if fleet is not None else None

    def variant_health(self, name: str) -> dict[str, list[InstanceHealth]]:
        """Per variant of endpoint ``name``, each model server's port, health and requests in flight."""
        fleet = self._fleets.get(name)
        return variant_health(fleet) if fleet is not None else {}

    def loaded_models(self, name: str) -> dict[str, list[list[str]]]:
        """Per multi-model variant of endpoint ``name``, the targets loaded on each of its instances (LRU first)."""
        fleet = self._fleets.get(name)
        variants = fleet.variants.values() if fleet is not None else ()
        return {
            v.name: [v.models.loaded(i) if v.models is not None else [] for i in v.instances]
            for v in variants
            if v.template.model_prefix is not None
        }

    # --- lifecycle ----------------------------------------------------------------------------------

    async def recover(self) -> None:
        """At start-up: bring back every endpoint that was in service (its old servers are ended).

        One that was serving comes back as SystemUpdating (platform-side work, as AWS says it) until its
        fleet answers /ping again, and requests meanwhile wait for it (see :meth:`invoke`). One caught
        in an update keeps its status and comes back on the config it served before, the update
        reported as rolled back.
        """
        self._health = asyncio.get_running_loop().create_task(
            watch(self.launcher, self._fleets), name="endpoint-health"
        )
        rows = await asyncio.to_thread(self.store.list_resources, ENDPOINT)
        for row in rows:
            for handle in row.data.get("_Handles", []):
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.launcher.backend.stop, handle, 1.0)
            config_name = row.data.get("EndpointConfigName", "")
            if row.status == _S.DELETING:
                with contextlib.suppress(NotFound):
                    await asyncio.to_thread(self.store.delete_resource, ENDPOINT, row.name)
            elif row.status == _S.CREATING:
                self.launch(row.name, config_name)
            elif row.status in (_S.IN_SERVICE, _S.SYSTEM_UPDATING):
                self._restoring[row.name] = asyncio.Event()
                await self._set_status(row.name, _S.SYSTEM_UPDATING)
                self.launch(row.name, config_name)
            elif row.status in (_S.UPDATING, _S.ROLLING_BACK):
                self._restoring[row.name] = asyncio.Event()
                self._launch(row.name, config_name, INTERRUPTED_UPDATE)

    async def shutdown(self) -> None:
        self._closing = True
        if self._health is not None:
            self._health.cancel()
        await super().shutdown()
        for fleet in list(self._fleets.values()):
            await self._retire(fleet)
        self._fleets.clear()

    async def create(self, spec: EndpointSpec, arn: str) -> Resource:
        """Record a new endpoint (Creating) and build its fleet: the one way every creator makes one.

        Raises:
            AlreadyExists: an endpoint of that name exists.
        """
        now = self.clock()
        data = spec.initial_description(arn, now)
        row = Resource(ENDPOINT, spec.name, arn, _S.CREATING, now, now, data)
        created = await asyncio.to_thread(self.store.create_resource, row)
        self.launch(spec.name, spec.config_name)
        return created

    def launch(self, name: str, config_name: str) -> None:
        """Build endpoint ``name``'s fleet from ``config_name`` in the background (Creating -> InService)."""
        self._launch(name, config_name, None)

    def _launch(self, name: str, config_name: str, note: str | None) -> None:
        self._starting.add(name)
        self._spawn(self._create(name, config_name, note), f"endpoint:{name}")

    # --- building fleets ----------------------------------------------------------------------------

    async def _create(self, name: str, config_name: str, note: str | None) -> None:
        try:
            await self._create_fleet(name, config_name, note)
        finally:
            restoring = self._restoring.pop(name, None)
            if restoring is not None:
                restoring.set()

    async def _create_fleet(self, name: str, config_name: str, note: str | None) -> None:
        try:
            fleet = await self._build(name, config_name)
        except Exception as exc:
            self._starting.discard(name)
            if not isinstance(exc, FleetError):
                log.exception("endpoint %s could not be built", name)
            await self._set_status(name, _S.FAILED, reason=_reason(exc))
            return
        for variant in fleet.variants.values():  # the log group exists by the time the endpoint is InService
            for instance in variant.instances:
                await asyncio.to_thread(self.launcher.pump_endpoint_logs, name, variant.name, instance)
        self._fleets[name] = fleet
        self._starting.discard(name)
        if not await self._set_status(name, _S.IN_SERVICE, fleet=fleet, reason=note, rollback=note is not None):
            await self._forget(name, fleet)

    async def _build(self, name: str, config_name: str) -> Fleet:
        config = await asyncio.to_thread(self.store.get_resource, CONFIG, config_name)
        if config is None:
            raise FleetError(f'Could not find endpoint configuration "{config_name}".')
        directory = self.work_dir / name / hashlib.sha1(f"{config_name}{time.time_ns()}".encode()).hexdigest()[:10]
        fleet = Fleet(config_name, {}, directory)
        try:
            for pv in EndpointConfigSpec.from_document(config.data).variants:
                template = await self._template(name, pv, directory)
                await self._start_variant(fleet, template, pv.initial_weight, pv.initial_count)
            await wait_ready(self.launcher, fleet.instances(), READY_TIMEOUT_S)
        except BaseException:
            await self._retire(fleet)
            raise
        return fleet

    async def _start_variant(self, fleet: Fleet, template: ServerTemplate, weight: float, count: int) -> None:
        """Add the variant to ``fleet`` and start its servers one by one (so a failure stops those started)."""
        variant = fleet.variants[template.variant] = Variant(template.variant, weight, template)
        for n in range(1, count + 1):
            variant.instances.append(await self.launcher.add(template, n))

    async def _retire(self, fleet: Fleet) -> None:
        """Stop every server of a whole fleet, remove its directory and the cached models no fleet serves now."""
        for instance in fleet.instances():
            instance.retired = True
        await self.launcher.stop(fleet.instances())
        shutil.rmtree(fleet.directory, ignore_errors=True)
        for base in [b for b in self._models_in_use if b.is_relative_to(fleet.directory)]:
            del self._models_in_use[base]
        if not self._closing and not self._preparing:
            since = self.launcher.models.generation
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.launcher.models.prune, list(self._models_in_use.values()), since)

    async def _template(
        self, owner: str, pv: VariantSpec, directory: Path, env: dict[str, str] | None = None
    ) -> ServerTemplate:
        """The launcher's template of variant ``pv``, its cached model noted as in use."""
        self._preparing += 1
        try:
            template = await self.launcher.template(owner, pv, directory, env)
        finally:
            self._preparing -= 1
        self._models_in_use[template.base] = (template.base / "model").resolve()
        return template

    async def _drain(self, instances: Iterable[Instance], timeout: float = INVOKE_TIMEOUT_S) -> None:
        """Wait (up to ``timeout``) for the requests in flight on ``instances``, then stop them."""
        leaving = list(instances)
        for instance in leaving:
            instance.retired = True
        deadline = time.monotonic() + timeout
        while any(i.outstanding for i in leaving) and time.monotonic() <= deadline:
            await asyncio.sleep(0.05)
        await self.launcher.stop(leaving)

    async def _drain_fleet(self, fleet: Fleet) -> None:
        await self._drain(fleet.instances())
        await self._retire(fleet)

    async def _forget(self, name: str, fleet: Fleet) -> None:
        """The endpoint went away while ``fleet`` was being built for it: stop it."""
        if self._fleets.get(name) is fleet:
            del self._fleets[name]
        await self._retire(fleet)

    # --- routing ------------------------------------------------------------------------------------

    async def invoke(
        self,
        name: str,
        body: bytes,
        content_type: str,
        accept: str,
        target: str | None,
        custom_attributes: str | None = None,
        timeout: float = INVOKE_TIMEOUT_S,
        target_model: str | None = None,
    ) -> Answer:
        """Forward one request to an instance of the endpoint (:func:`~opensage.serving.forward.forward`).

        Raises:
            NoEndpoint, NoVariant, NotReady: the request cannot be routed.
            TargetModelError: ``target_model`` does not fit the endpoint, or cannot be served.
        """
        fleet = self._fleets.get(name) or await self._restored_fleet(name)
        headers = {"content-type": content_type or "application/octet-stream", "accept": accept or "*/*"}
        if custom_attributes:
            headers["x-amzn-sagemaker-custom-attributes"] = custom_attributes
        return await forward(fleet, target, target_model, body, headers, self._rng, self.multi_models, timeout)

    async def _restored_fleet(self, name: str) -> Fleet:
        """The fleet of an endpoint that is not serving: waited for when it is coming back after a restart."""
        restoring = self._restoring.get(name)
        if restoring is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(restoring.wait(), RESTORE_HOLD_S)
            fleet = self._fleets.get(name)
            if fleet is not None:
                return fleet
        if name in self._starting:
            raise NotReady("the endpoint's model servers are starting")
        raise NoEndpoint(name)

    # --- servers for jobs ---------------------------------------------------------------------------

    async def start_servers(
        self, owner: str, model_name: str, instance_type: str, count: int, env: dict[str, str], directory: Path
    ) -> Fleet:
        """Model servers for a job (batch transform): ``count`` instances of a model, ready to serve.

        Raises:
            FleetError: the model cannot be served (missing, unknown image or instance type, bad artifact),
                or a server did not become ready.
        """
        pv = VariantSpec("AllTraffic", model_name, instance_type, count, 1.0)
        fleet = Fleet("", {}, directory)
        try:
            template = await self._template(owner, pv, directory, env)
            await self._start_variant(fleet, template, 1.0, count)
            await wait_ready(self.launcher, fleet.instances(), READY_TIMEOUT_S)
        except BaseException:
            await self._retire(fleet)
            raise
        return fleet

    async def stop_servers(self, fleet: Fleet, log_group: str, stream_prefix: str) -> None:
        """Copy the job's servers' last log lines to ``log_group`` and end them."""
        for instance in fleet.instances():
            await asyncio.to_thread(self.launcher.pump_logs, log_group, f"{stream_prefix}/{instance.host}", instance)
        await self._retire(fleet)

    # --- changes ------------------------------------------------------------------------------------

    def launch_update(self, name: str, config_name: str) -> None:
        """Blue/green to ``config_name`` in the background (Updating -> InService, rolled back on failure)."""
        self._spawn(self._update(name, config_name), f"endpoint-update:{name}")

    async def _update(self, name: str, config_name: str) -> None:
        old = self._fleets.get(name)
        try:
            new = await self._build(name, config_name)
        except Exception as exc:
            reason = _reason(exc)
            log.warning("update of endpoint %s failed, rolling back: %s", name, reason)
            await self._set_status(
                name, _S.IN_SERVICE, reason=f"Update failed and was rolled back: {reason}", fleet=old, rollback=True
            )
            return
        self._fleets[name] = new
        if not await self._set_status(name, _S.IN_SERVICE, fleet=new, config_name=config_name):
            await self._forget(name, new)
            return
        if old is not None:
            self._spawn(self._drain_fleet(old), f"endpoint-drain:{name}")

    def set_weights(self, name: str, weights: dict[str, float]) -> None:
        """Change variants' weights at once (the next request sees them).

        Raises:
            NoEndpoint: the endpoint is not serving. NoVariant: a name is not one of its variants.
        """
        fleet = self._fleets.get(name)
        if fleet is None:
            raise NoEndpoint(name)
        unknown = [v for v in weights if v not in fleet.variants]
        if unknown:
            raise NoVariant(unknown[0])
        for variant, weight in weights.items():
            fleet.variants[variant].weight = weight

    async def scale(self, name: str, counts: dict[str, int]) -> Fleet:
        """Change variants' instance counts in place: new servers join once healthy, extra ones drain.

        Raises:
            NoEndpoint: the endpoint is not serving. NoVariant: a name is not one of its variants.
            FleetError: a new server did not become ready (the ones started for this are stopped).
        """
        fleet = self._fleets.get(name)
        if fleet is None:
            raise NoEndpoint(name)
        for variant_name, count in counts.items():
            variant = fleet.variants.get(variant_name)
            if variant is None:
                raise NoVariant(variant_name)
            current = len(variant.instances)
            added: list[Instance] = []
            try:
                for n in range(current + 1, count + 1):
                    added.append(await self.launcher.add(variant.template, n))
                await wait_ready(self.launcher, added, READY_TIMEOUT_S)
            except BaseException:
                await self.launcher.stop(added)
                raise
            variant.instances.extend(added)
            if len(variant.instances) > count:
                leaving = variant.instances[count:]
                del variant.instances[count:]  # out of the router now; stopped once their requests are answered
                self._spawn(self._drain(leaving), f"endpoint-scale-down:{name}")
        return fleet

    def launch_scale(self, name: str, counts: dict[str, int]) -> None:
        """:meth:`scale` in the background (Updating -> InService; a failure is reported, the fleet kept)."""
        self._spawn(self._scale(name, counts), f"endpoint-scale:{name}")

    async def _scale(self, name: str, counts: dict[str, int]) -> None:
        try:
            fleet = await self.scale(name, counts)
        except Exception as exc:
            await self._set_status(
                name,
                _S.IN_SERVICE,
                reason=f"Scaling failed: {_reason(exc)}",
                fleet=self._fleets.get(name),
                rollback=True,
            )
            return
        await self._set_status(name, _S.IN_SERVICE, fleet=fleet)

    async def delete(self, name: str) -> None:
        """Stop the endpoint's servers, remove its files and its row (the provider marked it Deleting)."""
        fleet = self._fleets.pop(name, None)
        if fleet is not None:
            await self._retire(fleet)
        shutil.rmtree(self.work_dir / name, ignore_errors=True)
        with contextlib.suppress(NotFound):
            await asyncio.to_thread(self.store.delete_resource, ENDPOINT, name)

    # --- persistence ----------------------------------------------------------------------------------

    async def _set_status(
        self,
        name: str,
        status: EndpointStatus,
        *,
        reason: str | None = None,
        fleet: Fleet | None = None,
        config_name: str | None = None,
        rollback: bool = False,
    ) -> bool:
        """Move the endpoint to ``status`` with a compare-and-set; ``False`` when it is gone or Deleting.

        ``reason`` becomes FailureReason; without one the old reason is dropped, unless ``rollback``
        (the endpoint serves on as before, and the reason of the failure that led there stays).
        """
        now = self.clock()
        fields: dict[str, Any] = {}
        if config_name:
            fields["EndpointConfigName"] = config_name
        if reason:
            fields["FailureReason"] = reason
        if fleet is not None:
            fields.update(fleet_fields(fleet, _epoch(now)))  # read here, on the loop that changes fleets
        drop = ("FailureReason",) if not reason and not rollback else ()
        return await self._move(name, status, fields=fields, drop=drop, quiet_from=(_S.DELETING,))

__all__ = ["CONFIG", "ENDPOINT", "LOG_GROUP", "MODEL", "Answer", "EndpointEngine", "Fleet", "FleetError"]
__all__ += ["NoEndpoint", "NoVariant", "NotReady", "variant_description"]
