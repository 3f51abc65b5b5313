"""Sign-in, sign-out and the home page (what runs now, recent failures, storage use)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError
from starlette.requests import Request
from starlette.responses import Response

from opensage.console.auth import COOKIE, SessionSigner, check_password, csrf_ok
from opensage.console.pages import BASE, Console, Page, page, redirect
from opensage.console.sessions import PASSWORD_SESSION
from opensage.errors import ServiceError

log = logging.getLogger(__name__)
RECENT_FAILURES = 5


def _safe_next(target: str | None) -> str:
    """Only a console path may be the target after sign-in (no open redirect)."""
    parts = urlsplit(target or "")
    if parts.scheme or parts.netloc or not parts.path.startswith(BASE):
        return BASE + "/"
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def signin(request: Request) -> Response:
    console: Console = request.app.state.console
    session = console.session(request)
    if session is not None and session.signed_in and request.method == "GET":
        return redirect(_safe_next(request.query_params.get("next")))
    session = session if session is not None and not session.signed_in else SessionSigner.anonymous()
    nxt = _safe_next(request.query_params.get("next"))
    if request.method == "GET":
        return console.render(request, session, "signin.html", next=nxt, error="", access_key_id="")
    form = await request.form()
    nxt = _safe_next(str(form.get("next") or nxt))
    token = form.get("csrf")
    if not csrf_ok(session, token if isinstance(token, str) else None):
        return console.render(
            request,
            session,
            "signin.html",
            403,
            next=nxt,
            access_key_id="",
            error="The sign-in form expired; please try again.",
        )
    key_id = str(form.get("access_key_id") or "").strip()
    secret = str(form.get("secret") or "")
    password = str(form.get("password") or "")
    client = request.client.host if request.client else ""
    wait = console.throttle.wait_s(client, key_id)
    if wait > 0:
        refused = console.render(
            request,
            session,
            "signin.html",
            429,
            next=nxt,
            access_key_id=key_id,
            error=f"Too many failed sign-ins; try again in {math.ceil(wait)} s.",
        )
        refused.headers["Retry-After"] = str(math.ceil(wait))
        return refused
    user = ""
    if key_id and secret:
        key = await asyncio.to_thread(console.api.store.get_access_key, key_id)
        if key is not None and key.status == "Active" and hmac.compare_digest(key.secret_access_key, secret):
            user = key_id
    if not user and password and await asyncio.to_thread(check_password, console.home, password):
        user, key_id = PASSWORD_SESSION, ""
    if not user:
        console.throttle.failed(client, key_id)
        return console.render(
            request,
            session,
            "signin.html",
            401,
            next=nxt,
            access_key_id=key_id,
            error="Those credentials are not valid. Use an access key id and its secret "
            "(`opensage keys list`), or the console password (`opensage console-password`).",
        )
    console.throttle.succeeded(client, key_id)
    response = redirect(nxt)
    signed_in = await asyncio.to_thread(SessionSigner.signed_in, user, key_id, console.sessions.open)
    console.keep_session(request, response, signed_in)
    return response


@page
async def signout(p: Page) -> Response:
    await asyncio.to_thread(p.console.sessions.close, p.session.sid)  # a copied cookie is worthless from now on
    response = redirect(BASE + "/signin")
    response.delete_cookie(COOKIE, path=BASE)
    return response


async def _failures(p: Page) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    jobs = await p.api.listing(p.session, "ListTrainingJobs", "TrainingJobSummaries", StatusEquals="Failed")
    for job in jobs[:RECENT_FAILURES]:
        try:
            desc = await p.api.sagemaker(p.session, "DescribeTrainingJob", TrainingJobName=job["TrainingJobName"])
        except ServiceError:
            continue
        out.append(
            {
                "kind": "Training job",
                "name": job["TrainingJobName"],
                "url": f"{BASE}/training-jobs/{job['TrainingJobName']}",
                "when": desc.get("TrainingEndTime") or desc.get("LastModifiedTime"),
                "reason": desc.get("FailureReason", ""),
            }
        )
    transforms = await p.api.listing(p.session, "ListTransformJobs", "TransformJobSummaries", StatusEquals="Failed")
    for job in transforms[:RECENT_FAILURES]:
        out.append(
            {
                "kind": "Transform job",
                "name": job["TransformJobName"],
                "url": f"{BASE}/transform-jobs/{job['TransformJobName']}",
                "when": job.get("TransformEndTime") or job.get("LastModifiedTime"),
                "reason": job.get("FailureReason", ""),
            }
        )
    endpoints = await p.api.listing(p.session, "ListEndpoints", "Endpoints", StatusEquals="Failed")
    for ep in endpoints[:RECENT_FAILURES]:
        try:
            desc = await p.api.sagemaker(p.session, "DescribeEndpoint", EndpointName=ep["EndpointName"])
        except ServiceError:
            continue
        out.append(
            {
                "kind": "Endpoint",
                "name": ep["EndpointName"],
                "url": f"{BASE}/endpoints/{ep['EndpointName']}",
                "when": ep.get("LastModifiedTime"),
                "reason": desc.get("FailureReason", ""),
            }
        )
    out.sort(key=lambda f: float(f["when"] or 0), reverse=True)
    return out[: RECENT_FAILURES * 2]


_RUNNING = (
    ("Training job", "training-jobs", "ListTrainingJobs", "TrainingJobSummaries", "TrainingJob"),
    ("Processing job", "processing-jobs", "ListProcessingJobs", "ProcessingJobSummaries", "ProcessingJob"),
    ("Transform job", "transform-jobs", "ListTransformJobs", "TransformJobSummaries", "TransformJob"),
)


@page
async def home(p: Page) -> Response:
    running = []
    for label, segment, operation, key, prefix in _RUNNING:
        for status in ("InProgress", "Stopping"):
            for job in await p.api.listing(p.session, operation, key, StatusEquals=status):
                running.append(
                    {
                        "kind": label,
                        "name": job[f"{prefix}Name"],
                        "url": f"{BASE}/{segment}/{job[f'{prefix}Name']}",
                        "status": job[f"{prefix}Status"],
                        "detail": job.get("SecondaryStatus", ""),
                        "created": job.get("CreationTime"),
                    }
                )
    endpoints = await p.api.listing(p.session, "ListEndpoints", "Endpoints")
    storage, storage_error = [], ""
    try:
        storage = await p.api.gather_use()
    except (BotoCoreError, ClientError) as exc:  # the page still shows jobs and endpoints
        log.warning("home page: the object store did not answer: %s", exc)
        storage_error = f"The object store did not answer ({exc})."
    return p.render(
        "home.html",
        running=running,
        endpoints=endpoints,
        failures=await _failures(p),
        storage=storage,
        storage_error=storage_error,
    )
