"""Batch transform: a model's servers over every record of an S3 input, results back to S3.

Per input file (streamed from S3, never loaded whole): split into records (SplitType Line) or kept
whole (None), filtered (InputFilter), grouped into requests (MultiRecord up to MaxPayloadInMB, or
SingleRecord), sent to the model servers (InstanceCount of them, MaxConcurrentTransforms requests
in flight each), joined with the input (JoinSource Input) and filtered (OutputFilter), and written in
input order to ``<S3OutputPath>/<file>.out`` (AssembleWith Line puts one result per line).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import shutil
import tempfile
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from opensage import states
from opensage.contract import BATCH_ENV
from opensage.controller import SHUTDOWN_REASON, Run, RunController
from opensage.errors import OpenSageError
from opensage.jobs import channels
from opensage.jobs.specs import TransformJobSpec
from opensage.objects.transfer import S3LocationError, split_s3_uri
from opensage.serving.endpoints import EndpointEngine, Fleet, FleetError
from opensage.serving.upstream import UpstreamError
from opensage.states import JobStatus as Status
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch as _epoch

log = logging.getLogger(__name__)
KIND = "transform-job"
LOG_GROUP = "/aws/sagemaker/TransformJobs"


class TransformFailed(OpenSageError):
    """Ends the job as Failed; the message is its FailureReason."""


# --- JSONPath, the subset batch transform uses on CSV rows and JSON records ------------------------


def _select(value: list[Any], path: str) -> Any:
    """``$``, ``$[i]``, ``$[i,j,...]``, ``$[a:b]`` (negative indices allowed) over a list."""
    path = path.strip()
    if path in ("$", ""):
        return value
    if not (path.startswith("$[") and path.endswith("]")):
        raise TransformFailed(f"ClientError: JSONPath '{path}' is not supported; use $, $[i], $[i,j] or $[a:b].")
    inner = path[2:-1]
    try:
        if ":" in inner:
            lo, _, hi = inner.partition(":")
            return value[int(lo) if lo.strip() else None : int(hi) if hi.strip() else None]
        picks = [value[int(i)] for i in inner.split(",")]
    except (ValueError, IndexError) as exc:
        raise TransformFailed(
            f"ClientError: JSONPath '{path}' does not apply to a record of {len(value)} values."
        ) from exc
    return picks[0] if len(picks) == 1 and "," not in inner else picks


def _filter_csv(record: str, path: str | None) -> str:
    if not path or path == "$":
        return record
    picked = _select(record.split(","), path)
    return ",".join(picked) if isinstance(picked, list) else str(picked)


_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\[([^\]]*)\]")


def _json_path(value: Any, path: str) -> Any:
    """``$``, ``.name``, ``['name']``, ``['a','b']`` (an object of those keys), ``[i]``, ``[i,j]``, ``[a:b]``."""
    path = path.strip()
    if not path.startswith("$"):
        raise TransformFailed(f"ClientError: JSONPath '{path}' must start with $.")
    position = 1
    while position < len(path):
        m = _STEP.match(path, position)
        if m is None:
            raise TransformFailed(f"ClientError: JSONPath '{path}' is not supported at '{path[position:]}'.")
        position = m.end()
        try:
            if m.group(1) is not None:
                value = value[m.group(1)]
                continue
            inner = m.group(2).strip()
            if inner.startswith(("'", '"')):
                keys = [k.strip().strip("'\"") for k in inner.split(",")]
                value = value[keys[0]] if len(keys) == 1 else {k: value[k] for k in keys if k in value}
            else:
                value = _select(value, f"$[{inner}]")
        except (KeyError, TypeError) as exc:
            raise TransformFailed(
                f"ClientError: JSONPath '{path}' does not apply to the record {value!r:.200}."
            ) from exc
    return value


def _filter_json(record: str, path: str | None) -> str:
    if not path or path.strip() == "$":
        return record
    try:
        value = json.loads(record)
    except ValueError as exc:
        raise TransformFailed(
            f"ClientError: the record {record[:200]!r} is not JSON, so '{path}' cannot apply."
        ) from exc
    return json.dumps(_json_path(value, path))


def _join_json(source: str, result: str) -> str:
    """The input record with the model's answer under ``SageMakerOutput`` (JoinSource Input, JSON)."""
    try:
        output: Any = json.loads(result)
    except ValueError:
        output = result
    try:
        record = json.loads(source)
    except ValueError as exc:
        raise TransformFailed(
            f"ClientError: the input record {source[:200]!r} is not JSON and cannot be joined."
        ) from exc
    if isinstance(record, dict):
        return json.dumps({**record, "SageMakerOutput": output})
    if isinstance(record, list):
        return json.dumps([*record, output])
    return json.dumps({"SageMakerInput": record, "SageMakerOutput": output})


def _is_json(media_type: str) -> bool:
    return media_type.split(";", 1)[0].strip().lower() in ("application/json", "application/jsonlines")


class TransformEngine(RunController):
    """Runs transform jobs on model servers started for the job; stopping one cancels its run."""

    KIND = KIND

    def __init__(
        self, store: SqlStore, s3: Any, endpoints: EndpointEngine, work_dir: Path, clock: Callable[[], dt.datetime]
    ) -> None:
        super().__init__(store, clock)
        self.s3 = s3
        self.endpoints = endpoints
        self.work_dir = work_dir

    def _stop(self, run: Run) -> None:
        super()._stop(run)
        if run.task is not None:
            run.task.cancel()

    async def _end(self, name: str, status: str, reason: str | None) -> None:
        await self._finish(name, status, reason)

    async def _run(self, run: Run) -> None:
        name = run.name
        fleet: Fleet | None = None
        scratch = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self._scratch_root()))
        try:
            job = TransformJobSpec.from_request(await self._describe(name))
            await self._save(name, TransformStartTime=_epoch(self.clock()))
            channel = {"ChannelName": "input", "DataSource": job.document["TransformInput"]["DataSource"]}
            objects = await asyncio.to_thread(
                channels.list_channel, self.s3, channel, job.document["TransformJobArn"].split(":")[3]
            )
            count = job.instance_count
            env = {BATCH_ENV: "true", **job.environment}
            fleet = await self.endpoints.start_servers(
                f"transform-{name}",
                job.model_name,
                job.instance_type,
                count,
                env,
                scratch / "fleet",
            )
            instances = fleet.instances()
            work = [objects[i::count] for i in range(count)]
            await asyncio.gather(
                *(self._worker(job, inst, files, scratch) for inst, files in zip(instances, work, strict=True))
            )
            await self._finish(name, Status.COMPLETED, None)
        except asyncio.CancelledError:
            if run.shutting_down:
                await self._finish(name, Status.FAILED, SHUTDOWN_REASON)
            else:
                await self._finish(name, Status.STOPPED, None)
        except (TransformFailed, FleetError, S3LocationError) as exc:
            await self._finish(name, Status.FAILED, str(exc))
        except Exception as exc:
            log.exception("transform job %s failed inside the platform", name)
            await self._finish(name, Status.FAILED, f"InternalServerError: {type(exc).__name__}: {exc}")
        finally:
            if fleet is not None:
                with contextlib.suppress(Exception):
                    await self.endpoints.stop_servers(fleet, LOG_GROUP, name)
            shutil.rmtree(scratch, ignore_errors=True)

    def _scratch_root(self) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return self.work_dir

    async def _worker(
        self, job: TransformJobSpec, instance: Any, files: list[channels.S3Object], scratch: Path
    ) -> None:
        for obj in files:
            await self._transform_file(job, instance, obj, scratch)

    async def _records(self, obj: channels.S3Object, split: str, gzipped: bool) -> AsyncIterator[bytes]:
        """The input file's records, streamed from S3 in chunks (and gunzipped on the way, if asked)."""
        body = (await asyncio.to_thread(self.s3.get_object, Bucket=obj.bucket, Key=obj.key))["Body"]
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None

        async def read(size: int = -1) -> bytes:
            raw = await asyncio.to_thread(body.read, size) if size > 0 else await asyncio.to_thread(body.read)
            if inflate is None:
                return raw
            try:
                return inflate.decompress(raw) + (inflate.flush() if not raw else b"")
            except zlib.error as exc:
                raise TransformFailed(
                    f"ClientError: s3://{obj.bucket}/{obj.key} is not gzip data ({exc}); "
                    "set CompressionType to None for uncompressed input."
                ) from exc

        if split == "None":
            yield await read()
            return
        pending = b""
        while True:
            chunk = await read(4 * 1024 * 1024)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield line.rstrip(b"\r")
        if pending.strip():
            yield pending.rstrip(b"\r")

    async def _batches(self, job: TransformJobSpec, obj: channels.S3Object) -> AsyncIterator[list[bytes]]:
        split = job.split_type
        multi = job.batch_strategy == "MultiRecord"
        limit = job.max_payload_mb * 1024 * 1024
        batch: list[bytes] = []
        size = 0
        gzipped = job.compression == "Gzip"
        async for record in self._records(obj, split, gzipped):
            if batch and (not multi or size + len(record) + 1 > limit):
                yield batch
                batch, size = [], 0
            batch.append(record)
            size += len(record) + 1
        if batch:
            yield batch

    async def _transform_file(
        self, job: TransformJobSpec, instance: Any, obj: channels.S3Object, scratch: Path
    ) -> None:
        processing = job.document.get("DataProcessing") or {}
        content_type, accept, window = job.content_type, job.accept, job.max_concurrent
        out_path = scratch / "out" / (obj.relpath + ".out")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        line_end = b"\n" if job.assemble_with == "Line" else b""
        in_flight: list[asyncio.Task[list[bytes]]] = []
        first_record = 1
        with open(out_path, "wb") as out:

            async def drain(keep: int) -> None:
                while len(in_flight) > keep:
                    for result in await in_flight.pop(0):
                        out.write(result + line_end)

            async for batch in self._batches(job, obj):
                in_flight.append(
                    asyncio.ensure_future(
                        self._invoke(job, instance, obj, batch, first_record, content_type, accept, processing)
                    )
                )
                first_record += len(batch)
                await drain(window - 1)
            await drain(0)
        bucket, prefix = split_s3_uri(job.output_path)
        key = f"{prefix.rstrip('/')}/{obj.relpath}.out" if prefix else f"{obj.relpath}.out"
        try:
            await asyncio.to_thread(self.s3.upload_file, str(out_path), bucket, key)
        except Exception as exc:
            raise TransformFailed(
                f"ClientError: the output could not be written to s3://{bucket}/{key}: {exc}"
            ) from exc
        out_path.unlink()

    async def _invoke(
        self,
        job: TransformJobSpec,
        instance: Any,
        obj: channels.S3Object,
        batch: list[bytes],
        first: int,
        content_type: str,
        accept: str,
        processing: dict,
    ) -> list[bytes]:
        json_in, json_out = _is_json(content_type), _is_json(accept)
        in_filter = _filter_json if json_in else _filter_csv
        records = [in_filter(r.decode(), processing.get("InputFilter")).encode() for r in batch]
        client = job.document.get("ModelClientConfig") or {}
        timeout = float(client.get("InvocationsTimeoutInSeconds", 600))
        retries = int(client.get("InvocationsMaxRetries", 3))
        body = b"\n".join(records)
        for attempt in range(retries + 1):
            try:
                reply = await instance.connection().request(
                    "POST", "/invocations", body, {"content-type": content_type, "accept": accept}, timeout
                )
                break
            except (UpstreamError, TimeoutError) as exc:
                if attempt == retries:
                    raise TransformFailed(
                        f"ClientError: the model server did not answer for {obj.key} records "
                        f"{first}-{first + len(batch) - 1}: {exc}"
                    ) from exc
        if reply.status != 200:
            message = reply.body.decode("utf-8", "replace")[:500]
            raise TransformFailed(
                f"ClientError: the model rejected s3://{obj.bucket}/{obj.key} records {first}-{first + len(batch) - 1} "
                f"(line {first} is the first): {reply.status}: {message}"
            )
        results = (
            reply.body.decode("utf-8", "replace").strip().split("\n")
            if len(batch) > 1
            else [reply.body.decode("utf-8", "replace").strip()]
        )
        if len(results) != len(batch):
            results = [reply.body.decode("utf-8", "replace").strip()] if len(batch) == 1 else results
        if len(results) != len(batch):
            raise TransformFailed(
                f"ClientError: the model answered {len(results)} results for {len(batch)} records "
                f"of {obj.key} (records {first}-{first + len(batch) - 1})."
            )
        out = []
        for source, result in zip(batch, results, strict=True):
            if processing.get("JoinSource") == "Input":
                result = _join_json(source.decode(), result) if json_in else source.decode() + "," + result
            out_filter = _filter_json if json_in or json_out else _filter_csv
            out.append(out_filter(result, processing.get("OutputFilter")).encode())
        return out

    async def _finish(self, name: str, status: str, reason: str | None) -> None:
        """Record the job's end; nothing happens when it ended meanwhile or was never recorded."""
        fields = {"TransformEndTime": _epoch(self.clock()), **({"FailureReason": reason} if reason else {})}
        await self._move(name, status, fields=fields, quiet_from=states.TERMINAL_JOB_STATUSES)
