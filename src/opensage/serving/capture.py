"""Data capture: an endpoint's requests and answers written to S3 as SageMaker writes them.

An endpoint config's ``DataCaptureConfig`` (EnableCapture, InitialSamplingPercentage,
DestinationS3Uri, CaptureOptions Input/Output, CaptureContentTypeHeader) applies to every variant.
The router hands each answered request to :meth:`DataCapture.record` (a dictionary lookup and, when
sampled, a list append: nothing is written on the request's path); every ``flush_s`` the records
are written, one JSON Lines object per endpoint, variant and hour, at
``<DestinationS3Uri>/<endpoint>/<variant>/yyyy/mm/dd/hh/<mm-ss-mmm>-<uuid>.jsonl``, one line per
request::

    {"captureData": {"endpointInput": {"observedContentType": "text/csv", "mode": "INPUT",
     "data": "1,2,3", "encoding": "CSV"}, "endpointOutput": {...}},
     "eventMetadata": {"eventId": "<uuid>", "inferenceTime": "2026-01-01T12:00:00Z"}, "eventVersion": "0"}

Data is CSV or JSON text when its content type is one of the config's CSV or JSON types
(``text/csv`` and ``application/json`` by default), otherwise BASE64. Model monitoring reads these files.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import random
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opensage.objects.transfer import split_s3_uri

log = logging.getLogger(__name__)
FLUSH_S = 2.0


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    destination: str
    percentage: float
    inputs: bool
    outputs: bool
    csv_types: frozenset[str]
    json_types: frozenset[str]
    kms_key_id: str = ""

    @classmethod
    def of(cls, config: Mapping[str, Any] | None) -> CaptureSettings | None:
        """The settings of an endpoint config's DataCaptureConfig (None: it captures nothing)."""
        if not config or not config.get("EnableCapture", True):
            return None
        modes = {o.get("CaptureMode") for o in config.get("CaptureOptions") or []} or {"Input", "Output"}
        header = config.get("CaptureContentTypeHeader") or {}
        return cls(
            str(config["DestinationS3Uri"]).rstrip("/"),
            float(config.get("InitialSamplingPercentage", 100)),
            "Input" in modes,
            "Output" in modes,
            frozenset(t.lower() for t in header.get("CsvContentTypes") or ["text/csv"]),
            frozenset(t.lower() for t in header.get("JsonContentTypes") or ["application/json"]),
            str(config.get("KmsKeyId") or ""),
        )

    def encode(self, content_type: str, data: bytes) -> tuple[str, str]:
        """(encoding, data) as the capture file carries them."""
        base = content_type.split(";", 1)[0].strip().lower()
        if base in self.csv_types or base in self.json_types:
            try:
                return ("CSV" if base in self.csv_types else "JSON"), data.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return "BASE64", base64.b64encode(data).decode()


def describe(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """DescribeEndpoint's DataCaptureConfig for an endpoint config's one."""
    settings = CaptureSettings.of(config)
    if config is None:
        return None
    answer: dict[str, Any] = {
        "EnableCapture": settings is not None,
        "CaptureStatus": "Started" if settings is not None else "Stopped",
        "CurrentSamplingPercentage": int(config.get("InitialSamplingPercentage", 100)),
        "DestinationS3Uri": config.get("DestinationS3Uri", ""),
    }
    if config.get("KmsKeyId"):
        answer["KmsKeyId"] = config["KmsKeyId"]
    return answer


class DataCapture:
    """Samples answered requests and writes them to S3 in the background."""

    def __init__(
        self,
        s3: Any,
        settings_of: Callable[[str], CaptureSettings | None],
        clock: Callable[[], dt.datetime],
        flush_s: float = FLUSH_S,
        rng: random.Random | None = None,
    ) -> None:
        self.s3 = s3
        self.settings_of = settings_of  # endpoint name -> its capture settings now (cheap: a cached lookup)
        self.clock = clock
        self.flush_s = flush_s
        self._rng = rng or random.Random()
        self._pending: dict[tuple[str, str, str, str], list[str]] = {}  # (dest, endpoint, variant, hour) -> lines
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    def record(
        self, endpoint: str, variant: str, content_type: str, body: bytes, answer_type: str, answer: bytes
    ) -> None:
        settings = self.settings_of(endpoint)
        if settings is None or self._rng.random() * 100.0 >= settings.percentage:
            return
        now = self.clock()
        data: dict[str, Any] = {}
        if settings.inputs:
            encoding, text = settings.encode(content_type, body)
            data["endpointInput"] = {
                "observedContentType": content_type,
                "mode": "INPUT",
                "data": text,
                "encoding": encoding,
            }
        if settings.outputs:
            encoding, text = settings.encode(answer_type, answer)
            data["endpointOutput"] = {
                "observedContentType": answer_type,
                "mode": "OUTPUT",
                "data": text,
                "encoding": encoding,
            }
        line = json.dumps(
            {
                "captureData": data,
                "eventMetadata": {"eventId": str(uuid.uuid4()), "inferenceTime": now.strftime("%Y-%m-%dT%H:%M:%SZ")},
                "eventVersion": "0",
            },
            separators=(",", ":"),
        )
        key = (settings.destination, endpoint, variant, now.strftime("%Y/%m/%d/%H"))
        with self._lock:
            self._pending.setdefault(key, []).append(line)

    def flush(self) -> int:
        """Write what was captured since the last flush; how many records."""
        with self._lock:
            pending, self._pending = self._pending, {}
        written = 0
        for (destination, endpoint, variant, hour), lines in pending.items():
            bucket, prefix = split_s3_uri(destination)
            now = self.clock()
            name = f"{now.strftime('%M-%S')}-{now.microsecond // 1000:03d}-{uuid.uuid4()}.jsonl"
            key = "/".join(p for p in (prefix.rstrip("/"), endpoint, variant, hour, name) if p)
            try:
                self.s3.put_object(Bucket=bucket, Key=key, Body=("\n".join(lines) + "\n").encode())
                written += len(lines)
            except Exception as exc:  # the bucket went away: these records are lost, say so
                log.warning("data capture of endpoint %s could not write s3://%s/%s: %s", endpoint, bucket, key, exc)
        return written

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flush_forever(), name="data-capture")

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await asyncio.to_thread(self.flush)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self.flush)


class CaptureConfigs:
    """Endpoint name -> the capture settings of the endpoint config its fleet serves (configs never change)."""

    def __init__(self, store: Any, serving_config: Callable[[str], str | None], config_kind: str) -> None:
        self.store = store
        self.serving_config = serving_config
        self.config_kind = config_kind
        self._cache: dict[str, CaptureSettings | None] = {}

    def __call__(self, endpoint: str) -> CaptureSettings | None:
        name = self.serving_config(endpoint)
        if name is None:
            return None
        if name not in self._cache:
            row = self.store.get_resource(self.config_kind, name)
            self._cache[name] = CaptureSettings.of(row.data.get("DataCaptureConfig")) if row else None
        return self._cache[name]
