"""Starting and stopping model servers on the compute backend, and copying their output to the log store.

:meth:`Launcher.template` turns a production variant (and the model it names) into a
:class:`~opensage.serving.fleet.ServerTemplate`: the image resolved, the instance type checked, the
artifact unpacked and linked at ``<base>/model`` (a multi-model container gets an empty
``<base>/models`` instead, filled as requests name models: :mod:`~opensage.serving.multimodel`),
the container's variables built. Every model
server of the variant (the first ones, replacements, scale-ups) starts from that template, so they
all run the same thing. Each server is one container on the backend with ``<base>`` mounted at
``/opt/ml``, listening on a Unix socket in a private directory (never on a TCP port).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from opensage.compute import sandbox
from opensage.compute.base import ComputeBackend, ContainerSpec, JobSpec, JobStatus
from opensage.compute.instances import InstanceType
from opensage.contract import (
    BASE_DIR_ENV,
    BATCH_ENV,
    BIND_TO_PORT_ENV,
    BIND_TO_SOCKET_ENV,
    CONTAINER_ROOT,
    MULTI_MODEL_DIR,
    MULTI_MODEL_ENV,
    SUBMIT_DIRECTORY_ENV,
)
from opensage.images import registry
from opensage.images.container import ContainerImage, ContainerImages, ImageError, image_container
from opensage.logstore import LogStore
from opensage.serving.artifacts import ModelCache
from opensage.serving.fleet import FleetError, Instance, ServerTemplate, Variant, instance_type, new_instance
from opensage.serving.specs import VariantSpec
from opensage.store.sql import SqlStore

MODEL = "model"
LOG_GROUP = "/aws/sagemaker/Endpoints"
STOP_GRACE_S = 5.0


def primary_container(model: Mapping[str, Any]) -> dict[str, Any]:
    """The model's one container (PrimaryContainer, else the first of Containers)."""
    return dict(model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0])


def multi_model_prefix(container: Mapping[str, Any], model_name: str) -> str | None:
    """The S3 prefix of a multi-model container (``Mode: MultiModel``), or None for a single model.

    Raises:
        FleetError: a multi-model container without an S3 prefix.
    """
    if container.get("Mode") != "MultiModel":
        return None
    prefix = str(container.get("ModelDataUrl") or "")
    if not prefix.startswith("s3://"):
        raise FleetError(f"Model {model_name} is a multi-model container: its ModelDataUrl must be an S3 prefix.")
    return prefix


class Launcher:
    images: ContainerImages | None = None  # the registry's images, unpacked (set by the platform)

    def __init__(
        self,
        store: SqlStore,
        backend: ComputeBackend,
        models: ModelCache,
        logs: LogStore,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.store = store
        self.backend = backend
        self.models = models
        self.logs = logs
        self.clock = clock

    # --- templates ------------------------------------------------------------------------------------

    async def template(
        self, owner: str, pv: VariantSpec, directory: Path, extra_env: Mapping[str, str] | None = None
    ) -> ServerTemplate:
        """What the model servers of variant ``pv`` run, its files prepared under ``directory/<variant>``.

        Raises:
            FleetError: a missing model, an image or instance type OpenSage does not serve, an
                unreadable artifact or source directory.
        """
        variant, model_name = pv.name, pv.model_name
        model = await asyncio.to_thread(self.store.get_resource, MODEL, model_name)
        if model is None:
            raise FleetError(f'Could not find model "{model_name}" of variant {variant}.')
        container = primary_container(model.data)
        image = await self._image(str(container.get("Image", "")), model_name)
        if isinstance(image, ContainerImage):
            return await self._image_template(owner, pv, directory, extra_env, model.data, image)
        if image is None:
            raise FleetError(registry.unavailable(str(container.get("Image", "")), f"image of model {model_name}"))
        itype = instance_type(pv.instance_type, variant)
        if pv.serverless:  # a serverless variant's servers get the memory its ServerlessConfig names
            gib = int(pv.serverless["MemorySizeInMB"]) / 1024
            itype = InstanceType(f"serverless-{gib:g}g", max(1, min(itype.vcpus, int(gib))), gib)
        base = directory / variant
        prefix = multi_model_prefix(container, model_name)
        if prefix is not None and (extra_env or {}).get(BATCH_ENV):
            raise FleetError(
                f"Model {model_name} is a multi-model model (Mode MultiModel): a batch transform job serves one "
                "model; create a model whose ModelDataUrl is one model.tar.gz for it."
            )
        if prefix is None:
            model_dir = await asyncio.to_thread(self.models.model_dir, container.get("ModelDataUrl", ""), model_name)
            base.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                (base / "model").symlink_to(model_dir, target_is_directory=True)
        else:  # models are downloaded as requests name them (serving.multimodel)
            (base / MULTI_MODEL_DIR).mkdir(parents=True, exist_ok=True)
        env = await asyncio.to_thread(self._container_env, container, image, base, model_name)
        env.update(extra_env or {})
        if prefix is not None:
            env[MULTI_MODEL_ENV] = "true"
        return ServerTemplate(
            owner,
            variant,
            model_name,
            container.get("Image", ""),
            itype,
            image.serve_argv(env),
            env,
            base,
            bool(model.data.get("EnableNetworkIsolation")),
            prefix,
            (container.get("MultiModelConfig") or {}).get("ModelCacheSetting", "Enabled") != "Disabled",
        )

    async def _image(self, uri: str, model_name: str) -> registry.BuiltinImage | ContainerImage | None:
        if self.images is not None:
            try:
                found = await asyncio.to_thread(self.images.prepare, uri)
            except ImageError as exc:
                raise FleetError(f"The image '{uri}' of model {model_name} cannot be used: {exc}.") from exc
            if found is not None:
                return found
        return registry.resolve(uri)

    async def _image_template(
        self,
        owner: str,
        pv: VariantSpec,
        directory: Path,
        extra_env: Mapping[str, str] | None,
        model: Mapping[str, Any],
        image: ContainerImage,
    ) -> ServerTemplate:
        """The template of a variant whose model runs in one of the registry's images: ``<image> serve``."""
        container = primary_container(model)
        if container.get("Mode") == "MultiModel":
            raise FleetError(
                f"Model {pv.model_name}: multi-model containers of your own image are not supported; serve one "
                "model per endpoint variant with it."
            )
        base = directory / pv.name
        (base / "model").mkdir(parents=True, exist_ok=True)  # the model is bound over it in the server
        url = str(container.get("ModelDataUrl") or "")
        model_dir = await asyncio.to_thread(self.models.model_dir, url, pv.model_name) if url else None
        env = {str(k): str(v) for k, v in (container.get("Environment") or {}).items()}
        env.update(extra_env or {})
        itype = instance_type(pv.instance_type, pv.name)
        isolated = bool(model.get("EnableNetworkIsolation"))
        argv = image.serve_argv()
        return ServerTemplate(
            owner, pv.name, pv.model_name, image.uri, itype, argv, env, base, isolated,
            container=image, model_dir=model_dir,
        )  # fmt: skip

    def _container_env(
        self, container: Mapping[str, Any], image: registry.BuiltinImage, base: Path, model_name: str
    ) -> dict[str, str]:
        """The model container's variables; a source directory in S3 is unpacked into ``<base>/code``."""
        env = {**image.environment(), **{str(k): str(v) for k, v in (container.get("Environment") or {}).items()}}
        submit = env.get(SUBMIT_DIRECTORY_ENV, "")
        if submit.startswith("s3://"):
            env[SUBMIT_DIRECTORY_ENV] = str(self.models.source_dir(submit, base / "code", model_name))
        return env

    # --- servers --------------------------------------------------------------------------------------

    async def start_variant(self, template: ServerTemplate, weight: float, count: int) -> Variant:
        """Variant ``template.variant`` with ``count`` model servers started (not yet answering)."""
        variant = Variant(template.variant, weight, template)
        for n in range(1, count + 1):
            variant.instances.append(await self.add(template, n))
        return variant

    async def add(self, template: ServerTemplate, n: int) -> Instance:
        """A new, started ``n``-th model server of the template's variant."""
        instance = new_instance(template, n)
        if template.isolated and not sandbox.network_isolation_available():
            with open(instance.log_path, "a") as out:
                out.write(
                    f"Model {template.model_name} asks for EnableNetworkIsolation, but this machine does not let "
                    "OpenSage create a network namespace: the model server keeps the network.\n"
                )
        await self.start(template, instance)
        return instance

    async def start(self, template: ServerTemplate, instance: Instance) -> None:
        """Start (or start again) ``instance``'s model server; it is unhealthy until it answers /ping."""
        if template.container is not None:
            job = JobSpec(f"endpoint/{template.owner}", (self._image_server(template, instance),))
            instance.handle = await asyncio.to_thread(self.backend.submit, job)
            instance.healthy = False
            return
        env = {
            "OMP_NUM_THREADS": "1",  # requests are small: one thread each beats threads fighting over cores
            **template.env,
            BIND_TO_PORT_ENV: str(instance.port),
            **({BIND_TO_SOCKET_ENV: instance.socket} if instance.socket else {}),
            BASE_DIR_ENV: str(template.base),
            "PYTHONUNBUFFERED": "1",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(template.base),
        }
        container = ContainerSpec(
            instance.host,
            template.argv,
            env,
            template.base,
            instance.log_path,
            template.instance_type.vcpus,
            template.instance_type.memory_bytes,
            mounts=((template.base, "/opt/ml"),),
            isolate_network=template.isolated,
            owned=(
                template.base,
                (template.base / "model").resolve(),
                *([Path(instance.socket).parent] if instance.socket else []),
            ),
            gpus=template.instance_type.gpus,
        )
        instance.handle = await asyncio.to_thread(
            self.backend.submit, JobSpec(f"endpoint/{template.owner}", (container,))
        )
        instance.healthy = False

    def _image_server(self, template: ServerTemplate, instance: Instance) -> ContainerSpec:
        """A model server in the template's image: ``serve`` on the instance's port, the model at /opt/ml/model.

        Its network is not cut even for EnableNetworkIsolation: the router reaches it over TCP."""
        assert template.container is not None
        env = {**template.env, BIND_TO_PORT_ENV: str(instance.port), "SAGEMAKER_SAFE_PORT_RANGE": str(instance.port)}
        layer = template.base.parent / f"{template.variant}-layers" / instance.host
        shutil.rmtree(layer, ignore_errors=True)  # a replacement starts from the image as it is
        spec = image_container(
            template.container, instance.host, template.argv, env, template.base, layer, instance.log_path,
            template.instance_type,
        )  # fmt: skip
        if template.model_dir is not None:
            spec = dataclasses.replace(spec, mounts=(*spec.mounts, (template.model_dir, f"{CONTAINER_ROOT}/model")))
        return spec

    async def replace(self, template: ServerTemplate, instance: Instance) -> None:
        """Start a server that has exited again, on the same port or socket."""
        if instance.handle is not None:
            await asyncio.to_thread(self.backend.cleanup, instance.handle)
        await self.start(template, instance)

    async def poll(self, instance: Instance) -> JobStatus:
        assert instance.handle is not None
        return await asyncio.to_thread(self.backend.poll, instance.handle)

    async def stop(self, instances: Iterable[Instance]) -> None:
        """End these model servers (their connections first); errors from the backend are ignored."""
        stopping = list(instances)
        for instance in stopping:
            if instance.upstream is not None:
                instance.upstream.close()
        for instance in stopping:
            if instance.handle is None:
                continue
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.backend.stop, instance.handle, STOP_GRACE_S)
                await asyncio.to_thread(self.backend.cleanup, instance.handle)
        for instance in stopping:  # the socket's private directory
            if instance.socket:
                with contextlib.suppress(OSError):
                    Path(instance.socket).unlink(missing_ok=True)
                    Path(instance.socket).parent.rmdir()

    # --- logs -----------------------------------------------------------------------------------------

    def pump_endpoint_logs(self, endpoint: str, variant: str, instance: Instance) -> None:
        self.pump_logs(f"{LOG_GROUP}/{endpoint}", f"{variant}/{instance.host}", instance)

    def pump_logs(self, group: str, stream: str, instance: Instance) -> None:
        """Copy the server's new complete lines (up to 1 MiB) to the log stream."""
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
