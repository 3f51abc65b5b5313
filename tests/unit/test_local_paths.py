"""S3 keys and manifest entries never become paths outside the directory they are downloaded into."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from opensage.jobs import channels
from opensage.objects import transfer


class FakeS3:
    """Just enough of an S3 client: objects in a dict, writes recorded."""

    class exceptions:  # noqa: N801 - boto3's spelling
        ClientError = ClientError
        NoSuchBucket = type("NoSuchBucket", (ClientError,), {})
        NoSuchKey = type("NoSuchKey", (ClientError,), {})

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.downloads: list[str] = []

    def get_paginator(self, name: str) -> Any:
        assert name == "list_objects_v2"
        s3 = self

        class Pages:
            def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, Any]]:  # noqa: N803
                keys = sorted(k for k in s3.objects if k.startswith(Prefix))
                return [{"Contents": [{"Key": k, "Size": len(s3.objects[k])} for k in keys]}]

        return Pages()

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        if Key not in self.objects:
            raise self.exceptions.NoSuchKey({"Error": {"Code": "NoSuchKey"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Key])}

    def head_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "404"}}, "HeadObject")
        return {"ContentLength": len(self.objects[Key])}

    def download_file(self, bucket: str, key: str, path: str) -> None:
        self.downloads.append(path)
        Path(path).write_bytes(self.objects[key])


def _channel(uri: str, data_type: str = "S3Prefix", name: str = "train") -> dict[str, Any]:
    return {"ChannelName": name, "DataSource": {"S3DataSource": {"S3DataType": data_type, "S3Uri": uri}}}


@pytest.mark.parametrize(
    "entry", ["/tmp/victim.csv", "../victim.csv", "a/../../victim.csv", "..", "", "a\0b", "./", "/"]
)
def test_a_manifest_entry_that_leaves_the_channel_is_refused(entry: str, tmp_path: Path) -> None:
    victim = tmp_path / "victim.csv"
    victim.write_text("keep me")
    manifest = json.dumps([{"prefix": "s3://b/parts/"}, "ok.csv", entry]).encode()
    s3 = FakeS3({"m.manifest": manifest, "parts/ok.csv": b"1,2\n", f"parts/{entry}": b"0,0\n"})
    with pytest.raises(channels.ChannelError) as exc:
        channels.list_channel(s3, _channel("s3://b/m.manifest", "ManifestFile"), "us-east-1")
    assert str(exc.value).startswith("ClientError: the S3 key ")
    assert f"'parts/{entry}'" in str(exc.value) and "s3://b/m.manifest" in str(exc.value)
    assert victim.read_text() == "keep me" and not s3.downloads


def test_a_manifest_entry_that_is_no_string_or_is_missing_is_a_client_error() -> None:
    for entries, words in (([{"prefix": "s3://b/p/"}, 3], "no string"), ([{"prefix": "s3://b/p/"}, "x"], "404")):
        s3 = FakeS3({"m": json.dumps(entries).encode()})
        with pytest.raises(channels.ChannelError, match=words):
            channels.list_channel(s3, _channel("s3://b/m", "ManifestFile"), "us-east-1")


@pytest.mark.parametrize("key", ["data/../../victim.csv", "data/x/../../../victim.csv", "data/.."])
def test_an_s3_prefix_key_with_dot_dot_segments_is_refused(key: str) -> None:
    s3 = FakeS3({"data/ok.csv": b"1\n", key: b"0\n"})
    with pytest.raises(channels.ChannelError) as exc:
        channels.list_channel(s3, _channel("s3://b/data/"), "us-east-1")
    assert f"'{key}'" in str(exc.value) and "channel 'train'" in str(exc.value)


def test_keys_with_a_leading_slash_stay_below_the_channel(tmp_path: Path) -> None:
    s3 = FakeS3({"/abs/x.csv": b"1\n", "data//y.csv": b"2\n"})
    for uri in ("s3://b/", "s3://b/data"):
        objects = channels.list_channel(s3, _channel(uri), "us-east-1")
        assert all(not o.relpath.startswith("/") for o in objects)
    objects = channels.list_channel(s3, _channel("s3://b/"), "us-east-1")
    report = channels.download(s3, {"algo-1": objects}, {"algo-1": tmp_path / "ch"}, tmp_path / "cache")
    assert report.files == 2
    assert all(Path(p).resolve().is_relative_to(tmp_path / "cache") for p in s3.downloads)


@pytest.mark.parametrize("name", ["..", ".", "a/b"])
def test_a_channel_name_that_is_no_directory_name_is_refused(name: str) -> None:
    s3 = FakeS3({"data/ok.csv": b"1\n"})
    with pytest.raises(channels.ChannelError, match="channel name"):
        channels.list_channel(s3, _channel("s3://b/data/", name=name), "us-east-1")


def test_download_tree_refuses_keys_that_leave_the_target(tmp_path: Path) -> None:
    s3 = FakeS3({"ckpt/ok": b"1", "ckpt/../../victim": b"overwritten"})
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    with pytest.raises(transfer.S3LocationError, match="'ckpt/../../victim'"):
        transfer.download_tree(s3, "s3://b/ckpt", tmp_path / "a" / "checkpoints")
    assert victim.read_text() == "keep me"


def test_download_and_unpack_refuses_a_file_name_that_is_no_file(tmp_path: Path) -> None:
    s3 = FakeS3({"code/..": b"not a tarball"})
    with pytest.raises(transfer.ArtifactError, match="file name"):
        transfer.download_and_unpack(s3, "s3://b/code/..", tmp_path / "code")
    assert sorted(p.name for p in (tmp_path / "code").iterdir()) == []


class ArtifactS3(FakeS3):
    """Objects with ETags; a download of a missing key fails after writing part of the file, as a cut one does."""

    def head_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        return {"ContentLength": len(self.objects.get(Key, b"")), "ETag": f'"{len(self.objects.get(Key, b""))}"'}

    def download_file(self, bucket: str, key: str, path: str) -> None:
        if key not in self.objects:
            Path(path).write_bytes(b"partial")
            raise ClientError({"Error": {"Code": "InternalError", "Message": "connection reset"}}, "GetObject")
        super().download_file(bucket, key, path)


@pytest.mark.parametrize("key", ["not-a-tarball", "missing"])
def test_a_failed_model_download_or_extraction_leaves_no_download_directory(key: str, tmp_path: Path) -> None:
    from opensage.serving.artifacts import ModelCache
    from opensage.serving.fleet import FleetError

    cache = ModelCache(ArtifactS3({"not-a-tarball": b"plain bytes"}), tmp_path / "models")
    with pytest.raises((FleetError, ClientError)):
        cache.model_dir(f"s3://b/{key}", "m")
    assert list((tmp_path / "models").iterdir()) == []


def test_a_failed_source_dir_download_leaves_no_download_file(tmp_path: Path) -> None:
    with pytest.raises(transfer.ArtifactError, match="connection reset"):
        transfer.download_and_unpack(ArtifactS3({}), "s3://b/missing.tar.gz", tmp_path / "code")
    assert list((tmp_path / "code").iterdir()) == []


def test_upload_tree_does_not_follow_links_out_of_the_directory(tmp_path: Path) -> None:
    secret = tmp_path / "master.key"
    secret.write_text("the platform's key")
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "sub").mkdir(parents=True)
    (checkpoints / "sub" / "a.ckpt").write_text("a")
    (checkpoints / "stolen").symlink_to(secret)
    (checkpoints / "latest").symlink_to(checkpoints / "sub" / "a.ckpt")
    uploaded: dict[str, bytes] = {}

    class Uploads:
        def upload_file(self, path: str, bucket: str, key: str) -> None:
            uploaded[key] = Path(path).read_bytes()

    assert transfer.upload_tree(Uploads(), checkpoints, "s3://b/ckpt") == 2
    assert uploaded == {"ckpt/latest": b"a", "ckpt/sub/a.ckpt": b"a"}


def test_a_readable_root_above_the_home_keeps_the_containers_own_directories_in_sight(tmp_path: Path) -> None:
    """A platform started with ``python -m`` from /tmp reads /tmp: the home inside is still covered, the job's
    own directory inside the home still bound back."""
    from opensage.compute.confine import Confinement

    home = tmp_path / "home"
    own = home / "jobs" / "training" / "job-1" / "algo-1"
    own.mkdir(parents=True)
    plan = Confinement(61000, 61000, (home,), (tmp_path,)).plan([own])
    covers, kept = plan
    assert any(c == home.resolve() or c in home.resolve().parents for c in covers)  # out of sight
    assert own.resolve() in kept and not any(k == home.resolve() or k in home.resolve().parents for k in kept)
