"""Compute backends by name (``opensage up --compute``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from opensage.compute.backends import create_backend
from opensage.compute.local import LocalBackend
from opensage.config import load_settings
from opensage.errors import OpenSageError


def test_local_is_the_default_and_an_unknown_backend_is_refused(tmp_path: Path) -> None:
    settings = load_settings(env={}, home=str(tmp_path))
    assert settings.compute == "local" and isinstance(create_backend(settings, None), LocalBackend)
    with pytest.raises(OpenSageError, match="unknown compute backend 'slurm'; use one of: local, ray"):
        create_backend(load_settings(env={"OPENSAGE_COMPUTE": "slurm"}, home=str(tmp_path)), None)


def test_an_unreachable_ray_cluster_says_so(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    settings = load_settings(env={}, home=str(tmp_path), compute="ray", ray_address="127.0.0.1:9")
    with pytest.raises(OpenSageError, match="--compute ray: could not connect to the Ray cluster at 127.0.0.1:9"):
        create_backend(settings, None)
