"""Asynchronous inference: InvokeEndpointAsync's durable queue, its workers, and their S3 results.

An endpoint config's ``AsyncInferenceConfig`` makes its endpoint asynchronous. ``InvokeEndpointAsync``
names an input object in S3; :meth:`AsyncInference.submit` records the request as a row of the store
(kind ``async-invocation``, status Pending) and answers at once with where the result will be:
``<S3OutputPath>/<id>.out``, and ``<S3FailurePath>/<id>-error.out`` when the config has a failure
path (without one, errors go to ``<S3OutputPath>/<id>-error.out`` and no FailureLocation is
announced, as on AWS). A request is in the store before it is acknowledged and leaves it only once
its result is written, so a restart loses none: what was InProgress is Pending again at start-up.

Per endpoint, one dispatcher takes Pending rows oldest first (a compare-and-set Pending ->
InProgress claims each) and keeps at most ``MaxConcurrentInvocationsPerInstance`` requests in flight
per healthy model server. Each worker reads the input object, sends it through the endpoint's
router (:meth:`EndpointEngine.invoke`, so variants, health and retries apply), and writes the
model's answer to the output key, or the model's error message (or why there was none) to the
failure key. A request not started within its ``RequestTTLSeconds`` fails as expired. With no
model server (an endpoint scaled to zero, one still being created) requests wait in the queue.

Every ``METRICS_S`` the backlog of each asynchronous endpoint is written to the metric store as AWS
publishes it: ``ApproximateBacklogSize``, ``ApproximateBacklogSizePerInstance`` and
``HasBacklogWithoutCapacity`` (namespace AWS/SageMaker, dimension EndpointName).

LIMITATIONS: NotificationConfig (SNS topics) is recorded and described, no notification is sent;
KmsKeyId is recorded, results are written with the bucket's own encryption; InputLocation must be
an ``s3://`` URI.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opensage.errors import AlreadyExists, Conflict, NotFound
from opensage.objects.transfer import split_s3_uri
from opensage.serving.endpoints import CONFIG, ENDPOINT, EndpointEngine, NoEndpoint, NotReady
from opensage.serving.metrics import InvocationMetrics
from opensage.store.entities import Resource
from opensage.store.metrics import MetricStore, Point, Stats, dimensions
from opensage.store.sql import SqlStore

log = logging.getLogger(__name__)
KIND = "async-invocation"
PENDING, IN_PROGRESS = "Pending", "InProgress"
DEFAULT_PER_INSTANCE = 4
DEFAULT_TTL_S = 6 * 3600
DEFAULT_TIMEOUT_S = 900
POLL_S = 0.5  # how often a dispatcher with nothing to wake it looks again (capacity coming back)
METRICS_S = 5.0
BACKLOG_METRICS = ("ApproximateBacklogSize", "ApproximateBacklogSizePerInstance", "HasBacklogWithoutCapacity")


class NotAsync(Exception):
    """The endpoint's config has no AsyncInferenceConfig."""


@dataclass(frozen=True, slots=True)
class AsyncSettings:
    output_path: str
    failure_path: str | None
    per_instance: int

    @classmethod
    def of(cls, config: Mapping[str, Any] | None) -> AsyncSettings | None:
        """The settings of an endpoint config's AsyncInferenceConfig (None: a real-time endpoint)."""
        if not config:
            return None
        output = config.get("OutputConfig") or {}
        client = config.get("ClientConfig") or {}
        return cls(
            str(output["S3OutputPath"]).rstrip("/"),
            str(output["S3FailurePath"]).rstrip("/") if output.get("S3FailurePath") else None,
            int(client.get("MaxConcurrentInvocationsPerInstance") or DEFAULT_PER_INSTANCE),
        )

    def locations(self, request_id: str, extension: str | None = None, filename: str | None = None) -> tuple[str, str]:
        """(output URI, failure URI) of one request."""
        output = f"{self.output_path}/{extension.strip('/')}" if extension else self.output_path
        name = filename or f"{request_id}.out"
        stem = name[: -len(".out")] if name.endswith(".out") else name
        failure_dir = self.failure_path or self.output_path
        return f"{output}/{name}", f"{failure_dir}/{stem}-error.out"


def validate(config: Mapping[str, Any]) -> str | None:
    """What is wrong with a CreateEndpointConfig's AsyncInferenceConfig (None: nothing)."""
    output = config.get("OutputConfig") or {}
    for key in ("S3OutputPath", "S3FailurePath"):
        value = output.get(key)
        if (key == "S3OutputPath" or value is not None) and not str(value or "").startswith("s3://"):
            return f"AsyncInferenceConfig.OutputConfig.{key} must be an S3 URI (s3://bucket/prefix); got {value!r}."
    return None


@dataclass(frozen=True, slots=True)
class Accepted:
    inference_id: str
    output_location: str
    failure_location: str | None


class AsyncInference:
    """The queue of every asynchronous endpoint, its dispatchers and its backlog metrics."""

    def __init__(
        self,
        store: SqlStore,
        s3: Any,
        endpoints: EndpointEngine,
        clock: Callable[[], dt.datetime],
        metric_store: MetricStore | None = None,
        metrics: InvocationMetrics | None = None,
        metrics_s: float = METRICS_S,
    ) -> None:
        self.store, self.s3, self.endpoints, self.clock = store, s3, endpoints, clock
        self.metric_store, self.metrics, self.metrics_s = metric_store, metrics, metrics_s
        self._configs: dict[str, AsyncSettings | None] = {}  # endpoint config name -> settings (configs never change)
        self._queued: dict[str, set[str]] = {}  # endpoint -> its requests not yet answered
        self._wake: dict[str, asyncio.Event] = {}
        self._dispatchers: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- reads ----------------------------------------------------------------------------------------

    def backlog(self, endpoint: str) -> int:
        """Requests of ``endpoint`` accepted and not yet answered (queued or in flight)."""
        return len(self._queued.get(endpoint, ()))

    def settings(self, config_name: str) -> AsyncSettings | None:
        """The async settings of endpoint config ``config_name`` (a cached read of the store)."""
        if config_name not in self._configs:
            row = self.store.get_resource(CONFIG, config_name)
            if row is None:
                return None
            self._configs[config_name] = AsyncSettings.of(row.data.get("AsyncInferenceConfig"))
        return self._configs[config_name]

    def _capacity(self, endpoint: str, per_instance: int) -> tuple[int, int]:
        """(healthy model servers, requests that may be in flight) of ``endpoint`` now."""
        healthy = sum(1 for servers in self.endpoints.variant_health(endpoint).values() for s in servers if s.healthy)
        return healthy, healthy * per_instance

    # --- lifecycle --------------------------------------------------------------------------------------

    async def recover(self) -> None:
        """At start-up: what a stopped server had in flight is Pending again; every queue is dispatched."""
        rows = await asyncio.to_thread(self.store.list_resources, KIND, descending=False)
        for row in rows:
            if row.status == IN_PROGRESS:
                with contextlib.suppress(NotFound, Conflict):
                    await asyncio.to_thread(
                        self.store.update_resource, KIND, row.name, status=PENDING, expect_status=IN_PROGRESS,
                        now=self.clock(),
                    )
            self._queued.setdefault(row.data["EndpointName"], set()).add(row.name)
        for endpoint in list(self._queued):
            self._dispatch(endpoint)
        self._spawn(self._metrics_forever(), "async-inference-metrics")

    async def shutdown(self) -> None:
        """Stop dispatching; requests in flight stay InProgress in the store and run again after a restart."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- accepting requests -------------------------------------------------------------------------------

    async def submit(
        self,
        endpoint: str,
        input_location: str,
        *,
        content_type: str = "",
        accept: str = "",
        custom_attributes: str | None = None,
        inference_id: str | None = None,
        ttl_s: int | None = None,
        timeout_s: int | None = None,
        extension: str | None = None,
        filename: str | None = None,
    ) -> Accepted:
        """Queue one request (durably) and say where its result will be.

        Raises:
            NoEndpoint: there is no such endpoint. NotAsync: it is a real-time endpoint.
        """
        row = await asyncio.to_thread(self.store.get_resource, ENDPOINT, endpoint)
        if row is None:
            raise NoEndpoint(endpoint)
        settings = await asyncio.to_thread(self.settings, row.data.get("EndpointConfigName", ""))
        if settings is None:
            raise NotAsync(endpoint)
        request_id = str(uuid.uuid4())
        output, failure = settings.locations(request_id, extension, filename)
        now = self.clock()
        data: dict[str, Any] = {
            "EndpointName": endpoint,
            "InferenceId": inference_id or request_id,
            "InputLocation": input_location,
            "ContentType": content_type,
            "Accept": accept,
            "CustomAttributes": custom_attributes,
            "OutputLocation": output,
            "FailureLocation": failure,
            "ExpiresAt": now.timestamp() + (ttl_s or DEFAULT_TTL_S),
            "InvocationTimeoutSeconds": timeout_s or DEFAULT_TIMEOUT_S,
        }
        arn = f"{row.arn}/async-invocation/{request_id}"
        record = Resource(KIND, request_id, arn, PENDING, now, now, data, parent_arn=row.arn)
        with contextlib.suppress(AlreadyExists):  # a fresh uuid
            await asyncio.to_thread(self.store.create_resource, record)
        self._queued.setdefault(endpoint, set()).add(request_id)
        self._dispatch(endpoint)
        return Accepted(inference_id or request_id, output, failure if settings.failure_path else None)

    def _dispatch(self, endpoint: str) -> None:
        """Wake the endpoint's dispatcher, starting one when there is none."""
        self._wake.setdefault(endpoint, asyncio.Event()).set()
        task = self._dispatchers.get(endpoint)
        if task is None or task.done():
            self._dispatchers[endpoint] = self._spawn(self._dispatch_loop(endpoint), f"async-dispatch:{endpoint}")

    # --- dispatching ----------------------------------------------------------------------------------------

    async def _dispatch_loop(self, endpoint: str) -> None:
        wake = self._wake.setdefault(endpoint, asyncio.Event())
        inflight: set[asyncio.Task[None]] = set()
        try:
            while self._queued.get(endpoint) or inflight:
                wake.clear()
                started = await self._start_some(endpoint, inflight)
                if started is None:  # the endpoint is gone: so is its queue
                    await self._drop_queue(endpoint)
                    return
                waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(wake.wait()), *inflight]
                done, _ = await asyncio.wait(waiters, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
                waiters[0].cancel()
                inflight -= {t for t in done if t is not waiters[0]}  # type: ignore[comparison-overlap]
        finally:
            for task in inflight:
                task.cancel()
            if self._dispatchers.get(endpoint) is asyncio.current_task():
                del self._dispatchers[endpoint]

    async def _start_some(self, endpoint: str, inflight: set[asyncio.Task[None]]) -> int | None:
        """Claim and start as many Pending requests as the endpoint's free capacity; None when it is gone."""
        row = await asyncio.to_thread(self.store.get_resource, ENDPOINT, endpoint)
        if row is None:
            return None
        settings = await asyncio.to_thread(self.settings, row.data.get("EndpointConfigName", ""))
        per_instance = settings.per_instance if settings is not None else DEFAULT_PER_INSTANCE
        _, capacity = self._capacity(endpoint, per_instance)
        free = capacity - len(inflight)
        if free <= 0:
            return 0
        rows = await asyncio.to_thread(
            self.store.list_resources, KIND, parent_arn=row.arn, status=PENDING, descending=False, limit=free
        )
        started = 0
        for pending in rows:
            try:
                claimed = await asyncio.to_thread(
                    self.store.update_resource, KIND, pending.name, status=IN_PROGRESS, expect_status=PENDING,
                    now=self.clock(),
                )
            except (NotFound, Conflict):
                continue
            inflight.add(self._spawn(self._work(claimed), f"async-invoke:{endpoint}"))
            started += 1
        return started

    async def _drop_queue(self, endpoint: str) -> None:
        for name in list(self._queued.pop(endpoint, set())):
            with contextlib.suppress(NotFound):
                await asyncio.to_thread(self.store.delete_resource, KIND, name)

    # --- one request ---------------------------------------------------------------------------------------

    async def _work(self, row: Resource) -> None:
        d = row.data
        endpoint = d["EndpointName"]
        if self.clock().timestamp() > float(d["ExpiresAt"]):
            await self._finish(row, None, b"The request expired: it was not processed within its RequestTTLSeconds.")
            return
        try:
            body, stored_type = await asyncio.to_thread(self._read, d["InputLocation"])
        except Exception as exc:
            await self._finish(row, None, f"Could not read the input {d['InputLocation']}: {exc}".encode())
            return
        sent = time.perf_counter()
        try:
            answer = await self.endpoints.invoke(
                endpoint, body, d.get("ContentType") or stored_type, d.get("Accept") or "", None,
                d.get("CustomAttributes"),
                timeout=float(d.get("InvocationTimeoutSeconds") or DEFAULT_TIMEOUT_S),
            )
        except (NotReady, NoEndpoint):  # its servers went away meanwhile: back in the queue
            with contextlib.suppress(NotFound, Conflict):
                await asyncio.to_thread(
                    self.store.update_resource, KIND, row.name, status=PENDING, expect_status=IN_PROGRESS,
                    now=self.clock(),
                )
            return
        if self.metrics is not None:
            status = 200 if answer.status == 200 else 424 if answer.status else 500
            overhead = max(0.0, time.perf_counter() - sent - answer.model_seconds)
            self.metrics.record(endpoint, answer.variant, status, answer.model_seconds * 1e6, overhead * 1e6)
        if answer.status == 200:
            await self._finish(row, (answer.body, answer.content_type or "application/octet-stream"), b"")
        elif answer.status:
            await self._finish(row, None, answer.body)  # the model's own error message
        else:
            await self._finish(row, None, answer.body)  # why the model gave no answer (timeout, no server)

    def _read(self, uri: str) -> tuple[bytes, str]:
        """The input object and its content type (the request's ContentType, when it has none: the
        SDK's AsyncPredictor gives the serializer's type to the object only)."""
        bucket, key = split_s3_uri(uri)
        obj = self.s3.get_object(Bucket=bucket, Key=key)
        stored = str(obj.get("ContentType") or "")
        return bytes(obj["Body"].read()), "" if stored == "binary/octet-stream" else stored

    def _write(self, uri: str, body: bytes, content_type: str) -> None:
        bucket, key = split_s3_uri(uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)

    async def _finish(self, row: Resource, result: tuple[bytes, str] | None, error: bytes) -> None:
        """Write the result (or the error) to its key, then take the request out of the queue."""
        d = row.data
        try:
            if result is not None:
                await asyncio.to_thread(self._write, d["OutputLocation"], result[0], result[1])
            else:
                await asyncio.to_thread(self._write, d["FailureLocation"], error, "text/plain")
        except Exception as exc:  # the bucket went away: nothing can be written, say so
            log.warning("async inference %s of endpoint %s: could not write its result: %s", row.name,
                        d["EndpointName"], exc)
        with contextlib.suppress(NotFound):
            await asyncio.to_thread(self.store.delete_resource, KIND, row.name)
        self._queued.get(d["EndpointName"], set()).discard(row.name)

    # --- backlog metrics --------------------------------------------------------------------------------------

    async def _metrics_forever(self) -> None:
        while True:
            await asyncio.sleep(self.metrics_s)
            try:
                await self.publish()
            except Exception:
                log.exception("could not write the async endpoints' backlog metrics")

    async def publish(self) -> None:
        """Write each asynchronous endpoint's backlog (one sample) to the metric store; expire old requests."""
        now = self.clock().timestamp()
        points = []
        for endpoint, queued in list(self._queued.items()):
            healthy, _ = self._capacity(endpoint, 1)
            size = len(queued)
            values = (size, size / healthy if healthy else size, 1.0 if size and not healthy else 0.0)
            dims = dimensions([("EndpointName", endpoint)])
            for metric, value in zip(BACKLOG_METRICS, values, strict=True):
                points.append(Point(("AWS/SageMaker", metric, dims), int(now // 60) * 60, "None", Stats.of([value])))
            if not queued:
                del self._queued[endpoint]
        if self.metric_store is not None and points:
            await asyncio.to_thread(self.metric_store.add, points)
        await self._expire(now)

    async def _expire(self, now: float) -> None:
        """Fail the Pending requests whose TTL ran out while no server could take them."""
        for row in await asyncio.to_thread(self.store.list_resources, KIND, status=PENDING, descending=False):
            if now > float(row.data["ExpiresAt"]):
                try:
                    claimed = await asyncio.to_thread(
                        self.store.update_resource, KIND, row.name, status=IN_PROGRESS, expect_status=PENDING,
                        now=self.clock(),
                    )
                except (NotFound, Conflict):
                    continue
                await self._finish(
                    claimed, None, b"The request expired: it was not processed within its RequestTTLSeconds."
                )

