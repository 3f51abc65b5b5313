"""The HTTP side of the tracking servers, under ``/_opensage/mlflow``.

* The MLflow REST API, as the ``sagemaker-mlflow`` client plugin sends it: the plugin's
  ``SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT`` is ``<api url>/_opensage/mlflow``, every request is SigV4-signed
  for service ``sagemaker-mlflow`` and names its tracking server in ``x-mlflow-sm-tracking-server-arn``.
  The signature is checked with the platform's verifier, then the request goes (without the prefix)
  to that server's ``mlflow server`` process.
* The MLflow UI, under ``/_opensage/mlflow/ui/<name>/``: a presigned URL's ``auth?authToken=...``
  signs the browser in with a session cookie for that server alone, then pages are proxied. An
  expired or foreign token, or no session, gets a 403 page that says how to get a new URL.

Errors of the API half are JSON in the AWS shape (``__type`` and ``message``) with MLflow's
``error_code`` beside, so both boto-style readers and the MLflow client report them.
"""

from __future__ import annotations

import html
import json
import logging
import re
import time
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from opensage.aws import sigv4
from opensage.aws.auth import Authenticator
from opensage.mlflow_servers import MLFLOW_PREFIX, tokens
from opensage.mlflow_servers.engine import KIND, TrackingServers
from opensage.serving.upstream import Upstream, UpstreamError

log = logging.getLogger(__name__)

UI_PREFIX = MLFLOW_PREFIX + "/ui/"
ARN_HEADER = "x-mlflow-sm-tracking-server-arn"
SERVICE = "sagemaker-mlflow"
COOKIE = "opensage_mlflow"
_NAME = re.compile(r"[a-z0-9](-*[a-z0-9]){0,255}")  # TrackingServerName's pattern, as kept (lower case)
MAX_BODY = 64 * 1024 * 1024
# Not passed on to a tracking server: hop-by-hop headers, the platform's own credentials, what is set anew.
_DROP_REQUEST = {"host", "authorization", "connection", "keep-alive", "content-length", "transfer-encoding", "cookie"}
_DROP_REQUEST_UI = _DROP_REQUEST | {"origin", "referer"}  # the session cookie (SameSite) is the check here
_DROP_RESPONSE = {"connection", "keep-alive", "content-length", "transfer-encoding"}
_WAIT = "wait until DescribeMlflowTrackingServer says it is active."
_RESTART = "start it with StartMlflowTrackingServer."
_WHAT_NOW = {"Stopped": _RESTART, "StopFailed": _RESTART, "StartFailed": _RESTART, "CreateFailed": _RESTART}
_WHAT_NOW |= {"Deleting": "it is being deleted.", "UpdateFailed": "update it again, or stop and start it."}
_SIGV4_CODES = {
    "missing": "MissingAuthenticationTokenException",
    "unknown_key": "UnrecognizedClientException",
    "incomplete": "IncompleteSignatureException",
    "expired": "InvalidSignatureException",
    "future": "InvalidSignatureException",
}


def ui_path(name: str) -> str:
    return f"{UI_PREFIX}{name}/"


class MlflowFront:
    """ASGI app for every path under :data:`MLFLOW_PREFIX`."""

    def __init__(
        self, servers: TrackingServers, authenticator: Authenticator, key: bytes, now: Callable[[], float] = time.time
    ) -> None:
        self.servers, self.authenticator, self.key, self.now = servers, authenticator, key, now
        self._upstreams: dict[int, Upstream] = {}

    def close(self) -> None:
        for upstream in self._upstreams.values():
            upstream.close()
        self._upstreams.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"].startswith(UI_PREFIX):
            await self._ui(scope, receive, send)
        else:
            await self._api(scope, receive, send)

    # --- the REST API -----------------------------------------------------------------------------

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _body(receive)
        if body is None:
            await _json(send, 413, "ValidationException", "RESOURCE_EXHAUSTED", "The request body is too large.")
            return
        headers = _headers(scope)
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        try:
            caller = self.authenticator.authenticate(scope["method"], raw_path, query, headers, body)
        except sigv4.SigV4Error as exc:
            code = _SIGV4_CODES.get(exc.kind, "InvalidSignatureException")
            await _json(send, 403, code, "PERMISSION_DENIED", exc.message)
            return
        if caller.service != SERVICE:
            message = f"Credential should be scoped to correct service: '{SERVICE}' (not '{caller.service}')."
            await _json(send, 403, "InvalidSignatureException", "PERMISSION_DENIED", message)
            return
        arn = headers.get(ARN_HEADER, "")
        port, problem = self._target(arn)
        if problem is not None:
            await _json(send, *problem)
            return
        assert port is not None
        path = scope["path"][len(MLFLOW_PREFIX) :] or "/"
        await self._forward(send, port, scope["method"], path, query, headers, body, _DROP_REQUEST)

    def _target(self, arn: str) -> tuple[int | None, tuple[int, str, str, str] | None]:
        """The port of the tracking server ``arn`` names, or the error to answer."""
        if not arn:
            return None, (
                400,
                "ValidationException",
                "INVALID_PARAMETER_VALUE",
                f"Name the tracking server in header {ARN_HEADER} (the sagemaker-mlflow plugin does when the "
                "MLflow tracking URI is the tracking server's ARN).",
            )
        name = arn.rsplit("/", 1)[-1]
        row = self.servers.store.get_resource(KIND, name) if ":mlflow-tracking-server/" in arn else None
        if row is None or row.arn != arn:
            return None, (
                404,
                "ResourceNotFound",
                "RESOURCE_DOES_NOT_EXIST",
                f"Tracking server {arn} does not exist (ListMlflowTrackingServers lists those of this platform).",
            )
        port = self.servers.port(name)
        if port is None:
            return None, (
                409,
                "ConflictException",
                "INVALID_STATE",
                f"Tracking server {name} is {row.status}, not running: {_WHAT_NOW.get(row.status, _WAIT)}",
            )
        return port, None

    async def _forward(
        self,
        send: Send,
        port: int,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        drop: set[str],
    ) -> None:
        upstream = self._upstreams.get(port)
        if upstream is None:
            upstream = self._upstreams[port] = Upstream("127.0.0.1", port)
        passed = {k: v for k, v in headers.items() if k not in drop}
        try:
            reply = await upstream.request(method, path + (f"?{query}" if query else ""), body, passed, timeout=300)
        except (UpstreamError, TimeoutError) as exc:
            log.warning("tracking server on port %d did not answer %s %s: %s", port, method, path, exc)
            await _json(
                send, 502, "ServiceUnavailable", "TEMPORARILY_UNAVAILABLE", "The tracking server did not answer."
            )
            return
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items() if k not in _DROP_RESPONSE]
        out.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": out})
        await send({"type": "http.response.body", "body": reply.body})

    # --- the UI -----------------------------------------------------------------------------------

    async def _ui(self, scope: Scope, receive: Receive, send: Send) -> None:
        name, _, rest = scope["path"][len(UI_PREFIX) :].partition("/")
        query = scope.get("query_string", b"").decode("latin-1")
        if not _NAME.fullmatch(name):
            await _page(send, 404, "No such tracking server", "Tracking server names are letters, digits and hyphens.")
            return
        if not rest and not scope["path"].endswith("/"):  # the UI's links are relative to the directory
            await _redirect(send, ui_path(name) + (f"?{query}" if query else ""))
            return
        if rest == "auth":
            await self._sign_in(send, name, query)
            return
        headers = _headers(scope)
        try:
            cookie = SimpleCookie(headers.get("cookie", "")).get(COOKIE)
        except CookieError:
            cookie = None
        if cookie is None:
            await _page(send, 403, "Not signed in", _NEW_URL.format(name=html.escape(name)))
            return
        try:
            tokens.check(self.key, cookie.value, tokens.SESSION, name, self.now())
        except tokens.TokenError as exc:
            title = "Session expired" if exc.kind == "expired" else "Not signed in"
            await _page(send, 403, title, str(exc) + " " + _NEW_URL.format(name=html.escape(name)))
            return
        body = await _body(receive)
        if body is None:
            await _page(send, 413, "Request too large", "The request body is too large.")
            return
        row = self.servers.store.get_resource(KIND, name)
        port = self.servers.port(name) if row is not None else None
        if port is None:
            state = row.status if row is not None else "deleted"
            await _page(send, 409, "Tracking server not running", f"Tracking server {html.escape(name)} is {state}.")
            return
        await self._forward(send, port, scope["method"], "/" + rest, query, headers, body, _DROP_REQUEST_UI)

    async def _sign_in(self, send: Send, name: str, query: str) -> None:
        token = (parse_qs(query).get("authToken") or [""])[0]
        try:
            grant = tokens.check(self.key, token, tokens.URL, name, self.now())
        except tokens.TokenError as exc:
            title = "This link has expired" if exc.kind == "expired" else "This link is not valid"
            await _page(send, 403, title, str(exc) + " " + _NEW_URL.format(name=html.escape(name)))
            return
        session = tokens.issue(self.key, tokens.Grant(tokens.SESSION, name, self.now() + grant.session_s))
        cookie = f"{COOKIE}={session}; Path={ui_path(name)}; Max-Age={grant.session_s}; HttpOnly; SameSite=Lax"
        await _redirect(send, ui_path(name), [(b"set-cookie", cookie.encode())])


_NEW_URL = (
    "Get a new sign-in link with CreatePresignedMlflowTrackingServerUrl, e.g. "
    "<code>aws sagemaker create-presigned-mlflow-tracking-server-url --tracking-server-name {name}</code>."
)


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        key, value = k.decode("latin-1").lower(), v.decode("latin-1")
        if key in out:
            value = out[key] + ("; " if key == "cookie" else ", ") + value
        out[key] = value
    return out


async def _body(receive: Receive) -> bytes | None:
    """The whole request body, or None past :data:`MAX_BODY`."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _json(send: Send, status: int, code: str, mlflow_code: str, message: str) -> None:
    body = json.dumps({"__type": code, "error_code": mlflow_code, "message": message}).encode()
    await _answer(send, status, body, b"application/json")


async def _page(send: Send, status: int, title: str, text: str) -> None:
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{text}</p></body></html>"
    )
    await _answer(send, status, page.encode(), b"text/html; charset=utf-8")


async def _redirect(send: Send, location: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0"), *(extra or [])]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _answer(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
