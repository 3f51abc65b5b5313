"""Model-server health: ready before traffic, replaced when dead, back in the router when answering again.

:func:`wait_ready` holds a new fleet (or new instances of one) until every server answers
``GET /ping``, and fails as soon as one exits, with the last lines it wrote. :func:`watch` runs for
the life of the platform: every half second, per serving endpoint, it copies the servers' new log
lines, starts a server that exited again from its variant's template, and marks an unhealthy one
healthy once it answers ``/ping`` (the router marks one unhealthy when a request cannot reach it);
a multi-model variant's cold models are unloaded on the way (:mod:`opensage.serving.multimodel`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from opensage.serving.fleet import Fleet, FleetError, Instance, Variant
from opensage.serving.launcher import Launcher
from opensage.serving.upstream import UpstreamError

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 120.0
WATCH_INTERVAL_S = 0.5


async def ping(instance: Instance) -> bool:
    try:
        reply = await instance.connection().request("GET", "/ping", timeout=2.0, connect_timeout=1.0)
    except (UpstreamError, TimeoutError):
        return False
    return reply.status == 200


async def wait_ready(launcher: Launcher, instances: Sequence[Instance], timeout: float = READY_TIMEOUT_S) -> None:
    """Return once every one of ``instances`` answers /ping (each is then marked healthy).

    Raises:
        FleetError: a server exited first, or ``timeout`` seconds passed.
    """
    deadline = time.monotonic() + timeout
    pending = list(instances)
    while pending:
        for instance in list(pending):
            if await ping(instance):
                instance.healthy = True
                pending.remove(instance)
                continue
            status = await launcher.poll(instance)
            if status.done:
                raise FleetError(
                    f"The model server {instance.host} exited with code "
                    f"{status.containers[0].exit_code} before it was ready: {last_lines(instance.log_path, 3)}"
                )
        if pending:
            if time.monotonic() > deadline:
                raise FleetError(f"The model servers did not answer /ping within {timeout:.0f} s.")
            await asyncio.sleep(0.05)


async def check_variant(launcher: Launcher, endpoint: str, variant: Variant) -> None:
    """One round over a variant's servers: logs copied, a dead one started again, a live one re-admitted."""
    for instance in list(variant.instances):
        await asyncio.to_thread(launcher.pump_endpoint_logs, endpoint, variant.name, instance)
        status = await launcher.poll(instance)
        if instance.retired:
            continue  # scaled down meanwhile: it drains and stops, it is not replaced
        if status.done:
            log.warning(
                "model server %s of endpoint %s exited (%s); replacing it",
                instance.host,
                endpoint,
                status.containers[0].exit_code,
            )
            if variant.models is not None:  # a multi-model server's models went with it
                variant.models.forget(instance)
            await launcher.replace(variant.template, instance)
        elif not instance.healthy and await ping(instance):
            instance.healthy = True
    if variant.models is not None:  # cold models unloaded, loaded-model counts sampled
        await variant.models.sweep(variant)


async def watch(launcher: Launcher, fleets: Mapping[str, Fleet], interval: float = WATCH_INTERVAL_S) -> None:
    """Check every fleet in ``fleets`` (read live, as the controller changes it) until cancelled."""
    while True:
        await asyncio.sleep(interval)
        for name, fleet in list(fleets.items()):
            try:
                for variant in list(fleet.variants.values()):
                    await check_variant(launcher, name, variant)
            except Exception:
                log.exception("health check of endpoint %s failed", name)


def last_lines(path: Path, n: int) -> str:
    """The last ``n`` non-blank lines of a server's log, joined with `` | ``."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no output)"
    return " | ".join(lines[-n:]) or "(no output)"
