"""Tracking servers: supervised ``mlflow server`` processes and the status of each.

Every tracking server has a directory ``<home>/mlflow/<name>/`` with its backend store (a SQLite
file) and its log; its artifacts go to the ``s3://`` URI it was created with, in the platform's
object store (the process gets the store's endpoint and the platform's key). A process listens on a
loopback port of its own, chosen when it starts; the platform's front reaches it there.

Statuses are AWS's (``TrackingServerStatus``); the transitions a request makes are compare-and-set
on the stored status, and the slow half (starting a process and waiting until it answers, stopping
one) runs on a thread of its own, after which the status moves on. A process that dies while its
server should run is started again. ``shutdown`` ends the processes and leaves the statuses, so the
next ``recover`` (at ``opensage up``) brings back the servers that were running.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from opensage.compute.base import free_port
from opensage.errors import Conflict, NotFound, OpenSageError
from opensage.store.sql import SqlStore

log = logging.getLogger(__name__)

KIND = "mlflow-tracking-server"
HEALTH_POLL_S = 0.25
MONITOR_S = 2.0
MAX_RESTARTS = 5  # in a row, for a process that keeps dying


class Status(enum.StrEnum):
    """AWS's ``TrackingServerStatus`` values this platform uses."""

    CREATING = "Creating"
    CREATED = "Created"
    CREATE_FAILED = "CreateFailed"
    UPDATING = "Updating"
    UPDATED = "Updated"
    UPDATE_FAILED = "UpdateFailed"
    DELETING = "Deleting"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    STOP_FAILED = "StopFailed"
    STARTING = "Starting"
    STARTED = "Started"
    START_FAILED = "StartFailed"


RUNNING = (Status.CREATED, Status.UPDATED, Status.STARTED)  # the process answers (IsActive: Active)
STARTABLE = (Status.STOPPED, Status.STOP_FAILED, Status.START_FAILED, Status.CREATE_FAILED)
STOPPABLE = (*RUNNING, Status.UPDATE_FAILED)
# A status that moves while a process starts, and where it goes when the process answers or fails.
LAUNCHES = {
    Status.CREATING: (Status.CREATED, Status.CREATE_FAILED),
    Status.STARTING: (Status.STARTED, Status.START_FAILED),
    Status.UPDATING: (Status.UPDATED, Status.UPDATE_FAILED),
}


class MlflowMissing(OpenSageError):
    """MLflow is not installed in the platform's environment."""


def mlflow_command() -> list[str]:
    """How to run ``mlflow`` with the platform's own interpreter; raises :class:`MlflowMissing`."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise MlflowMissing(
            "MLflow is not installed where OpenSage runs: install it with pip install 'opensage[mlflow]' "
            "(or pip install mlflow) and restart opensage up."
        )
    return [sys.executable, "-m", "mlflow"]


def mlflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlflow")
    except PackageNotFoundError:
        return ""


@dataclass(slots=True)
class _Process:
    popen: subprocess.Popen[bytes]
    port: int
    started: float
    restarts: int = 0


class TrackingServers:
    """The tracking servers' processes.

    Args:
        store: where each server's row (kind :data:`KIND`) lives; the provider creates the rows.
        clock: the platform's clock, for the rows' modification times.
        root: ``<home>/mlflow``, one directory per server.
        s3_env: the environment a process needs to reach the platform's object store.
        start_timeout: how long a process may take before it answers ``/health``.
    """

    def __init__(
        self,
        store: SqlStore,
        clock: Callable[[], dt.datetime],
        root: Path,
        s3_env: Mapping[str, str],
        start_timeout: float = 180.0,
    ) -> None:
        self.store, self.clock, self.root = store, clock, root
        self.s3_env = dict(s3_env)
        self.start_timeout = start_timeout
        self._procs: dict[str, _Process] = {}
        self._lock = threading.RLock()
        self._busy: set[str] = set()  # servers a start or stop thread is working on
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None

    # --- what the front asks ----------------------------------------------------------------------

    def port(self, name: str) -> int | None:
        """The loopback port of ``name``'s process while it runs."""
        with self._lock:
            proc = self._procs.get(name)
            return proc.port if proc is not None and proc.popen.poll() is None else None

    def pid(self, name: str) -> int | None:
        with self._lock:
            proc = self._procs.get(name)
            return proc.popen.pid if proc is not None and proc.popen.poll() is None else None

    def directory(self, name: str) -> Path:
        return self.root / name

    # --- transitions --------------------------------------------------------------------------------

    def transition(self, name: str, to: Status, expect: tuple[Status, ...], data: dict[str, Any] | None = None) -> None:
        """Compare-and-set ``name``'s status; raises :class:`Conflict` (or :class:`NotFound`)."""
        self.store.update_resource(
            KIND, name, status=to, data=data, expect_status=tuple(str(s) for s in expect), now=self.clock()
        )

    def launch(self, name: str) -> None:
        """Start ``name``'s process on a thread; its status (Creating, Starting or Updating) moves on."""
        self._background(name, self._launch)

    def halt(self, name: str, then: Callable[[str], None] | None = None) -> None:
        """Stop ``name``'s process on a thread, then mark it Stopped (or call ``then``)."""
        self._background(name, lambda n: self._halt(n, then))

    def _background(self, name: str, work: Callable[[str], None]) -> None:
        def run() -> None:
            try:
                work(name)
            except Exception:
                log.exception("tracking server %s: unexpected failure", name)
            finally:
                with self._lock:
                    self._busy.discard(name)

        with self._lock:
            self._busy.add(name)
        threading.Thread(target=run, name=f"mlflow-{name}", daemon=True).start()

    def _launch(self, name: str) -> None:
        row = self.store.get_resource(KIND, name)
        if row is None:
            return
        # a server that ran before a restart keeps its status when it answers again
        done, failed = LAUNCHES.get(Status(row.status), (Status(row.status), Status.START_FAILED))
        self._end(name)
        ok = self._spawn_and_wait(name, row.data["ArtifactStoreUri"])
        if self._stopping.is_set():  # the platform stops: the status stays, the next start resumes it
            self._end(name)
            return
        try:
            self.transition(name, done if ok else failed, (Status(row.status),))
        except (Conflict, NotFound):  # deleted meanwhile: its process goes too
            self._end(name)
            return
        log.info("tracking server %s: %s", name, done if ok else failed)
        if not ok:
            self._end(name)

    def _halt(self, name: str, then: Callable[[str], None] | None) -> None:
        self._end(name)
        if then is not None:
            then(name)
            return
        with contextlib.suppress(Conflict, NotFound):
            self.transition(name, Status.STOPPED, (Status.STOPPING,))

    def remove(self, name: str) -> None:
        """Forget ``name`` once its process has ended: its row and its directory (its backend store)."""
        with contextlib.suppress(NotFound):
            self.store.delete_resource(KIND, name)
        shutil.rmtree(self.directory(name), ignore_errors=True)

    # --- processes ----------------------------------------------------------------------------------

    def command(self, name: str, artifact_uri: str, port: int) -> list[str]:
        db = self.directory(name) / "mlflow.db"
        return [
            *mlflow_command(),
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--default-artifact-root",
            artifact_uri,
            "--artifacts-destination",
            artifact_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "OPENSAGE_"))}
        env.update(self.s3_env)
        # MLflow's server-side GenAI jobs (scorers, prompt optimization) are no part of a SageMaker tracking
        # server; their runner and its seven huey consumers would take ~1.4 GB per tracking server at rest.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        return env

    def _spawn_and_wait(self, name: str, artifact_uri: str) -> bool:
        """Start the process and wait until it answers; False when it exits or does not answer in time."""
        directory = self.directory(name)
        directory.mkdir(parents=True, exist_ok=True)
        port = free_port()  # below the ephemeral range: an outgoing connection cannot take it first
        try:
            command = self.command(name, artifact_uri, port)
        except MlflowMissing as exc:
            log.error("tracking server %s: %s", name, exc)
            return False
        with open(directory / "server.log", "ab") as out:
            popen = subprocess.Popen(
                command,
                cwd=directory,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its workers are ended with it
            )
        with self._lock:
            previous = self._procs.get(name)
            self._procs[name] = _Process(popen, port, time.monotonic(), previous.restarts if previous else 0)
        (directory / "server.pid").write_text(str(popen.pid))
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and not self._stopping.is_set():
            if popen.poll() is not None:
                log.error("tracking server %s: mlflow exited with %s (see %s)", name, popen.returncode, out.name)
                return False
            if _answers(port):
                return True
            time.sleep(HEALTH_POLL_S)
        log.error("tracking server %s: mlflow did not answer within %.0f s", name, self.start_timeout)
        return False

    def _end(self, name: str, grace: float = 10.0) -> None:
        with self._lock:
            proc = self._procs.pop(name, None)
        if proc is not None:
            _end_group(proc.popen, grace)

    # --- life of the platform -----------------------------------------------------------------------

    def recover(self) -> None:
        """At start-up: end what a dead platform left, start the servers that ran, finish what was under way."""
        end_orphans(self.root)
        for row in self.store.list_resources(KIND):
            status = Status(row.status)
            if status in RUNNING or status in LAUNCHES:
                self.launch(row.name)
            elif status == Status.STOPPING:
                with contextlib.suppress(Conflict, NotFound):
                    self.transition(row.name, Status.STOPPED, (Status.STOPPING,))
            elif status == Status.DELETING:
                self.remove(row.name)
        self._stopping.clear()
        self._monitor = threading.Thread(target=self._watch, name="mlflow-monitor", daemon=True)
        self._monitor.start()

    def shutdown(self) -> None:
        """End every process (concurrently); statuses stay, so a restart brings them back."""
        self._stopping.set()
        with self._lock:
            names = list(self._procs)
        threads = [threading.Thread(target=self._end, args=(n,), daemon=True) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        if self._monitor is not None:
            self._monitor.join(MONITOR_S * 2)

    def _watch(self) -> None:
        """Start again a process that died while its server should run."""
        while not self._stopping.wait(MONITOR_S):
            with self._lock:
                dead = [(n, p) for n, p in self._procs.items() if p.popen.poll() is not None and n not in self._busy]
            for name, proc in dead:
                row = self.store.get_resource(KIND, name)
                if row is None or Status(row.status) not in RUNNING or proc.restarts >= MAX_RESTARTS:
                    continue
                log.warning("tracking server %s: mlflow exited with %s; starting it again", name, proc.popen.returncode)
                proc.restarts += 1
                self._background(name, self._revive)

    def _revive(self, name: str) -> None:
        row = self.store.get_resource(KIND, name)
        if row is not None and not self._spawn_and_wait(name, row.data["ArtifactStoreUri"]):
            self._end(name)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _end_group(popen: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process's session, SIGKILL what is left after ``grace`` seconds."""
    if popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()


def end_orphans(root: Path) -> int:
    """End the ``mlflow server`` sessions a dead platform left working in a directory under ``root``."""
    root = root.resolve()
    found = []
    for proc in psutil.process_iter(["pid", "cwd", "cmdline"]):
        with contextlib.suppress(psutil.Error, OSError, ValueError):
            cwd, cmdline = proc.info["cwd"], proc.info["cmdline"] or []
            mine = "mlflow" in cmdline and "server" in cmdline and os.getsid(proc.pid) == proc.pid
            if mine and cwd and Path(cwd).resolve().is_relative_to(root):
                found.append(proc)
    for proc in found:
        log.warning("ending tracking server process %d left running by an earlier OpenSage", proc.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return len(found)


def s3_environment(endpoint_url: str, access_key: str, secret_key: str, region: str) -> dict[str, str]:
    """What an ``mlflow server`` process needs to read and write artifacts in the platform's object store."""
    return {
        "MLFLOW_S3_ENDPOINT_URL": endpoint_url,
        "AWS_ENDPOINT_URL_S3": endpoint_url,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": region,
    }
