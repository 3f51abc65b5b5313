"""``create_app`` wires the platform: store, identity, providers, gateway, internal routes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from opensage import __version__
from opensage.aws import sigv4
from opensage.aws.auth import Authenticator
from opensage.aws.gateway import Gateway
from opensage.aws.specs import load_specs
from opensage.compute.backends import close_backend, create_backend
from opensage.compute.base import ComputeBackend
from opensage.compute.confine import confinement
from opensage.compute.local import sweep_cgroups
from opensage.config import Settings
from opensage.console import ConsoleDeps, create_console
from opensage.ecr.blobs import BlobStore
from opensage.ecr.distribution import Distribution
from opensage.ecr.rootfs import RootFsCache
from opensage.events.bus import EventBus
from opensage.events.schedules import ScheduleRunner
from opensage.experiments.jobs import JobComponents
from opensage.experiments.lineage import LineageRecorder
from opensage.identity import Identity, bootstrap, platform_key
from opensage.images.container import ContainerImages
from opensage.jobs.access import JobAccess
from opensage.jobs.processing import ProcessingEngine
from opensage.jobs.training import TrainingEngine
from opensage.jobs.transform import TransformEngine
from opensage.labeling import PORTAL_PREFIX
from opensage.labeling import service as labeling_service
from opensage.logstore import LogStore
from opensage.mlflow_servers import tokens as mlflow_tokens
from opensage.mlflow_servers.engine import TrackingServers, s3_environment
from opensage.mlflow_servers.front import MLFLOW_PREFIX, MlflowFront
from opensage.monitor.scheduler import MonitorScheduler
from opensage.notebooks import NOTEBOOK_PREFIX
from opensage.notebooks.engine import NotebookInstances
from opensage.notebooks.front import NotebookFront
from opensage.notebooks.front import signing_key as notebook_signing_key
from opensage.notebooks.layout import client_setup
from opensage.objects.client import s3_client
from opensage.objects.transfer import Expansion
from opensage.pipelines.controller import ExecutionController
from opensage.profile import endpoints, env_var_name
from opensage.providers.autoscaling import AutoscalingProvider
from opensage.providers.cloudwatch import CloudWatchProvider
from opensage.providers.cognito import CognitoProvider
from opensage.providers.ecr import EcrProvider
from opensage.providers.events import EventsProvider, pipeline_starter
from opensage.providers.iam import IamProvider
from opensage.providers.kms import KmsProvider
from opensage.providers.logs import LogsProvider
from opensage.providers.runtime import RuntimeProvider
from opensage.providers.sagemaker import SageMakerProvider
from opensage.providers.sagemaker_metrics import SageMakerMetricsProvider
from opensage.providers.scheduler import SchedulerProvider
from opensage.providers.sts import StsProvider
from opensage.serving.asyncinference import AsyncInference
from opensage.serving.autoscaler import Autoscaler
from opensage.serving.capture import CaptureConfigs, DataCapture
from opensage.serving.endpoints import CONFIG, EndpointEngine
from opensage.serving.metrics import InvocationMetrics
from opensage.serving.serverless import Serverless
from opensage.store.metrics import MetricStore
from opensage.store.sql import SqlStore, open_store
from opensage.tuning.controller import TuningController

log = logging.getLogger(__name__)
METRIC_FLUSH_S = 5.0  # how often the endpoint invocation counters are written to the metric store

INTERNAL_PREFIX = "/_opensage/"
CONSOLE_PREFIX = "/console"

# The provider class of each service create_app serves (one instance each); `opensage api-coverage`
# reads these classes without building the platform.
PROVIDER_CLASSES: dict[str, type] = {
    "sagemaker": SageMakerProvider,
    "sagemaker-runtime": RuntimeProvider,
    "cloudwatch": CloudWatchProvider,
    "sts": StsProvider,
    "iam": IamProvider,
    "logs": LogsProvider,
    "kms": KmsProvider,
    "application-autoscaling": AutoscalingProvider,
    "events": EventsProvider,
    "scheduler": SchedulerProvider,
    "sagemaker-metrics": SageMakerMetricsProvider,
    "ecr": EcrProvider,
    "cognito-idp": CognitoProvider,
}


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def job_endpoints(settings: Settings) -> dict[str, str]:
    """The variables that point a job's AWS clients (boto3, the SageMaker SDK, MLflow's plugin) at the platform."""
    env = {env_var_name(key): url for key, url in endpoints(settings).items()}
    env.update(AWS_DEFAULT_REGION=settings.region, AWS_REGION=settings.region)
    env["SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT"] = settings.api_url + MLFLOW_PREFIX
    return env


@dataclass(slots=True)
class Platform:
    """The running pieces of one API server, handed to the HTTP layer and to tests."""

    settings: Settings
    store: SqlStore
    identity: Identity
    authenticator: Authenticator
    gateway: Gateway
    training: TrainingEngine
    endpoints: EndpointEngine
    metrics: InvocationMetrics
    transforms: TransformEngine
    processing: ProcessingEngine | None = None
    console: ASGIApp | None = None  # the web console, set by create_app
    metric_store: MetricStore | None = None
    tuning: TuningController | None = None
    autoscaler: Autoscaler | None = None
    capture: DataCapture | None = None
    asynchronous: AsyncInference | None = None
    monitoring: MonitorScheduler | None = None
    serverless: Serverless | None = None
    pipelines: ExecutionController | None = None
    events: EventBus | None = None
    schedules: ScheduleRunner | None = None
    mlflow_servers: TrackingServers | None = None
    mlflow_front: MlflowFront | None = None  # the tracking servers' API and UI, under MLFLOW_PREFIX
    registry: ASGIApp | None = None  # the container registry's /v2/ API, served on its own port
    notebooks: NotebookInstances | None = None
    notebook_front: NotebookFront | None = None  # the notebook instances' JupyterLab, under NOTEBOOK_PREFIX
    labeling: labeling_service.LabelingJobs | None = None
    portal: labeling_service.Portal | None = None  # the labeling workers' portal, under PORTAL_PREFIX
    backend: ComputeBackend | None = None  # where containers run; closed last
    _flusher: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self.notebook_front is not None and scope["path"].startswith(NOTEBOOK_PREFIX + "/"):
            if scope["type"] in ("http", "websocket"):  # JupyterLab's kernels and terminals use websockets
                await self.notebook_front(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        if self.portal is not None and (scope["path"] + "/").startswith(PORTAL_PREFIX + "/"):
            await self.portal(scope, receive, send)
            return
        if self.mlflow_front is not None and scope["path"].startswith(MLFLOW_PREFIX + "/"):
            await self.mlflow_front(scope, receive, send)
            return
        if scope["path"].startswith(INTERNAL_PREFIX):
            await self._internal(scope, receive, send)
            return
        if self.console is not None and scope["path"].startswith(CONSOLE_PREFIX):
            await self.console(scope, receive, send)
            return
        await self.gateway(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.events is not None:  # first: what recovery changes is delivered too
                    self.events.start()
                await self._start_metrics()
                await asyncio.to_thread(sweep_cgroups)  # the empty cgroups of a server that died without stopping
                await self.training.recover()
                if self.tuning is not None:  # after training: it retries the trials a restart failed
                    await self.tuning.recover()
                await self.endpoints.recover()
                if self.asynchronous is not None:  # after the endpoints: their queues wait for their fleets
                    await self.asynchronous.recover()
                if self.autoscaler is not None:
                    self.autoscaler.start()
                if self.capture is not None:
                    self.capture.start()
                await self.transforms.recover()
                if self.processing is not None:
                    await self.processing.recover()
                if self.monitoring is not None:  # after processing: it follows its executions' jobs
                    self.monitoring.start()
                if self.pipelines is not None:  # last: it runs again the steps whose jobs a restart failed
                    await self.pipelines.recover()
                if self.schedules is not None:  # once pipelines run: it starts them
                    self.schedules.start()
                if self.mlflow_servers is not None:  # the tracking servers that ran start again
                    await asyncio.to_thread(self.mlflow_servers.recover)
                if self.notebooks is not None:  # the notebook instances that were InService start again
                    await asyncio.to_thread(self.notebooks.recover)
                if self.labeling is not None:  # labeling jobs go on where they were
                    await self.labeling.recover()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.events is not None:  # first: no rule starts anything while the platform stops
                    await self.events.shutdown()
                if self.schedules is not None:  # nor any schedule
                    await self.schedules.shutdown()
                if self.pipelines is not None:  # first: executions stay Executing and go on after a restart
                    await self.pipelines.shutdown()
                if self.tuning is not None:  # first: it would otherwise retry the trials shutdown fails
                    await self.tuning.shutdown()
                if self.labeling is not None:  # before training: a round of automated labeling goes on at restart
                    await self.labeling.shutdown()
                await self.training.shutdown()
                if self.monitoring is not None:  # before processing: no execution starts while it stops
                    await self.monitoring.shutdown()
                if self.processing is not None:
                    await self.processing.shutdown()
                await self.transforms.shutdown()
                if self.autoscaler is not None:
                    await self.autoscaler.shutdown()
                if self.capture is not None:  # what was captured last is written before the store stops
                    await self.capture.stop()
                if self.asynchronous is not None:  # what is in flight stays queued for the restart
                    await self.asynchronous.shutdown()
                if self.serverless is not None:  # no scaling while the fleets stop
                    await self.serverless.shutdown()
                await self.endpoints.shutdown()
                if self.mlflow_servers is not None:  # their statuses stay: a restart brings them back
                    await asyncio.to_thread(self.mlflow_servers.shutdown)
                if self.mlflow_front is not None:
                    self.mlflow_front.close()
                if self.notebooks is not None:  # their statuses stay: a restart brings them back
                    await asyncio.to_thread(self.notebooks.shutdown)
                if self.notebook_front is not None:
                    await self.notebook_front.close()
                await self._stop_metrics()
                await asyncio.to_thread(close_backend, self.backend)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start_metrics(self) -> None:
        if self.metric_store is None:
            return
        store = self.metric_store
        await asyncio.to_thread(store.expire, utc_now().timestamp())
        await asyncio.to_thread(self.metrics.restore, store)
        self._flusher = asyncio.get_running_loop().create_task(self._flush_metrics(store), name="metric-flush")

    async def _flush_metrics(self, store: MetricStore) -> None:
        while True:
            await asyncio.sleep(METRIC_FLUSH_S)
            try:
                await asyncio.to_thread(self.metrics.flush, store)
            except Exception:  # the next flush writes the same minutes again
                log.exception("could not write the endpoint metrics to the metric store")

    async def _stop_metrics(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self.metric_store is not None:
            await asyncio.to_thread(self.metrics.flush, self.metric_store)

    def _signed(self, scope: Scope) -> bool:
        """Whether the request carries a valid SigV4 signature (of any service) from a known key."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        try:
            self.authenticator.authenticate(
                scope["method"], raw_path, scope.get("query_string", b"").decode("latin-1"), headers, b""
            )
        except sigv4.SigV4Error:
            return False
        return True

    async def _internal(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Health for anyone (its details and the metrics, which name the account, the home directory and
        the endpoints, only for a signed request)."""
        signed = self._signed(scope)
        if scope["path"] == INTERNAL_PREFIX + "metrics" and signed:
            body = self.metrics.prometheus().encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/plain; version=0.0.4"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        if scope["path"] == INTERNAL_PREFIX + "metrics":
            body, status = (
                b'{"__type": "MissingAuthenticationTokenException", "message": "The metrics are for signed '
                b'requests only: sign the GET with SigV4 (an access key of this platform, any service)."}',
                403,
            )
        elif scope["path"] == INTERNAL_PREFIX + "health":
            details = {"account_id": self.identity.account_id, "home": str(self.settings.home)} if signed else {}
            body = json.dumps({"status": "ok", "version": __version__, **details}).encode()
            status = 200
        else:
            body, status = b'{"message": "not found"}', 404
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def close(self) -> None:
        self.store.close()


def create_app(settings: Settings, clock: Callable[[], dt.datetime] = utc_now) -> Platform:
    """Build a platform for ``settings``: opens (and migrates) the store, creates the account once."""
    store = open_store(settings.db_url, settings.home / "master.key")
    try:
        identity = bootstrap(store, clock())
        imported = None if settings.embedded_store else (settings.s3_access_key, settings.s3_secret_key)
        key = platform_key(store, identity.account_id, imported if imported and all(imported) else None)
        s3 = s3_client(
            settings.internal_s3_url,
            settings.s3_access_key or key.access_key_id,
            settings.s3_secret_key or key.secret_access_key,
            settings.region,
        )
        logs = LogStore(settings.home / "logs" / "cloudwatch")
        private = (settings.home, settings.aws_config_file.parent, settings.aws_credentials_file.parent)
        backend = create_backend(settings, confinement(private))  # user code reads none of them
        training = TrainingEngine(
            store,
            s3,
            backend,
            logs,
            settings.home / "jobs" / "training",
            clock,
            envs_dir=settings.home / "envs",
            archive_quotas=settings.quotas,
        )
        endpoints = EndpointEngine(
            store,
            s3,
            backend,
            logs,
            settings.home / "endpoints",
            clock,
            archive_bounds=Expansion.from_quotas(settings.quotas),
        )
        metrics = InvocationMetrics()
        endpoints.multi_models.metrics = metrics.models  # multi-model endpoints' load and cache metrics
        metric_store = MetricStore(store)
        training.metric_store = metric_store
        transforms = TransformEngine(store, s3, endpoints, settings.home / "jobs" / "transform", clock)
        processing = ProcessingEngine(
            store,
            s3,
            backend,
            logs,
            settings.home / "jobs" / "processing",
            clock,
            envs_dir=settings.home / "envs",
            archive_quotas=settings.quotas,
        )
        tuning = TuningController(store, clock, training, logs, settings.home / "tuning")
        pipelines = ExecutionController(store, clock)
        autoscaler = Autoscaler(store, clock, endpoints, metrics, settings.autoscaling_interval_s)
        capture = DataCapture(s3, CaptureConfigs(store, endpoints.serving_config, CONFIG), clock)
        asynchronous = AsyncInference(store, s3, endpoints, clock, metric_store, metrics)
        serverless = Serverless(store, endpoints, metric_store, settings.serverless_idle_s)
        authenticator = Authenticator(store.get_access_key)
        schedules = ScheduleRunner(store, clock)
        bus = EventBus(store, clock, settings.region, identity.account_id, logs, metric_store=metric_store)
        store.watchers.append(bus.watch)  # the platform's own events: every change of a resource
        store.watchers.append(JobComponents(store, clock, metric_store).watch)  # each job's trial component
        store.watchers.append(LineageRecorder(store, clock).watch)  # then the job's inputs and outputs
        job_access = JobAccess(store, identity.account_id, job_endpoints(settings), authenticator.forget)
        training.access = processing.access = job_access
        store.watchers.append(job_access.watch)  # a job's key goes when the job ends
        job_access.sweep()  # and those of jobs that ended while no server ran
        providers = {
            "sagemaker": SageMakerProvider(
                store, clock, training, endpoints, transforms, processing, tuning, settings.quotas, pipelines
            ),
            "sagemaker-runtime": RuntimeProvider(endpoints, metrics, capture, asynchronous, serverless),
            "cloudwatch": CloudWatchProvider(metrics, metric_store, clock),
            "sts": StsProvider(),
            "iam": IamProvider(store, clock),
            "logs": LogsProvider(logs),
            "kms": KmsProvider(store, clock),
            "application-autoscaling": AutoscalingProvider(store, clock, autoscaler),
            "events": EventsProvider(store, clock, bus),
            "scheduler": SchedulerProvider(store, clock, schedules),
            "cognito-idp": CognitoProvider(store, clock),
        }
        providers["sagemaker-metrics"] = SageMakerMetricsProvider(store, providers["sagemaker"].trial_metrics)  # type: ignore[attr-defined]
        blobs = BlobStore(s3, f"opensage-registry-{identity.account_id}", settings.home / "registry" / "uploads")
        providers["ecr"] = EcrProvider(store, clock, blobs, settings.registry_url)
        registry = Distribution(store, blobs, identity.account_id, settings.registry_host, clock)
        hosts = (settings.registry_host, f"localhost:{settings.ports.registry}", f"127.0.0.1:{settings.ports.registry}")
        unpacked = RootFsCache(store, blobs, settings.home / "images")
        unpacked.prune()  # images deleted from the registry while no server ran, unpacks a crash cut short
        images = ContainerImages(unpacked, identity.account_id, hosts)
        training.images = processing.images = endpoints.launcher.images = images  # what jobs and servers run in
        monitoring = MonitorScheduler(store, clock, processing, s3, metric_store)
        providers["sagemaker"].monitoring = monitoring  # type: ignore[attr-defined]
        mlflow_servers = TrackingServers(
            store,
            clock,
            settings.home / "mlflow",
            s3_environment(
                settings.internal_s3_url,
                settings.s3_access_key or key.access_key_id,
                settings.s3_secret_key or key.secret_access_key,
                settings.region,
            ),
        )
        providers["sagemaker"].mlflow_servers = mlflow_servers  # type: ignore[attr-defined]
        providers["sagemaker"].mlflow_url = settings.api_url  # type: ignore[attr-defined]
        notebooks = NotebookInstances(
            store,
            clock,
            backend,
            logs,
            settings.home / "notebooks",
            client_setup(settings, key.access_key_id, key.secret_access_key),
        )
        providers["sagemaker"].notebooks = notebooks  # type: ignore[attr-defined]
        providers["sagemaker"].notebook_url = settings.api_url  # type: ignore[attr-defined]
        labeling, portal = labeling_service.build(store, clock, s3, providers["sagemaker"], settings.api_url)
        gateway = Gateway(load_specs(), providers, authenticator, identity.account_id, settings.max_body_bytes)
        root = f"arn:aws:iam::{identity.account_id}:root"
        bus.start_pipeline = pipeline_starter(gateway.table, identity.account_id, settings.region, root)
        schedules.start_pipeline = pipeline_starter(
            gateway.table,
            identity.account_id,
            settings.region,
            root,
            "Started by an EventBridge Scheduler schedule",
            "scheduler",
        )
    except Exception:
        store.close()
        raise
    platform = Platform(
        settings,
        store,
        identity,
        authenticator,
        gateway,
        training,
        endpoints,
        metrics,
        transforms,
        processing,
        metric_store=metric_store,
        tuning=tuning,
        autoscaler=autoscaler,
        capture=capture,
        asynchronous=asynchronous,
        monitoring=monitoring,
        serverless=serverless,
        pipelines=pipelines,
        events=bus,
        schedules=schedules,
        registry=registry,
        backend=backend,
        mlflow_servers=mlflow_servers,
        mlflow_front=MlflowFront(mlflow_servers, authenticator, mlflow_tokens.signing_key(store)),
        notebooks=notebooks,
        notebook_front=NotebookFront(notebooks, notebook_signing_key(store)),
        labeling=labeling,
        portal=portal,
    )
    platform.console = create_console(
        ConsoleDeps(
            dispatch=gateway.table,  # the console calls the very handlers the API serves
            store=store,
            logs=logs,
            metrics=metrics,
            endpoints=endpoints,
            s3=s3,
            account_id=identity.account_id,
            default_role_arn=identity.default_role_arn,
            region=settings.region,
            home=settings.home,
        )
    )
    return platform
