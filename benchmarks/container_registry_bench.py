"""Container registry benchmark: pushing and pulling a large image with skopeo, OpenSage's registry against
the CNCF distribution registry (Debian's ``docker-registry``) on the same machine, in the same run.

The image is an OCI layout made here: one layer of ``--mb`` MB of random (incompressible) bytes, gzipped,
plus a config. Each registry gets the same ``skopeo copy`` (push: ``oci:`` -> ``docker://``; pull:
``docker://`` -> a fresh ``oci:`` directory), ``--reps`` times each; the table shows the median seconds
and MB/s. OpenSage's registry keeps blobs in its embedded object store (SeaweedFS); the CNCF registry
here uses its filesystem driver on the same disk. The CNCF registry row is left out when
``docker-registry`` is not installed (``apt-get install docker-registry``).

A second table (when a static BusyBox is installed: ``apt-get install busybox-static``) times a
training job from CreateTrainingJob to Completed whose container does nothing but write its model: in an
image of this registry (BusyBox, a shell script and the same ``--mb`` MB layer) the first time (the
image pulled from the object store, digest-checked and unpacked) and then with the image unpacked, against
the same command in a built-in image (``ContainerEntrypoint`` in the Python framework image).

Usage: python benchmarks/container_registry_bench.py [--mb 200] [--reps 3]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_image(directory: Path, mb: int) -> int:
    """An OCI layout with one random layer of ``mb`` MB; the image's size in bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = os.urandom(mb * 1024 * 1024)
        info = tarfile.TarInfo("data.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer = gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
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
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for blob in (config, layer, manifest):
        (blobs / _digest(blob).split(":")[1]).write_bytes(blob)
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "size": len(manifest),
                "digest": _digest(manifest),
                "annotations": {"org.opencontainers.image.ref.name": "v1"},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))
    return len(layer) + len(config)


def _copy(source: str, dest: str, creds: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false", *creds, source, dest],
        check=True,
        capture_output=True,
        timeout=900,
    )
    return time.perf_counter() - started


def measure(
    registry: str,
    repo_prefix: str,
    mb: int,
    work: Path,
    reps: int,
    creds: tuple[list[str], list[str]],
    create: object = None,
) -> tuple[float, float]:
    """Median push and pull seconds of an image of ``mb`` MB to and from ``registry`` (a new image each time)."""
    pushes, pulls = [], []
    for i in range(reps):
        repo = f"{repo_prefix}-{uuid.uuid4().hex[:6]}-{i}"
        if callable(create):
            create(repo)
        target = f"docker://{registry}/{repo}:v1"
        fresh = work / f"image-{repo}"  # a layer of its own: skopeo's blob cache would skip a known one
        make_image(fresh, mb)
        pushes.append(_copy(f"oci:{fresh}:v1", target, creds[0]))
        shutil.rmtree(fresh)
        back = work / f"pulled-{repo}"
        pulls.append(_copy(target, f"oci:{back}:v1", creds[1]))
        shutil.rmtree(back)
    return statistics.median(pushes), statistics.median(pulls)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cncf(mb: int, work: Path, reps: int) -> tuple[float, float] | None:
    binary = shutil.which("docker-registry")
    if binary is None:
        return None
    port = _free_port()
    config = work / "registry.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {work / 'cncf'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return measure(f"127.0.0.1:{port}", "cncf", mb, work, reps, ([], []))
    finally:
        proc.terminate()
        proc.wait(10)


def opensage(mb: int, work: Path, reps: int) -> tuple[float, float]:
    from helpers import running_platform

    with running_platform(work / "home", work / "aws") as platform:
        session = platform.session()
        ecr = session.client("ecr")
        token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        creds = base64.b64decode(token).decode()
        registry = f"127.0.0.1:{platform.port + 5}"
        return measure(
            registry,
            "opensage",
            mb,
            work,
            reps,
            (["--dest-creds", creds], ["--src-creds", creds]),
            create=lambda repo: ecr.create_repository(repositoryName=repo),
        )


TRIVIAL = "#!/bin/sh\necho done > /opt/ml/model/done.txt\n"


def _finish(sm: object, request: dict) -> float:
    """Seconds from CreateTrainingJob to Completed."""
    started = time.perf_counter()
    sm.create_training_job(**request)  # type: ignore[attr-defined]
    while True:
        job = sm.describe_training_job(TrainingJobName=request["TrainingJobName"])  # type: ignore[attr-defined]
        if job["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
            return time.perf_counter() - started
        time.sleep(0.02)


def container_start(work: Path, mb: int, reps: int) -> list[tuple[str, float]] | None:
    """(what, seconds to Completed) of trivial training jobs in a registry image and in a built-in one."""
    import httpx

    import oci_kit
    from helpers import running_platform

    binary = oci_kit.busybox()
    if binary is None:
        return None
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = os.urandom(mb * 1024 * 1024)
        info = tarfile.TarInfo("data.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    big = gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)
    layers = [oci_kit.base_layer(binary), oci_kit.app_layer(TRIVIAL), big]
    config, manifest = oci_kit.image(layers, {"Env": ["PATH=/usr/local/bin:/bin"]})
    with running_platform(work / "start-home", work / "start-aws") as platform:
        session = platform.session()
        sm, ecr = session.client("sagemaker"), session.client("ecr")
        uri = ecr.create_repository(repositoryName="start")["repository"]["repositoryUri"]
        token = ecr.get_authorization_token()["authorizationData"][0]
        user, _, password = base64.b64decode(token["authorizationToken"]).decode().partition(":")
        with httpx.Client(base_url=token["proxyEndpoint"], auth=(user, password), timeout=300) as client:
            oci_kit.push(client, "start", "v1", config, layers, manifest)
        account = session.client("sts").get_caller_identity()["Account"]
        base = {
            "RoleArn": f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
            "OutputDataConfig": {"S3OutputPath": "s3://start-bench/out/"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        }
        session.client("s3").create_bucket(Bucket="start-bench")

        def job(image: str, **algorithm: object) -> dict:
            spec = {"TrainingImage": image, "TrainingInputMode": "File", **algorithm}
            return {**base, "TrainingJobName": f"start-{uuid.uuid4().hex[:8]}", "AlgorithmSpecification": spec}

        first = _finish(sm, job(f"{uri}:v1"))
        cached = statistics.median(_finish(sm, job(f"{uri}:v1")) for _ in range(reps))
        python = "763104351884.dkr.ecr.us-east-1.amazonaws.com/opensage-python:latest"
        command = ["/bin/sh", "-c", "echo done > /opt/ml/model/done.txt"]
        builtin = statistics.median(_finish(sm, job(python, ContainerEntrypoint=command)) for _ in range(reps))
    return [
        (f"registry image, first run (pull, check and unpack {mb} MB)", first),
        ("registry image, unpacked", cached),
        ("built-in image (Python framework), same command", builtin),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("skopeo") is None:
        sys.exit("skopeo is needed (apt-get install skopeo)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        size = make_image(work / "image", args.mb)
        rows = [("OpenSage registry (object store)", opensage(args.mb, work, args.reps))]
        other = cncf(args.mb, work, args.reps)
        if other is not None:
            rows.append(("CNCF distribution registry (filesystem)", other))
        starts = container_start(work, args.mb, args.reps)
    mb = size / 1e6
    print(f"\nimage: {mb:.0f} MB (one random layer), skopeo copy, medians of {args.reps}\n")
    print("| registry | push (s) | push (MB/s) | pull (s) | pull (MB/s) |")
    print("|---|---:|---:|---:|---:|")
    for name, (push, pull) in rows:
        print(f"| {name} | {push:.2f} | {mb / push:.0f} | {pull:.2f} | {mb / pull:.0f} |")
    if starts is None:
        print("\n(no static BusyBox: apt-get install busybox-static for the container start table)")
        return
    print(f"\ntrivial training job, CreateTrainingJob -> Completed (medians of {args.reps} after the first)\n")
    print("| container | seconds |")
    print("|---|---:|")
    for name, seconds in starts:
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
