"""Processing jobs: inputs from S3, the image's entrypoint on N instances, outputs back to S3.

One asyncio task per job. Each instance gets its own directory, mounted at ``/opt/ml`` where the
machine allows it (otherwise ``/opt/ml`` in the entrypoint, arguments and environment is rewritten
to that directory): ``processing/<...>`` inputs at their ``LocalPath`` (``ShardedByS3Key`` deals
the objects across instances), ``config/processingjobconfig.json`` and ``config/resourceconfig.json``
as SageMaker writes them. Outputs are uploaded at the end (``EndOfJob``), or also while the job runs
(``Continuous``). Logs go to ``/aws/sagemaker/ProcessingJobs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import botocore.exceptions
from boto3.exceptions import S3UploadFailedError

from opensage import states
from opensage.compute import instances, sandbox
from opensage.compute.base import ContainerSpec, JobSpec, JobStatus
from opensage.contract import (
    BASE_DIR_ENV,
    CONTAINER_ROOT,
    PROCESSING_CONFIG_DIR,
    PROCESSING_JOB_CONFIG_FILE,
    RESOURCE_CONFIG_FILE,
    entrypoint_command,
    error_message,
    process_env,
    resource_config,
)
from opensage.errors import Conflict
from opensage.images import registry
from opensage.images.container import ContainerImage, image_command, image_container
from opensage.jobs import channels
from opensage.jobs.engine import (
    COMPLETED,
    FAILED,
    SHUTDOWN_REASON,
    STOPPED,
    JobEngine,
    JobFailed,
    LogTail,
    Run,
    out_of_memory_reason,
    tail_lines,
)
from opensage.jobs.specs import ProcessingJobSpec
from opensage.objects import transfer
from opensage.objects.transfer import S3LocationError, files_under, split_s3_uri
from opensage.timestamps import epoch as _epoch

log = logging.getLogger(__name__)
KIND = "processing-job"
LOG_GROUP = "/aws/sagemaker/ProcessingJobs"
CONTINUOUS_INTERVAL_S = 1.0


class ProcessingEngine(JobEngine):
    """Runs processing jobs on a compute backend; the provider calls :meth:`launch` and :meth:`request_stop`."""

    KIND = KIND

    async def _end(self, name: str, status: str, reason: str | None) -> None:
        await self._finish(name, status, reason)

    # --- the job ----------------------------------------------------------------------------------

    async def _run(self, run: Run) -> None:
        name = run.name
        job_dir = self.work_dir / name
        uploader: _Uploader | None = None
        try:
            job = ProcessingJobSpec.from_request(await self._describe(name))
            itype = instances.lookup(job.instance_type)
            if itype is None:
                raise JobFailed(f"ClientError: unknown instance type '{job.instance_type}'.")
            hosts = [f"algo-{i + 1}" for i in range(job.instance_count)]
            epoch = int(self.clock().timestamp())
            streams = {h: f"{name}/{h}-{epoch}" for h in hosts}
            for stream in streams.values():
                await asyncio.to_thread(self.logs.create_stream, LOG_GROUP, stream, exist_ok=True)
            roots = {h: job_dir / h for h in hosts}
            image = await self._image(job.image, "image")
            if image is None:
                raise JobFailed(f"ClientError: {registry.unavailable(job.image, 'image')}")
            await asyncio.to_thread(self._download_inputs, job, roots, job_dir / "cache", streams[hosts[0]])
            if isinstance(image, ContainerImage):
                spec = self._image_spec(job, image, hosts, itype, roots, job_dir)
            else:
                try:
                    bin_dir = await asyncio.to_thread(registry.job_interpreter, job_dir / "python")
                except registry.InterpreterError as exc:
                    raise JobFailed(f"InternalServerError: {exc}") from exc
                spec = self._job_spec(job, image, hosts, itype, roots, job_dir, bin_dir)
            spec = await self._with_access(spec, name, job.document["ProcessingJobArn"], job.network_isolation)
            await self._save(name, ProcessingStartTime=_epoch(self.clock()))
            run.handle = await asyncio.to_thread(self.backend.submit, spec)
            await self._save(name, _Handle=run.handle)
            uploader = _Uploader(self, dict(job.document), roots)
            uploader.start()
            outcome, status = await self._watch(run, job, spec, streams)
            uploader.stop()
            await self._conclude(run, job, roots, outcome, status, job_dir, uploader)
        except JobFailed as exc:
            await self._fail(run, str(exc))
        except S3LocationError as exc:
            await self._fail(run, str(exc))
        except Exception as exc:
            log.exception("processing job %s failed inside the platform", name)
            await self._fail(run, f"InternalServerError: {type(exc).__name__}: {exc}")
        finally:
            if uploader is not None:
                uploader.stop()
            if run.handle is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.backend.cleanup, run.handle)
            self._runs.pop(name, None)
            shutil.rmtree(job_dir, ignore_errors=True)

    def _platform_log(self, stream: str, message: str) -> None:
        self.logs.put_events(LOG_GROUP, stream, [(int(self.clock().timestamp() * 1000), message)])

    def _download_inputs(self, job: ProcessingJobSpec, roots: dict[str, Path], cache: Path, stream: str) -> None:
        hosts = list(roots)
        desc = job.document  # the inputs and outputs, as the request gave them
        region = desc["ProcessingJobArn"].split(":")[3]
        for item in desc.get("ProcessingInputs") or []:
            source = item.get("S3Input")
            if source is None:
                raise JobFailed(
                    f"ClientError: input '{item['InputName']}' has no S3Input; OpenSage reads processing inputs "
                    "from S3 (DatasetDefinition is not available)."
                )
            channel = {"ChannelName": item["InputName"], "DataSource": {"S3DataSource": source}}
            objects = channels.list_channel(self.s3, channel, region)
            per_host = channels.assign(objects, hosts, source.get("S3DataDistributionType", "FullyReplicated"))
            targets = {h: _host_path(roots[h], source["LocalPath"]) for h in hosts}
            report = channels.download(self.s3, per_host, targets, cache / item["InputName"])
            if source.get("S3CompressionType") == "Gzip":
                volume = desc["ProcessingResources"]["ClusterConfig"].get("VolumeSizeInGB")
                for target in targets.values():
                    _gunzip_tree(target, transfer.Expansion.from_quotas(self.archive_quotas, volume))
            self._platform_log(stream, report.describe(item["InputName"]).replace("channel", "input"))
        for root in roots.values():
            for output in (desc.get("ProcessingOutputConfig") or {}).get("Outputs") or []:
                if "S3Output" in output:
                    _host_path(root, output["S3Output"]["LocalPath"]).mkdir(parents=True, exist_ok=True)

    def _image_spec(
        self,
        job: ProcessingJobSpec,
        image: ContainerImage,
        hosts: list[str],
        itype: instances.InstanceType,
        roots: dict[str, Path],
        job_dir: Path,
    ) -> JobSpec:
        """The containers of a job whose image is one of the registry's (:mod:`opensage.jobs.images`)."""
        argv = image_command(image, job.entrypoint, job.arguments, image.processing_argv())
        if not argv:
            raise JobFailed(
                f"ClientError: the image '{job.image}' has neither an ENTRYPOINT nor a CMD; give the job a "
                "ContainerEntrypoint."
            )
        peers = tuple((h, "127.0.0.1") for h in hosts)
        containers = []
        for host, root in roots.items():
            self._write_config(job, host, hosts, itype, root)
            env = {**job.environment, "PROCESSING_JOB_ARN": job.document["ProcessingJobArn"]}
            log_path, layer = job_dir / "logs" / f"{host}.log", job_dir / "layers" / host
            isolated = job.network_isolation and len(hosts) == 1
            containers.append(image_container(image, host, argv, env, root, layer, log_path, itype, isolated, peers))
        return JobSpec(f"{KIND}/{job.name}", tuple(containers))

    def _write_config(
        self, job: ProcessingJobSpec, host: str, hosts: list[str], itype: instances.InstanceType, root: Path
    ) -> None:
        """``/opt/ml/config/processingjobconfig.json`` and ``resourceconfig.json`` of one container."""
        config_dir = root / PROCESSING_CONFIG_DIR
        config_dir.mkdir(parents=True, exist_ok=True)
        (root / "output").mkdir(parents=True, exist_ok=True)
        config = json.dumps({k: v for k, v in job.document.items() if not k.startswith("_")})
        (config_dir / PROCESSING_JOB_CONFIG_FILE).write_text(config)
        (config_dir / RESOURCE_CONFIG_FILE).write_text(json.dumps(resource_config(host, hosts, itype.name)))

    def _job_spec(
        self,
        job: ProcessingJobSpec,
        image: registry.BuiltinImage,
        hosts: list[str],
        itype: instances.InstanceType,
        roots: dict[str, Path],
        job_dir: Path,
        bin_dir: Path,
    ) -> JobSpec:
        entrypoint = list(job.entrypoint) or list(image.processing_argv())
        if not entrypoint:
            raise JobFailed(
                f"ClientError: the image '{job.image}' has no default entrypoint in OpenSage; give the job a "
                "ContainerEntrypoint (e.g. ['python3', '/opt/ml/processing/input/code/script.py'])."
            )
        mounted = sandbox.mounts_available()
        isolated = job.network_isolation and len(hosts) == 1
        containers = []
        for host, root in roots.items():
            self._write_config(job, host, hosts, itype, root)
            env = {
                **image.environment(),
                **job.environment,
                **process_env(root, registry.search_path(bin_dir), self.envs_dir),
                BASE_DIR_ENV: str(root),
            }
            argv, env = entrypoint_command(entrypoint, list(job.arguments), env, root, mounted)
            containers.append(
                ContainerSpec(
                    host,
                    argv,
                    env,
                    root,
                    job_dir / "logs" / f"{host}.log",
                    itype.vcpus,
                    itype.memory_bytes,
                    mounts=((root, CONTAINER_ROOT),),
                    isolate_network=isolated,
                    peers=tuple((h, "127.0.0.1") for h in hosts),
                    owned=(job_dir, self.envs_dir),
                    gpus=itype.gpus,
                    carry=(bin_dir.parent,),
                )
            )
        return JobSpec(f"{KIND}/{job.name}", tuple(containers))

    async def _watch(
        self, run: Run, job: ProcessingJobSpec, spec: JobSpec, streams: dict[str, str]
    ) -> tuple[str, JobStatus]:
        """Tail logs until every container has ended; the outcome is 'done', 'stopped' or 'max-runtime'."""
        tails = {c.host: LogTail(c.log_path, LOG_GROUP, streams[c.host]) for c in spec.containers}
        return await self._await_containers(
            run, job.max_runtime_s, lambda final: self._pump_logs(tails, streams, final)
        )

    def _pump_logs(self, tails: dict[str, LogTail], streams: dict[str, str], final: bool = False) -> None:
        for host, tail in tails.items():
            lines = tail.read(final)
            if lines:
                now_ms = int(self.clock().timestamp() * 1000)
                self.logs.put_events(LOG_GROUP, streams[host], [(now_ms, line) for line in lines])
                tail.commit()

    async def _conclude(
        self,
        run: Run,
        job: ProcessingJobSpec,
        roots: dict[str, Path],
        outcome: str,
        status: JobStatus,
        job_dir: Path,
        uploader: _Uploader,
    ) -> None:
        if run.shutting_down:
            raise JobFailed(SHUTDOWN_REASON)
        failed = sorted((c for c in status.containers if c.exit_code != 0), key=lambda c: c.host != run.first_failure)
        exit_message = _exit_message(roots)
        if outcome == "done" and failed:
            if exit_message:
                await self._save(run.name, ExitMessage=exit_message)
            raise JobFailed(self._failure_reason(failed[0], job, job_dir))
        await asyncio.to_thread(uploader.upload_all)
        extra = {"ExitMessage": exit_message} if exit_message else {}
        if outcome == "done":
            await self._finish(run.name, COMPLETED, None, **extra)
        else:
            reason = None
            if outcome == "max-runtime":
                reason = f"The job ran longer than its MaxRuntimeInSeconds ({job.max_runtime_s} s) and was stopped."
            await self._finish(run.name, STOPPED, reason, **extra)

    @staticmethod
    def _failure_reason(state: Any, job: ProcessingJobSpec, job_dir: Path) -> str:
        if state.out_of_memory:
            itype = job.instance_type
            advice = "Use a larger instance type or more instances."
            return out_of_memory_reason(state, "processing container", itype, advice)
        lines = tail_lines(job_dir / "logs" / f"{state.host}.log", 50)
        message = error_message(lines) or f"the container exited with code {state.exit_code}"
        return f"AlgorithmError: {message} (exit code {state.exit_code} on {state.host})"

    # --- persistence -------------------------------------------------------------------------------

    async def _finish(self, name: str, status: str, reason: str | None, **fields: Any) -> None:
        now = self.clock()
        extra = {**fields, "ProcessingEndTime": _epoch(now), **({"FailureReason": reason} if reason else {})}
        change = states.transition(KIND, status, now, fields=extra, drop=("_Handle",))
        with contextlib.suppress(Conflict):  # it ended meanwhile
            await asyncio.to_thread(self.store.modify_resource, KIND, name, change, now=now)

    async def _fail(self, run: Run, reason: str) -> None:
        if run.shutting_down:
            reason = SHUTDOWN_REASON
        elif run.stop_requested.is_set():
            await self._finish(run.name, STOPPED, None)
            return
        log.info("processing job %s failed: %s", run.name, reason)
        await self._finish(run.name, FAILED, reason)


class _Uploader:
    """Uploads outputs: Continuous ones every second while the job runs, all of them at the end."""

    def __init__(self, engine: ProcessingEngine, desc: dict, roots: dict[str, Path]) -> None:
        self.s3 = engine.s3
        self.roots = roots
        self.outputs = [o for o in (desc.get("ProcessingOutputConfig") or {}).get("Outputs") or [] if "S3Output" in o]
        self.sent: dict[tuple[str, str], tuple[float, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if any(o["S3Output"].get("S3UploadMode") == "Continuous" for o in self.outputs):
            self._thread = threading.Thread(target=self._loop, name="processing-uploader", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(CONTINUOUS_INTERVAL_S):
            with contextlib.suppress(JobFailed):
                self._upload([o for o in self.outputs if o["S3Output"].get("S3UploadMode") == "Continuous"])

    def upload_all(self) -> None:
        self._upload(self.outputs)

    def _upload(self, outputs: list[dict]) -> None:
        for output in outputs:
            s3_output = output["S3Output"]
            bucket, prefix = split_s3_uri(s3_output["S3Uri"])
            prefix = prefix.rstrip("/")
            for root in self.roots.values():
                local = _host_path(root, s3_output["LocalPath"])
                for path in files_under(local) if local.exists() else []:
                    stat = path.stat()
                    marker = (stat.st_mtime, stat.st_size)
                    if self.sent.get((str(path), bucket)) == marker:
                        continue
                    key = f"{prefix}/{path.relative_to(local)}" if prefix else str(path.relative_to(local))
                    try:
                        self.s3.upload_file(str(path), bucket, key)
                    except (botocore.exceptions.ClientError, S3UploadFailedError) as exc:
                        raise JobFailed(
                            f"ClientError: could not upload output '{output['OutputName']}' to "
                            f"{s3_output['S3Uri']}: {_s3_message(exc)}"
                        ) from exc
                    self.sent[(str(path), bucket)] = marker


def _s3_message(exc: Exception) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code')}: {error.get('Message')}"
    return str(exc).rsplit(": ", 1)[-1]


def _host_path(root: Path, container_path: str) -> Path:
    """Where a container path (``/opt/ml/processing/...``) lives in the instance's directory."""
    relative = os.path.relpath(container_path, CONTAINER_ROOT)
    if relative.startswith(".."):
        raise JobFailed(f"ClientError: LocalPath '{container_path}' must be under /opt/ml/processing/.")
    return root / relative


def _gunzip_tree(directory: Path, bounds: transfer.Expansion) -> None:
    """Gunzip every ``.gz`` file under ``directory`` in place, each within ``bounds``.

    Raises:
        JobFailed: a file is not gzip data or would expand past ``bounds``.
    """
    for path in list(directory.rglob("*.gz")):
        try:
            transfer.gunzip_file(path, path.with_suffix(""), bounds)
        except (transfer.TooLarge, OSError, EOFError) as exc:
            raise JobFailed(f"ClientError: the gzip input {path.name} cannot be used: {exc}.") from exc
        path.unlink()


def _exit_message(roots: dict[str, Path]) -> str | None:
    for root in roots.values():
        message = root / "output" / "message"
        if message.exists():
            return message.read_text(errors="replace")[:1024]
    return None
