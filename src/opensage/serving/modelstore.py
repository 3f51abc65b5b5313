"""The model server's multi-model mode: SageMaker's ``/models`` container contract.

A container started with ``SAGEMAKER_MULTI_MODEL=true`` loads no model at start. The platform
downloads each target model's artifact and asks the server to load it, then sends the requests for
that model to it, and unloads what it no longer wants in memory:

* ``POST /models`` ``{"model_name": ..., "url": "/opt/ml/models/<name>/model"}``: load with the
  serve module's ``load_model(model_dir)``; 409 when a model of that name is loaded, 507 when the
  server runs out of memory (the platform then unloads a model it used least recently and asks again);
* ``GET /models`` (``{"models": [{"modelName", "modelUrl"}]}``), ``GET /models/<name>``;
* ``DELETE /models/<name>``: unload;
* ``POST /models/<name>/invoke``: the module's ``predict`` on that model (404 when it is not loaded).

Every built-in serve module (XGBoost, and the scikit-learn, PyTorch and XGBoost script-mode
servers of :mod:`opensage.images.framework`) works unchanged: a model is one ``load_model`` result.
Like :mod:`opensage.serving.modelserver`, this runs inside the model-server process and imports
nothing from the platform's server side.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from opensage.contract import DEFAULT_BASE_DIR
from opensage.serving.modelserver import Answer, ModelApp

log = logging.getLogger("opensage.modelserver")
_JSON = "application/json"


def _json(status: int, document: Any) -> Answer:
    return status, json.dumps(document).encode(), _JSON


def _error(status: int, message: str) -> Answer:
    return _json(status, {"code": status, "type": "ModelError" if status >= 500 else "ClientError", "message": message})


class MultiModelApp(ModelApp):
    """The ``/models`` routes over a serve module; ``/ping`` answers at once (no model to wait for)."""

    def __init__(self, serve_module: str, base: Path) -> None:
        self.module = importlib.import_module(serve_module)
        self.base = base
        self.predict_error = getattr(self.module, "PredictError", ValueError)
        self.models: dict[str, tuple[str, Any]] = {}  # name -> (url, loaded model)

    def model_dir(self, url: str) -> Path:
        """The directory ``url`` names; an ``/opt/ml`` path is read under ``SAGEMAKER_BASE_DIR``."""
        if url.startswith(DEFAULT_BASE_DIR + "/") and self.base != Path(DEFAULT_BASE_DIR):
            return self.base / url.removeprefix(DEFAULT_BASE_DIR + "/")
        return Path(url)

    def answer(self, method: str, path: str, payload: bytes, content_type: str, accept: str) -> Answer:
        if path == "/ping":
            return 200, b"", "text/plain"
        if path == "/models":
            if method == "POST":
                return self.load(payload)
            if method == "GET":
                return _json(200, {"models": [{"modelName": n, "modelUrl": u} for n, (u, _) in self.models.items()]})
        elif path.startswith("/models/"):
            name, _, action = path.removeprefix("/models/").partition("/")
            name = unquote(name)
            if action == "invoke" and method == "POST":
                return self.invoke(name, payload, content_type, accept)
            if not action and method == "GET":
                if name not in self.models:
                    return _error(404, f"Model {name} is not loaded.")
                return _json(200, {"modelName": name, "modelUrl": self.models[name][0]})
            if not action and method == "DELETE":
                return self.unload(name)
        elif path == "/invocations":
            return _error(400, "This is a multi-model endpoint: name the model to invoke with TargetModel.")
        return 404, b"not found", "text/plain"

    def load(self, payload: bytes) -> Answer:
        try:
            request = json.loads(payload)
            name, url = str(request["model_name"]), str(request["url"])
        except (ValueError, KeyError, TypeError):
            return _error(400, 'A load request is {"model_name": "...", "url": "/opt/ml/models/<name>/model"}.')
        if name in self.models:
            return _error(409, f"Model {name} is already loaded.")
        started = time.monotonic()
        try:
            model = self.module.load_model(self.model_dir(url))
        except MemoryError:
            gc.collect()
            return _error(507, f"Not enough memory to load model {name}.")
        except Exception as exc:
            log.exception("model %s could not be loaded from %s", name, url)
            return _error(500, f"Model {name} could not be loaded: {type(exc).__name__}: {exc}")
        self.models[name] = (url, model)
        log.info("model %s loaded from %s in %.2f s", name, url, time.monotonic() - started)
        return _json(200, {"status": f"Model {name} loaded."})

    def unload(self, name: str) -> Answer:
        if self.models.pop(name, None) is None:
            return _error(404, f"Model {name} is not loaded.")
        gc.collect()  # the model's memory goes back before the platform loads the next one
        log.info("model %s unloaded", name)
        return _json(200, {"status": f"Model {name} unloaded."})

    def invoke(self, name: str, payload: bytes, content_type: str, accept: str) -> Answer:
        loaded = self.models.get(name)
        if loaded is None:
            return _error(404, f"Model {name} is not loaded.")
        try:
            body, media = self.module.predict(loaded[1], payload, content_type, accept)
        except self.predict_error as exc:
            return 400, str(exc).encode(), "text/plain"
        except Exception as exc:
            log.exception("prediction of model %s failed", name)
            return 500, f"{type(exc).__name__}: {exc}".encode(), "text/plain"
        return 200, body, media

