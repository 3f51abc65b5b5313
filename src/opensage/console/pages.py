"""The console's web plumbing: templates, the signed-in guard with CSRF checks, error pages.

Every page handler is wrapped by :func:`page`: it needs a signed-in session (else a redirect to the
sign-in page), and a POST must carry the session's CSRF token (a ``csrf`` form field, or the
``X-CSRF-Token`` header that htmx sends). Errors never show a traceback: a missing resource is a 404
page with a way back, anything unexpected is logged with an id and shown as that id.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from opensage.console.api import ConsoleApi, Missing
from opensage.console.auth import COOKIE, Session, SessionSigner, csrf_ok
from opensage.console.sessions import SessionRegistry, SignInThrottle

log = logging.getLogger(__name__)
BASE = "/console"
TERMINAL = {"Completed", "Failed", "Stopped", "InService", "OutOfService", "Deleting"}


@dataclass(slots=True)
class Console:
    """What every handler shares: the data side, the templates, the cookie signer, the home."""

    api: ConsoleApi
    templates: jinja2.Environment
    signer: SessionSigner
    home: Path
    sessions: SessionRegistry
    throttle: SignInThrottle

    def session(self, request: Request) -> Session | None:
        """The request's session; a signed-in one only while its server-side record says it stands."""
        session = self.signer.load(request.cookies.get(COOKIE))
        if session is not None and session.signed_in and not self.sessions.valid(
            session.sid, session.user, session.access_key_id
        ):
            return None
        return session

    def render(
        self, request: Request, session: Session | None, template: str, status: int = 200, /, **context: Any
    ) -> HTMLResponse:
        session = session or self.signer.anonymous()
        html = self.templates.get_template(template).render(
            request=request, session=session, account_id=self.api.account_id, path=request.url.path, **context
        )
        response = HTMLResponse(html, status)
        self.keep_session(request, response, session)
        return response

    def keep_session(self, request: Request, response: Response, session: Session) -> None:
        """Send the session cookie when it is not the one the browser has."""
        value = self.signer.dump(session)
        if request.cookies.get(COOKIE) != value:
            response.set_cookie(COOKIE, value, path=BASE, httponly=True, samesite="lax", max_age=12 * 3600)


@dataclass(slots=True)
class Page:
    """One request to a guarded handler: the console, the request, the session and the POSTed form."""

    console: Console
    request: Request
    session: Session
    form: FormData | None

    @property
    def api(self) -> ConsoleApi:
        return self.console.api

    def render(self, template: str, status: int = 200, /, **context: Any) -> HTMLResponse:
        return self.console.render(self.request, self.session, template, status, **context)

    def field(self, name: str, default: str = "") -> str:
        value = self.form.get(name) if self.form is not None else None
        return value if isinstance(value, str) else default

    def fields(self) -> dict[str, str]:
        return {k: v for k, v in (self.form or {}).items() if isinstance(v, str)}

    @property
    def htmx(self) -> bool:
        return self.request.headers.get("hx-request") == "true"


Handler = Callable[[Page], Awaitable[Response]]


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A handler for signed-in users only, with the CSRF check on every POST."""

    async def endpoint(request: Request) -> Response:
        console: Console = request.app.state.console
        session = console.session(request)
        if session is None or not session.signed_in:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            if request.headers.get("accept", "").startswith("text/event-stream"):
                return Response("Sign in first.", 401)
            return redirect(f"{BASE}/signin?next={quote(target)}")
        form = None
        if request.method == "POST":
            form = await request.form(max_part_size=4 * 1024 * 1024)
            token = form.get("csrf") or request.headers.get("x-csrf-token")
            if not csrf_ok(session, token if isinstance(token, str) else None):
                return console.render(
                    request,
                    session,
                    "error.html",
                    403,
                    title="This form has expired",
                    message="The form's security token did not match your session (it may be from an older "
                    "page or another site). Go back, reload the page and try again.",
                )
        return await handler(Page(console, request, session, form))

    endpoint.__name__ = handler.__name__
    return endpoint


async def not_found(request: Request, exc: Exception) -> Response:
    console: Console = request.app.state.console
    message = str(exc) if isinstance(exc, Missing) else "There is no console page at this address."
    return console.render(request, console.session(request), "error.html", 404, title="Not found", message=message)


async def server_error(request: Request, exc: Exception) -> Response:
    error_id = uuid.uuid4().hex[:12]
    log.error("console request %s %s failed (error id %s)", request.method, request.url.path, error_id, exc_info=exc)
    console: Console = request.app.state.console
    return console.render(
        request,
        console.session(request),
        "error.html",
        500,
        title="Something went wrong",
        message=f"The console could not show this page. The error is logged with id {error_id}.",
    )


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return await not_found(request, exc)
    console: Console = request.app.state.console
    return console.render(
        request, console.session(request), "error.html", exc.status_code, title=exc.detail, message=exc.detail
    )


# --- template filters ------------------------------------------------------------------------------


def _when(value: Any) -> str:
    if value in (None, ""):
        return "—"
    if isinstance(value, int | float):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def _duration(start: Any, end: Any) -> str:
    try:
        seconds = int(float(end) - float(start))
    except (TypeError, ValueError):
        return "—"
    minutes, s = divmod(max(seconds, 0), 60)
    return f"{minutes}m {s:02d}s" if minutes else f"{s}s"


def _size(n: Any) -> str:
    size = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def _s3_link(uri: Any) -> str:
    """The console's storage page for an ``s3://bucket/key`` URI."""
    text = str(uri or "")
    if not text.startswith("s3://"):
        return ""
    bucket, _, key = text[5:].partition("/")
    if not key or key.endswith("/"):
        return f"{BASE}/storage/{quote(bucket)}?prefix={quote(key)}"
    return f"{BASE}/storage/{quote(bucket)}/object?key={quote(key)}"


def _status_class(status: Any) -> str:
    s = str(status or "")
    if s in ("Completed", "InService", "Succeeded", "Successful"):
        return "ok"
    if s in ("Failed", "OutOfService", "MaxRuntimeExceeded"):
        return "bad"
    if s in ("Stopped", "Stopping", "Deleting"):
        return "muted"
    return "busy"


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("opensage.console", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=_when,
        size=_size,
        s3_link=_s3_link,
        status_class=_status_class,
        pretty=lambda v: json.dumps(v, indent=2, sort_keys=True, default=str),
        urlq=lambda v: quote(str(v), safe=""),
    )
    env.globals.update(base=BASE, duration=_duration, terminal=TERMINAL)
    return env
