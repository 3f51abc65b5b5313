"""What the execution controller needs from the rest of the platform to run a step, as an interface.

The controller decides when a step runs and what its arguments are; a :class:`StepLauncher`
(``opensage.providers.sagemaker.pipeline_steps``) creates the step's resource through the engines'
domain calls (or the provider's own operation for the synchronous ones), reports its state, its
``Describe*`` answer, and stops it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

RUNNING, SUCCEEDED, FAILED, STOPPED = "Executing", "Succeeded", "Failed", "Stopped"

# step type -> (the request member naming its resource, the Metadata key, the ARN member of the answer)
RESOURCES: Mapping[str, tuple[str, str]] = {
    "Training": ("TrainingJobName", "TrainingJob"),
    "Processing": ("ProcessingJobName", "ProcessingJob"),
    "Transform": ("TransformJobName", "TransformJob"),
    "Tuning": ("HyperParameterTuningJobName", "TuningJob"),
    "Model": ("ModelName", "Model"),
    "RegisterModel": ("", "RegisterModel"),
    "EndpointConfig": ("EndpointConfigName", "EndpointConfig"),
    "Endpoint": ("EndpointName", "Endpoint"),
    "QualityCheck": ("ProcessingJobName", "QualityCheck"),  # a processing job of the analyzer
}


class StepRejected(Exception):
    """Creating a step's resource was refused: the error code (ValidationException,
    ResourceLimitExceeded, ...) and its message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StepLauncher(Protocol):
    async def start(
        self, step_type: str, name: str, request: dict[str, Any], context: Mapping[str, str], parent_arn: str
    ) -> tuple[str, str]:
        """Create the resource of a step; its (name, ARN). Raises :class:`StepRejected`."""

    def state(self, step_type: str, name: str) -> tuple[str | None, str | None]:
        """(RUNNING | SUCCEEDED | FAILED | STOPPED, FailureReason); (None, None) when it does not exist."""

    def properties(self, step_type: str, name: str) -> dict[str, Any]:
        """The resource's ``Describe*`` answer (a tuning job's with its TrainingJobSummaries, best first)."""

    def stop(self, step_type: str, name: str) -> None:
        """Ask the resource to stop (nothing when it has ended)."""

    def read_json(self, uri: str) -> Any:
        """The JSON document at an S3 URI."""


def resource_name(execution_id: str, step: str, suffix: str, limit: int = 63) -> str:
    """``pipelines-<execution id>-<step, lower-cased>-<suffix>`` in [A-Za-z0-9-], at most ``limit``
    characters (63 for jobs; a tuning job's name has 32: ``<execution id>-<step>-<suffix>``)."""
    clean = re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9-]", "-", step)).strip("-").lower()[:24] or "step"
    head = f"pipelines-{execution_id}-{clean}" if limit >= 63 else f"{execution_id}-{clean}"
    return head[: limit - len(suffix) - 1].rstrip("-") + "-" + suffix
