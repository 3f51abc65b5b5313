"""The router's multi-model side (serving.multimodel) against in-process model servers that speak the /models
contract (the real MultiModelApp over a tiny serve module) and an in-memory S3: loading on first use, one load
for concurrent first requests, the LRU bounded by memory, 507s, ModelCacheSetting Disabled, the cold sweep, a
restarted or dead server, unknown targets, the metrics, and where targets are routed."""

from __future__ import annotations

import asyncio
import io
import json
import random
import tarfile
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from opensage.compute.instances import InstanceType
from opensage.serving import multimodel
from opensage.serving.fleet import Instance, ServerTemplate, Variant
from opensage.serving.forward import TargetModelError
from opensage.serving.modelmetrics import ModelMetrics
from opensage.serving.modelstore import MultiModelApp
from opensage.serving.multimodel import MultiModels
from opensage.serving.router import pick_for_model
from opensage.serving.upstream import Reply, UpstreamLost

MB = 1024 * 1024


def _tarball(size: int, tag: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = tag.encode().ljust(size, b"\0")
        info = tarfile.TarInfo("weights")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _S3:
    exceptions = types.SimpleNamespace(ClientError=ClientError)

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.gets = 0

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        self.gets += 1
        if f"{Bucket}/{Key}" not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "no such key"}}, "GetObject")
        return {"Body": _Body(self.objects[f"{Bucket}/{Key}"])}


class _Body(io.BytesIO):
    def iter_chunks(self, size: int) -> Any:
        while chunk := self.read(size):
            yield chunk


class _Server:
    """A model server on the contract: the real MultiModelApp; a model is its file's first bytes."""

    def __init__(self, base: Path, max_models: int | None = None) -> None:
        self.app = MultiModelApp("json", base)
        self.app.module = types.SimpleNamespace(
            load_model=lambda d: (d / "weights").read_bytes().rstrip(b"\0"),
            predict=lambda model, body, ctype, accept: (model + b":" + body, "text/plain"),
        )
        self.max_models = max_models
        self.loads: Counter[str] = Counter()
        self.dead = False

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Any = None, *_: Any, **__: Any
    ) -> Reply:
        await asyncio.sleep(0.001)  # a real hop: other requests run meanwhile
        if self.dead:
            raise UpstreamLost("the model server closed the connection")
        if method == "POST" and path == "/models":
            if self.max_models is not None and len(self.app.models) >= self.max_models:
                return Reply(507, {}, b"out of memory")
            self.loads[json.loads(body)["model_name"]] += 1
        status, out, media = self.app.answer(method, path, body, (headers or {}).get("content-type", ""), "")
        return Reply(status, {"content-type": media}, out)

    def close(self) -> None:
        pass


def _variant(tmp: Path, count: int = 1, memory_mb: float = 1000, cache: bool = True, **server: Any) -> Variant:
    itype = InstanceType("ml.test", 2, memory_mb / 1024)
    base = tmp / "variant"
    (base / "models").mkdir(parents=True, exist_ok=True)
    template = ServerTemplate("ep", "AllTraffic", "m", "img", itype, (), {}, base, False, "s3://b/p/", cache)
    variant = Variant("AllTraffic", 1.0, template)
    for n in range(1, count + 1):
        instance = Instance(f"AllTraffic-{n}", 0, tmp / f"{n}.log", healthy=True)
        instance.upstream = _Server(base, **server)  # type: ignore[assignment]
        variant.instances.append(instance)
    return variant


def _server(instance: Instance) -> _Server:
    assert isinstance(instance.upstream, _Server)
    return instance.upstream


@pytest.fixture
def s3() -> _S3:
    store = _S3()
    for name in ("a", "b", "c", "d"):
        store.objects[f"b/p/{name}.tar.gz"] = _tarball(300 * 1024, name)
    return store


async def _call(models: MultiModels, variant: Variant, target: str) -> bytes:
    answer = await models.invoke(variant, target, b"x", {"content-type": "text/csv"}, random.Random(0), 5.0)
    assert answer.status == 200, answer
    return answer.body


def test_first_use_loads_once_for_concurrent_requests_and_then_hits(s3: _S3, tmp_path: Path) -> None:
    async def run() -> None:
        models = MultiModels(s3)
        models.metrics = ModelMetrics()
        variant = _variant(tmp_path)
        bodies = await asyncio.gather(*(_call(models, variant, "a.tar.gz") for _ in range(6)))
        assert bodies == [b"a:x"] * 6
        await _call(models, variant, "a.tar.gz")
        assert sum(_server(variant.instances[0]).loads.values()) == 1 and s3.gets == 1
        added, gauges = models.metrics.points()
        samples = {p.key[1]: p.stats for p in added}
        assert samples["ModelCacheHit"].count == 7 and samples["ModelCacheHit"].total == 1  # one hit, six waited
        assert samples["ModelLoadingWaitTime"].count == 6 and samples["ModelDownloadingTime"].count == 1
        assert [(p.key[1], p.stats.total) for p in gauges] == [("LoadedModelCount", 1.0)]

    asyncio.run(run())


def test_least_recently_used_models_make_room_within_the_memory_share(s3: _S3, tmp_path: Path) -> None:
    async def run() -> None:
        models = MultiModels(s3)
        variant = _variant(tmp_path, memory_mb=1.0)  # 0.75 MB for models: two of 300 KB fit, three do not
        for target in ("a", "b", "a", "c"):
            await _call(models, variant, f"{target}.tar.gz")
        vm = models.of(variant)
        assert vm.loaded(variant.instances[0]) == ["a.tar.gz", "c.tar.gz"]  # b was the least recently used
        assert sorted(_server(variant.instances[0]).app.models) == sorted(
            multimodel.model_name(t) for t in ("a.tar.gz", "c.tar.gz")
        )
        on_disk = {p.name for p in (variant.template.base / "models").iterdir()}
        assert multimodel.model_name("b.tar.gz") not in on_disk  # its files went with it
        assert await _call(models, variant, "b.tar.gz") == b"b:x"  # and it comes back when asked for

    asyncio.run(run())


def test_a_server_out_of_memory_has_models_unloaded_until_one_fits(s3: _S3, tmp_path: Path) -> None:
    async def run() -> None:
        models = MultiModels(s3)
        variant = _variant(tmp_path, max_models=2)  # the platform's budget is large; the server says 507
        for target in ("a", "b", "c", "d"):
            assert await _call(models, variant, f"{target}.tar.gz") == f"{target}:x".encode()
        assert models.of(variant).loaded(variant.instances[0]) == ["c.tar.gz", "d.tar.gz"]

    asyncio.run(run())


def test_cache_disabled_cold_models_and_restarted_servers(s3: _S3, tmp_path: Path) -> None:
    async def run() -> None:
        models = MultiModels(s3, cold_after_s=0.0)
        variant = _variant(tmp_path)
        await _call(models, variant, "a.tar.gz")
        _server(variant.instances[0]).app.models.clear()  # the server restarted and lost its models
        assert await _call(models, variant, "a.tar.gz") == b"a:x"  # a 404 from invoke: loaded again
        assert _server(variant.instances[0]).loads[multimodel.model_name("a.tar.gz")] == 2
        vm = models.of(variant)
        vm._last_sweep = 0.0
        await vm.sweep(variant)  # not used for cold_after_s: unloaded
        assert vm.loaded(variant.instances[0]) == [] and _server(variant.instances[0]).app.models == {}

        disabled = _variant(tmp_path / "disabled", cache=False)
        await _call(models, disabled, "b.tar.gz")
        for _ in range(5):
            await asyncio.sleep(0.005)
        assert _server(disabled.instances[0]).app.models == {}  # ModelCacheSetting Disabled: unloaded after use

    asyncio.run(run())


def test_a_request_whose_instance_dies_is_served_by_another(s3: _S3, tmp_path: Path) -> None:
    async def run() -> None:
        models = MultiModels(s3)
        variant = _variant(tmp_path, count=2)
        await _call(models, variant, "a.tar.gz")
        holder = next(i for i in variant.instances if models.of(variant).holds(i, "a.tar.gz"))
        other = next(i for i in variant.instances if i is not holder)
        _server(holder).dead = True
        assert await _call(models, variant, "a.tar.gz") == b"a:x"
        assert not holder.healthy and models.of(variant).loaded(other) == ["a.tar.gz"]
        assert not models.of(variant).holds(holder, "a.tar.gz")

    asyncio.run(run())


def test_a_target_that_names_no_artifact_or_none_is_the_callers_error(s3: _S3, tmp_path: Path) -> None:
    async def run() -> None:
        models = MultiModels(s3)
        variant = _variant(tmp_path)
        s3.objects["b/p/corrupt.tar.gz"] = b"not a tarball"
        with pytest.raises(TargetModelError, match=r"key: p/missing\.tar\.gz"):
            await _call(models, variant, "missing.tar.gz")
        with pytest.raises(TargetModelError, match="corrupt.tar.gz"):
            await _call(models, variant, "corrupt.tar.gz")
        with pytest.raises(TargetModelError, match="TargetModel"):
            await models.invoke(variant, None, b"x", {}, random.Random(0), 5.0)
        assert models.of(variant).loaded(variant.instances[0]) == []
        assert await _call(models, variant, "a.tar.gz") == b"a:x"

    asyncio.run(run())


def test_targets_go_where_they_are_and_spread_over_instances_when_new() -> None:
    nodes = [Instance(f"AllTraffic-{n}", 0, Path("/dev/null"), healthy=True) for n in range(1, 4)]
    rng = random.Random(0)
    placed = {t: pick_for_model(nodes, t, lambda i: False, lambda i: i.host, rng).host for t in map(str, range(300))}
    again = {t: pick_for_model(nodes, t, lambda i: False, lambda i: i.host, rng).host for t in map(str, range(300))}
    assert placed == again  # the same instance every time: the same router, or a restarted one
    assert min(Counter(placed.values()).values()) > 60  # and about a third each
    holder = nodes[2]
    assert all(pick_for_model(nodes, "7", lambda i: i is holder, lambda i: i.host, rng) is holder for _ in range(20))
    holder.healthy = False  # a holder that is not healthy is passed over
    assert pick_for_model(nodes, "7", lambda i: i is holder, lambda i: i.host, rng) is not holder
