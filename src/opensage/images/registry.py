"""Image URIs -> OpenSage's built-in images, by ECR repository name (any account, any region).

Two kinds of image: a built-in algorithm (XGBoost: its own ``train`` and model server), and a
framework image that runs the user's code as SageMaker's training and inference toolkits do
(scikit-learn, PyTorch, XGBoost in script mode, and a plain Python image). The XGBoost image is
both: it runs the user's script when the job names one (``sagemaker_program``), as SageMaker's does.

Every image runs a job's ``ContainerEntrypoint`` instead of its own command when the job gives one.
Its shell finds what SageMaker's images have on ``PATH`` (``python``, ``python3``, ``pip``, ``pip3``,
``torchrun``) in a job-private virtual environment over the platform's own Python
(:func:`job_interpreter`): it sees the platform's packages, and what the job installs with ``pip``
stays in the job.
"""

from __future__ import annotations

import importlib
import re
import site
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opensage.contract import IMAGE_ENV, IMAGE_TAG_ENV, PROGRAM_ENV

_URI = re.compile(r"^(?:(?P<registry>[^/]+\.[^/]+)/)?(?P<repo>[a-z0-9._/-]+?)(?::(?P<tag>[\w.-]+))?(?:@sha256:\w+)?$")
PROGRAM_HYPERPARAMETER = "sagemaker_program"
FRAMEWORK_TRAINER = "opensage.images.framework"
SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
# Commands of a container's Python, as wrappers that run the job's interpreter (``$0``'s directory).
_WRAPPERS = {
    "pip": 'exec "$(dirname "$0")/python" -m pip "$@"',
    "pip3": 'exec "$(dirname "$0")/python" -m pip "$@"',
    "torchrun": 'exec "$(dirname "$0")/python" -m torch.distributed.run "$@"',
}


class InterpreterError(Exception):
    """The job's Python environment could not be made; the message says why."""


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

    def processing_argv(self) -> tuple[str, ...]:
        """What a processing job of this image runs when it gives no ContainerEntrypoint (empty: none)."""
        module = _PROCESSING.get(self.name)
        return (sys.executable, "-m", module) if module else ()

    def environment(self) -> dict[str, str]:
        """Variables every container of this image gets."""
        return {IMAGE_ENV: self.name, IMAGE_TAG_ENV: self.tag}

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
    "tensorflow-training": ("tensorflow", None, "opensage.images.framework.tensorflow"),
    "tensorflow-inference": ("tensorflow", None, "opensage.images.framework.tensorflow"),
    "python": ("python", None, "opensage.images.framework.python"),
    "linear-learner": ("linear-learner", "opensage.images.linear_learner", "opensage.images.framework.python"),
    "kmeans": ("kmeans", "opensage.images.kmeans", "opensage.images.framework.python"),
    "pca": ("pca", "opensage.images.pca", "opensage.images.framework.python"),
    "knn": ("knn", "opensage.images.knn", "opensage.images.framework.python"),
    "randomcutforest": ("randomcutforest", "opensage.images.randomcutforest", "opensage.images.framework.python"),
    "ipinsights": ("ipinsights", "opensage.images.ipinsights", "opensage.images.framework.python"),
    "factorization-machines": (
        "factorization-machines",
        "opensage.images.factorization_machines",
        "opensage.images.framework.python",
    ),
    "opensage-python": ("python", None, "opensage.images.framework.python"),
    "sagemaker-model-monitor-analyzer": ("model-monitor", None, "opensage.images.framework.python"),
}
# image name -> the module a processing job of the image runs by default (Model Monitor's analyzer)
_PROCESSING = {"model-monitor": "opensage.monitor"}


def search_path(*first: Path) -> str:
    """A container's ``PATH``: ``first``, then the platform interpreter's directory, then the system's."""
    dirs = [str(d) for d in first] + [str(Path(sys.executable).parent), *SYSTEM_PATH]
    return ":".join(dict.fromkeys(dirs))


def job_interpreter(target: Path) -> Path:
    """A virtual environment at ``target`` over the platform's Python; returns its ``bin`` directory.

    Made with the standard library's ``venv`` (no pip of its own: the platform's is used through
    its site-packages). A ``.pth`` file adds the platform's site directories, so the job sees the
    platform's packages even when the platform itself runs in a virtual environment, whose packages
    ``--system-site-packages`` alone would not show.
    """
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(target)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise InterpreterError(f"could not create the job's Python environment at {target}: {detail}") from exc
    bin_dir = target / "bin"
    for name in ("python", "python3"):
        if not (bin_dir / name).exists():
            (bin_dir / name).symlink_to(sys.executable)
    for name, body in _WRAPPERS.items():
        wrapper = bin_dir / name
        wrapper.write_text(f"#!/bin/sh\n{body}\n")
        wrapper.chmod(0o755)
    dirs = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in dirs if Path(d).is_dir())
    for site_packages in target.glob("lib/python*/site-packages"):
        (site_packages / "_opensage_platform.pth").write_text(lines)
    return bin_dir


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


# SageMaker's own algorithm and framework repositories that OpenSage does not provide (repository -> name)
_NOT_BUILT_IN = {
    "lda": "LDA",
    "ntm": "Neural Topic Model",
    "object2vec": "Object2Vec",
    "blazingtext": "BlazingText",
    "forecasting-deepar": "DeepAR",
    "seq2seq": "Sequence-to-Sequence",
    "image-classification": "Image Classification",
    "object-detection": "Object Detection",
    "semantic-segmentation": "Semantic Segmentation",
}
_RETIRED = {"mxnet-training", "mxnet-inference", "mxnet"}


def unavailable(uri: str, what: str) -> str:
    """Why ``uri`` cannot run, for the failure reason of a job or endpoint (``what``: "training image", ...)."""
    m = _URI.match(uri.strip())
    repo = m.group("repo").rsplit("/", 1)[-1] if m else ""
    known = ", ".join(known_repositories())
    if repo in _RETIRED:
        return (
            f"The {what} '{uri}' is Apache MXNet's, which is retired upstream (moved to the Apache Attic; no "
            "maintained build installs on current Python). Port the code to PyTorch (sagemaker.pytorch.PyTorch) "
            f"or scikit-learn, or use one of the built-in algorithms; OpenSage provides: {known}."
        )
    if repo in _NOT_BUILT_IN:
        return (
            f"The {what} '{uri}' is SageMaker's {_NOT_BUILT_IN[repo]}, which OpenSage does not provide yet; "
            f"use an image URI of one of these repositories: {known} (e.g. from sagemaker.image_uris.retrieve)."
        )
    return (
        f"The {what} '{uri}' is not one OpenSage provides; use an image URI of one of these repositories: "
        f"{known} (e.g. from sagemaker.image_uris.retrieve)."
    )
