"""Multi-model endpoints: models loaded on first use, kept in an LRU per instance, routed to where they are.

A model whose container has ``Mode: MultiModel`` names an S3 prefix in ``ModelDataUrl``; each
request's ``TargetModel`` is an artifact under it (``<prefix>/<TargetModel>``, a ``model.tar.gz``).
Its variant's model servers start without a model, in the container contract's multi-model mode
(:mod:`opensage.serving.modelstore`), and :class:`VariantModels` drives them over the contract's
``/models`` routes:

* routing: :func:`~opensage.serving.router.pick_for_model` sends a target to an instance that
  holds it, else to the instance its name hashes to;
* first use on an instance: the artifact is downloaded and unpacked once per variant into
  ``<base>/models/<name>/model`` (``/opt/ml/models/...`` in the container), then loaded with
  ``POST /models``; concurrent requests for the same model wait for the same load;
* memory: an instance keeps models while their unpacked size fits in a share of its instance type's
  memory; the least recently used idle ones are unloaded (``DELETE /models/<name>``) to make room,
  and again when the server answers 507 (out of memory); a model not used for ``cold_after_s`` is
  unloaded by the health loop's sweep; ``ModelCacheSetting: Disabled`` unloads after each request;
* a server that restarted lost its models: a 404 from ``/models/<name>/invoke`` loads it again, and
  an instance that dies mid-request has the request sent to another one (loading the model there).

A target that names no object is the caller's error (:class:`TargetModelError`), as is one that is
not a valid archive; an artifact replaced under a new name is a new target, downloaded and served.
As on SageMaker, a target already loaded keeps serving the artifact it was loaded from.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import shutil
import tarfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opensage.contract import DEFAULT_BASE_DIR, MULTI_MODEL_DIR, TARGET_MODEL_HEADER
from opensage.objects import transfer
from opensage.objects.transfer import Expansion, split_s3_uri
from opensage.serving.forward import ATTEMPTS, NO_ANSWER, TIMED_OUT, Answer, TargetModelError
from opensage.serving.modelmetrics import ModelMetrics
from opensage.serving.router import pick_for_model
from opensage.serving.upstream import Reply, UpstreamError, UpstreamLost

log = logging.getLogger(__name__)
MEMORY_SHARE = 0.75  # of the instance type's memory, for loaded models (the rest: the server itself)
COLD_AFTER_S = 3600.0  # a model not invoked for this long is unloaded
SWEEP_EVERY_S = 10.0
LOAD_TIMEOUT_S = 300.0
UNLOAD_TIMEOUT_S = 30.0


class _LoadFailed(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class _Files:
    """A target's artifact unpacked on disk, shared by the variant's instances."""

    name: str
    url: str  # the directory as the container sees it
    path: Path
    size: int


@dataclass(slots=True)
class _Slot:
    """A model on one instance: loading until ``ready`` is done, then loaded."""

    ready: asyncio.Future[None]
    size: int = 0
    used: float = 0.0
    busy: int = 0


def model_name(target: str) -> str:
    """The name a target is loaded under: URL- and file-name-safe, one per target."""
    return "m" + hashlib.sha256(target.encode()).hexdigest()[:24]


def artifact_url(prefix: str, target: str) -> str:
    return f"{prefix.rstrip('/')}/{target.lstrip('/')}"


def _settle(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
        future.exception()  # retrieved: a load nobody else waited for is not reported again


class MultiModels:
    """The multi-model state of every serving variant (kept on each variant, gone with it)."""

    def __init__(self, s3: Any, bounds: Expansion | None = None, cold_after_s: float = COLD_AFTER_S) -> None:
        self.s3 = s3
        self.bounds = bounds or Expansion(30 * 1024**3)
        self.cold_after_s = cold_after_s
        self.metrics: ModelMetrics | None = None  # set by the platform (the invocation metrics' sink)

    def of(self, variant: Any) -> VariantModels:
        if variant.models is None:
            variant.models = VariantModels(self, variant)
        models: VariantModels = variant.models
        return models

    async def invoke(
        self, variant: Any, target: str | None, body: bytes, headers: dict[str, str], rng: random.Random, timeout: float
    ) -> Answer:
        """Raises: TargetModelError (no target, or one that cannot be served), NotReady."""
        if not target:
            raise TargetModelError(
                f"Endpoint {variant.template.owner} is a multi-model endpoint: name the model to invoke with "
                "TargetModel (its path under the model's ModelDataUrl prefix, e.g. model-1.tar.gz)."
            )
        return await self.of(variant).invoke(variant, target, body, headers, rng, timeout)


class VariantModels:
    """One multi-model variant: which instance holds which model, and the artifacts on disk."""

    def __init__(self, owner: MultiModels, variant: Any) -> None:
        template = variant.template
        self.owner = owner
        self.endpoint, self.variant = template.owner, variant.name
        self.prefix: str = template.model_prefix
        self.cache = template.model_cache
        self.root: Path = template.base / MULTI_MODEL_DIR
        self.budget = int(template.instance_type.memory_bytes * MEMORY_SHARE)
        self._files: dict[str, asyncio.Future[_Files]] = {}
        self._slots: dict[int, OrderedDict[str, _Slot]] = {}  # id(instance) -> target -> model, LRU first
        self._hosts: dict[int, str] = {}
        self._last_sweep = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()

    def holds(self, instance: Any, target: str) -> bool:
        slots = self._slots.get(id(instance))
        return slots is not None and target in slots

    def loaded(self, instance: Any) -> list[str]:
        """The targets loaded on ``instance``, least recently used first."""
        return [t for t, s in self._slots.get(id(instance), {}).items() if s.ready.done()]

    # --- requests -------------------------------------------------------------------------------

    async def invoke(
        self, variant: Any, target: str, body: bytes, headers: dict[str, str], rng: random.Random, timeout: float
    ) -> Answer:
        name = model_name(target)
        headers = {**headers, TARGET_MODEL_HEADER: target.encode().decode("latin-1")}
        for _ in range(ATTEMPTS):
            instance = pick_for_model(variant.instances, target, lambda i: self.holds(i, target), _host, rng)
            waited = time.perf_counter()
            instance.outstanding += 1
            try:
                hit, slot = await self._ensure(instance, target, name)
                slot.busy += 1  # at once, with no await between: the model cannot be unloaded meanwhile
                slot.used = time.monotonic()
                sent = time.perf_counter()
                try:
                    reply = await instance.connection().request(
                        "POST", f"/models/{name}/invoke", body, headers, timeout
                    )
                finally:
                    slot.busy -= 1
            except TimeoutError:
                return Answer(0, TIMED_OUT, "", variant.name)
            except UpstreamLost:
                instance.healthy = False
                self.forget(instance)
                continue
            except UpstreamError:
                instance.healthy = False
                return Answer(0, NO_ANSWER, "", variant.name)
            except _LoadFailed as failed:
                message = f"Failed to load model {target}: {failed.reply.body.decode('utf-8', 'replace')}"
                return Answer(failed.reply.status, message.encode(), "", variant.name)
            finally:
                instance.outstanding -= 1
            if reply.status == 404 and b"is not loaded" in reply.body:
                self._drop(instance, target)  # the server restarted meanwhile: load it again
                continue
            self._observe("ModelCacheHit", 1.0 if hit else 0.0)
            if not hit:
                self._observe("ModelLoadingWaitTime", (sent - waited) * 1e6)
            if not self.cache and not slot.busy:
                self._spawn(self._unload(instance, target))
            ctype = reply.headers.get("content-type", "")
            return Answer(reply.status, reply.body, ctype, variant.name, time.perf_counter() - sent)
        return Answer(0, NO_ANSWER, "", variant.name)

    async def _ensure(self, instance: Any, target: str, name: str) -> tuple[bool, _Slot]:
        """``target`` loaded on ``instance`` (its slot), and whether it was loaded before this request."""
        slots = self._slots.setdefault(id(instance), OrderedDict())
        self._hosts[id(instance)] = instance.host
        waited = False
        while (slot := slots.get(target)) is not None:
            if slot.ready.done():
                slots.move_to_end(target)
                return not waited, slot
            await asyncio.shield(slot.ready)  # another request is loading it (a failed load raises here too)
            waited = True
        slot = slots[target] = _Slot(asyncio.get_running_loop().create_future())
        try:
            files = await self._artifact(target, name)
            slot.size = files.size
            await self._make_room(instance, slots, files.size, target)
            await self._load(instance, slots, files, target)
        except BaseException as exc:
            if slots.get(target) is slot:
                del slots[target]
            _settle(slot.ready, exc)
            raise
        slot.ready.set_result(None)
        self._gauge(instance)
        return False, slot

    # --- artifacts ------------------------------------------------------------------------------

    async def _artifact(self, target: str, name: str) -> _Files:
        future = self._files.get(target)
        if future is not None:
            return await asyncio.shield(future)
        future = self._files[target] = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        try:
            files = await asyncio.to_thread(self._download, target, name)
        except BaseException as exc:
            if self._files.get(target) is future:
                del self._files[target]
            _settle(future, exc)
            raise
        future.set_result(files)
        self._observe("ModelDownloadingTime", (time.perf_counter() - started) * 1e6)
        return files

    def _download(self, target: str, name: str) -> _Files:
        url = artifact_url(self.prefix, target)
        bucket, key = split_s3_uri(url)
        s3 = self.owner.s3
        try:  # one streamed GET: a model is usually small, and the transfer manager's threads cost more than it
            stream = s3.get_object(Bucket=bucket, Key=key)["Body"]
        except s3.exceptions.ClientError as exc:
            raise TargetModelError(
                f"Failed to download model data(bucket: {bucket}, key: {key}) for TargetModel {target}. Please "
                "ensure that there is an object located at the URL and that the role passed to CreateModel has "
                f"permissions to download the model ({exc.response['Error'].get('Code')})."
            ) from exc
        directory = self.root / name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        archive = directory / "model.tar.gz"
        try:
            with stream, open(archive, "wb") as out:
                for chunk in stream.iter_chunks(1024 * 1024):
                    out.write(chunk)
            transfer.unpack_tarball(archive, directory / "model", self.owner.bounds)
        except (transfer.TooLarge, tarfile.TarError, EOFError) as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise TargetModelError(f"The artifact {url} of TargetModel {target} is not a usable tar.gz: {exc}") from exc
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        finally:
            archive.unlink(missing_ok=True)
        size = sum(p.stat().st_size for p in (directory / "model").rglob("*") if p.is_file())
        return _Files(name, f"{DEFAULT_BASE_DIR}/{MULTI_MODEL_DIR}/{name}/model", directory / "model", size)

    def _release(self, target: str) -> None:
        """Remove a target's files once no instance holds it."""
        if any(target in slots for slots in self._slots.values()):
            return
        future = self._files.pop(target, None)
        if future is not None and future.done() and not future.cancelled() and future.exception() is None:
            shutil.rmtree(future.result().path.parent, ignore_errors=True)

    # --- loading and unloading ------------------------------------------------------------------

    async def _load(self, instance: Any, slots: OrderedDict[str, _Slot], files: _Files, target: str) -> None:
        body = json.dumps({"model_name": files.name, "url": files.url}).encode()
        while True:
            started = time.perf_counter()
            reply = await instance.connection().request(
                "POST", "/models", body, {"content-type": "application/json"}, LOAD_TIMEOUT_S
            )
            if reply.status in (200, 409):  # 409: loaded already (this platform restarted, the server did not)
                self._observe("ModelLoadingTime", (time.perf_counter() - started) * 1e6)
                return
            if reply.status == 507 and await self._evict(instance, slots, target):
                continue  # out of memory: one model fewer, and again
            raise _LoadFailed(reply)

    async def _make_room(self, instance: Any, slots: OrderedDict[str, _Slot], need: int, keep: str) -> None:
        used = sum(s.size for t, s in slots.items() if t != keep)
        while used + need > self.budget:
            freed = await self._evict(instance, slots, keep)
            if not freed:
                return  # everything else is busy: try, the server answers 507 if it cannot
            used -= freed

    async def _evict(self, instance: Any, slots: OrderedDict[str, _Slot], keep: str) -> int:
        """Unload the least recently used idle model other than ``keep``; its size (0: none could go)."""
        for target, slot in list(slots.items()):
            if target != keep and slot.ready.done() and not slot.busy:
                await self._unload(instance, target)
                return max(slot.size, 1)
        return 0

    async def _unload(self, instance: Any, target: str) -> None:
        slots: OrderedDict[str, _Slot] = self._slots.get(id(instance), OrderedDict())
        slot = slots.get(target)
        if slot is None or slot.busy or not slot.ready.done():
            return
        del slots[target]
        started = time.perf_counter()
        with contextlib.suppress(UpstreamError, TimeoutError):  # a server that is gone took its models with it
            await instance.connection().request("DELETE", f"/models/{model_name(target)}", timeout=UNLOAD_TIMEOUT_S)
        self._observe("ModelUnloadingTime", (time.perf_counter() - started) * 1e6)
        self._release(target)
        self._gauge(instance)

    def _drop(self, instance: Any, target: str) -> None:
        slots = self._slots.get(id(instance))
        if slots is not None and target in slots and slots[target].ready.done():
            del slots[target]
            self._release(target)

    def forget(self, instance: Any) -> None:
        """``instance``'s server died or is being replaced: it holds no model now."""
        slots = self._slots.pop(id(instance), None) or OrderedDict()
        for target, slot in slots.items():
            _settle(slot.ready, UpstreamLost("the model server restarted"))
            self._release(target)
        if self.owner.metrics is not None and id(instance) in self._hosts:
            self.owner.metrics.gauge(self.endpoint, self.variant, self._hosts[id(instance)], "LoadedModelCount", 0)

    async def sweep(self, variant: Any) -> None:
        """Unload the models not used for ``cold_after_s``, forget instances that left, sample the counts."""
        now = time.monotonic()
        if now - self._last_sweep < SWEEP_EVERY_S:
            return
        self._last_sweep = now
        live = {id(i): i for i in variant.instances}
        for key in [k for k in self._slots if k not in live]:
            for target in self._slots.pop(key):
                self._release(target)
            if self.owner.metrics is not None and key in self._hosts:
                self.owner.metrics.drop(self.endpoint, self.variant, self._hosts.pop(key), "LoadedModelCount")
        for instance in live.values():
            for target, slot in list(self._slots.get(id(instance), {}).items()):
                if slot.ready.done() and not slot.busy and now - slot.used > self.owner.cold_after_s:
                    await self._unload(instance, target)
            self._gauge(instance)

    # --- metrics --------------------------------------------------------------------------------

    def _observe(self, metric: str, value: float) -> None:
        if self.owner.metrics is not None:
            self.owner.metrics.observe(self.endpoint, self.variant, metric, value)

    def _gauge(self, instance: Any) -> None:
        if self.owner.metrics is not None:
            count = len(self.loaded(instance))
            self.owner.metrics.gauge(self.endpoint, self.variant, instance.host, "LoadedModelCount", count)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _host(instance: Any) -> str:
    return str(instance.host)
