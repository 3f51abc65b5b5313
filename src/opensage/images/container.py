"""Images pushed to the platform's registry, run as SageMaker runs a container.

An image URI names this registry when its host is the registry's (``$OPENSAGE_REGISTRY``, e.g.
``127.0.0.1:8785/my-train:v1``) or the ECR host of this platform's account
(``<account>.dkr.ecr.<region>.amazonaws.com/my-train:v1``) with a repository the registry has. Such
an image is unpacked once (:mod:`opensage.ecr.rootfs`) and each container runs in it
(:func:`opensage.compute.sandbox.wrap_rootfs`) as ``docker run`` would: its ``ENTRYPOINT`` with
``train`` or ``serve`` as the argument (``train``/``serve`` itself, found on the image's ``PATH``,
when it has no entry point), its ``ENV`` and ``WORKDIR``, ``/opt/ml`` bound in. Every path such a
container is given is its own (``/opt/ml/...``), never one of this machine's; ``ContainerEntrypoint``
replaces the image's ``ENTRYPOINT`` and ``ContainerArguments`` its ``CMD`` (:func:`image_command`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from opensage.compute.base import ContainerSpec, RootFs
from opensage.compute.instances import InstanceType
from opensage.contract import CONTAINER_ROOT
from opensage.ecr.rootfs import ImageConfig, ImageError, RootFsCache

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # Docker's, for images without one
_ECR_HOST = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
_REFERENCE = re.compile(
    r"^(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)(?::(?P<tag>\w[\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)

__all__ = ["ContainerImage", "ContainerImages", "ImageError", "image_command", "image_container"]


@dataclass(frozen=True, slots=True)
class ContainerImage:
    """An image of the registry, unpacked: what its containers run."""

    uri: str
    repository: str
    reference: str  # the tag or digest the URI names
    digest: str  # the image manifest's
    rootfs: Path
    config: ImageConfig
    algorithm: None = field(default=None, init=False)
    framework: None = field(default=None, init=False)

    @property
    def name(self) -> str:
        return self.repository

    @property
    def tag(self) -> str:
        return self.reference

    def script_mode(self, hyperparameters: Mapping[str, str]) -> bool:
        return False  # the image runs its own code; sagemaker_program is for its own toolkit to read

    def command(self, argument: str) -> tuple[str, ...]:
        """``docker run <image> <argument>``: the entry point with the argument, or the argument as the command."""
        return (*self.config.entrypoint, argument) if self.config.entrypoint else (argument,)

    def train_argv(self, hyperparameters: Mapping[str, str] | None = None) -> tuple[str, ...]:
        return self.command("train")

    def serve_argv(self, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
        return self.command("serve")

    def processing_argv(self) -> tuple[str, ...]:
        """``docker run <image>``: its entry point and command."""
        return (*self.config.entrypoint, *self.config.cmd)

    def environment(self) -> dict[str, str]:
        return {"PATH": DEFAULT_PATH, **self.config.env}

    def metric_definitions(self, hyperparameters: Mapping[str, str] | None = None) -> list[dict[str, str]]:
        return []  # a job's own MetricDefinitions say what its log holds

    def user(self) -> str:
        """The image's ``USER`` as ``uid:gid`` (names looked up in its ``/etc/passwd`` and ``/etc/group``)."""
        spec = self.config.user
        if not spec:
            return ""
        name, _, group = spec.partition(":")
        passwd, groups = _table(self.rootfs / "etc/passwd"), _table(self.rootfs / "etc/group")
        uid = name if name.isdigit() else next((f[2] for f in passwd if f[0] == name), None)
        if uid is None:
            raise ImageError(f"the image's USER {spec!r} is not a user of its /etc/passwd")
        if not group:
            return f"{uid}:{next((f[3] for f in passwd if f[2] == uid), '0')}"
        gid = group if group.isdigit() else next((f[2] for f in groups if f[0] == group), None)
        if gid is None:
            raise ImageError(f"the image's USER {spec!r} names a group its /etc/group does not have")
        return f"{uid}:{gid}"


def _table(path: Path) -> list[list[str]]:
    """The rows of a passwd or group file (those with at least four fields)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [f for f in (line.split(":") for line in lines) if len(f) >= 4]


def image_command(
    image: ContainerImage, entrypoint: Sequence[str], arguments: Sequence[str], default: Sequence[str]
) -> tuple[str, ...]:
    """The command of a container of ``image`` given a job's entry point and arguments (``default``: neither)."""
    if entrypoint:
        return (*entrypoint, *arguments)
    if arguments:
        return (*image.config.entrypoint, *arguments)
    return tuple(default)


def image_container(
    image: ContainerImage,
    host: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    base: Path,
    layer: Path,
    log_path: Path,
    itype: InstanceType,
    isolate_network: bool = False,
    peers: tuple[tuple[str, str], ...] = (),
) -> ContainerSpec:
    """A container of ``image`` with ``base`` at ``/opt/ml`` and its own writable layer at ``layer``."""
    return ContainerSpec(
        host,
        tuple(argv),
        {"HOME": "/root", **image.environment(), **env},
        base,
        log_path,
        itype.vcpus,
        itype.memory_bytes,
        mounts=((base, CONTAINER_ROOT),),
        isolate_network=isolate_network,
        peers=peers,
        rootfs=RootFs(image.rootfs, layer, image.config.workdir, image.user()),
        gpus=itype.gpus,
    )


class ContainerImages:
    """Which URIs name the platform's registry, and their images unpacked."""

    def __init__(self, cache: RootFsCache, account: str, registry_hosts: tuple[str, ...]) -> None:
        self.cache = cache
        self.account = account
        self.hosts = set(registry_hosts)

    def names(self, uri: str) -> tuple[str, str] | None:
        """(repository, tag or digest) when ``uri`` names this registry, else None."""
        host, sep, rest = uri.strip().partition("/")
        if not sep:
            return None
        ecr = _ECR_HOST.match(host)
        if host not in self.hosts and not (ecr and ecr.group("account") == self.account):
            return None
        m = _REFERENCE.match(rest)
        if m is None:
            raise ImageError(f"'{uri}' is not an image URI (<registry>/<repository>[:tag][@sha256:digest])")
        repo = m.group("repo")
        if ecr and host not in self.hosts and self.cache.store.get_resource("ecr-repository", repo) is None:
            return None  # an ECR URI of a repository the registry does not have: perhaps a built-in image's
        return repo, m.group("digest") or m.group("tag") or "latest"

    def prepare(self, uri: str) -> ContainerImage | None:
        """The image ``uri`` names, unpacked (a blocking call); None when it does not name this registry.

        Raises:
            ImageError: the image cannot be pulled or unpacked; the message says why.
        """
        named = self.names(uri)
        if named is None:
            return None
        repo, reference = named
        unpacked = self.cache.unpack(repo, reference)
        image = ContainerImage(uri, repo, reference, unpacked.digest, unpacked.rootfs, unpacked.config)
        image.user()  # an image whose USER it does not define fails here, before anything runs
        return image
