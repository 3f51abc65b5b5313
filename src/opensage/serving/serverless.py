"""Serverless inference: model servers started by the requests themselves, none while idle.

A production variant with a ``ServerlessConfig`` (MemorySizeInMB, MaxConcurrency,
ProvisionedConcurrency) has no instance type: its fleet starts with ProvisionedConcurrency model
servers (none by default), each limited to MemorySizeInMB of memory. :class:`Serverless` sits in
front of :meth:`EndpointEngine.invoke` for such endpoints:

* a request finding no model server starts one and waits for it (at most ``hold_s``, after which
  it is answered ``ModelNotReadyException``, as AWS answers while a serverless variant's resources
  are being provisioned); the wait is reported as CloudWatch's ``ModelSetupTime``;
* while more requests are in flight than there are servers, one more server is started in the
  background (up to MaxConcurrency), and the request goes to the least busy server meanwhile;
* a request beyond MaxConcurrency requests in flight is refused at once with AWS's
  ``ThrottlingException`` ("Rate exceeded"; the SDKs retry it with backoff);
* a variant keeps as many servers as it had requests in flight at its busiest over the last
  ``idle_s`` (never fewer than ProvisionedConcurrency): after an idle period it is back to zero.

Servers come and go through :meth:`EndpointEngine.scale` (one change at a time per variant), so
they join the router only once they answer ``/ping`` and leave it draining. Real-time endpoints
pass straight through: one dictionary lookup.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opensage.errors import OpenSageError
from opensage.serving.endpoints import CONFIG, Answer, EndpointEngine, NoVariant
from opensage.store.metrics import MetricStore, Point, Stats, dimensions
from opensage.store.sql import SqlStore

log = logging.getLogger(__name__)
COLD_START_HOLD_S = 45.0  # below botocore's 60-s read timeout: the caller sees our answer, not its own timeout
IDLE_S = 300.0
REAP_S = 1.0


class Throttled(OpenSageError):
    """The variant has MaxConcurrency requests in flight."""


class StillProvisioning(OpenSageError):
    """No model server became ready within the hold time."""


@dataclass(slots=True)
class _Variant:
    """What the gate tracks of one serverless variant of one endpoint."""

    max_concurrency: int
    provisioned: int
    inflight: int = 0
    last_at_level: dict[int, float] = field(default_factory=dict)  # requests in flight -> when last reached
    change: asyncio.Task[Any] | None = None  # the scaling under way (one at a time)
    target: int = 0  # the server count that change is going to

    def busiest_since(self, since: float) -> int:
        return max((level for level, at in self.last_at_level.items() if at >= since), default=0)


def wanted_servers(max_concurrency: int, provisioned: int, busiest: int) -> int:
    """How many servers a serverless variant keeps: its recent peak of requests in flight, within bounds."""
    return max(provisioned, min(busiest, max_concurrency))


class Serverless:
    """The serverless variants' gate in front of the endpoint router, and their scaling."""

    def __init__(
        self,
        store: SqlStore,
        endpoints: EndpointEngine,
        metric_store: MetricStore | None = None,
        idle_s: float = IDLE_S,
        hold_s: float = COLD_START_HOLD_S,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.store, self.endpoints, self.metric_store = store, endpoints, metric_store
        self.idle_s, self.hold_s, self.clock = idle_s, hold_s, clock
        self._rng = rng or random.Random()
        self._configs: dict[str, dict[str, Mapping[str, Any]]] = {}  # endpoint config -> variant -> ServerlessConfig
        self._weights: dict[str, dict[str, float]] = {}  # endpoint config -> variant -> its initial weight
        self._variants: dict[tuple[str, str, str], _Variant] = {}  # (endpoint, config, variant) -> state
        self._reaper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def serverless_variants(self, endpoint: str) -> dict[str, Mapping[str, Any]]:
        """The ServerlessConfig of each serverless variant of the config endpoint ``endpoint`` serves."""
        config_name = self.endpoints.serving_config(endpoint)
        if config_name is None:
            return {}
        if config_name not in self._configs:
            row = self.store.get_resource(CONFIG, config_name)
            variants = (row.data.get("ProductionVariants") or []) if row is not None else []
            self._configs[config_name] = {
                v["VariantName"]: v["ServerlessConfig"] for v in variants if v.get("ServerlessConfig") is not None
            }
            self._weights[config_name] = {v["VariantName"]: float(v.get("InitialVariantWeight", 1.0)) for v in variants}
        return self._configs[config_name]

    # --- the gate -------------------------------------------------------------------------------------

    async def invoke(self, name: str, body: bytes, content_type: str, accept: str, target: str | None,
                     custom_attributes: str | None = None, **options: Any) -> Answer:
        """:meth:`EndpointEngine.invoke`, with a serverless variant's admission, cold start and throttling.

        Raises:
            Throttled: MaxConcurrency requests are in flight. StillProvisioning: no server within ``hold_s``.
            and what :meth:`EndpointEngine.invoke` raises.
        """
        configs = self.serverless_variants(name)
        if not configs:
            return await self.endpoints.invoke(name, body, content_type, accept, target, custom_attributes, **options)
        variant = target or self._choose(name)
        if variant not in configs:
            if target and target not in self.endpoints.variant_health(name):
                raise NoVariant(target)
            return await self.endpoints.invoke(name, body, content_type, accept, target, custom_attributes, **options)
        state = self._state(name, variant, configs[variant])
        if state.inflight >= state.max_concurrency:
            raise Throttled(f"{state.max_concurrency} requests are in flight")
        state.inflight += 1
        now = self.clock()
        for level in range(1, state.inflight + 1):
            state.last_at_level[level] = now
        try:
            waited = await self._ensure_server(name, variant, state)
            answer = await self.endpoints.invoke(
                name, body, content_type, accept, variant, custom_attributes, **options
            )
        finally:
            state.inflight -= 1
        if waited is not None:
            self._report_setup(name, variant, waited)
        return answer

    def _choose(self, name: str) -> str:
        """A variant by the config's weights, as the router would (a lone variant without drawing)."""
        weights = self._weights.get(self.endpoints.serving_config(name) or "", {})
        if len(weights) == 1:
            return next(iter(weights))
        live = [(n, w) for n, w in weights.items() if w > 0]
        if not live:
            return ""
        return self._rng.choices([n for n, _ in live], weights=[w for _, w in live])[0]

    def _state(self, name: str, variant: str, config: Mapping[str, Any]) -> _Variant:
        key = (name, self.endpoints.serving_config(name) or "", variant)
        state = self._variants.get(key)
        if state is None:
            state = self._variants[key] = _Variant(
                int(config["MaxConcurrency"]), int(config.get("ProvisionedConcurrency") or 0)
            )
            self._start_reaper()
        return state

    def _servers(self, name: str, variant: str) -> tuple[int, int]:
        """(servers, healthy servers) of the variant now."""
        servers = self.endpoints.variant_health(name).get(variant, [])
        return len(servers), sum(1 for s in servers if s.healthy)

    async def _ensure_server(self, name: str, variant: str, state: _Variant) -> float | None:
        """Make sure a server can take the request: the seconds waited for a cold start, or None."""
        count, healthy = self._servers(name, variant)
        if healthy:
            if state.inflight > count and count < state.max_concurrency:
                self._scale(name, variant, state, min(state.inflight, state.max_concurrency))
            return None
        started = time.perf_counter()
        deadline = started + self.hold_s
        while not healthy:
            if state.change is None or state.change.done():
                self._scale(name, variant, state, max(1, count))
            change = state.change
            assert change is not None
            left = deadline - time.perf_counter()
            if left <= 0:
                raise StillProvisioning(variant)
            await asyncio.wait({change}, timeout=left)
            count, healthy = self._servers(name, variant)
            failure = change.result() if change.done() and not change.cancelled() else None
            if not healthy and failure is not None:
                raise StillProvisioning(f"{variant}: {failure}")
        if state.inflight > count and count < state.max_concurrency:  # the burst that waited for the first one
            self._scale(name, variant, state, min(state.inflight, state.max_concurrency))
        return time.perf_counter() - started

    def _scale(self, name: str, variant: str, state: _Variant, count: int) -> None:
        """Start changing the variant's server count to ``count`` unless a change is under way."""
        if state.change is not None and not state.change.done():
            return
        state.target = count
        state.change = self._spawn(self._change(name, variant, count), f"serverless-scale:{name}/{variant}")

    async def _change(self, name: str, variant: str, count: int) -> Exception | None:
        """Scale the variant to ``count`` servers; what went wrong, if anything."""
        before, _ = self._servers(name, variant)
        try:
            await self.endpoints.scale(name, {variant: count})
        except Exception as exc:
            log.warning("serverless variant %s/%s could not go from %d to %d servers: %s", name, variant,
                        before, count, exc)
            return exc
        log.info("serverless variant %s/%s: %d -> %d model servers", name, variant, before, count)
        return None

    def _report_setup(self, name: str, variant: str, seconds: float) -> None:
        """ModelSetupTime (microseconds, per endpoint and variant), written off the request's path."""
        if self.metric_store is None:
            return
        dims = dimensions([("EndpointName", name), ("VariantName", variant)])
        minute = int(time.time() // 60) * 60
        point = Point(("AWS/SageMaker", "ModelSetupTime", dims), minute, "Microseconds", Stats.of([seconds * 1e6]))
        self._spawn(asyncio.to_thread(self.metric_store.add, [point]), f"serverless-setup-time:{name}")

    # --- scaling in ------------------------------------------------------------------------------------

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = self._spawn(self._reap_forever(), "serverless-reaper")

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_S)
            try:
                self.reap()
            except Exception:
                log.exception("the serverless variants' scale-in failed; it runs again in %.0f s", REAP_S)

    def reap(self) -> None:
        """One round: a variant with more servers than its recent peak needs goes down to that many."""
        since = self.clock() - self.idle_s
        for (name, config, variant), state in list(self._variants.items()):
            if self.endpoints.serving_config(name) != config:  # deleted, or updated to another config
                del self._variants[(name, config, variant)]
                continue
            if state.change is not None and not state.change.done():
                continue
            count, _ = self._servers(name, variant)
            keep = wanted_servers(state.max_concurrency, state.provisioned, max(state.busiest_since(since),
                                                                                 state.inflight))
            if count > keep:
                self._scale(name, variant, state, keep)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
