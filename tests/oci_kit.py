"""Container images made by the tests themselves, without a Docker daemon: BusyBox (the static binary
Debian's ``busybox-static`` package installs) and shell scripts, packed as layers and pushed over the
OCI distribution API. The training script learns a column's mean from its CSV channel; the serving
script is a real HTTP server (BusyBox ``nc`` running a handler per connection) that answers
``/ping`` and ``/invocations`` with each row's first value minus the mean, times ``scale``."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import httpx

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TYPES = {  # manifest -> (config, layer) media types
    DOCKER_MANIFEST: (
        "application/vnd.docker.container.image.v1+json",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ),
    OCI_MANIFEST: ("application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip"),
}
APPLETS = ("sh", "cat", "echo", "awk", "sed", "mkdir", "ls", "head", "tr", "printf", "id", "nc", "sleep", "env", "rm")
APPLETS += ("cp", "wc", "cut", "test", "grep", "date", "kill", "true")

TRAIN = r"""#!/bin/sh
set -e
echo "train: running as uid $(id -u) in $(pwd) with MARKER=$MARKER"
hp=/opt/ml/input/config/hyperparameters.json
scale=$(sed -n 's/.*"scale": *"\([-0-9.]*\)".*/\1/p' "$hp")
[ -n "$scale" ] || scale=1
if grep -q '"fail": *"yes"' "$hp"; then
  echo "the training data has no usable rows (asked to fail)" > /opt/ml/output/failure
  echo "train: failing on purpose" >&2
  exit 3
fi
mean=$(cat /opt/ml/input/data/train/* | awk -F, '{s += $1; n += 1} END {printf "%.4f", s / n}')
echo "train-mean: $mean"
echo "$mean $scale" > /opt/ml/model/model.txt
echo "$MARKER" > /opt/ml/model/marker.txt
echo "train: done"
"""

SERVE = r"""#!/bin/sh
port=${SAGEMAKER_BIND_TO_PORT:-8080}
echo "serve: listening on $port with model $(cat /opt/ml/model/model.txt)"
exec nc -ll -p "$port" -e /usr/local/bin/handle
"""

HANDLE = r"""#!/bin/sh
read -r method path proto
length=0
while read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
  case "$line" in [Cc]ontent-[Ll]ength:*) length=$(printf '%s' "${line#*:}" | tr -d ' ') ;; esac
done
body=""
if [ "$length" -gt 0 ]; then body=$(head -c "$length"); fi
case "$path" in
  /ping) out="" ;;
  /invocations)
    read -r mean scale < /opt/ml/model/model.txt
    out=$(printf '%s\n' "$body" | awk -F, -v m="$mean" -v s="$scale" 'NF {printf "%.4f\n", ($1 - m) * s}') ;;
  *) printf 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'; exit 0 ;;
esac
printf 'HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' "${#out}" "$out"
"""

PROCESS = r"""#!/bin/sh
set -e
mkdir -p /opt/ml/processing/output
for f in /opt/ml/processing/input/*; do
  awk -F, '{print $1 * 2}' "$f" >> /opt/ml/processing/output/doubled.csv
done
echo "process: $(wc -l < /opt/ml/processing/output/doubled.csv) rows, args: $*"
"""


def busybox() -> Path | None:
    """A statically linked BusyBox on this machine (None: not installed)."""
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and Path(candidate).is_file():
            probe = subprocess.run(["ldd", candidate], capture_output=True, text=True)
            if probe.returncode != 0 or "not a dynamic executable" in probe.stdout + probe.stderr:
                return Path(candidate)
    return None


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(files: dict[str, bytes], links: dict[str, str] | None = None, dirs: tuple[str, ...] = ()) -> bytes:
    """A gzip-compressed layer of ``files`` (mode 0755), symbolic ``links`` (name -> target) and ``dirs``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return gzip.compress(raw.getvalue(), mtime=0)


def base_layer(binary: Path) -> bytes:
    """BusyBox and its applets in /bin, and the directories an image has."""
    links = {f"bin/{applet}": "busybox" for applet in APPLETS}
    dirs = ("bin", "etc", "tmp", "root", "usr", "usr/local", "usr/local/bin", "work")
    passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
    files = {"bin/busybox": binary.read_bytes(), "etc/passwd": passwd, "etc/group": b"root:x:0:\nnogroup:x:65534:\n"}
    return layer(files, links, dirs)


def app_layer(train: str = TRAIN) -> bytes:
    scripts = {"train": train, "serve": SERVE, "handle": HANDLE, "process": PROCESS}
    return layer({f"usr/local/bin/{name}": body.encode() for name, body in scripts.items()})


def image(layers: list[bytes], config: dict, media_type: str = DOCKER_MANIFEST) -> tuple[bytes, bytes]:
    """(config blob, manifest) of an image of ``layers`` whose config's ``config`` part is ``config``."""
    diff_ids = [digest(gzip.decompress(data)) for data in layers]
    blob = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": config, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    ).encode()
    config_type, layer_type = TYPES[media_type]
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "size": len(blob), "digest": digest(blob)},
        "layers": [{"mediaType": layer_type, "size": len(d), "digest": digest(d)} for d in layers],
    }
    return blob, json.dumps(manifest).encode()


def push(client: httpx.Client, repo: str, tag: str, config: bytes, layers: list[bytes], manifest: bytes) -> str:
    """Push the blobs (monolithic uploads) and the manifest; the manifest's digest."""
    for blob in (config, *layers):
        if client.head(f"/v2/{repo}/blobs/{digest(blob)}").status_code == 200:
            continue
        r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest(blob)}, content=blob)
        assert r.status_code == 201, r.text
    media_type = json.loads(manifest)["mediaType"]
    r = client.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": media_type})
    assert r.status_code == 201, r.text
    return r.headers["Docker-Content-Digest"]
