"""The compute backends by name: ``opensage up --compute local|ray``."""

from __future__ import annotations

from opensage.compute.base import ComputeBackend
from opensage.compute.confine import Confinement
from opensage.compute.local import LocalBackend
from opensage.config import Settings
from opensage.errors import OpenSageError

NAMES = ("local", "ray")


def create_backend(settings: Settings, confinement: Confinement | None) -> ComputeBackend:
    """The backend ``settings.compute`` names.

    Raises:
        OpenSageError: an unknown name, or Ray not installed or not reachable (the message says what to do).
    """
    if settings.compute == "local":
        return LocalBackend(confinement=confinement)
    if settings.compute == "ray":
        from opensage.compute.raycluster import RayBackend, RayUnavailable, start_head

        try:
            shared = settings.home / "ray"  # nodes that read a file here see the jobs' directories
            if settings.ray_address:
                return RayBackend(settings.ray_address, confinement, shared=shared)
            return RayBackend(start_head(shared), confinement, head=shared, shared=shared)
        except RayUnavailable as exc:
            raise OpenSageError(f"--compute ray: {exc}") from exc
    raise OpenSageError(f"unknown compute backend {settings.compute!r}; use one of: {', '.join(NAMES)}")


def close_backend(backend: ComputeBackend | None) -> None:
    """At shutdown, once every container has ended: let go of the backend (the Ray head the platform started)."""
    close = getattr(backend, "close", None)
    if close is not None:
        close()
