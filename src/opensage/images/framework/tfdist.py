"""TensorFlow in the training toolkit: ``model_dir``, and ``TF_CONFIG`` for the SDK's distributions.

* ``model_dir``: the SDK's ``TensorFlow`` estimator passes an S3 URI (``s3://<bucket>/<job>/model``)
  for checkpoints, which TensorFlow cannot write without an S3 file system; the script gets the job's
  local model directory (``SM_MODEL_DIR``) instead, so what it writes there ends in ``model.tar.gz``.
* ``distribution={"multi_worker_mirrored_strategy": {"enabled": True}}``: every host a ``worker``
  of one cluster, as SageMaker's TensorFlow toolkit describes it in ``TF_CONFIG``.
* ``distribution={"parameter_server": {"enabled": True}}``: the first host the ``master``, the
  others ``worker``, and a parameter server (``ps``) process on every host, started before the
  script and ended after it (a worker waits for the master to finish first), as the toolkit does.

The hosts of one job share this machine, so each task listens on a port of its own
(``OPENSAGE_HOST_PORTS``) where SageMaker's toolkit uses 2222, 2223 and 8890 on separate machines.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

from opensage.contract import HOST_ADDRESSES_ENV, HOST_PORTS_ENV, IMAGE_ENV

IMAGE = "tensorflow"
MWMS = "sagemaker_multi_worker_mirrored_strategy_enabled"
PARAMETER_SERVER = "sagemaker_parameter_server_enabled"
_PS_SERVER = (
    "import json, os, tensorflow as tf\n"
    "c = json.loads(os.environ['TF_CONFIG'])\n"
    "tf.distribute.Server(tf.train.ClusterSpec(c['cluster']), job_name='ps', task_index=c['task']['index'],"
    " protocol='grpc').join()\n"
)


def _enabled(framework: Mapping[str, Any], flag: str) -> bool:
    return str(framework.get(flag, "")).lower() == "true"


def local_model_dir(user: MutableMapping[str, Any], env: Mapping[str, str]) -> None:
    """An S3 ``model_dir`` hyperparameter replaced by the local model directory."""
    if str(user.get("model_dir", "")).startswith("s3://") and env.get("SM_MODEL_DIR"):
        user["model_dir"] = env["SM_MODEL_DIR"]


class Cluster:
    """The job's hosts as TensorFlow tasks."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.hosts: list[str] = json.loads(env.get("SM_HOSTS") or '["algo-1"]')
        self.current = env.get("SM_CURRENT_HOST", self.hosts[0])
        addresses = json.loads(env.get(HOST_ADDRESSES_ENV) or "{}")
        ports = json.loads(env.get(HOST_PORTS_ENV) or "{}")
        defaults = {"worker": 2222, "ps": 2223}
        self._at = {
            (h, kind): (addresses.get(h, h), int(ports[h][i]) if h in ports else defaults[kind])
            for h in self.hosts
            for i, kind in enumerate(("worker", "ps"))
        }

    def address(self, host: str, kind: str = "worker") -> str:
        ip, port = self._at[(host, kind)]
        return f"{ip}:{port}"

    def mwms(self) -> dict[str, Any]:
        return {
            "cluster": {"worker": [self.address(h) for h in self.hosts]},
            "environment": "cloud",
            "task": {"index": self.hosts.index(self.current), "type": "worker"},
        }

    def parameter_server(self, ps_task: bool = False) -> dict[str, Any]:
        workers = self.hosts[1:]
        cluster: dict[str, list[str]] = {"master": [self.address(self.hosts[0])]}
        if len(self.hosts) > 1:
            cluster["ps"] = [self.address(h, "ps") for h in self.hosts]
        if workers:
            cluster["worker"] = [self.address(h) for h in workers]
        if ps_task:
            task = {"index": self.hosts.index(self.current), "type": "ps"}
        elif self.current == self.hosts[0]:
            task = {"index": 0, "type": "master"}
        else:
            task = {"index": workers.index(self.current), "type": "worker"}
        return {"cluster": cluster, "environment": "cloud", "task": task}

    def wait_for_master(self, timeout: float = 3600.0) -> None:
        """Return once the master's task port no longer answers (it has finished), or after ``timeout``."""
        ip, port = self._at[(self.hosts[0], "worker")]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((ip, port), timeout=1):
                    pass
            except OSError:
                return
            time.sleep(1)


class Distribution:
    """What a TensorFlow job runs around the user's script on this host."""

    def __init__(self, framework: Mapping[str, Any], env: Mapping[str, str], python: str) -> None:
        self.cluster = Cluster(env)
        self.python = python
        self.mwms = _enabled(framework, MWMS)
        self.ps = _enabled(framework, PARAMETER_SERVER) and len(self.cluster.hosts) > 1
        self._server: subprocess.Popen[bytes] | None = None

    def script_env(self, env: MutableMapping[str, str]) -> None:
        if self.mwms:
            env["TF_CONFIG"] = json.dumps(self.cluster.mwms())
        elif self.ps:
            env["TF_CONFIG"] = json.dumps(self.cluster.parameter_server())

    def start(self, env: Mapping[str, str]) -> None:
        """Start this host's parameter server (parameter-server jobs only)."""
        if not self.ps:
            return
        server_env = {**env, "TF_CONFIG": json.dumps(self.cluster.parameter_server(ps_task=True))}
        server_env["CUDA_VISIBLE_DEVICES"] = "-1"
        print(f"Running distributed training job with parameter servers: {server_env['TF_CONFIG']}", flush=True)
        self._server = subprocess.Popen([self.python, "-c", _PS_SERVER], env=server_env, stdin=subprocess.DEVNULL)

    def finish(self) -> None:
        """End this host's parameter server once training is over (a worker waits for the master first)."""
        if self._server is None:
            return
        if self.cluster.current != self.cluster.hosts[0]:
            self.cluster.wait_for_master()
        self._server.terminate()
        try:
            self._server.wait(10)
        except subprocess.TimeoutExpired:
            self._server.kill()


def applies(env: Mapping[str, str] | None = None) -> bool:
    """Whether this job runs in the TensorFlow image."""
    return (env if env is not None else os.environ).get(IMAGE_ENV) == IMAGE
