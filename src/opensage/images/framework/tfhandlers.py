"""The TensorFlow container's pre- and post-processing: ``inference.py``'s handlers around TensorFlow Serving.

SageMaker's TensorFlow Serving container runs ``code/inference.py`` when the model has one:
``handler(data, context)`` answers the request itself, or ``input_handler(data, context)`` makes the
body that is POSTed to TensorFlow Serving's REST API (``context.rest_uri``) and
``output_handler(response, context)`` turns TF Serving's ``requests`` response into the answer.
``data`` is the request body as a stream; ``context`` carries ``model_name``, ``model_version``,
``method``, ``rest_uri``, ``grpc_uri``, ``custom_attributes``, ``request_content_type``,
``accept_header`` and ``content_length``. Each returns ``(body, content_type)``.

:class:`RestServer` is that REST API for the model this server holds, on a loopback port of its own
(``POST /v1/models/<name>[/versions/<n>]:predict``, ``GET /v1/models/<name>``), so handlers that call
it with ``requests`` work unchanged. There is no gRPC API: ``grpc_uri`` is empty.
"""

from __future__ import annotations

import io
import json
import threading
from collections import namedtuple
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

MODEL_NAME = "model"
Context = namedtuple(
    "Context",
    "model_name model_version method rest_uri grpc_uri custom_attributes request_content_type accept_header "
    "content_length",
)
Handler = Callable[[Any, Context], Any]


def from_module(module: ModuleType | None) -> Handler | None:
    """The request handler an ``inference.py`` defines, as the container composes it; None without a script.

    Raises:
        ValueError: the script defines neither ``handler`` nor both ``input_handler`` and ``output_handler``.
    """
    if module is None:
        return None
    if callable(getattr(module, "handler", None)):
        return module.handler  # type: ignore[no-any-return]
    pre, post = getattr(module, "input_handler", None), getattr(module, "output_handler", None)
    if not (callable(pre) and callable(post)):
        raise ValueError(
            "inference.py must define handler(data, context), or both input_handler(data, context) and "
            "output_handler(response, context)."
        )

    def composed(data: Any, context: Context) -> Any:
        import requests

        return post(requests.post(context.rest_uri, data=pre(data, context), timeout=60), context)

    return composed


class RestServer:
    """TensorFlow Serving's REST ``predict`` for one model, on 127.0.0.1 in a thread of its own."""

    def __init__(self, answer: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        outer = self

        class Requests(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                return

            def _send(self, status: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.rstrip("/") == f"/v1/models/{MODEL_NAME}":
                    self._send(200, {"model_version_status": [{"version": "1", "state": "AVAILABLE"}]})
                else:
                    self._send(404, {"error": f"Servable not found for request: {self.path}"})

            def do_POST(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                if not (path.startswith(f"/v1/models/{MODEL_NAME}") and path.endswith(":predict")):
                    self._send(404, {"error": f"only /v1/models/{MODEL_NAME}:predict is served here, not {path}"})
                    return
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    request = json.loads(raw or b"null")
                    if not isinstance(request, dict):
                        raise ValueError('the body must be a JSON object with "instances" or "inputs"')
                    self._send(200, outer.answer(request))
                except Exception as exc:  # TF Serving answers a bad request 400 with its message
                    self._send(400, {"error": str(exc.args[0]) if exc.args else type(exc).__name__})

        self.answer = answer
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Requests)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, name="tfs-rest", daemon=True).start()

    @property
    def rest_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/models/{MODEL_NAME}:predict"


def run(handler: Handler, rest: RestServer, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
    """One request through the script's handler: ``(answer, content type)``."""
    context = Context(
        MODEL_NAME, None, "predict", rest.rest_uri, "", "", content_type or "application/json",
        accept or "application/json", str(len(body)),
    )
    result = handler(io.BytesIO(body), context)
    answer, media = result if isinstance(result, tuple) else (result, context.accept_header)
    if isinstance(answer, str):
        answer = answer.encode()
    return bytes(answer), str(media)
