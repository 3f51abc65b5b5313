"""The model server that runs inside a serving container: ``GET /ping`` and ``POST /invocations``.

``python -m opensage.serving.modelserver <serve-module>`` loads the model from ``<base>/model``
(``SAGEMAKER_BASE_DIR``, default ``/opt/ml``) with the module's ``load_model(model_dir)`` and answers
with its ``predict(model, body, content_type, accept) -> (body, content_type)`` on the port in
``SAGEMAKER_BIND_TO_PORT``. A ``PredictError`` from the module is the caller's mistake (400); any
other exception is the model's (500). With ``SAGEMAKER_MULTI_MODEL=true`` it loads no model at start
and answers the multi-model ``/models`` routes instead (:mod:`opensage.serving.modelstore`). It
imports nothing from the platform's server side.

The HTTP side is a small HTTP/1.1 protocol on httptools' parser (on uvloop when installed): two
routes and a synchronous predict need no framework, and every microsecond here is one the endpoint
adds to each request. Without httptools (a bare user environment) the same app runs under uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

log = logging.getLogger("opensage.modelserver")
Send = Callable[[dict[str, Any]], Awaitable[None]]
Answer = tuple[int, bytes, str]
_JOIN_LIMIT = 64 * 1024


class ModelApp:
    """The two routes, apart from any HTTP server; also an ASGI app."""

    def __init__(self, serve_module: str, model_dir: Path) -> None:
        self.module = importlib.import_module(serve_module)
        started = time.monotonic()
        self.model = self.module.load_model(model_dir)
        log.info("model loaded from %s in %.2f s", model_dir, time.monotonic() - started)
        self.predict_error = getattr(self.module, "PredictError", ValueError)

    def answer(self, method: str, path: str, payload: bytes, content_type: str, accept: str) -> Answer:
        """``(status, body, content type)`` for one request."""
        if path == "/ping":
            return 200, b"", "text/plain"
        if path != "/invocations" or method != "POST":
            return 404, b"not found", "text/plain"
        try:
            body, media = self.module.predict(self.model, payload, content_type, accept)
        except self.predict_error as exc:
            return 400, str(exc).encode(), "text/plain"
        except Exception as exc:
            log.exception("prediction failed")
            return 500, f"{type(exc).__name__}: {exc}".encode(), "text/plain"
        return 200, body, media

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict]], send: Send) -> None:
        if scope["type"] != "http":
            return
        payload = await _read_body(receive)
        content_type, accept = _content_headers(scope)
        status, body, media = self.answer(scope["method"], scope["path"], payload, content_type, accept)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_headers(scope: dict[str, Any]) -> tuple[str, str]:
    """The request's Content-Type and Accept (ASGI header names are lower-case)."""
    content_type = accept = ""
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"accept":
            accept = value.decode("latin-1")
    return content_type, accept


async def _read_body(receive: Callable[[], Awaitable[dict]]) -> bytes:
    message = await receive()
    if not message.get("more_body"):
        return message.get("body", b"")  # the usual case: one message, no copy
    chunks = [message.get("body", b"")]
    while message.get("more_body"):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


def response_bytes(status: int, body: bytes, content_type: str, keep_alive: bool) -> bytes | list[bytes]:
    head = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n" % (
        status,
        _REASONS.get(status, b"Unknown"),
        content_type.encode("latin-1", "replace"),
        len(body),
        b"" if keep_alive else b"connection: close\r\n",
    )
    return head + body if len(body) <= _JOIN_LIMIT else [head, body]


class HttpConnection(asyncio.Protocol):
    """One client connection: requests parsed by httptools, answered in order, kept alive."""

    def __init__(self, app: ModelApp) -> None:
        import httptools

        self.app = app
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._parser_error = httptools.HttpParserError
        self._url = b""
        self._body: list[bytes] = []
        self._content_type = self._accept = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except self._parser_error as exc:  # also an upgrade request: neither is spoken here
            self._write(response_bytes(400, f"malformed request: {exc}".encode(), "text/plain", False))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._body, self._content_type, self._accept = b"", [], "", ""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key == b"content-type":
            self._content_type = value.decode("latin-1")
        elif key == b"accept":
            self._accept = value.decode("latin-1")
        elif key == b"expect" and value.lower() == b"100-continue":
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        payload = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        path = self._url.partition(b"?")[0].decode("latin-1")
        method = self._parser.get_method().decode("latin-1")
        status, body, media = self.app.answer(method, path, payload, self._content_type, self._accept)
        keep = self._parser.should_keep_alive()
        self._write(response_bytes(status, body, media, keep))
        if not keep:
            self._close()

    def _write(self, data: bytes | list[bytes]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if isinstance(data, list):
            self.transport.writelines(data)
        else:
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def serve(app: ModelApp, host: str, port: int, unix_path: str | None = None) -> None:
    """Answer on ``host:port`` (or the Unix socket ``unix_path``) until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    if unix_path:
        server = await loop.create_unix_server(lambda: HttpConnection(app), unix_path, backlog=1024)
    else:
        server = await loop.create_server(lambda: HttpConnection(app), host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s:%(levelname)s] %(message)s", stream=sys.stdout)
    if len(sys.argv) != 2:
        print("usage: python -m opensage.serving.modelserver <serve-module>", file=sys.stderr)
        return 2
    base = Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    unix_path = os.environ.get("OPENSAGE_BIND_TO_SOCKET")  # a model server without a network
    try:
        if os.environ.get("SAGEMAKER_MULTI_MODEL", "").lower() == "true":
            from opensage.serving.modelstore import MultiModelApp  # the /models routes

            app: ModelApp = MultiModelApp(sys.argv[1], base)  # models loaded as the platform asks
        else:
            app = ModelApp(sys.argv[1], base / "model")
    except Exception as exc:
        log.error("the model could not be loaded: %s: %s", type(exc).__name__, exc)
        return 1
    gc.freeze()  # the model and the imports are long-lived: keep them out of every later collection
    try:
        import httptools  # noqa: F401
    except ImportError:
        import uvicorn

        where: dict[str, Any] = {"uds": unix_path} if unix_path else {"host": "127.0.0.1", "port": port}
        uvicorn.run(app, **where, log_level="warning", access_log=False, lifespan="off")
        return 0
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner, contextlib.suppress(KeyboardInterrupt):
            runner.run(serve(app, "127.0.0.1", port, unix_path))
    finally:
        if unix_path:
            with contextlib.suppress(OSError):
                os.unlink(unix_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
