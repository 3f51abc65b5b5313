"""Image URIs -> OpenSage's built-in images, by ECR repository name (any account, any region)."""

from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass
from typing import Any

_URI = re.compile(r"^(?:(?P<registry>[^/]+\.[^/]+)/)?(?P<repo>[a-z0-9._/-]+?)(?::(?P<tag>[\w.-]+))?(?:@sha256:\w+)?$")


@dataclass(frozen=True, slots=True)
class BuiltinImage:
    """A built-in image: a Python module with ``train`` (and later ``serve``) entry points."""

    name: str
    module: str
    tag: str

    def train_argv(self) -> tuple[str, ...]:
        return (sys.executable, "-m", self.module, "train")

    def serve_argv(self) -> tuple[str, ...]:
        """The model server for this image (``GET /ping``, ``POST /invocations``)."""
        return (sys.executable, "-m", "opensage.serving.modelserver", f"{self.module}.serve")

    def metric_definitions(self) -> list[dict[str, str]]:
        module: Any = importlib.import_module(self.module)
        return list(module.metric_definitions()) if hasattr(module, "metric_definitions") else []


# repository name -> (image name, module)
_REPOSITORIES = {
    "sagemaker-xgboost": ("xgboost", "opensage.images.xgboost"),
    "xgboost": ("xgboost", "opensage.images.xgboost"),
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
    return BuiltinImage(entry[0], entry[1], m.group("tag") or "latest")


def known_repositories() -> list[str]:
    return sorted(_REPOSITORIES)
