"""The model server that runs inside a serving container: ``GET /ping`` and ``POST /invocations``.

``python -m opensage.serving.modelserver <serve-module>`` loads the model from ``<base>/model``
(``SAGEMAKER_BASE_DIR``, default ``/opt/ml``) with the module's ``load_model(model_dir)`` and answers
with its ``predict(model, body, content_type, accept) -> (body, content_type)`` on the port in
``SAGEMAKER_BIND_TO_PORT``. A ``PredictError`` from the module is the caller's mistake (400); any
other exception is the model's (500). It imports nothing from the platform's server side.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("opensage.modelserver")
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


class ModelApp:
    def __init__(self, serve_module: str, model_dir: Path) -> None:
        self.module = importlib.import_module(serve_module)
        started = time.monotonic()
        self.model = self.module.load_model(model_dir)
        log.info("model loaded from %s in %.2f s", model_dir, time.monotonic() - started)
        self.predict_error = getattr(self.module, "PredictError", ValueError)

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict]], send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/ping":
            await _respond(send, 200, b"", "text/plain")
            return
        if path != "/invocations" or scope["method"] != "POST":
            await _respond(send, 404, b"not found", "text/plain")
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = _headers(scope)
        try:
            body, content_type = self.module.predict(
                self.model, b"".join(chunks), headers.get("content-type", ""), headers.get("accept", "")
            )
        except self.predict_error as exc:
            await _respond(send, 400, str(exc).encode(), "text/plain")
            return
        except Exception as exc:
            log.exception("prediction failed")
            await _respond(send, 500, f"{type(exc).__name__}: {exc}".encode(), "text/plain")
            return
        await _respond(send, 200, body, content_type)


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main() -> int:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s:%(levelname)s] %(message)s", stream=sys.stdout)
    if len(sys.argv) != 2:
        print("usage: python -m opensage.serving.modelserver <serve-module>", file=sys.stderr)
        return 2
    base = Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    try:
        app = ModelApp(sys.argv[1], base / "model")
    except Exception as exc:
        log.error("the model could not be loaded: %s: %s", type(exc).__name__, exc)
        return 1
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")
    return 0


if __name__ == "__main__":
    sys.exit(main())
