"""The container registry end to end: the ECR API over boto3, and the OCI distribution API on the registry's
port as a client pushes and pulls (the protocol by hand over HTTP, and skopeo where it is installed)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from helpers import RunningPlatform, running_platform

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def _image(marker: str) -> tuple[bytes, bytes, bytes]:
    """(config, layer, manifest) of a small image whose entry point is ``/train``."""
    layer = _layer({"train": f"#!/bin/sh\necho {marker}\n".encode()})
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/train"], "Env": [f"MARKER={marker}"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": _digest(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer),
                    "digest": _digest(layer),
                }
            ],
        }
    ).encode()
    return config, layer, manifest


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("ecr")
    with running_platform(root / "home", root / "aws") as running:
        yield running


def _registry(platform: RunningPlatform) -> str:
    return f"127.0.0.1:{platform.port + 5}"


def _password(platform: RunningPlatform) -> str:
    data = platform.session().client("ecr").get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    assert user == "AWS" and data["proxyEndpoint"] == f"http://{_registry(platform)}"
    return password


@pytest.fixture
def client(platform: RunningPlatform) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{_registry(platform)}", auth=("AWS", _password(platform)), timeout=30) as c:
        yield c


def _push(client: httpx.Client, repo: str, tag: str, config: bytes, layer: bytes, manifest: bytes) -> httpx.Response:
    """Push as a client does: the config in one request, the layer in two chunks, then the manifest."""
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": _digest(config)}, content=config)
    assert r.status_code == 201, r.text
    start = client.post(f"/v2/{repo}/blobs/uploads/")
    assert start.status_code == 202 and start.headers["Range"] == "0-0"
    location, half = start.headers["Location"], len(layer) // 2
    first = client.patch(location, content=layer[:half], headers={"Content-Range": f"0-{half - 1}"})
    assert first.status_code == 202 and first.headers["Range"] == f"0-{half - 1}"
    second = client.patch(first.headers["Location"], content=layer[half:])
    assert second.status_code == 202
    done = client.put(second.headers["Location"], params={"digest": _digest(layer)})
    assert done.status_code == 201 and done.headers["Docker-Content-Digest"] == _digest(layer)
    return client.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": DOCKER_MANIFEST})


def test_repositories_and_the_registry_password(platform: RunningPlatform) -> None:
    ecr = platform.session().client("ecr")
    name = f"team/model-{uuid.uuid4().hex[:6]}"
    repo = ecr.create_repository(repositoryName=name, tags=[{"Key": "team", "Value": "risk"}])["repository"]
    account = platform.session().client("sts").get_caller_identity()["Account"]
    assert repo["repositoryUri"] == f"{account}.dkr.ecr.us-east-1.amazonaws.com/{name}"
    assert repo["imageTagMutability"] == "MUTABLE"
    with pytest.raises(ClientError) as err:
        ecr.create_repository(repositoryName=name)
    assert err.value.response["Error"]["Code"] == "RepositoryAlreadyExistsException"
    with pytest.raises(ClientError) as err:
        ecr.describe_repositories(repositoryNames=["no-such-repo"])
    assert err.value.response["Error"]["Code"] == "RepositoryNotFoundException"
    assert "create-repository" in err.value.response["Error"]["Message"]
    assert name in [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]

    anonymous = httpx.get(f"http://{_registry(platform)}/v2/")
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert anonymous.json()["errors"][0]["code"] == "UNAUTHORIZED"
    wrong = httpx.get(f"http://{_registry(platform)}/v2/", auth=("AWS", "not-a-password"))
    assert wrong.status_code == 401 and "get-login-password" in wrong.json()["errors"][0]["message"]
    ok = httpx.get(f"http://{_registry(platform)}/v2/", auth=("AWS", _password(platform)))
    assert ok.status_code == 200 and ok.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    ecr.delete_repository(repositoryName=name)


def test_push_pull_tags_and_deletes_over_both_apis(platform: RunningPlatform, client: httpx.Client) -> None:
    ecr = platform.session().client("ecr")
    repo = f"trainer-{uuid.uuid4().hex[:6]}"
    config, layer, manifest = _image("v1")
    missing = client.post(f"/v2/{repo}/blobs/uploads/")
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    ecr.create_repository(repositoryName=repo)

    pushed = _push(client, repo, "v1", config, layer, manifest)
    assert pushed.status_code == 201 and pushed.headers["Docker-Content-Digest"] == _digest(manifest)
    by_tag = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    assert by_tag.content == manifest and by_tag.headers["Content-Type"] == DOCKER_MANIFEST
    assert client.get(f"/v2/{repo}/manifests/{_digest(manifest)}").content == manifest
    assert client.get(f"/v2/{repo}/blobs/{_digest(layer)}").content == layer
    head = client.head(f"/v2/{repo}/blobs/{_digest(config)}")
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(config)
    assert client.get(f"/v2/{repo}/tags/list").json() == {"name": repo, "tags": ["v1"]}
    assert repo in client.get("/v2/_catalog").json()["repositories"]

    # the layer is shared: a second tag and a second repository need no new upload
    assert (
        client.put(
            f"/v2/{repo}/manifests/latest", content=manifest, headers={"Content-Type": DOCKER_MANIFEST}
        ).status_code
        == 201
    )
    other = f"{repo}-copy"
    ecr.create_repository(repositoryName=other)
    mounted = client.post(f"/v2/{other}/blobs/uploads/", params={"mount": _digest(layer), "from": repo})
    assert mounted.status_code == 201

    details = ecr.describe_images(repositoryName=repo)["imageDetails"]
    assert len(details) == 1 and details[0]["imageTags"] == ["latest", "v1"]
    assert details[0]["imageSizeInBytes"] == len(config) + len(layer)
    assert details[0]["imageManifestMediaType"] == DOCKER_MANIFEST
    got = ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}, {"imageTag": "nope"}])
    assert json.loads(got["images"][0]["imageManifest"]) == json.loads(manifest)
    assert got["failures"][0]["failureCode"] == "ImageNotFound"

    ecr.put_image_tag_mutability(repositoryName=repo, imageTagMutability="IMMUTABLE")
    config2, layer2, manifest2 = _image("v2")
    refused = _push(client, repo, "v1", config2, layer2, manifest2)
    assert refused.status_code == 400 and refused.json()["errors"][0]["code"] == "TAG_INVALID"
    assert "immutable" in refused.json()["errors"][0]["message"]
    assert _push(client, repo, "v2", config2, layer2, manifest2).status_code == 201
    ecr.put_image_tag_mutability(repositoryName=repo, imageTagMutability="MUTABLE")

    deleted = ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "latest"}])
    assert deleted["imageIds"] == [{"imageDigest": _digest(manifest), "imageTag": "latest"}]
    assert client.get(f"/v2/{repo}/manifests/v1").status_code == 200  # still tagged v1
    listed = ecr.list_images(repositoryName=repo)["imageIds"]
    assert sorted(i["imageTag"] for i in listed) == ["v1", "v2"]
    with pytest.raises(ClientError) as err:
        ecr.delete_repository(repositoryName=repo)
    assert err.value.response["Error"]["Code"] == "RepositoryNotEmptyException"
    assert client.delete(f"/v2/{repo}/manifests/{_digest(manifest2)}").status_code == 202
    assert client.get(f"/v2/{repo}/manifests/v2").status_code == 404
    ecr.delete_repository(repositoryName=repo, force=True)
    ecr.delete_repository(repositoryName=other)


def test_bad_pushes_are_refused_with_the_specs_errors(platform: RunningPlatform, client: httpx.Client) -> None:
    repo = f"bad-{uuid.uuid4().hex[:6]}"
    platform.session().client("ecr").create_repository(repositoryName=repo)
    config, layer, manifest = _image("bad")
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": _digest(b"other bytes")}, content=config)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    r = client.put(f"/v2/{repo}/manifests/v1", content=manifest, headers={"Content-Type": DOCKER_MANIFEST})
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"  # nothing pushed yet
    r = client.put(f"/v2/{repo}/manifests/v1", content=b"{not json", headers={"Content-Type": DOCKER_MANIFEST})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_INVALID"
    start = client.post(f"/v2/{repo}/blobs/uploads/")
    out_of_order = client.patch(start.headers["Location"], content=layer, headers={"Content-Range": "10-20"})
    assert out_of_order.status_code == 416 and out_of_order.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
    r = client.put(f"/v2/{repo}/manifests/{_digest(b'x')}", content=manifest, headers={"Content-Type": DOCKER_MANIFEST})
    assert r.json()["errors"][0]["code"] in ("DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN")
    assert client.get(f"/v2/{repo}/manifests/nope").json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert client.get(f"/v2/{repo}/blobs/{_digest(b'none')}").status_code == 404
    platform.session().client("ecr").delete_repository(repositoryName=repo, force=True)


def _oci_layout(directory: Path, config: bytes, layer: bytes, tag: str) -> str:
    """An OCI image layout on disk (what ``umoci``/``buildah`` leave), assembled here; its manifest's digest."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": len(config),
                "digest": _digest(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "size": len(layer),
                    "digest": _digest(layer),
                }
            ],
        }
    ).encode()
    for data in (config, layer, manifest):
        (blobs / _digest(data).split(":")[1]).write_bytes(data)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "size": len(manifest),
                "digest": _digest(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))
    return _digest(manifest)


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_copies_an_image_in_and_out(platform: RunningPlatform, tmp_path: Path) -> None:
    ecr = platform.session().client("ecr")
    repo = f"skopeo-{uuid.uuid4().hex[:6]}"
    ecr.create_repository(repositoryName=repo)
    config, layer, _ = _image("skopeo")
    digest = _oci_layout(tmp_path / "image", config, layer, "v1")
    creds = f"AWS:{_password(platform)}"
    target = f"docker://{_registry(platform)}/{repo}:v1"

    def skopeo(*args: str) -> Any:
        run = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        return run

    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{tmp_path / 'image'}:v1", target)
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", creds, target).stdout)
    assert inspected["Layers"] == [_digest(layer)] and inspected["Env"] == ["MARKER=skopeo"]
    pushed = ecr.describe_images(repositoryName=repo)["imageDetails"][0]
    assert pushed["imageTags"] == ["v1"] and pushed["imageDigest"] == digest
    skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, target, f"oci:{tmp_path / 'back'}:v1")
    assert (tmp_path / "back" / "blobs" / "sha256" / _digest(layer).split(":")[1]).read_bytes() == layer
    ecr.delete_repository(repositoryName=repo, force=True)
