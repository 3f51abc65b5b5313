"""Notebook instances: their lifecycle scripts, code repositories and JupyterLab processes.

Statuses are AWS's (``NotebookInstanceStatus``); a request moves one by compare-and-set on the stored
status, and the slow half runs on a thread of its own. Starting an instance (status Pending) is, in
order: at its creation only, ``git clone`` of its code repositories into the volume and the
lifecycle configuration's ``OnCreate`` script; at every start, the ``OnStart`` script; then a
JupyterLab server, which must answer before the instance is InService. A step that fails makes the
instance Failed with the reason (git's message, the script's last lines). Every step is a container
on the compute backend with the instance's directories mounted (:mod:`.layout`), the instance type's
CPU and memory limits, and the platform's client settings in its environment.

JupyterLab listens on a loopback port with a token that only the platform knows (a new one at each
start); the front adds it to what it forwards. The backend's handle of the server is kept in the row,
so that a restarted platform ends what a dead one left; ``shutdown`` ends the processes and leaves the
statuses, and ``recover`` starts again the instances that were InService or Pending.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import enum
import functools
import logging
import secrets
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opensage.compute import instances
from opensage.compute.base import ComputeBackend, ContainerSpec, Handle, JobSpec, free_port
from opensage.errors import Conflict, NotFound
from opensage.logstore import LogStore
from opensage.notebooks import NOTEBOOK_PREFIX
from opensage.notebooks import layout as L
from opensage.store import tags
from opensage.store.sql import SqlStore

log = logging.getLogger(__name__)

KIND = "notebook-instance"
LIFECYCLE_KIND = "notebook-instance-lifecycle-config"
REPOSITORY_KIND = "code-repository"
SCRIPT_TIMEOUT_S = 300.0  # AWS stops a lifecycle script after five minutes
CLONE_TIMEOUT_S = 300.0
HEALTH_POLL_S = 0.25
MONITOR_S = 2.0
STOP_GRACE_S = 10.0
MAX_RESTARTS = 5
REASON_LINES = 5  # the script's last lines that FailureReason quotes


class Status(enum.StrEnum):
    """AWS's ``NotebookInstanceStatus``."""

    PENDING = "Pending"
    IN_SERVICE = "InService"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    FAILED = "Failed"
    DELETING = "Deleting"
    UPDATING = "Updating"


# Which statuses each request may leave, as AWS allows them.
STARTABLE = (Status.STOPPED,)
STOPPABLE = (Status.IN_SERVICE, Status.FAILED, Status.PENDING)
UPDATABLE = (Status.STOPPED,)
DELETABLE = (Status.STOPPED, Status.FAILED)
CREATED_FLAG = "OpenSageCreated"  # in the row: the clone and OnCreate are done (they run once)
HANDLE_FIELD = "OpenSageHandle"  # in the row: the backend's handle of the running JupyterLab


def base_url(name: str) -> str:
    return f"{NOTEBOOK_PREFIX}/{name}/"


class StepFailed(Exception):
    """A step of a start failed; the message is the instance's FailureReason."""


@dataclass(slots=True)
class _Server:
    handle: Handle
    port: int
    token: str
    restarts: int = 0
    log_offset: int = 0  # how much of its log the log store has


class NotebookInstances:
    """The notebook instances' processes.

    Args:
        store: the rows (kinds :data:`KIND`, :data:`LIFECYCLE_KIND`, :data:`REPOSITORY_KIND`).
        clock: the platform's clock. backend: where the instances' processes run.
        logs: the log store (the lifecycle scripts' output, group :data:`~.layout.LOG_GROUP`).
        root: ``<home>/notebooks``. client: the platform's client settings for the kernels.
    """

    def __init__(
        self,
        store: SqlStore,
        clock: Callable[[], dt.datetime],
        backend: ComputeBackend,
        logs: LogStore,
        root: Path,
        client: L.ClientSetup,
        start_timeout: float = 180.0,
    ) -> None:
        self.store, self.clock, self.backend, self.logs, self.root = store, clock, backend, logs, root
        self.client, self.start_timeout = client, start_timeout
        self._servers: dict[str, _Server] = {}
        self._busy: set[str] = set()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None

    # --- what the front and the provider ask -------------------------------------------------------

    def address(self, name: str) -> tuple[int, str] | None:
        """(loopback port, token) of ``name``'s JupyterLab while it runs."""
        with self._lock:
            server = self._servers.get(name)
            return (server.port, server.token) if server is not None else None

    def pids(self, name: str) -> list[int]:
        with self._lock:
            server = self._servers.get(name)
            return [int(c["pid"]) for c in server.handle["containers"]] if server is not None else []

    def dirs(self, name: str) -> L.InstanceDirs:
        return L.InstanceDirs(self.root / name)

    def transition(self, name: str, to: Status, expect: tuple[Status, ...]) -> None:
        """Compare-and-set ``name``'s status; raises :class:`Conflict` (or :class:`NotFound`)."""
        self.store.update_resource(KIND, name, status=to, expect_status=tuple(map(str, expect)), now=self.clock())

    def _patch(self, name: str, fields: dict[str, Any], status: Status | None, expect: tuple[Status, ...]) -> None:
        def change(row: Any) -> tuple[dict[str, Any], str | None]:
            if Status(row.status) not in expect:
                raise Conflict(f"notebook instance {name} is {row.status}")
            data = {k: v for k, v in {**row.data, **fields}.items() if v is not None}
            return data, (str(status) if status is not None else None)

        self.store.modify_resource(KIND, name, change, now=self.clock())

    # --- requests -----------------------------------------------------------------------------------

    def launch(self, name: str) -> None:
        """Start ``name`` (it is Pending) on a thread: it goes InService, or Failed with the reason."""
        self._background(name, self._launch)

    def halt(self, name: str) -> None:
        """Stop ``name``'s JupyterLab (it is Stopping) on a thread, then mark it Stopped."""
        self._background(name, self._halt)

    def finish_update(self, name: str) -> None:
        """An update (status Updating) is recorded: the instance is Stopped again."""
        self._background(name, lambda n: self._settle(n, Status.STOPPED, (Status.UPDATING,)))

    def remove(self, name: str) -> None:
        """Delete ``name`` (it is Deleting) on a thread: its process, its directory, its row and tags."""
        self._background(name, self._remove)

    def _background(self, name: str, work: Callable[[str], None]) -> None:
        def run() -> None:
            try:
                work(name)
            except Exception:
                log.exception("notebook instance %s: unexpected failure", name)
                with contextlib.suppress(Conflict, NotFound):
                    self._patch(
                        name,
                        {"FailureReason": "Internal error; see the platform's log."},
                        Status.FAILED,
                        (Status.PENDING,),
                    )
            finally:
                with self._lock:
                    self._busy.discard(name)

        with self._lock:
            self._busy.add(name)
        threading.Thread(target=run, name=f"notebook-{name}", daemon=True).start()

    def _settle(self, name: str, to: Status, expect: tuple[Status, ...]) -> None:
        with contextlib.suppress(Conflict, NotFound):
            self.transition(name, to, expect)

    def _launch(self, name: str) -> None:
        row = self.store.get_resource(KIND, name)
        if row is None or Status(row.status) != Status.PENDING:
            return
        self._end(name)
        try:
            self._prepare(name, row.arn, row.data)
            server = self._serve(name, row.data)
        except StepFailed as exc:
            if self._stopping.is_set():  # the platform stops: the instance stays Pending, the next start resumes it
                return
            log.warning("notebook instance %s: failed: %s", name, exc)
            with contextlib.suppress(Conflict, NotFound):
                self._patch(name, {"FailureReason": str(exc)[:1024]}, Status.FAILED, (Status.PENDING,))
            return
        if self._stopping.is_set():
            self._stop_server(server)
            return
        try:
            self._patch(
                name, {HANDLE_FIELD: server.handle, "FailureReason": None}, Status.IN_SERVICE, (Status.PENDING,)
            )
        except (Conflict, NotFound):  # stopped or deleted meanwhile
            self._stop_server(server)
            return
        with self._lock:
            self._servers[name] = server
        log.info("notebook instance %s: InService on port %d", name, server.port)

    def _halt(self, name: str) -> None:
        self._end(name)
        with contextlib.suppress(Conflict, NotFound):
            self._patch(name, {HANDLE_FIELD: None}, Status.STOPPED, (Status.STOPPING,))

    def _remove(self, name: str) -> None:
        self._end(name)
        row = self.store.get_resource(KIND, name)
        if row is None or Status(row.status) != Status.DELETING:
            return
        shutil.rmtree(self.dirs(name).root, ignore_errors=True)  # first: the row goes once nothing is left
        with contextlib.suppress(NotFound):
            self.store.delete_resource(KIND, name)
        tags.drop_tags(self.store, row.arn)
        log.info("notebook instance %s: deleted", name)

    # --- the steps of a start -------------------------------------------------------------------------

    def _environment(self, name: str) -> dict[str, str]:
        dirs = self.dirs(name)
        return L.instance_env(dirs, L.write_client_files(dirs, self.client), name)

    def _prepare(self, name: str, arn: str, data: dict[str, Any]) -> None:
        """The directories and files, then (once) the clones and OnCreate, then OnStart."""
        dirs = self.dirs(name)
        dirs.make()
        L.write_metadata(dirs, arn, name, data["RoleArn"])
        scripts = self._scripts(data.get("NotebookInstanceLifecycleConfigName"))
        if not data.get(CREATED_FLAG):
            for url, branch in self._repositories(data):
                self._clone(name, url, branch)
            if scripts.get("OnCreate"):
                self._run_script(name, "OnCreate", scripts["OnCreate"])
            self._patch(name, {CREATED_FLAG: True}, None, (Status.PENDING,))
        if scripts.get("OnStart"):
            self._run_script(name, "OnStart", scripts["OnStart"])

    def _scripts(self, config_name: str | None) -> dict[str, str]:
        if not config_name:
            return {}
        row = self.store.get_resource(LIFECYCLE_KIND, config_name)
        if row is None:
            raise StepFailed(f"Lifecycle configuration {config_name} does not exist any more.")
        return {k: row.data[k][0]["Content"] for k in ("OnCreate", "OnStart") if row.data.get(k)}

    def _repositories(self, data: dict[str, Any]) -> list[tuple[str, str | None]]:
        """(Git URL, branch) of the default and the additional code repositories, in that order."""
        out: list[tuple[str, str | None]] = []
        for ref in [data.get("DefaultCodeRepository"), *(data.get("AdditionalCodeRepositories") or [])]:
            if not ref:
                continue
            if ref.startswith("https://"):
                out.append((ref, None))
                continue
            row = self.store.get_resource(REPOSITORY_KIND, ref)
            if row is None:
                raise StepFailed(f"Code repository {ref} does not exist any more.")
            git = row.data["GitConfig"]
            out.append((git["RepositoryUrl"], git.get("Branch")))
        return out

    def _container(self, name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> ContainerSpec:
        dirs = self.dirs(name)
        row = self.store.get_resource(KIND, name)
        itype = instances.lookup(row.data["InstanceType"]) if row is not None else None
        inside, _ = dirs.inside()  # the volume as the instance sees it: every process starts there
        return ContainerSpec(
            "notebook",
            ("/bin/sh", "-c", 'cd "$0" && exec "$@"', inside, *argv),
            env,
            dirs.volume,
            log_path,
            itype.vcpus if itype else None,
            itype.memory_bytes if itype else None,
            mounts=dirs.mounts(),
            owned=(dirs.root,),
        )

    def _run(self, name: str, step: str, argv: list[str], timeout: float) -> tuple[int | None, Path]:
        """Run one container to its end; (exit code or None on timeout, its log)."""
        log_path = self.dirs(name).logs / f"{step}.log"
        log_path.unlink(missing_ok=True)
        spec = self._container(name, argv, log_path, self._environment(name))
        handle = self.backend.submit(JobSpec(f"notebook/{name}/{step}", (spec,)))
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and not self._stopping.is_set():
                status = self.backend.poll(handle)
                if status.done:
                    return status.containers[0].exit_code, log_path
                time.sleep(0.1)
            self.backend.stop(handle, 1.0)
            return None, log_path
        finally:
            self.backend.cleanup(handle)

    def _clone(self, name: str, url: str, branch: str | None) -> None:
        target = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or "repository"
        if (self.dirs(name).volume / target).exists():
            return
        argv = ["git", "clone", *(["--branch", branch] if branch else []), "--", url, target]
        code, log_path = self._run(name, "git-clone", argv, CLONE_TIMEOUT_S)
        if code != 0:
            why = _tail(log_path) or ("timed out" if code is None else f"exit code {code}")
            raise StepFailed(f"Could not clone the code repository {url}: {why}")

    def _run_script(self, name: str, which: str, content: str) -> None:
        script = self.dirs(name).logs.parent / f"{which}.sh"
        script.write_bytes(base64.b64decode(content))
        code, log_path = self._run(name, which, ["/bin/bash", str(script)], SCRIPT_TIMEOUT_S)
        self._ship(log_path, f"{name}/{L.SCRIPT_STREAMS[which]}")
        if code is None:
            raise StepFailed(f"The lifecycle configuration's {which} script did not finish within 5 minutes.")
        if code != 0:
            last = _tail(log_path)
            raise StepFailed(
                f"The lifecycle configuration's {which} script exited with code {code}"
                + (f"; its last lines: {last}" if last else ".")
            )

    def _ship(self, log_path: Path, stream: str) -> None:
        try:
            lines = log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        now = int(self.clock().timestamp() * 1000)
        self.logs.put_events(L.LOG_GROUP, stream, [(now, line) for line in lines if line.strip()] or [])

    def _serve(self, name: str, data: dict[str, Any]) -> _Server:
        """Start JupyterLab and wait until it answers with its token."""
        port, token = free_port(), secrets.token_urlsafe(32)
        cwd, _ = self.dirs(name).inside()
        env = {**self._environment(name), L.TOKEN_ENV: token}
        log_path = self.dirs(name).logs / "jupyter.log"
        log_path.unlink(missing_ok=True)  # a new log at each start: the log store has the earlier ones
        spec = self._container(name, L.jupyter_argv(base_url(name), port, cwd), log_path, env)
        handle = self.backend.submit(JobSpec(f"notebook/{name}", (spec,)))
        server = _Server(handle, port, token)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and not self._stopping.is_set():
            if self.backend.poll(handle).done:
                self._stop_server(server)
                raise StepFailed(f"JupyterLab exited while starting: {_tail(spec.log_path)}")
            if _answers(port, token, name):
                return server
            time.sleep(HEALTH_POLL_S)
        self._stop_server(server)
        raise StepFailed(f"JupyterLab did not answer within {self.start_timeout:.0f} s: {_tail(spec.log_path)}")

    def _stop_server(self, server: _Server) -> None:
        with contextlib.suppress(Exception):
            self.backend.stop(server.handle, STOP_GRACE_S)
            self.backend.cleanup(server.handle)

    def _end(self, name: str) -> None:
        with self._lock:
            server = self._servers.pop(name, None)
        if server is not None:
            self._stop_server(server)

    # --- life of the platform -----------------------------------------------------------------------

    def recover(self) -> None:
        """At start-up: end what a dead platform left, start what ran, finish what was under way."""
        for row in self.store.list_resources(KIND):
            handle = row.data.get(HANDLE_FIELD)
            if handle:  # a JupyterLab a dead platform left running (its pid is checked with its start time)
                self._stop_server(_Server(handle, 0, ""))
            status = Status(row.status)
            if status == Status.IN_SERVICE:
                with contextlib.suppress(Conflict, NotFound):
                    self._patch(row.name, {HANDLE_FIELD: None}, Status.PENDING, (Status.IN_SERVICE,))
                self.launch(row.name)
            elif status == Status.PENDING:
                self.launch(row.name)
            elif status == Status.STOPPING:
                self._halt(row.name)
            elif status == Status.UPDATING:
                self._settle(row.name, Status.STOPPED, (Status.UPDATING,))
            elif status == Status.DELETING:
                self._remove(row.name)
        self._stopping.clear()
        self._monitor = threading.Thread(target=self._watch, name="notebook-monitor", daemon=True)
        self._monitor.start()

    def shutdown(self) -> None:
        """End every JupyterLab (concurrently); statuses stay, so a restart brings them back."""
        self._stopping.set()
        with self._lock:
            names = list(self._servers)
        threads = [threading.Thread(target=self._end, args=(n,), daemon=True) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(STOP_GRACE_S + 5)
        if self._monitor is not None:
            self._monitor.join(MONITOR_S * 2)

    def _watch(self) -> None:
        """Start again a JupyterLab that died while its instance is InService."""
        while not self._stopping.wait(MONITOR_S):
            with self._lock:
                servers = [(n, s) for n, s in self._servers.items() if n not in self._busy]
            for name, server in servers:
                with contextlib.suppress(Exception):
                    self._pump(name, server)
                    if not self.backend.poll(server.handle).done or server.restarts >= MAX_RESTARTS:
                        continue
                    log.warning("notebook instance %s: JupyterLab exited; starting it again", name)
                    self._background(name, functools.partial(self._revive, old=server))

    def _pump(self, name: str, server: _Server) -> None:
        """Copy JupyterLab's new complete lines to the stream ``<name>/jupyter.log``, as SageMaker does."""
        try:
            with open(self.dirs(name).logs / "jupyter.log", "rb") as f:
                f.seek(server.log_offset)
                chunk = f.read(1024 * 1024)
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1
        if end <= 0:
            return
        server.log_offset += end
        now = int(self.clock().timestamp() * 1000)
        lines = [line.decode("utf-8", "replace") for line in chunk[:end].split(b"\n") if line.strip()]
        if lines:
            self.logs.put_events(L.LOG_GROUP, f"{name}/{L.JUPYTER_STREAM}", [(now, line) for line in lines])

    def _revive(self, name: str, old: _Server) -> None:
        with contextlib.suppress(Exception):
            self.backend.cleanup(old.handle)
        row = self.store.get_resource(KIND, name)
        if row is None or Status(row.status) != Status.IN_SERVICE:
            return
        try:
            server = self._serve(name, row.data)
        except StepFailed as exc:
            log.error("notebook instance %s: %s", name, exc)
            old.restarts += 1
            return
        server.restarts = old.restarts + 1
        with self._lock:
            self._servers[name] = server
        with contextlib.suppress(Conflict, NotFound):
            self._patch(name, {HANDLE_FIELD: server.handle}, None, (Status.IN_SERVICE,))


def _answers(port: int, token: str, name: str) -> bool:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{base_url(name)}api/status", headers={"Authorization": f"token {token}"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    try:
        with opener.open(request, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _tail(path: Path, lines: int = REASON_LINES) -> str:
    """The last non-empty lines of ``path``, joined with `` | ``."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])
