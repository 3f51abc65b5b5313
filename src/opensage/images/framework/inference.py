"""The inference toolkit: serve a model with the user's ``model_fn``/``input_fn``/``predict_fn``/``output_fn``.

A framework module (:mod:`.sklearn`, :mod:`.pytorch`, :mod:`.xgboost`, :mod:`.python`) gives its
defaults to :func:`entry_points`, which returns the ``load_model``/``predict`` pair that
:mod:`opensage.serving.modelserver` calls. The user's script is ``SAGEMAKER_PROGRAM`` in
``SAGEMAKER_SUBMIT_DIRECTORY`` (a directory; ``/opt/ml/...`` paths are read under
``SAGEMAKER_BASE_DIR`` where ``/opt/ml`` is not mounted), or ``code/inference.py`` inside the model
as the SDK repacks it. A ``requirements.txt`` beside the script is installed first
(:mod:`.environments`): the server then restarts itself in that environment.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from opensage.images.framework import encoders, environments

log = logging.getLogger("opensage.modelserver")
_HANDLERS = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")
_ENV_MARKER = "OPENSAGE_SERVING_ENV"


class HandlerMissing(Exception):
    """The framework has no default for a handler the user's script must define (e.g. ``model_fn``)."""


class PredictError(ValueError):
    """The request is the caller's mistake (the model server answers 4xx)."""


@dataclass(slots=True)
class Model:
    """A loaded model and the handlers that serve it."""

    model: Any
    input_fn: Callable[..., Any]
    predict_fn: Callable[..., Any]
    output_fn: Callable[..., Any]
    transform_fn: Callable[..., Any] | None
    default_accept: str


def _container_path(path: str) -> Path:
    """``path``; one under ``/opt/ml`` is read under ``SAGEMAKER_BASE_DIR`` when /opt/ml is not mounted."""
    p = Path(path)
    base = os.environ.get("SAGEMAKER_BASE_DIR")
    if not p.exists() and base and path.startswith("/opt/ml/"):
        return Path(base) / path.removeprefix("/opt/ml/")
    return p


def user_module(model_dir: Path) -> ModuleType | None:
    """The user's inference script, imported (with its directory on ``sys.path``), or None."""
    program = os.environ.get("SAGEMAKER_PROGRAM", "")
    submit = os.environ.get("SAGEMAKER_SUBMIT_DIRECTORY", "")
    code_dir = _container_path(submit) if submit and not submit.startswith("s3://") else model_dir / "code"
    if not program:
        if not (code_dir / "inference.py").exists():
            return None
        program = "inference.py"
    script = code_dir / program
    if not script.exists():
        raise FileNotFoundError(f"The inference script {program} is not in {code_dir}.")
    _install_requirements(code_dir / "requirements.txt")
    sys.path.insert(0, str(code_dir))
    name = Path(program).stem
    spec = importlib.util.spec_from_file_location(name, script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _install_requirements(requirements: Path) -> None:
    if not requirements.exists() or os.environ.get(_ENV_MARKER):
        return
    python = environments.ensure(requirements, log.info)
    os.environ[_ENV_MARKER] = str(python)
    log.info("restarting the model server in the environment of %s", requirements)
    os.execv(str(python), [str(python), "-m", "opensage.serving.modelserver", *sys.argv[1:]])


def entry_points(
    *,
    default_model_fn: Callable[[str], Any],
    default_input_fn: Callable[[bytes, str], Any],
    default_predict_fn: Callable[[Any, Any], Any],
    default_output_fn: Callable[[Any, str], Any],
    default_transform_fn: Callable[..., Any] | None = None,
    default_accept: str = encoders.JSON,
) -> tuple[Callable[[Path], Model], Callable[[Model, bytes, str, str], tuple[bytes, str]]]:
    """``load_model`` and ``predict`` for the model server, with the framework's defaults."""

    def checked_input(body: bytes, content_type: str) -> Any:
        if not body:
            raise PredictError("The request body is empty.")
        try:
            return default_input_fn(body, content_type)
        except ValueError as exc:
            raise PredictError(str(exc)) from exc

    def checked_output(prediction: Any, accept: str) -> Any:
        try:
            return default_output_fn(prediction, accept)
        except encoders.UnsupportedFormatError as exc:
            raise PredictError(str(exc)) from exc

    def load_model(model_dir: Path) -> Model:
        module = user_module(model_dir)
        found = {name: getattr(module, name, None) for name in _HANDLERS}
        model_fn = found["model_fn"] or default_model_fn
        transform_fn = found["transform_fn"]
        if transform_fn is None and default_transform_fn and not any(found[n] for n in _HANDLERS[1:4]):
            transform_fn = default_transform_fn
        return Model(
            model_fn(str(model_dir)),
            found["input_fn"] or checked_input,
            found["predict_fn"] or default_predict_fn,
            found["output_fn"] or checked_output,
            transform_fn,
            os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", default_accept),
        )

    def predict(model: Model, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        accept = accept if accept and encoders.media_type(accept) != "*/*" else model.default_accept
        accept = accept.split(",")[0].strip()
        if model.transform_fn is not None:
            result = model.transform_fn(model.model, body, content_type, accept)
        else:
            data = model.input_fn(body, content_type)
            prediction = model.predict_fn(data, model.model)
            result = model.output_fn(prediction, accept)
        answer, answer_type = result if isinstance(result, tuple) else (result, accept)
        if isinstance(answer, str):
            answer = answer.encode()
        return bytes(answer), answer_type

    return load_model, predict
