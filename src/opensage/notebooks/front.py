"""The notebook instances' JupyterLab, reached under ``/_opensage/notebooks/<name>/``.

A presigned URL (``CreatePresignedNotebookInstanceUrl``) is ``<prefix>/<name>/?authToken=...``: a
genuine, unexpired token signs the browser in with a session cookie for that instance alone (path
scoped to it), then the browser goes on to JupyterLab. Every other request needs that cookie; it is
proxied to the instance's JupyterLab (HTTP, streamed, and websockets, which kernels and terminals
use) with the JupyterLab token only the platform knows. An expired or foreign token, or no session,
gets a 403 page that says how to get a new URL.

A request that names another site in ``Origin`` is refused (the session cookie is the check, so no
other site may use it); ``Origin`` and ``Referer`` are not passed on, as JupyterLab would compare them
with its loopback address.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import secrets
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

import httpx
from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException
from websockets.typing import Subprotocol

from opensage.mlflow_servers import tokens
from opensage.notebooks import NOTEBOOK_PREFIX
from opensage.notebooks.engine import KIND, NotebookInstances, base_url
from opensage.store.sql import SqlStore

log = logging.getLogger(__name__)

KEY_META = "notebook-signing-key"
URL_USE, SESSION_USE = "notebook-url", "notebook-session"
COOKIE = "opensage_notebook"
MAX_BODY = 256 * 1024 * 1024
# Not passed on to JupyterLab: hop-by-hop headers, the platform's own cookie and credentials, the origin.
_DROP_REQUEST = {
    "host", "authorization", "connection", "keep-alive", "content-length", "transfer-encoding", "cookie",
    "origin", "referer", "upgrade", "te", "proxy-authorization",
}  # fmt: skip
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding"}
_NEW_URL = (
    "Get a new sign-in link with CreatePresignedNotebookInstanceUrl, e.g. "
    "<code>aws sagemaker create-presigned-notebook-instance-url --notebook-instance-name {name}</code>."
)


def signing_key(store: SqlStore) -> bytes:
    return bytes.fromhex(store.set_meta_default(KEY_META, secrets.token_hex(32)))


def sign_in_path(name: str, token: str) -> str:
    return f"{base_url(name)}?authToken={token}"


def issue_url_token(key: bytes, name: str, now: float, url_s: float, session_s: int) -> str:
    return tokens.issue(key, tokens.Grant(URL_USE, name, now + url_s, session_s))


class NotebookFront:
    """ASGI app for every path (HTTP and websocket) under :data:`NOTEBOOK_PREFIX`."""

    def __init__(self, engine: NotebookInstances, key: bytes, now: Callable[[], float] = time.time) -> None:
        self.engine, self.key, self.now = engine, key, now
        self._client: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name, _, rest = scope["path"][len(NOTEBOOK_PREFIX) + 1 :].partition("/")
        headers = _headers(scope)
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send, name, headers)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        if not rest and not scope["path"].endswith("/"):
            await _redirect(send, base_url(name) + (f"?{query}" if query else ""))
            return
        if not rest and "authToken" in parse_qs(query):
            await self._sign_in(send, name, query)
            return
        problem = self._check(name, headers)
        if problem is not None:
            await _page(send, *problem)
            return
        address = self.engine.address(name)
        if address is None:
            await _page(send, 409, "Notebook instance not running", self._not_running(name))
            return
        body = await _body(receive)
        if body is None:
            await _page(send, 413, "Too large", "The request body is too large.")
            return
        await self._forward(send, address, scope["method"], scope["path"], query, headers, body)

    # --- sign-in and sessions ------------------------------------------------------------------------

    async def _sign_in(self, send: Send, name: str, query: str) -> None:
        token = (parse_qs(query).get("authToken") or [""])[0]
        try:
            grant = tokens.check(self.key, token, URL_USE, name, self.now())
        except tokens.TokenError as exc:
            if exc.kind == "expired":
                title, text = "This link has expired", "The presigned notebook instance URL has expired."
            else:
                title, text = "This link is not valid", f"The link is not a sign-in link of notebook instance {name}."
            await _page(send, 403, title, html.escape(text) + " " + _NEW_URL.format(name=html.escape(name)))
            return
        session = tokens.issue(self.key, tokens.Grant(SESSION_USE, name, self.now() + grant.session_s))
        cookie = f"{COOKIE}={session}; Path={base_url(name)}; Max-Age={grant.session_s}; HttpOnly; SameSite=Lax"
        await _redirect(send, base_url(name) + "lab", [(b"set-cookie", cookie.encode())])

    def _check(self, name: str, headers: dict[str, str]) -> tuple[int, str, str] | None:
        """None when the request carries a session for ``name`` from this site; else the page to answer."""
        new_url = _NEW_URL.format(name=html.escape(name))
        origin = headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != headers.get("host", ""):
            return 403, "Cross-site request refused", "This request comes from another site."
        cookie = SimpleCookie(headers.get("cookie", "")).get(COOKIE)
        if cookie is None:
            return 403, "Not signed in", "Open the notebook instance through a presigned URL. " + new_url
        try:
            tokens.check(self.key, cookie.value, SESSION_USE, name, self.now())
        except tokens.TokenError as exc:
            title = "Session expired" if exc.kind == "expired" else "Not signed in"
            return (
                403,
                title,
                f"The session for notebook instance {html.escape(name)} is not valid any more. " + new_url,
            )
        return None

    def _not_running(self, name: str) -> str:
        row = self.engine.store.get_resource(KIND, name)
        state = row.status if row is not None else "deleted"
        hint = " Start it with StartNotebookInstance." if state == "Stopped" else ""
        return f"Notebook instance {html.escape(name)} is {state}.{hint}"

    # --- HTTP ----------------------------------------------------------------------------------------

    async def _forward(
        self, send: Send, address: tuple[int, str], method: str, path: str, query: str, headers: dict[str, str],
        body: bytes,
    ) -> None:  # fmt: skip
        port, token = address
        if self._client is None:
            limits = httpx.Limits(max_keepalive_connections=32)
            timeout = httpx.Timeout(connect=5.0, read=None, write=60.0, pool=10.0)
            self._client = httpx.AsyncClient(trust_env=False, limits=limits, timeout=timeout)
        passed = {k: v for k, v in headers.items() if k not in _DROP_REQUEST}
        passed["authorization"] = f"token {token}"
        url = f"http://127.0.0.1:{port}{path}" + (f"?{query}" if query else "")
        try:
            reply = await self._client.send(
                self._client.build_request(method, url, headers=passed, content=body), stream=True
            )
        except httpx.HTTPError as exc:
            log.warning("notebook JupyterLab on port %d did not answer %s %s: %s", port, method, path, exc)
            await _page(send, 502, "JupyterLab did not answer", "The notebook instance's JupyterLab did not answer.")
            return
        try:
            out = [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in reply.headers.multi_items()
                if k.lower() not in _DROP_RESPONSE
            ]
            await send({"type": "http.response.start", "status": reply.status_code, "headers": out})
            async for chunk in reply.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except httpx.HTTPError as exc:
            log.warning("notebook JupyterLab on port %d broke off %s %s: %s", port, method, path, exc)
        finally:
            await reply.aclose()

    # --- websockets ----------------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, name: str, headers: dict[str, str]) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        address = self.engine.address(name) if self._check(name, headers) is None else None
        if address is None:  # refused before the handshake: the client sees a 403
            await send({"type": "websocket.close", "code": 1008})
            return
        port, token = address
        query = scope.get("query_string", b"").decode("latin-1")
        uri = f"ws://127.0.0.1:{port}{scope['path']}" + (f"?{query}" if query else "")
        protocols = [Subprotocol(p) for p in scope.get("subprotocols") or []]
        try:
            upstream = await connect(
                uri,
                additional_headers={"Authorization": f"token {token}"},
                subprotocols=protocols or None,
                max_size=None,
                proxy=None,
                compression=None,
                ping_interval=None,
                user_agent_header=headers.get("user-agent"),
            )
        except (OSError, WebSocketException, TimeoutError) as exc:
            log.warning("notebook %s: websocket %s refused by JupyterLab: %s", name, scope["path"], exc)
            await send({"type": "websocket.close", "code": 1011})
            return
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
        await _relay(upstream, receive, send)


async def _relay(upstream: ClientConnection, receive: Receive, send: Send) -> None:
    """Pass frames both ways until either side closes."""

    async def inbound() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await upstream.send(message["bytes"])
            elif message.get("text") is not None:
                await upstream.send(message["text"])

    async def outbound() -> None:
        with contextlib.suppress(WebSocketException):
            async for data in upstream:
                key = "bytes" if isinstance(data, bytes) else "text"
                await send({"type": "websocket.send", key: data})
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": upstream.close_code or 1000})

    tasks = [asyncio.ensure_future(inbound()), asyncio.ensure_future(outbound())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await upstream.close()


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        key, value = k.decode("latin-1").lower(), v.decode("latin-1")
        if key in out:
            value = out[key] + ("; " if key == "cookie" else ", ") + value
        out[key] = value
    return out


async def _body(receive: Receive) -> bytes | None:
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


async def _page(send: Send, status: int, title: str, text: str) -> None:
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{text}</p></body></html>"
    ).encode()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(page)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": page})


async def _redirect(send: Send, location: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0"), *(extra or [])]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
