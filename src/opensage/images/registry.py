"""Image URIs -> OpenSage's built-in images, by ECR repository name (any account, any region).

Two kinds of image: a built-in algorithm (XGBoost: its own ``train`` and model server), and a
framework image that runs the user's code as SageMaker's training and inference toolkits do
(scikit-learn, PyTorch, XGBoost in script mode, and a plain Python image). The XGBoost image is
both: it runs the user's script when the job names one (``sagemaker_program``), as SageMaker's does.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_URI = re.compile(r"^(?:(?P<registry>[^/]+\.[^/]+)/)?(?P<repo>[a-z0-9._/-]+?)(?::(?P<tag>[\w.-]+))?(?:@sha256:\w+)?$")
PROGRAM_HYPERPARAMETER = "sagemaker_program"
PROGRAM_ENV = "SAGEMAKER_PROGRAM"
FRAMEWORK_TRAINER = "opensage.images.framework"


@dataclass(frozen=True, slots=True)
class BuiltinImage:
    """A built-in image: what runs for training (``train_argv``) and serving (``serve_argv``)."""

    name: str
    tag: str
    algorithm: str | None  # the built-in algorithm's module, or None for a framework-only image
    framework: str | None  # the module of the framework's inference defaults, or None

    def script_mode(self, hyperparameters: Mapping[str, str]) -> bool:
        return self.algorithm is None or PROGRAM_HYPERPARAMETER in hyperparameters

    def train_argv(self, hyperparameters: Mapping[str, str] | None = None) -> tuple[str, ...]:
        module = FRAMEWORK_TRAINER if self.script_mode(hyperparameters or {}) else self.algorithm
        return (sys.executable, "-m", str(module), "train")

    def serve_argv(self, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
        """The model server for this image (``GET /ping``, ``POST /invocations``)."""
        serve = self.framework if self.algorithm is None or PROGRAM_ENV in (env or {}) else f"{self.algorithm}.serve"
        return (sys.executable, "-m", "opensage.serving.modelserver", str(serve))

    def environment(self) -> dict[str, str]:
        """Variables every container of this image gets."""
        return {"OPENSAGE_IMAGE": self.name, "OPENSAGE_IMAGE_TAG": self.tag}

    def metric_definitions(self, hyperparameters: Mapping[str, str] | None = None) -> list[dict[str, str]]:
        if self.script_mode(hyperparameters or {}):
            return []
        module: Any = importlib.import_module(str(self.algorithm))
        return list(module.metric_definitions()) if hasattr(module, "metric_definitions") else []


# repository name -> (image name, algorithm module, framework inference module)
_REPOSITORIES: dict[str, tuple[str, str | None, str]] = {
    "sagemaker-xgboost": ("xgboost", "opensage.images.xgboost", "opensage.images.framework.xgboost"),
    "xgboost": ("xgboost", "opensage.images.xgboost", "opensage.images.framework.xgboost"),
    "sagemaker-scikit-learn": ("sklearn", None, "opensage.images.framework.sklearn"),
    "pytorch-training": ("pytorch", None, "opensage.images.framework.pytorch"),
    "pytorch-inference": ("pytorch", None, "opensage.images.framework.pytorch"),
    "python": ("python", None, "opensage.images.framework.python"),
    "opensage-python": ("python", None, "opensage.images.framework.python"),
}


def resolve(uri: str) -> BuiltinImage | None:
    """The built-in image that ``uri`` names, or ``None``."""
    m = _URI.match(uri.strip())
    if m is None:
        return None
    repo = m.group("repo").rsplit("/", 1)[-1]
    entry = _REPOSITORIES.get(repo)
    if entry is None:
        return None
    return BuiltinImage(entry[0], m.group("tag") or "latest", entry[1], entry[2])


def known_repositories() -> list[str]:
    return sorted(_REPOSITORIES)
