"""A Ray cluster of two nodes on this machine, for the tests and benchmarks of ``--compute ray --ray-address``."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil


def _spare_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """Two Ray nodes on this machine, one CPU each, with token authentication (the token in a file of its own);
    the second declares ``gpus`` GPUs (Ray hands them out as it would real ones). With ``hide``, a third node
    runs in a mount namespace of its own where that directory is an empty file system: it does not see
    what the platform keeps there, as a node of another machine would not."""

    def __init__(self, gpus: int = 0, hide: Path | None = None) -> None:
        self.gpus = gpus
        self.hide = hide
        self.root = Path(tempfile.mkdtemp(prefix="osrc-", dir="/tmp"))  # Ray's socket paths must be short
        self.token = self.root / "token"
        self.token.write_text(secrets.token_hex(32))
        self.token.chmod(0o600)
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token), "RAY_USAGE_STATS_ENABLED": "0"}
        self.address = f"127.0.0.1:{_spare_port()}"
        ray = str(Path(sys.executable).with_name("ray"))
        self.cli = ray if Path(ray).exists() else (shutil.which("ray") or ray)

    def start(self) -> None:
        common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
        self._ray(
            "start", "--head", f"--port={self.address.rsplit(':', 1)[1]}", f"--temp-dir={self.root / 'ray'}",
            "--include-dashboard=false", f"--ray-client-server-port={_spare_port()}",
            f"--dashboard-agent-listen-port={_spare_port()}", f"--dashboard-agent-grpc-port={_spare_port()}",
            "--min-worker-port=10100", "--max-worker-port=12400", *common,
        )  # fmt: skip
        self._ray(
            "start", f"--address={self.address}", f"--dashboard-agent-listen-port={_spare_port()}",
            f"--dashboard-agent-grpc-port={_spare_port()}", "--min-worker-port=12500", "--max-worker-port=14800",
            f"--num-gpus={self.gpus}", *common,
        )  # fmt: skip
        if self.hide is not None:
            ports = [f"--dashboard-agent-listen-port={_spare_port()}", f"--dashboard-agent-grpc-port={_spare_port()}"]
            start = [self.cli, "start", f"--address={self.address}", *ports, "--min-worker-port=14810",
                     "--max-worker-port=14899", *common]  # fmt: skip
            script = 'mount -t tmpfs opensage-elsewhere "$0" && exec "$@"'
            hidden = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(self.hide), *start]
            run = subprocess.run(hidden, env={**os.environ, **self.env}, capture_output=True, text=True)
            assert run.returncode == 0, run.stderr[-3000:]

    def _ray(self, *args: str) -> None:
        run = subprocess.run([self.cli, *args], env={**os.environ, **self.env}, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]

    def actors(self) -> dict[int, int]:
        """The instance actors' worker processes of this cluster: pid -> the pid of the raylet (node) running it."""
        return instance_actors(self.root)

    def stop(self) -> None:
        from opensage.compute.raycluster import end_ray_processes

        end_ray_processes(self.root)


def instance_actors(temp: Path) -> dict[int, int]:
    """The worker processes holding an instance actor (Ray names them after the actor's class) of the Ray
    nodes whose raylet's command names ``temp``: pid -> the raylet's pid (one per node)."""
    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if not any("InstanceActor" in part for part in proc.info["cmdline"] or []):
                continue
            for parent in proc.parents():
                if "raylet" in parent.name() and any(str(temp) in part for part in parent.cmdline()):
                    found[proc.pid] = parent.pid
        except psutil.Error:
            continue
    return found
