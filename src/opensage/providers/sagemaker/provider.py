"""Amazon SageMaker control-plane operations.

LIMITATIONS: resources live in one namespace per installation (not per region); only the
operations defined here and in the mixins are served, every other one answers ``NotImplemented``
naming it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

from opensage.aws.context import RequestContext
from opensage.errors import ServiceError
from opensage.experiments.metrics import TrialMetrics
from opensage.identity import ROLE_KIND
from opensage.jobs.processing import ProcessingEngine
from opensage.jobs.training import TrainingEngine
from opensage.jobs.transform import TransformEngine
from opensage.pipelines.controller import ExecutionController
from opensage.providers.sagemaker.experiments import ExperimentOperations
from opensage.providers.sagemaker.inference import InferenceOperations
from opensage.providers.sagemaker.labeling import LabelingOperations
from opensage.providers.sagemaker.lineage import LineageOperations
from opensage.providers.sagemaker.mlflow import MlflowOperations
from opensage.providers.sagemaker.monitoring import MonitoringOperations
from opensage.providers.sagemaker.notebook_configs import NotebookConfigOperations
from opensage.providers.sagemaker.notebooks import NotebookOperations
from opensage.providers.sagemaker.pipeline_executions import PipelineExecutionOperations
from opensage.providers.sagemaker.pipeline_steps import PipelineSteps
from opensage.providers.sagemaker.pipelines import PipelineOperations
from opensage.providers.sagemaker.processing import ProcessingOperations
from opensage.providers.sagemaker.quotas import QuotaChecks
from opensage.providers.sagemaker.registry import RegistryOperations
from opensage.providers.sagemaker.tags import TagOperations
from opensage.providers.sagemaker.training import TrainingOperations
from opensage.providers.sagemaker.transform import TransformOperations
from opensage.providers.sagemaker.tuning import TuningOperations
from opensage.providers.sagemaker.workteams import WorkteamOperations
from opensage.serving.endpoints import EndpointEngine
from opensage.store.sql import SqlStore
from opensage.tuning.controller import TuningController


class SageMakerProvider(
    TrainingOperations,
    RegistryOperations,
    InferenceOperations,
    TransformOperations,
    ProcessingOperations,
    TuningOperations,
    TagOperations,
    PipelineOperations,
    PipelineExecutionOperations,
    MonitoringOperations,
    ExperimentOperations,
    LineageOperations,
    MlflowOperations,
    NotebookOperations,
    NotebookConfigOperations,
    WorkteamOperations,
    LabelingOperations,
):
    def __init__(
        self,
        store: SqlStore,
        clock: Callable[[], dt.datetime],
        training: TrainingEngine,
        endpoints: EndpointEngine,
        transforms: TransformEngine,
        processing: ProcessingEngine,
        tuning: TuningController | None = None,
        quotas: Mapping[str, int] | None = None,
        pipelines: ExecutionController | None = None,
    ) -> None:
        self.quotas = QuotaChecks(store, quotas or {})
        if tuning is not None:
            self.tuning = tuning
        self.transforms = transforms
        self.processing = processing
        self.store = store
        self.trial_metrics = TrialMetrics(store)
        self.clock = clock
        self.training = training
        self.endpoints = endpoints
        if pipelines is not None:
            self.pipelines = pipelines
            pipelines.launcher = PipelineSteps(self, training.s3)

    def _require_role(self, ctx: RequestContext, role_arn: str) -> None:
        """Reject a ``RoleArn`` that names no role of this account, as SageMaker does."""
        name = role_arn.rsplit("/", 1)[-1]
        role = self.store.get_resource(ROLE_KIND, name)
        if role is None or role.arn != role_arn:
            raise ServiceError(
                "ValidationException",
                f"Could not assume role {role_arn}. Please ensure that the role exists and allows principal "
                "'sagemaker.amazonaws.com' to assume the role (create it with IAM CreateRole, or use "
                f"arn:aws:iam::{ctx.account_id}:role/OpenSageExecutionRole).",
            )
