"""Input channels: which S3 objects go to which instance, and downloading them (File mode).

``S3Prefix`` lists every object under the prefix; ``ManifestFile`` reads the manifest's prefix and
relative keys. ``FullyReplicated`` gives every instance every object; ``ShardedByS3Key`` deals the
objects (sorted by key) round-robin. Local names are keys relative to the prefix (see :func:`_relative`);
a key or manifest entry whose local name would leave the channel's directory (a leading ``/``, a ``..``
segment) fails the job, naming the key, before anything is downloaded.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opensage.objects.transfer import S3LocationError, local_path, split_s3_uri


class ChannelError(S3LocationError):
    """The channel's data cannot be had; the message is the job's FailureReason."""


@dataclass(frozen=True, slots=True)
class S3Object:
    bucket: str
    key: str
    relpath: str
    size: int


def _list(s3: Any, bucket: str, prefix: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.extend((o["Key"], o["Size"]) for o in page.get("Contents", []) if not o["Key"].endswith("/"))
    except s3.exceptions.NoSuchBucket as exc:
        raise ChannelError(f"ClientError: the bucket '{bucket}' does not exist.") from exc
    return found


def list_channel(s3: Any, channel: dict[str, Any], region: str) -> list[S3Object]:
    """Every object of a channel, sorted by key.

    Raises:
        ChannelError: no S3 source, no objects, or a channel name or key that is no safe local name.
    """
    name = channel["ChannelName"]
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise ChannelError(f"ClientError: the channel name '{name}' cannot be a directory name.")
    source = channel["DataSource"].get("S3DataSource")
    if source is None:
        raise ChannelError(
            f"ClientError: channel '{channel['ChannelName']}' has no S3DataSource; "
            "OpenSage reads channels from S3 only."
        )
    uri, data_type = source["S3Uri"], source.get("S3DataType", "S3Prefix")
    bucket, prefix = split_s3_uri(uri)
    if data_type == "ManifestFile":
        objects = _manifest(s3, bucket, prefix)
    elif data_type == "S3Prefix":
        objects = [S3Object(bucket, k, _relative(prefix, k), size) for k, size in _list(s3, bucket, prefix)]
    else:
        raise ChannelError(
            f"ClientError: S3DataType '{data_type}' of channel '{channel['ChannelName']}' is not "
            "supported here; use S3Prefix or ManifestFile."
        )
    for o in objects:
        try:
            local_path(Path(), o.relpath, o.key)
        except S3LocationError as exc:
            raise ChannelError(f"{exc} (s3://{o.bucket}/{o.key}, channel '{name}')") from exc
    if not objects:
        raise ChannelError(
            f'ClientError: No S3 objects found under S3 URL "{uri}" given in input data source of channel '
            f"'{channel['ChannelName']}'. Please ensure that the bucket exists in the selected region ({region}) "
            "and that objects exist under that S3 prefix."
        )
    return sorted(objects, key=lambda o: o.key)


def _relative(prefix: str, key: str) -> str:
    """An object's local name: its key below the prefix taken as a folder (the whole prefix when the
    key continues it with ``/``), its file name when the prefix is the object itself, else its key
    after the prefix's last ``/`` (``data/train`` matching ``data/training.csv``)."""
    rest = key[len(prefix) :]
    if not rest:
        return key.rsplit("/", 1)[-1]
    if not prefix or prefix.endswith("/") or rest.startswith("/"):
        return rest.lstrip("/")
    base = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
    return key[len(base) :]


def _manifest(s3: Any, bucket: str, key: str) -> list[S3Object]:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        entries = json.loads(body)
    except s3.exceptions.NoSuchKey as exc:
        raise ChannelError(f"ClientError: the manifest s3://{bucket}/{key} does not exist.") from exc
    except ValueError as exc:
        raise ChannelError(f"ClientError: the manifest s3://{bucket}/{key} is not valid JSON: {exc}") from exc
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict) or "prefix" not in entries[0]:
        raise ChannelError(
            f"ClientError: the manifest s3://{bucket}/{key} must be a JSON list starting with "
            '{"prefix": "s3://bucket/prefix/"} followed by relative keys.'
        )
    m_bucket, m_prefix = split_s3_uri(entries[0]["prefix"])
    objects = []
    for rel in entries[1:]:
        if not isinstance(rel, str):
            raise ChannelError(
                f"ClientError: the manifest s3://{bucket}/{key} has an entry that is no string: {rel!r}."
            )
        try:
            local_path(Path(), rel, m_prefix + rel)  # before any request with it
        except S3LocationError as exc:
            raise ChannelError(f"{exc} (an entry of the manifest s3://{bucket}/{key})") from exc
        try:
            head = s3.head_object(Bucket=m_bucket, Key=m_prefix + rel)
        except s3.exceptions.ClientError as exc:
            raise ChannelError(
                f"ClientError: the object s3://{m_bucket}/{m_prefix + rel} listed in the manifest "
                f"s3://{bucket}/{key} cannot be read: {exc.response.get('Error', {}).get('Code')}."
            ) from exc
        objects.append(S3Object(m_bucket, m_prefix + rel, rel, head["ContentLength"]))
    return objects


def assign(objects: list[S3Object], hosts: list[str], distribution: str) -> dict[str, list[S3Object]]:
    """Which objects each host gets."""
    if distribution == "ShardedByS3Key":
        return {host: objects[i :: len(hosts)] for i, host in enumerate(hosts)}
    return {host: list(objects) for host in hosts}


@dataclass(frozen=True, slots=True)
class DownloadReport:
    files: int
    bytes: int
    seconds: float

    def describe(self, channel: str) -> str:
        mb = self.bytes / 1e6
        rate = mb / self.seconds if self.seconds > 0 else 0.0
        return (
            f"Downloaded {self.files} file(s), {mb:.1f} MB, for channel '{channel}' "
            f"in {self.seconds:.2f} s ({rate:.1f} MB/s)"
        )


def download(s3: Any, per_host: dict[str, list[S3Object]], targets: dict[str, Path], cache: Path) -> DownloadReport:
    """Download each distinct object once into ``cache``, then hard-link it into every host's channel dir."""
    started = time.monotonic()
    unique = {o.key: o for objs in per_host.values() for o in objs}

    def fetch(o: S3Object) -> None:
        path = cache / o.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(o.bucket, o.key, str(path))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(fetch, unique.values()))
    for host, objs in per_host.items():
        targets[host].mkdir(parents=True, exist_ok=True)
        for o in objs:
            dest = targets[host] / o.relpath
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(cache / o.relpath, dest)
            except OSError:
                dest.write_bytes((cache / o.relpath).read_bytes())
    total = sum(o.size for o in unique.values())
    return DownloadReport(len(unique), total, time.monotonic() - started)
