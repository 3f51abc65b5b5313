"""Training jobs: the state machine from CreateTrainingJob to Completed, Failed or Stopped.

One asyncio task per job in the API server: Starting -> Downloading (channels from S3) -> Training
(containers on the compute backend, logs to the log store, metrics from the log lines) -> Uploading
(``model.tar.gz``, ``output.tar.gz``, checkpoints) -> Completed. Every transition is persisted with
a compare-and-set on the status, so a StopTrainingJob racing the end of a job has one winner.

A job's ``AlgorithmSpecification.ContainerEntrypoint`` (+ ``ContainerArguments``) runs instead of the
image's own command, as on SageMaker: that is how the SDK v3's ``ModelTrainer`` runs its
``sm_drivers`` (``/bin/bash -c '... sm_train.sh'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opensage import states
from opensage.compute import instances, sandbox
from opensage.compute.base import ContainerSpec, Handle, JobSpec, free_port
from opensage.contract import (
    CHANNEL_COMPRESSION,
    CHANNEL_CONTENT_TYPE,
    CHANNEL_DISTRIBUTION,
    CHANNEL_INPUT_MODE,
    CHANNEL_RECORD_WRAPPER,
    CONTAINER_ROOT,
    CURRENT_INSTANCE_TYPE_ENV,
    HOST_ADDRESSES_ENV,
    HOST_PORTS_ENV,
    SDK_DRIVERS_CHANNEL,
    TRACKER_PORT_ENV,
    Layout,
    entrypoint_command,
    error_message,
    names_no_error,
    process_env,
    resource_config,
    rewrite_tree,
    training_env,
)
from opensage.errors import Conflict
from opensage.images import registry
from opensage.images.container import ContainerImage, image_command, image_container
from opensage.images.framework import toolkit
from opensage.jobs import pipes as pipes_
from opensage.jobs import rules
from opensage.jobs.engine import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    SHUTDOWN_REASON,
    STOPPED,
    STOPPING,
    JobEngine,
    JobFailed,
    LogTail,
    Run,
    last_lines,
    out_of_memory_reason,
    tail_lines,
)
from opensage.jobs.images import metric_definitions
from opensage.jobs.specs import TrainingJobSpec
from opensage.objects import transfer
from opensage.objects.transfer import S3LocationError
from opensage.store.metrics import MetricStore, Point, Stats, dimensions
from opensage.timestamps import epoch as _epoch

log = logging.getLogger(__name__)
KIND = "training-job"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
METRIC_NAMESPACE = "/aws/sagemaker/TrainingJobs"


class TrainingEngine(JobEngine):
    """Runs training jobs on a compute backend; the provider calls :meth:`launch` and :meth:`request_stop`."""

    KIND = KIND
    metric_store: MetricStore | None = None  # where the job's metrics go as it logs them (set by the platform)

    async def _end(self, name: str, status: str, reason: str | None) -> None:
        await self._finish(name, status, status, reason)

    # --- the state machine ----------------------------------------------------------------------

    async def _run(self, run: Run) -> None:
        name = run.name
        job_dir = self.work_dir / name
        try:
            job = TrainingJobSpec.from_request(await self._describe(name))
            image = await self._image(job.image, "training image")
            hosts, itype = self._hosts(job)
            streams = await self._open_streams(name, hosts)
            await self._secondary(name, "Downloading")
            layouts = {h: Layout(job_dir / h) for h in hosts}
            for layout in layouts.values():
                layout.create()
            pipes = await asyncio.to_thread(
                pipes_.prepare, self.s3, job, layouts, job_dir / "cache", self.store_region(job.document),
                image.name if image else None, lambda m: self._platform_log(streams[hosts[0]], m),
            )  # fmt: skip
            run.closers.extend(p.close for p in pipes)
            await asyncio.to_thread(self._restore_checkpoints, job, layouts, streams[hosts[0]])
            if image is None:
                raise JobFailed(f"ClientError: {registry.unavailable(job.image, 'training image')}")
            _refuse_nul({**job.hyperparameters, **job.environment})
            definitions = metric_definitions(job.document, image)
            if image.script_mode(job.hyperparameters):
                await asyncio.to_thread(self._download_code, job, layouts)
            # a built-in algorithm runs the platform's interpreter and none of the job's code: no environment
            # of its own to make (about 0.1 s of a trial)
            own = isinstance(image, ContainerImage)  # the image's own file system: no environment to make
            user_code = image.script_mode(job.hyperparameters) or bool(job.entrypoint) or own
            bin_dir = await asyncio.to_thread(_interpreter, job_dir / "python") if user_code and not own else None
            spec = self._job_spec(job, image, hosts, itype, layouts, job_dir, bin_dir)
            if user_code:  # a built-in algorithm runs none of the user's code: no key for it
                spec = await self._with_access(spec, name, job.document["TrainingJobArn"], job.network_isolation)
            await self._secondary(name, "Training", TrainingStartTime=_epoch(self.clock()))
            run.handle = await asyncio.to_thread(self.backend.submit, spec)
            await self._save(name, _Handle=run.handle)
            self._report_sandbox(job, run.handle, streams[hosts[0]])
            outcome = await self._watch(run, job, spec, streams, definitions)
            await self._conclude(run, job, layouts, hosts, outcome, streams[hosts[0]], job_dir)
        except _Stopped:  # its record went to Stopping (StopTrainingJob, a tuning job) before the signal came
            await self._fail(run, "Stopped", stopped=True)
        except JobFailed as exc:
            await self._fail(run, str(exc))
        except S3LocationError as exc:
            await self._fail(run, str(exc))
        except Exception as exc:
            log.exception("training job %s failed inside the platform", name)
            await self._fail(run, f"InternalServerError: {type(exc).__name__}: {exc}")
        finally:
            for close in run.closers:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(close)
            if run.handle is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.backend.cleanup, run.handle)
            self._runs.pop(name, None)
            shutil.rmtree(job_dir, ignore_errors=True)

    def _hosts(self, job: TrainingJobSpec) -> tuple[list[str], instances.InstanceType]:
        itype = instances.lookup(job.instance_type)
        if itype is None:
            raise JobFailed(f"ClientError: unknown instance type '{job.instance_type}'.")
        count = job.instance_count
        if count < 1:  # the API refuses it; a tuning job's definition reaches here as it was sent
            raise JobFailed(f"ClientError: ResourceConfig.InstanceCount must be at least 1 (got {count}).")
        return [f"algo-{i + 1}" for i in range(count)], itype

    async def _open_streams(self, name: str, hosts: list[str]) -> dict[str, str]:
        epoch = int(self.clock().timestamp())
        streams = {h: f"{name}/{h}-{epoch}" for h in hosts}
        for stream in streams.values():
            await asyncio.to_thread(self.logs.create_stream, LOG_GROUP, stream, exist_ok=True)
        return streams

    def _platform_log(self, stream: str, message: str) -> None:
        self.logs.put_events(LOG_GROUP, stream, [(int(self.clock().timestamp() * 1000), message)])

    def _download_code(self, job: TrainingJobSpec, layouts: dict[str, Layout]) -> None:
        """The job's ``sourcedir.tar.gz`` (``sagemaker_submit_directory``) unpacked into each code dir, within
        the archive quotas and the instance's ``VolumeSizeInGB``."""
        uri = str(toolkit.decode(job.hyperparameters.get("sagemaker_submit_directory", "")))  # JSON-encoded
        if not uri.startswith("s3://"):
            return
        volume = (job.document.get("ResourceConfig") or {}).get("VolumeSizeInGB")
        bounds = transfer.Expansion.from_quotas(self.archive_quotas, volume)
        for layout in layouts.values():
            try:
                transfer.download_and_unpack(self.s3, uri, layout.code_dir, bounds)
            except transfer.ArtifactError as exc:
                raise JobFailed(f"ClientError: the source directory {uri} cannot be used: {exc}") from exc

    def _report_sandbox(self, job: TrainingJobSpec, handle: Handle, stream: str) -> None:
        containers = handle.get("containers", [])
        if containers and not all(c.get("mounted") for c in containers):
            rewritten = (
                f"; /opt/ml in ContainerEntrypoint, ContainerArguments, Environment and the {SDK_DRIVERS_CHANNEL} "
                "channel is rewritten to it"
                if job.entrypoint
                else ""
            )
            self._platform_log(
                stream,
                "This machine does not let OpenSage mount the job's directory at /opt/ml; the SM_* variables "
                f"point to {self.work_dir / job.name}{rewritten}.",
            )
        if job.network_isolation and not all(c.get("network_isolated") for c in containers):
            why = (
                "the job has more than one instance, which talk to each other over the network"
                if len(containers) > 1
                else "this machine does not let OpenSage create a network namespace"
            )
            self._platform_log(stream, f"EnableNetworkIsolation is set, but the network is not cut: {why}.")

    @staticmethod
    def store_region(desc: Mapping[str, Any]) -> str:
        return desc["TrainingJobArn"].split(":")[3]

    def _restore_checkpoints(self, job: TrainingJobSpec, layouts: dict[str, Layout], stream: str) -> None:
        config = job.document.get("CheckpointConfig")
        if not config:
            return
        for layout in layouts.values():
            n = transfer.download_tree(self.s3, config["S3Uri"], layout.checkpoints_dir)
            if n:
                self._platform_log(stream, f"Restored {n} checkpoint file(s) from {config['S3Uri']}")

    def _job_spec(
        self,
        job: TrainingJobSpec,
        image: registry.BuiltinImage | ContainerImage,
        hosts: list[str],
        itype: instances.InstanceType,
        layouts: dict[str, Layout],
        job_dir: Path,
        bin_dir: Path | None,
    ) -> JobSpec:
        name = job.name
        entrypoint = list(job.entrypoint)
        if job.arguments and not entrypoint and not isinstance(image, ContainerImage):
            raise JobFailed(
                "ClientError: ContainerArguments needs a ContainerEntrypoint in OpenSage (its images have no "
                "default entrypoint to pass them to); give the job both, e.g. ['/bin/bash', '-c']."
            )
        own = isinstance(image, ContainerImage)
        mounted = own or sandbox.mounts_available()
        hps = dict(job.hyperparameters)
        channel_cfg = {
            c.name: {
                CHANNEL_CONTENT_TYPE: c.content_type,
                CHANNEL_INPUT_MODE: c.input_mode,
                CHANNEL_DISTRIBUTION: c.distribution,
                CHANNEL_RECORD_WRAPPER: c.record_wrapper,
                CHANNEL_COMPRESSION: c.compression,
            }
            for c in job.channels
        }
        tracker_port = free_port()
        addresses = json.dumps({h: "127.0.0.1" for h in hosts})
        ports = json.dumps({h: [free_port(), free_port()] for h in hosts} if len(hosts) > 1 else {})
        containers = []
        for host, layout in layouts.items():
            layout.hyperparameters_file.write_text(json.dumps(hps))
            layout.input_data_config_file.write_text(json.dumps(channel_cfg))
            layout.resource_config_file.write_text(json.dumps(resource_config(host, hosts, itype.name)))
            env = training_env(
                Layout(Path(CONTAINER_ROOT)) if own else layout,
                current_host=host,
                hosts=hosts,
                hyperparameters=hps,
                channels=channel_cfg,
                job_name=name,
                num_cpus=itype.vcpus,
                num_gpus=itype.gpus,
            )
            env.update(image.environment())
            env.update(job.environment)
            env.update(
                {
                    CURRENT_INSTANCE_TYPE_ENV: itype.name,
                    HOST_ADDRESSES_ENV: addresses,
                    HOST_PORTS_ENV: ports,
                    TRACKER_PORT_ENV: str(tracker_port),
                }
            )
            peers = tuple((h, "127.0.0.1") for h in hosts)
            if isinstance(image, ContainerImage):
                argv = image_command(image, entrypoint, job.arguments, image.train_argv(hps))
                env["TRAINING_JOB_ARN"] = job.document["TrainingJobArn"]
                layer, log_path = job_dir / "layers" / host, job_dir / "logs" / f"{host}.log"
                isolated = job.network_isolation and len(hosts) == 1
                containers.append(
                    image_container(image, host, argv, env, layout.base, layer, log_path, itype, isolated, peers)
                )
                continue
            env.update(process_env(layout.base, registry.search_path(*filter(None, [bin_dir])), self.envs_dir))
            argv = image.train_argv(hps)
            if entrypoint:
                argv, env = entrypoint_command(entrypoint, list(job.arguments), env, layout.base, mounted)
                if not mounted:
                    rewrite_tree(layout.channel_dir(SDK_DRIVERS_CHANNEL), layout.base)
            containers.append(
                ContainerSpec(
                    host,
                    argv,
                    env,
                    layout.base,
                    job_dir / "logs" / f"{host}.log",
                    itype.vcpus,
                    itype.memory_bytes,
                    mounts=((layout.base, "/opt/ml"),),
                    isolate_network=job.network_isolation and len(hosts) == 1,
                    peers=peers,
                    owned=(job_dir, self.envs_dir),
                    gpus=itype.gpus,
                    carry=(bin_dir.parent,) if bin_dir else (),
                )
            )
        return JobSpec(f"{KIND}/{name}", tuple(containers))

    async def _watch(
        self, run: Run, job: TrainingJobSpec, spec: JobSpec, streams: dict[str, str], definitions: list[dict[str, str]]
    ) -> str:
        """Tail logs (and metrics) until every container has ended; returns 'done', 'stopped' or 'max-runtime'."""
        tails = {c.host: LogTail(c.log_path, LOG_GROUP, streams[c.host]) for c in spec.containers}
        patterns = rules.compile_definitions(definitions)
        outcome, _ = await self._await_containers(
            run, job.max_runtime_s, lambda final: self._pump_logs(tails, streams, patterns, run.metrics, final)
        )
        return outcome

    def _pump_logs(
        self,
        tails: dict[str, LogTail],
        streams: dict[str, str],
        patterns: list[tuple[str, re.Pattern[str]]],
        metrics: dict[str, float],
        final: bool = False,
    ) -> None:
        for host, tail in tails.items():
            lines = tail.read(final)
            if not lines:
                continue
            now = self.clock().timestamp()
            self.logs.put_events(LOG_GROUP, streams[host], [(int(now * 1000), line) for line in lines])
            tail.commit()
            samples = rules.metric_series(lines, patterns)
            metrics.update({name: values[-1] for name, values in samples.items()})
            if samples and self.metric_store is not None:
                # As SageMaker publishes them: namespace /aws/sagemaker/TrainingJobs, dimension Host=<job>/<host>
                job = streams[host].split("/", 1)[0]
                dims = dimensions([("Host", f"{job}/{host}")])
                minute = int(now // 60) * 60
                self.metric_store.add(
                    Point((METRIC_NAMESPACE, name, dims), minute, "None", Stats.of(values))
                    for name, values in samples.items()
                )

    async def _conclude(
        self,
        run: Run,
        job: TrainingJobSpec,
        layouts: dict[str, Layout],
        hosts: list[str],
        outcome: str,
        stream: str,
        job_dir: Path,
    ) -> None:
        status = run.last_status
        assert status is not None
        if run.shutting_down:
            raise JobFailed(SHUTDOWN_REASON)
        failed = sorted((c for c in status.containers if c.exit_code != 0), key=lambda c: c.host != run.first_failure)
        if outcome == "done" and failed:
            raise JobFailed(self._failure_reason(failed[0], layouts, job, job_dir))
        if outcome == "done":  # a stop that came after the containers ended: the job still completes
            await self._secondary(run.name, "Uploading", only_from=frozenset({IN_PROGRESS, STOPPING}))
        # a stopped job keeps its model as it is and the metrics it logged, as on SageMaker
        extra = await asyncio.to_thread(self._upload, job, layouts[hosts[0]], layouts, job_dir, stream)
        metrics = [{"MetricName": k, "Value": v, "Timestamp": _epoch(self.clock())} for k, v in run.metrics.items()]
        if outcome == "done":
            await self._finish(run.name, COMPLETED, "Completed", None, FinalMetricDataList=metrics, **extra)
        else:
            secondary = "MaxRuntimeExceeded" if outcome == "max-runtime" else "Stopped"
            await self._finish(run.name, STOPPED, secondary, None, FinalMetricDataList=metrics, **extra)

    def _failure_reason(self, state: Any, layouts: dict[str, Layout], job: TrainingJobSpec, job_dir: Path) -> str:
        if state.out_of_memory:
            itype = job.instance_type
            advice = "Use a larger instance type, more instances, or less data per instance."
            return out_of_memory_reason(state, "training process", itype, advice)
        log_path = job_dir / "logs" / f"{state.host}.log"
        for host in [state.host, *layouts]:
            failure = layouts[host].failure_file
            text = failure.read_text().strip() if failure.exists() else ""
            if text and names_no_error(text):
                own = error_message([line for line in tail_lines(log_path, 200) if line.strip() not in text])
                return f"AlgorithmError: {own}\n{text}"[:1000] if own else f"AlgorithmError: {text}"[:1000]
            if text:
                return text[:1000] if re.match(r"^\w+Error: ", text) else f"AlgorithmError: {text[:1000]}"
        tail = last_lines(job_dir / "logs" / f"{state.host}.log", 5)
        return (
            f"AlgorithmError: the training process on {state.host} exited with code {state.exit_code}. "
            f"Last log lines: {tail}"
        )

    def _upload(
        self, job: TrainingJobSpec, main: Layout, layouts: dict[str, Layout], job_dir: Path, stream: str
    ) -> dict:
        name, out = job.name, job.output_path
        model_uri = transfer.output_uri(out, name, "model.tar.gz")
        transfer.upload_tarball(self.s3, main.model_dir, job_dir / "model.tar.gz", model_uri)
        extra: dict[str, Any] = {"ModelArtifacts": {"S3ModelArtifacts": model_uri}}
        if any(main.output_data_dir.iterdir()):
            transfer.upload_tarball(
                self.s3,
                main.output_data_dir,
                job_dir / "output.tar.gz",
                transfer.output_uri(out, name, "output.tar.gz"),
            )
        config = job.document.get("CheckpointConfig")
        if config:
            n = sum(
                transfer.upload_tree(self.s3, layout.checkpoints_dir, config["S3Uri"]) for layout in layouts.values()
            )
            self._platform_log(stream, f"Saved {n} checkpoint file(s) to {config['S3Uri']}")
        self._platform_log(stream, f"Uploaded the model to {model_uri}")
        return extra

    # --- persistence -------------------------------------------------------------------------------

    async def _secondary(
        self, name: str, secondary: str, only_from: frozenset[str] = frozenset({IN_PROGRESS}), **fields: Any
    ) -> None:
        """Move to ``secondary`` (still InProgress); raises when the job was stopped meanwhile."""
        change = states.transition(KIND, None, self.clock(), fields=fields, secondary=secondary, only_from=only_from)
        try:
            await asyncio.to_thread(self.store.modify_resource, KIND, name, change, now=self.clock())
        except Conflict as exc:
            raise _Stopped() from exc

    async def _finish(self, name: str, status: str, secondary: str, reason: str | None, **fields: Any) -> None:
        def finish() -> None:
            row = self.store.get_resource(KIND, name)
            if row is None or row.status in states.TERMINAL_JOB_STATUSES:
                return
            now = self.clock()
            rules_fields = self._rule_statuses(row.data, status, now)

            def edit(data: dict[str, Any]) -> None:
                data.update(rules_fields, TrainingEndTime=_epoch(now))
                if reason:
                    data["FailureReason"] = reason
                start = data.get("TrainingStartTime")
                if start:
                    seconds = max(1, int(round(_epoch(now) - start)))
                    data["TrainingTimeInSeconds"] = seconds
                    data["BillableTimeInSeconds"] = seconds * data["ResourceConfig"].get("InstanceCount", 1)

            change = states.transition(
                KIND, status, now, fields=fields, drop=("_Handle",), secondary=secondary, edit=edit
            )
            with contextlib.suppress(Conflict):  # it ended meanwhile (a stop won)
                self.store.modify_resource(KIND, name, change, now=now)

        await asyncio.to_thread(finish)

    def _rule_statuses(self, data: dict, status: str, now: dt.datetime) -> dict[str, Any]:
        """Debugger and Profiler rules, evaluated over the metrics in the job's log (:mod:`opensage.jobs.rules`)."""
        image = registry.resolve(data["AlgorithmSpecification"].get("TrainingImage", ""))
        try:
            return rules.finish_job(self.logs, LOG_GROUP, data, metric_definitions(data, image), status, _epoch(now))
        except Exception:  # the job's own outcome matters more than its rules'
            log.exception("the rules of training job %s could not be evaluated", data["TrainingJobName"])
            return {}

    async def _fail(self, run: Run, reason: str, stopped: bool = False) -> None:
        if run.shutting_down:
            reason = SHUTDOWN_REASON
        elif stopped or run.stop_requested.is_set():
            await self._finish(run.name, STOPPED, "Stopped", None)
            return
        log.info("training job %s failed: %s", run.name, reason)
        await self._finish(run.name, FAILED, "Failed", reason)


class _Stopped(JobFailed):
    """The job was stopped between two steps."""

    def __init__(self) -> None:
        super().__init__("Stopped")


def _interpreter(target: Path) -> Path:
    try:
        return registry.job_interpreter(target)
    except registry.InterpreterError as exc:
        raise JobFailed(f"InternalServerError: {exc}") from exc


def _refuse_nul(variables: dict[str, Any]) -> None:
    """A NUL byte cannot be in a process's environment: fail the job naming the variable, not the platform."""
    for key, value in variables.items():
        if "\0" in str(key) or "\0" in str(value):
            raise JobFailed(f"ClientError: hyperparameter or environment variable {key!r} contains a NUL byte.")
