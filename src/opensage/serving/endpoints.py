"""Endpoints: fleets of model-server processes per production variant, and the router in front.

An endpoint's fleet is built from its endpoint config: per variant, the model artifact is
downloaded and unpacked once, and the variant's instance count of model servers start on the
compute backend, each on its own loopback port. The router picks a variant by weight (or
``TargetVariant``) and, within it, the healthy instance with the fewest outstanding requests, and
forwards the body over kept-alive connections. A health loop restarts dead servers. Updates are
blue/green: the new fleet must answer ``/ping`` before traffic moves; the old one drains, then stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import random
import shutil
import socket
import tarfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensage.compute import instances, sandbox
from opensage.compute.base import ComputeBackend, ContainerSpec, Handle, JobSpec
from opensage.errors import Conflict, OpenSageError
from opensage.images import registry
from opensage.jobs import artifacts
from opensage.jobs.channels import split_s3_uri
from opensage.logstore import LogStore
from opensage.serving.upstream import Upstream, UpstreamError
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch as _epoch

log = logging.getLogger(__name__)
ENDPOINT, CONFIG, MODEL = "endpoint", "endpoint-config", "model"
LOG_GROUP = "/aws/sagemaker/Endpoints"
READY_TIMEOUT_S = 120.0
INVOKE_TIMEOUT_S = 60.0
# How long a request to an endpoint that is coming back after a restart waits for its fleet (below
# botocore's default 60-s read timeout, so that the client sees the answer, not its own timeout).
RESTORE_HOLD_S = 45.0


class FleetError(OpenSageError):
    """A fleet cannot be built; the message is the endpoint's FailureReason."""


class NoEndpoint(OpenSageError):
    pass


class NoVariant(OpenSageError):
    pass


class NotReady(OpenSageError):
    pass


@dataclass(slots=True)
class Instance:
    host: str
    port: int
    log_path: Path
    handle: Handle | None = None
    outstanding: int = 0
    healthy: bool = False
    log_offset: int = 0
    upstream: Upstream | None = None
    socket: str | None = None  # a Unix socket instead of the port: the model server has no network

    def connection(self) -> Upstream:
        if self.upstream is None:
            self.upstream = Upstream("127.0.0.1", self.port, unix_path=self.socket)
        return self.upstream


def _instance(host: str, log_path: Path, isolated: bool) -> Instance:
    """A new instance; one whose model asks for EnableNetworkIsolation is reached over a Unix socket."""
    socket_path = f"/tmp/opensage-model-{uuid.uuid4().hex[:16]}.sock" if isolated else None
    return Instance(host, 0 if isolated else _free_port(), log_path, socket=socket_path)


@dataclass(slots=True)
class Variant:
    name: str
    weight: float
    model_name: str
    image: str
    instance_type: str
    instances: list[Instance] = field(default_factory=list)


@dataclass(slots=True)
class Fleet:
    config_name: str
    variants: dict[str, Variant]
    directory: Path

    def handles(self) -> list[Handle]:
        return [i.handle for v in self.variants.values() for i in v.instances if i.handle]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    variant: str
    model_seconds: float = 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EndpointEngine:
    def __init__(
        self,
        store: SqlStore,
        s3: Any,
        backend: ComputeBackend,
        logs: LogStore,
        work_dir: Path,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.store = store
        self.s3 = s3
        self.backend = backend
        self.logs = logs
        self.work_dir = work_dir
        self.clock = clock
        self.fleets: dict[str, Fleet] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._health: asyncio.Task[None] | None = None
        self._starting: set[str] = set()
        self._restoring: dict[str, asyncio.Event] = {}  # endpoints coming back after a restart -> set when done

    # --- lifecycle --------------------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def recover(self) -> None:
        """At start-up: bring back every endpoint that was in service (its old servers are ended)."""
        self._health = asyncio.get_running_loop().create_task(self._health_loop(), name="endpoint-health")
        rows = await asyncio.to_thread(self.store.list_resources, ENDPOINT)
        for row in rows:
            for handle in row.data.get("_Handles", []):
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.backend.stop, handle, 1.0)
            if row.status == "Deleting":
                await asyncio.to_thread(self.store.delete_resource, ENDPOINT, row.name)
            elif row.status == "Creating":
                self.launch(row.name, row.data["EndpointConfigName"])
            elif row.status in ("InService", "Updating", "SystemUpdating", "RollingBack"):
                # Serving before the restart: SystemUpdating (platform-side work, as AWS says it) until the
                # fleet answers /ping again; requests meanwhile wait for it (see invoke).
                self._restoring[row.name] = asyncio.Event()
                await self._set_status(row.name, "SystemUpdating")
                self.launch(row.name, row.data["EndpointConfigName"])

    async def shutdown(self) -> None:
        if self._health is not None:
            self._health.cancel()
        for task in list(self._tasks):
            task.cancel()
        for fleet in list(self.fleets.values()):
            await self._stop_fleet(fleet)
        self.fleets.clear()

    def launch(self, name: str, config_name: str) -> None:
        self._starting.add(name)
        self._spawn(self._create(name, config_name), f"endpoint:{name}")

    # --- building fleets ----------------------------------------------------------------------------

    async def _create(self, name: str, config_name: str) -> None:
        try:
            await self._create_fleet(name, config_name)
        finally:
            restoring = self._restoring.pop(name, None)
            if restoring is not None:
                restoring.set()

    async def _create_fleet(self, name: str, config_name: str) -> None:
        try:
            fleet = await self._build(name, config_name)
        except Exception as exc:
            self._starting.discard(name)
            reason = str(exc) if isinstance(exc, FleetError) else f"InternalServerError: {type(exc).__name__}: {exc}"
            if not isinstance(exc, FleetError):
                log.exception("endpoint %s could not be built", name)
            await self._set_status(name, "Failed", reason=reason)
            return
        for variant in fleet.variants.values():  # the log group exists by the time the endpoint is InService
            for instance in variant.instances:
                await asyncio.to_thread(self._pump_endpoint_logs, name, variant.name, instance)
        self.fleets[name] = fleet
        self._starting.discard(name)
        await self._set_status(name, "InService", fleet=fleet)

    async def _build(self, name: str, config_name: str) -> Fleet:
        config = await asyncio.to_thread(self.store.get_resource, CONFIG, config_name)
        if config is None:
            raise FleetError(f'Could not find endpoint configuration "{config_name}".')
        directory = self.work_dir / name / hashlib.sha1(f"{config_name}{time.time_ns()}".encode()).hexdigest()[:10]
        fleet = Fleet(config_name, {}, directory)
        try:
            for pv in config.data["ProductionVariants"]:
                fleet.variants[pv["VariantName"]] = await self._start_variant(name, pv, directory)
            await self._wait_ready(fleet)
        except BaseException:
            await self._stop_fleet(fleet)
            raise
        return fleet

    async def _start_variant(
        self, endpoint: str, pv: dict, directory: Path, extra_env: dict[str, str] | None = None
    ) -> Variant:
        model = await asyncio.to_thread(self.store.get_resource, MODEL, pv["ModelName"])
        if model is None:
            raise FleetError(f'Could not find model "{pv["ModelName"]}" of variant {pv["VariantName"]}.')
        container = model.data.get("PrimaryContainer") or (model.data.get("Containers") or [{}])[0]
        image = registry.resolve(container.get("Image", ""))
        if image is None:
            raise FleetError(
                f"The image '{container.get('Image')}' of model {pv['ModelName']} is not one OpenSage "
                f"serves; use one of these repositories: {', '.join(registry.known_repositories())}."
            )
        model_dir = await asyncio.to_thread(self._model_dir, container.get("ModelDataUrl", ""), pv["ModelName"])
        base = directory / pv["VariantName"]
        base.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            (base / "model").symlink_to(model_dir, target_is_directory=True)
        itype = instances.lookup(pv.get("InstanceType", "local")) or instances.lookup("local")
        assert itype is not None
        variant = Variant(
            pv["VariantName"],
            float(pv.get("InitialVariantWeight", 1.0)),
            pv["ModelName"],
            container.get("Image", ""),
            pv.get("InstanceType", "local"),
        )
        env = await asyncio.to_thread(self._container_env, container, image, base, pv["ModelName"])
        env.update(extra_env or {})
        for i in range(int(pv.get("InitialInstanceCount", 1))):
            isolated = bool(model.data.get("EnableNetworkIsolation"))
            instance = _instance(f"{pv['VariantName']}-{i + 1}", base / f"instance-{i + 1}.log", isolated)
            if isolated and not sandbox.network_isolation_available():
                with open(instance.log_path, "a") as out:
                    out.write(
                        f"Model {pv['ModelName']} asks for EnableNetworkIsolation, but this machine does not let "
                        "OpenSage create a network namespace: the model server keeps the network.\n"
                    )
            await self._start_instance(endpoint, instance, image.serve_argv(env), base, env, itype)
            variant.instances.append(instance)
        return variant

    async def _start_instance(
        self,
        endpoint: str,
        instance: Instance,
        argv: tuple[str, ...],
        base: Path,
        env: dict[str, str],
        itype: instances.InstanceType,
    ) -> None:
        full_env = {
            "OMP_NUM_THREADS": "1",  # requests are small: one thread each beats threads fighting over cores
            **env,
            "SAGEMAKER_BIND_TO_PORT": str(instance.port),
            **({"OPENSAGE_BIND_TO_SOCKET": instance.socket} if instance.socket else {}),
            "SAGEMAKER_BASE_DIR": str(base),
            "PYTHONUNBUFFERED": "1",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(base),
        }
        spec = JobSpec(
            f"endpoint/{endpoint}",
            (
                ContainerSpec(
                    instance.host,
                    argv,
                    full_env,
                    base,
                    instance.log_path,
                    itype.vcpus,
                    itype.memory_bytes,
                    mounts=((base, "/opt/ml"),),
                    isolate_network=instance.socket is not None,
                ),
            ),
        )
        instance.handle = await asyncio.to_thread(self.backend.submit, spec)
        instance.healthy = False

    def _container_env(self, container: dict, image: registry.BuiltinImage, base: Path, model_name: str) -> dict:
        """The model container's variables; a source directory in S3 is unpacked into ``<base>/code``."""
        env = {**image.environment(), **{str(k): str(v) for k, v in (container.get("Environment") or {}).items()}}
        submit = env.get("SAGEMAKER_SUBMIT_DIRECTORY", "")
        if submit.startswith("s3://"):
            code = base / "code"
            if not (code / ".complete").exists():
                try:
                    artifacts.download_and_unpack(self.s3, submit, code)
                except artifacts.ArtifactError as exc:
                    raise FleetError(
                        f"The source directory {submit} of model {model_name} cannot be used: {exc}."
                    ) from exc
                (code / ".complete").write_text(submit)
            env["SAGEMAKER_SUBMIT_DIRECTORY"] = str(code)
        return env

    def _model_dir(self, url: str, model_name: str) -> Path:
        """Download and unpack a model artifact once (cached by URL and ETag)."""
        if not url:
            raise FleetError(f"Model {model_name} has no ModelDataUrl.")
        bucket, key = split_s3_uri(url)
        try:
            etag = self.s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        except self.s3.exceptions.ClientError as exc:
            raise FleetError(
                f"The model artifact {url} of model {model_name} cannot be read: "
                f"{exc.response['Error'].get('Message') or exc.response['Error']['Code']}."
            ) from exc
        target = self.work_dir / "_models" / hashlib.sha256(f"{url}#{etag}".encode()).hexdigest()[:16]
        if (target / ".complete").exists():
            return target
        scratch = target.with_suffix(".download")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        archive = scratch / "model.tar.gz"
        self.s3.download_file(bucket, key, str(archive))
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(scratch / "model", filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise FleetError(f"The model artifact {url} of model {model_name} is not a valid tar.gz: {exc}") from exc
        shutil.rmtree(target, ignore_errors=True)
        (scratch / "model").rename(target)
        (target / ".complete").write_text(url)
        shutil.rmtree(scratch, ignore_errors=True)
        return target

    async def _wait_ready(self, fleet: Fleet) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = [i for v in fleet.variants.values() for i in v.instances]
        while pending:
            for instance in list(pending):
                if await self._ping(instance):
                    instance.healthy = True
                    pending.remove(instance)
                    continue
                assert instance.handle is not None
                status = await asyncio.to_thread(self.backend.poll, instance.handle)
                if status.done:
                    tail = _last_lines(instance.log_path, 3)
                    raise FleetError(
                        f"The model server {instance.host} exited with code "
                        f"{status.containers[0].exit_code} before it was ready: {tail}"
                    )
            if pending:
                if time.monotonic() > deadline:
                    raise FleetError(f"The model servers did not answer /ping within {READY_TIMEOUT_S:.0f} s.")
                await asyncio.sleep(0.05)

    async def _ping(self, instance: Instance) -> bool:
        try:
            reply = await instance.connection().request("GET", "/ping", timeout=2.0, connect_timeout=1.0)
        except (UpstreamError, TimeoutError):
            return False
        return reply.status == 200

    async def _stop_fleet(self, fleet: Fleet) -> None:
        for variant in fleet.variants.values():
            for instance in variant.instances:
                if instance.upstream is not None:
                    instance.upstream.close()
        for handle in fleet.handles():
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.backend.stop, handle, 5.0)
                await asyncio.to_thread(self.backend.cleanup, handle)
        if fleet.directory.name != "_drained":
            shutil.rmtree(fleet.directory, ignore_errors=True)

    # --- routing ------------------------------------------------------------------------------------

    @staticmethod
    def _pick(fleet: Fleet, target: str | None) -> tuple[Variant, Instance]:
        if target:
            variant = fleet.variants.get(target)
            if variant is None:
                raise NoVariant(target)
        elif len(fleet.variants) == 1:
            (variant,) = fleet.variants.values()
            if variant.weight <= 0:
                raise NotReady("every variant has weight 0")
        else:
            live = [v for v in fleet.variants.values() if v.weight > 0]
            if not live:
                raise NotReady("every variant has weight 0")
            variant = random.choices(live, weights=[v.weight for v in live])[0]
        candidates = variant.instances
        if len(candidates) == 1 and candidates[0].healthy:
            return variant, candidates[0]
        healthy = [i for i in candidates if i.healthy]
        if not healthy:
            raise NotReady(variant.name)
        if len(healthy) == 1:
            return variant, healthy[0]
        # power of two choices; on a tie the first, so that a light load stays on one warm server
        a, b = random.sample(healthy, 2) if len(healthy) > 2 else healthy
        return variant, b if b.outstanding < a.outstanding else a

    async def invoke(
        self,
        name: str,
        body: bytes,
        content_type: str,
        accept: str,
        target: str | None,
        custom_attributes: str | None = None,
    ) -> Answer:
        """Forward one request to an instance of the endpoint (in-memory lookup, no I/O besides the hop).

        Raises:
            NoEndpoint, NoVariant, NotReady: the request cannot be routed.
        """
        fleet = self.fleets.get(name) or await self._restored_fleet(name)
        variant, instance = self._pick(fleet, target)
        headers = {"content-type": content_type or "application/octet-stream", "accept": accept or "*/*"}
        if custom_attributes:
            headers["x-amzn-sagemaker-custom-attributes"] = custom_attributes
        upstream = instance.upstream or instance.connection()
        instance.outstanding += 1
        sent = time.perf_counter()
        try:
            reply = await upstream.request("POST", "/invocations", body, headers, INVOKE_TIMEOUT_S)
        except TimeoutError:
            return Answer(
                0, b"Your invocation timed out while waiting for a response from the model.", "", variant.name
            )
        except UpstreamError:
            instance.healthy = False
            return Answer(0, b"The model server did not answer.", "", variant.name)
        finally:
            instance.outstanding -= 1
        return Answer(
            reply.status, reply.body, reply.headers.get("content-type", ""), variant.name, time.perf_counter() - sent
        )

    async def _restored_fleet(self, name: str) -> Fleet:
        """The fleet of an endpoint that is not serving: waited for when it is coming back after a restart."""
        restoring = self._restoring.get(name)
        if restoring is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(restoring.wait(), RESTORE_HOLD_S)
            fleet = self.fleets.get(name)
            if fleet is not None:
                return fleet
        if name in self._starting:
            raise NotReady("the endpoint's model servers are starting")
        raise NoEndpoint(name)

    # --- health -------------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for name, fleet in list(self.fleets.items()):
                try:
                    await self._check_fleet(name, fleet)
                except Exception:
                    log.exception("health check of endpoint %s failed", name)

    async def _check_fleet(self, name: str, fleet: Fleet) -> None:
        for variant in fleet.variants.values():
            for instance in variant.instances:
                await asyncio.to_thread(self._pump_endpoint_logs, name, variant.name, instance)
                assert instance.handle is not None
                status = await asyncio.to_thread(self.backend.poll, instance.handle)
                if status.done:
                    log.warning(
                        "model server %s of endpoint %s exited (%s); replacing it",
                        instance.host,
                        name,
                        status.containers[0].exit_code,
                    )
                    await asyncio.to_thread(self.backend.cleanup, instance.handle)
                    await self._restart_instance(name, variant, instance)
                elif not instance.healthy and await self._ping(instance):
                    instance.healthy = True

    async def _restart_instance(self, name: str, variant: Variant, instance: Instance) -> None:
        model = await asyncio.to_thread(self.store.get_resource, MODEL, variant.model_name)
        image = registry.resolve(variant.image)
        itype = instances.lookup(variant.instance_type) or instances.lookup("local")
        assert image is not None and itype is not None
        base = instance.log_path.parent
        container = {}
        if model is not None:
            container = model.data.get("PrimaryContainer") or (model.data.get("Containers") or [{}])[0]
        env = await asyncio.to_thread(self._container_env, container, image, base, variant.model_name)
        await self._start_instance(name, instance, image.serve_argv(env), base, env, itype)

    async def start_servers(
        self, owner: str, model_name: str, instance_type: str, count: int, env: dict[str, str], directory: Path
    ) -> Fleet:
        """Model servers for a job (batch transform): ``count`` instances of a model, ready to serve."""
        pv = {
            "VariantName": "AllTraffic",
            "ModelName": model_name,
            "InstanceType": instance_type,
            "InitialInstanceCount": count,
        }
        fleet = Fleet("", {}, directory)
        try:
            fleet.variants["AllTraffic"] = await self._start_variant(owner, pv, directory, env)
            await self._wait_ready(fleet)
        except BaseException:
            await self._stop_fleet(fleet)
            raise
        return fleet

    async def stop_servers(self, fleet: Fleet, log_group: str, stream_prefix: str) -> None:
        for variant in fleet.variants.values():
            for instance in variant.instances:
                await asyncio.to_thread(self._pump_logs, log_group, f"{stream_prefix}/{instance.host}", instance)
        await self._stop_fleet(fleet)

    def _pump_endpoint_logs(self, endpoint: str, variant: str, instance: Instance) -> None:
        self._pump_logs(f"{LOG_GROUP}/{endpoint}", f"{variant}/{instance.host}", instance)

    def _pump_logs(self, group: str, stream: str, instance: Instance) -> None:
        try:
            with open(instance.log_path, "rb") as f:
                f.seek(instance.log_offset)
                chunk = f.read(1024 * 1024)
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1
        if end <= 0:
            return
        instance.log_offset += end
        now = int(self.clock().timestamp() * 1000)
        lines = [line.decode("utf-8", "replace") for line in chunk[:end].split(b"\n") if line.strip()]
        if lines:
            self.logs.put_events(group, stream, [(now, ln) for ln in lines])

    # --- changes ------------------------------------------------------------------------------------

    def launch_update(self, name: str, config_name: str) -> None:
        self._spawn(self._update(name, config_name), f"endpoint-update:{name}")

    async def _update(self, name: str, config_name: str) -> None:
        old = self.fleets.get(name)
        try:
            new = await self._build(name, config_name)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, FleetError) else f"InternalServerError: {exc}"
            log.warning("update of endpoint %s failed, rolling back: %s", name, reason)
            await self._set_status(
                name, "InService", reason=f"Update failed and was rolled back: {reason}", fleet=old, rollback=True
            )
            return
        self.fleets[name] = new
        await self._set_status(name, "InService", fleet=new, config_name=config_name)
        if old is not None:
            self._spawn(self._drain(old), f"endpoint-drain:{name}")

    async def _drain(self, fleet: Fleet, timeout: float = INVOKE_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while any(i.outstanding for v in fleet.variants.values() for i in v.instances):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        await self._stop_fleet(fleet)

    def set_weights(self, name: str, weights: dict[str, float]) -> None:
        fleet = self.fleets.get(name)
        if fleet is None:
            raise NoEndpoint(name)
        for variant, weight in weights.items():
            fleet.variants[variant].weight = weight

    async def scale(self, name: str, counts: dict[str, int]) -> Fleet:
        """Change variants' instance counts in place: new servers join once healthy, extra ones drain."""
        fleet = self.fleets.get(name)
        if fleet is None:
            raise NoEndpoint(name)
        for variant_name, count in counts.items():
            variant = fleet.variants[variant_name]
            image = registry.resolve(variant.image)
            itype = instances.lookup(variant.instance_type) or instances.lookup("local")
            assert image is not None and itype is not None
            model = await asyncio.to_thread(self.store.get_resource, MODEL, variant.model_name)
            container = (
                (model.data.get("PrimaryContainer") or (model.data.get("Containers") or [{}])[0]) if model else {}
            )
            base = fleet.directory / variant_name
            env = await asyncio.to_thread(self._container_env, container, image, base, variant.model_name)
            added = []
            while len(variant.instances) + len(added) < count:
                n = len(variant.instances) + len(added) + 1
                isolated = bool(model and model.data.get("EnableNetworkIsolation"))
                instance = _instance(f"{variant_name}-{n}", base / f"instance-{n}.log", isolated)
                await self._start_instance(name, instance, image.serve_argv(env), base, env, itype)
                added.append(instance)
            if added:
                await self._wait_ready(
                    Fleet(
                        fleet.config_name,
                        {
                            variant_name: Variant(
                                variant_name, 0, variant.model_name, variant.image, variant.instance_type, added
                            )
                        },
                        base,
                    )
                )
                variant.instances.extend(added)
            while len(variant.instances) > count:
                extra = variant.instances.pop()
                self._spawn(
                    self._drain(
                        Fleet(
                            fleet.config_name,
                            {
                                variant_name: Variant(
                                    variant_name, 0, variant.model_name, variant.image, variant.instance_type, [extra]
                                )
                            },
                            fleet.directory / "_drained",
                        )
                    ),
                    f"endpoint-scale-down:{name}",
                )
        return fleet

    def launch_scale(self, name: str, counts: dict[str, int]) -> None:
        self._spawn(self._scale(name, counts), f"endpoint-scale:{name}")

    async def _scale(self, name: str, counts: dict[str, int]) -> None:
        try:
            fleet = await self.scale(name, counts)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, FleetError) else f"InternalServerError: {exc}"
            await self._set_status(
                name, "InService", reason=f"Scaling failed: {reason}", fleet=self.fleets.get(name), rollback=True
            )
            return
        await self._set_status(name, "InService", fleet=fleet)

    async def delete(self, name: str) -> None:
        fleet = self.fleets.pop(name, None)
        if fleet is not None:
            await self._stop_fleet(fleet)
        shutil.rmtree(self.work_dir / name, ignore_errors=True)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.store.delete_resource, ENDPOINT, name)

    # --- persistence ----------------------------------------------------------------------------------

    async def _set_status(
        self,
        name: str,
        status: str,
        *,
        reason: str | None = None,
        fleet: Fleet | None = None,
        config_name: str | None = None,
        rollback: bool = False,
    ) -> None:
        def update() -> None:
            row = self.store.get_resource(ENDPOINT, name)
            if row is None or row.status == "Deleting":
                return
            data = dict(row.data)
            now = _epoch(self.clock())
            data.update(EndpointStatus=status, LastModifiedTime=now)
            if config_name:
                data["EndpointConfigName"] = config_name
            if reason:
                data["FailureReason"] = reason
            elif not rollback:
                data.pop("FailureReason", None)
            if fleet is not None:
                data["ProductionVariants"] = [variant_description(v, now) for v in fleet.variants.values()]
                data["_Handles"] = fleet.handles()
            with contextlib.suppress(Conflict):
                self.store.update_resource(ENDPOINT, name, data=data, status=status, now=self.clock())

        await asyncio.to_thread(update)


def variant_description(v: Variant, now: float) -> dict[str, Any]:
    count = len(v.instances)
    return {
        "VariantName": v.name,
        "DeployedImages": [{"SpecifiedImage": v.image, "ResolvedImage": v.image, "ResolutionTime": now}],
        "CurrentWeight": v.weight,
        "DesiredWeight": v.weight,
        "CurrentInstanceCount": count,
        "DesiredInstanceCount": count,
    }


def _last_lines(path: Path, n: int) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no output)"
    return " | ".join(lines[-n:]) or "(no output)"
