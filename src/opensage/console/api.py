"""What the console reads and does, apart from HTTP: provider calls (validated against the service model,
exactly as the gateway does), log and metric reads, endpoint health, S3 browsing.

Every change goes through the same provider method the API serves (the gateway's own dispatch
table), with a request dict in the API's shape, so a form gets the same validation and the same
error as boto3 would. The console sees only :class:`ConsoleDeps`, not the whole platform.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opensage.aws.context import RequestContext
from opensage.aws.dispatch import DispatchTable
from opensage.aws.validate import validate
from opensage.errors import NotFound as LogNotFound
from opensage.errors import ServiceError
from opensage.identity import platform_key
from opensage.images import registry
from opensage.jobs import processing, training, transform
from opensage.logstore import LogStore
from opensage.serving import asyncinference
from opensage.serving.endpoints import EndpointEngine
from opensage.serving.metrics import InvocationMetrics
from opensage.store.sql import SqlStore

if TYPE_CHECKING:
    from opensage.console.auth import Session

log = logging.getLogger(__name__)
MAX_LOG_EVENTS = 50_000  # read for metric charts
_ROUND = re.compile(r"\[(\d+)\]")
STORAGE_SCAN_LIMIT = 10_000  # objects counted per bucket on the home page
LOG_GROUPS = {  # the store's resource kind -> the log group its engine writes
    "training-job": training.LOG_GROUP,
    "processing-job": processing.LOG_GROUP,
    "transform-job": transform.LOG_GROUP,
}
_KINDS = {  # Describe operation -> the store's resource kind
    "DescribeTrainingJob": "training-job",
    "DescribeEndpoint": "endpoint",
    "DescribeEndpointConfig": "endpoint-config",
    "DescribeModel": "model",
    "DescribeTransformJob": "transform-job",
    "DescribeProcessingJob": "processing-job",
    "DescribeExperiment": "experiment",
    "DescribeLabelingJob": "labeling-job",
}


class Missing(Exception):
    """The page's resource does not exist; the message says which."""


@dataclass(frozen=True, slots=True)
class Listing:
    """One level of a bucket: sub-prefixes and objects (key, size, last modified)."""

    prefixes: list[str]
    objects: list[dict[str, Any]]
    truncated: bool


@dataclass(frozen=True, slots=True)
class ConsoleDeps:
    """What the console needs of the platform, and nothing more."""

    dispatch: DispatchTable  # the gateway's table: the console calls the very methods the API serves
    store: SqlStore  # reads: resources for pages, access keys for sign-in and the calls' identity
    logs: LogStore  # the jobs' CloudWatch log streams
    metrics: InvocationMetrics  # endpoint invocation counters and latencies
    endpoints: EndpointEngine  # model-server health of running endpoints
    s3: Any  # the platform's boto3 S3 client, for the storage browser
    account_id: str
    default_role_arn: str  # suggested in the new-training-job form
    region: str
    home: Path  # the console's session key and password live here


class ConsoleApi:
    def __init__(self, deps: ConsoleDeps) -> None:
        self.deps = deps
        self.dispatch = deps.dispatch
        self.store = deps.store
        self.region = deps.region
        self.account_id = deps.account_id
        self.default_role_arn = deps.default_role_arn
        self.s3 = deps.s3
        self.logs = deps.logs

    # --- provider calls ---------------------------------------------------------------------------

    def _context(self, session: Session, service: str, operation: str) -> RequestContext:
        store = self.store
        if session.access_key_id:  # the key the user signed in with, never another one
            key = store.get_access_key(session.access_key_id)
            if key is None or key.status != "Active":
                raise ServiceError("AccessDenied", "The access key of this session no longer exists; sign in again.")
        else:  # signed in with the console password: the platform's own key
            key = platform_key(store, self.account_id)
        return RequestContext(
            service,
            operation,
            self.region,
            self.account_id,
            str(uuid.uuid4()),
            key.access_key_id,
            key.principal_arn,
            key.user_id,
            time.perf_counter(),
        )

    def serves(self, service: str, operation: str) -> bool:
        """Does the platform implement ``operation`` (e.g. processing jobs, still being built)?"""
        return self.dispatch.serves(service, operation)

    def check(self, service: str, operation: str, request: dict[str, Any]) -> None:
        """The gateway's validation of ``request`` against the service model (``ValidationException``)."""
        op = self.dispatch.specs.get(service).operation(operation)
        if op is None:
            raise ServiceError("UnknownOperationException", f"Operation {operation} is not part of {service}.")
        validate(op.input_shape, request)

    async def call(self, session: Session, service: str, operation: str, request: dict[str, Any]) -> Any:
        """Validate ``request`` against the service model and run the provider's method, as the gateway does.

        Raises:
            ServiceError: the API's error (``ValidationException`` with its message, ...).
        """
        self.check(service, operation, request)
        handler = self.dispatch.require(service, operation)
        return await handler(self._context(session, service, operation), request)

    async def sagemaker(self, session: Session, operation: str, **request: Any) -> Any:
        return await self.call(session, "sagemaker", operation, request)

    async def describe(self, session: Session, operation: str, what: str, **request: Any) -> dict[str, Any]:
        """A Describe* answer; :class:`Missing` when the resource does not exist."""
        name = str(next(iter(request.values())))
        try:
            return await self.sagemaker(session, operation, **request)
        except ServiceError as exc:
            # SageMaker answers a missing resource with a ValidationException; tell it from a real one.
            kind = _KINDS.get(operation)
            key = name.lower() if kind == "experiment" else name  # experiments are kept by their lower-cased name
            if kind and await asyncio.to_thread(self.store.get_resource, kind, key) is None:
                raise Missing(f"There is no {what} named “{name}”.") from exc
            raise

    async def listing(self, session: Session, operation: str, key: str, **request: Any) -> list[dict[str, Any]]:
        """A List* answer's items, every page of them; empty when the platform does not serve the operation yet."""
        if not self.serves("sagemaker", operation):
            return []
        items: list[dict[str, Any]] = []
        request = {"MaxResults": 100, **request}
        while True:
            answer = await self.sagemaker(session, operation, **request)
            items += answer.get(key, [])
            if not answer.get("NextToken"):
                return items
            request["NextToken"] = answer["NextToken"]

    # --- job logs and training metrics -----------------------------------------------------------

    def log_streams(self, group: str, job: str) -> list[str]:
        """The job's streams in ``group``: one per instance, ``<job>/<host>`` (plus ``-<epoch>`` for some)."""
        try:
            return [s.name for s in self.logs.list_streams(group, prefix=f"{job}/")]
        except LogNotFound:
            return []

    def read_log(self, group: str, stream: str, token: str | None) -> tuple[list[tuple[int, str]], str]:
        """New events of ``stream`` after ``token`` (from the head without one) and the token to go on with."""
        page = self.logs.get_events(group, stream, start_from_head=True, token=token)
        return [(e.timestamp, e.message) for e in page.events], page.next_forward_token

    def _all_events(self, stream: str) -> Iterator[str]:
        token, seen = None, 0
        while seen < MAX_LOG_EVENTS:
            events, nxt = self.read_log(training.LOG_GROUP, stream, token)
            if not events:
                return
            seen += len(events)
            for _, message in events:
                yield message
            token = nxt

    def metric_series(self, job: str, description: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
        """Per metric definition, its values over training rounds, from the first instance's log lines.

        The round is the ``[n]`` of an evaluation line (as XGBoost prints it); lines without one count up.
        """
        algo = description.get("AlgorithmSpecification", {})
        definitions = algo.get("MetricDefinitions")
        if not definitions:
            image = registry.resolve(algo.get("TrainingImage", ""))
            definitions = image.metric_definitions() if image else []
        patterns = []
        for d in definitions:
            try:
                patterns.append((d["Name"], re.compile(d["Regex"])))
            except (re.error, KeyError):
                continue
        streams = self.log_streams(training.LOG_GROUP, job)
        series: dict[str, dict[str, list[float]]] = {}
        if not patterns or not streams:
            return series
        for line in self._all_events(streams[0]):
            for name, regex in patterns:
                m = regex.search(line)
                if not m or not m.groups():
                    continue
                try:
                    value = float(m.group(1))
                except ValueError:
                    continue
                points = series.setdefault(name, {"x": [], "y": []})
                r = _ROUND.search(line)
                points["x"].append(float(r.group(1)) if r else float(len(points["x"])))
                points["y"].append(value)
        return series

    # --- endpoints ----------------------------------------------------------------------------------

    def endpoint_health(self, name: str) -> dict[str, list[dict[str, Any]]]:
        """Per variant, each model server: its port, health and requests in flight."""
        health = self.deps.endpoints.variant_health(name)
        return {variant: [dataclasses.asdict(server) for server in servers] for variant, servers in health.items()}

    def loaded_models(self, name: str) -> dict[str, list[list[str]]]:
        """Per multi-model variant, the models (TargetModel names) loaded on each of its instances."""
        return self.deps.endpoints.loaded_models(name)

    def async_backlog(self, name: str) -> tuple[int, int]:
        """(queued, in flight) requests of asynchronous endpoint ``name``: its requests accepted and not yet
        answered, the rows ApproximateBacklogSize counts (a request leaves the store once its result is written)."""
        row = self.store.get_resource("endpoint", name)
        if row is None:
            return 0, 0
        queued = self.store.list_resources(asyncinference.KIND, status=asyncinference.PENDING, parent_arn=row.arn)
        running = self.store.list_resources(asyncinference.KIND, status=asyncinference.IN_PROGRESS, parent_arn=row.arn)
        return len(queued), len(running)

    def endpoint_documents(self, name: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """The stored config of endpoint ``name`` and its variants' models by name (empty when gone)."""
        store = self.store
        row = store.get_resource("endpoint", name)
        config_row = store.get_resource("endpoint-config", row.data.get("EndpointConfigName", "")) if row else None
        config = config_row.data if config_row is not None else {}
        models: dict[str, dict[str, Any]] = {}
        for variant in config.get("ProductionVariants") or []:
            model = variant.get("ModelName", "")
            if model and model not in models:
                model_row = store.get_resource("model", model)
                if model_row is not None:
                    models[model] = model_row.data
        return config, models

    def endpoint_series(self, name: str, minutes: int = 30) -> dict[str, Any]:
        """Per minute of the last ``minutes``: invocations, errors, latency p50/p99 (ms); and the totals.

        A minute without invocations is ``None`` in every series (a gap in the charts, not a zero).
        """
        metrics = self.deps.metrics
        now = int(time.time() // 60) * 60
        start = now - (minutes - 1) * 60
        keys = [k for k in metrics.series() if k[0] == name]
        x = list(range(start, now + 60, 60))
        out: dict[str, Any] = {"x": x}
        for metric in ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors"):
            per_minute: dict[int, float | None] = dict.fromkeys(x)
            for key in (k for k in keys if k[2] == metric):
                for minute, bucket in metrics.buckets(key, start, now + 60):
                    if bucket.count:  # its requests, so an error count of 0 is a real 0
                        per_minute[minute] = (per_minute[minute] or 0.0) + bucket.total
            out[metric] = [per_minute[m] for m in x]
        p50, p99 = [], []
        for minute in x:
            q = metrics.latency_percentiles(name, minute)
            p50.append(round(q[0] / 1000, 3) if q else None)
            p99.append(round(q[1] / 1000, 3) if q else None)
        out["p50"], out["p99"] = p50, p99
        out["total"] = {
            metric: sum(b.total for k in keys if k[2] == metric for _, b in metrics.buckets(k, 0, now + 60))
            for metric in ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors")
        }
        return out

    # --- storage ------------------------------------------------------------------------------------

    def buckets(self) -> list[dict[str, Any]]:
        return list(self.s3.list_buckets().get("Buckets", []))

    def browse(self, bucket: str, prefix: str, limit: int = 1000) -> Listing:
        try:
            page = self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/", MaxKeys=limit)
        except self.s3.exceptions.NoSuchBucket as exc:
            raise Missing(f"There is no bucket named “{bucket}”.") from exc
        return Listing(
            [p["Prefix"] for p in page.get("CommonPrefixes", [])],
            [o for o in page.get("Contents", []) if o["Key"] != prefix],
            bool(page.get("IsTruncated")),
        )

    def bucket_use(self, bucket: str) -> tuple[int, int, bool]:
        """(objects, bytes, capped) of one bucket, counting at most STORAGE_SCAN_LIMIT objects."""
        count = size = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                count += 1
                size += obj["Size"]
            if count >= STORAGE_SCAN_LIMIT:
                return count, size, True
        return count, size, False

    def head(self, bucket: str, key: str) -> dict[str, Any]:
        try:
            return dict(self.s3.head_object(Bucket=bucket, Key=key))
        except self.s3.exceptions.ClientError as exc:
            raise Missing(f"There is no object s3://{bucket}/{key}.") from exc

    def open_object(self, bucket: str, key: str) -> Any:
        try:
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"]
        except self.s3.exceptions.ClientError as exc:
            raise Missing(f"There is no object s3://{bucket}/{key}.") from exc

    def upload(self, bucket: str, key: str, fileobj: Any) -> None:
        self.s3.upload_fileobj(fileobj, bucket, key)

    async def gather_use(self) -> list[dict[str, Any]]:
        buckets = await asyncio.to_thread(self.buckets)
        uses = await asyncio.gather(*(asyncio.to_thread(self.bucket_use, b["Name"]) for b in buckets))
        return [
            {"name": b["Name"], "objects": n, "bytes": size, "capped": capped}
            for b, (n, size, capped) in zip(buckets, uses, strict=True)
        ]
