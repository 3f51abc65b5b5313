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


def test_containers_on_other_machines_reach_each_other_by_node_address(tmp_path: Path) -> None:
    import json

    from opensage.compute.base import ContainerSpec, JobSpec
    from opensage.compute.rayactor import addressed
    from opensage.contract import HOST_ADDRESSES_ENV

    hosts = ("algo-1", "algo-2", "algo-3")
    loopback = {h: "127.0.0.1" for h in hosts}
    containers = tuple(
        ContainerSpec(h, ("true",), {HOST_ADDRESSES_ENV: json.dumps(loopback)}, tmp_path, tmp_path / f"{h}.log",
                      peers=tuple(loopback.items()))  # fmt: skip
        for h in hosts
    )
    alive = [{"NodeID": "a", "NodeManagerAddress": "10.0.0.1"}, {"NodeID": "b", "NodeManagerAddress": "10.0.0.2"},
             {"NodeID": "c", "NodeManagerAddress": "10.0.0.1"}]  # fmt: skip  (a and c: one machine)
    one, two, three = addressed(JobSpec("training-job/j", containers), [None, "b", "c"], alive, own="a")
    assert dict(one.peers) == {"algo-1": "127.0.0.1", "algo-2": "10.0.0.2", "algo-3": "127.0.0.1"}
    assert dict(two.peers) == {"algo-1": "10.0.0.1", "algo-2": "127.0.0.1", "algo-3": "10.0.0.1"}
    assert json.loads(two.env[HOST_ADDRESSES_ENV]) == dict(two.peers)  # XGBoost's tracker: algo-1 at 10.0.0.1
    assert json.loads(three.env[HOST_ADDRESSES_ENV]) == dict(one.peers)
