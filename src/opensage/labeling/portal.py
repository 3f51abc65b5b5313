"""The worker portal, under :data:`~opensage.labeling.PORTAL_PREFIX`: where work team members label.

A worker signs in with the user name and password of their Cognito user (a first sign-in with a
temporary password sets a new one), sees the labeling jobs of their teams that have work for them,
and labels one object after the other. The task page is the same for every task type: it asks
``GET jobs/<job>/task`` for the next object leased to the worker (JSON: its text or image URL, the
labels, the instructions), draws the task's controls (choices, check boxes, boxes drawn on the
image, spans marked in the text) and posts the answer to ``POST jobs/<job>/objects/<index>``. Tools
can use those two calls with the session cookie just as the page does.

Failed sign-ins are throttled as the console's are (per client address and user name). Sessions are
signed, expiring cookies (path-scoped to the portal, ``SameSite=Strict``, HttpOnly); a
deleted or disabled user's session ends at the next request. Requests whose ``Origin`` names another
site are refused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import secrets
import time
from collections.abc import Callable
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from opensage.console.sessions import SignInThrottle
from opensage.labeling import PORTAL_PREFIX, tasktypes
from opensage.labeling import jobs as lj
from opensage.labeling import workers as w
from opensage.mlflow_servers import tokens
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

KEY_META = "labeling-portal-signing-key"
SESSION, CHANGE = "worker-session", "worker-new-password"
COOKIE = "opensage_worker"
SESSION_S = 12 * 3600
CHANGE_S = 600
WORKFORCE_KIND = "workforce"


def signing_key(store: SqlStore) -> bytes:
    return bytes.fromhex(store.set_meta_default(KEY_META, secrets.token_hex(32)))


class Portal:
    def __init__(self, store: SqlStore, engine: lj.LabelingJobs, s3: Any, clock: Callable[[], float] = time.time):
        self.store = store
        self.engine = engine
        self.s3 = s3
        self.clock = clock
        self.key = signing_key(store)
        self.throttle = SignInThrottle()  # failed sign-ins make the next attempt wait
        self.env = Environment(loader=PackageLoader("opensage.labeling", "templates"), autoescape=select_autoescape())
        p = PORTAL_PREFIX
        self.app = Starlette(
            routes=[
                Route(p + "/", self.home, methods=["GET"]),
                Route(p + "/sign-in", self.sign_in, methods=["POST"]),
                Route(p + "/new-password", self.new_password, methods=["POST"]),
                Route(p + "/sign-out", self.sign_out, methods=["POST"]),
                Route(p + "/jobs/{job}", self.task_page, methods=["GET"]),
                Route(p + "/jobs/{job}/task", self.task, methods=["GET"]),
                Route(p + "/jobs/{job}/objects/{item:int}", self.answer, methods=["POST"]),
                Route(p + "/jobs/{job}/objects/{item:int}/decline", self.decline, methods=["POST"]),
                Route(p + "/jobs/{job}/objects/{item:int}/source", self.source, methods=["GET"]),
            ]
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == PORTAL_PREFIX:
            await RedirectResponse(PORTAL_PREFIX + "/", 302)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    # pages and sessions
    def _page(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        body = self.env.get_template(template).render(prefix=PORTAL_PREFIX, **values)
        return HTMLResponse(body, status, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})

    def _pool(self) -> str | None:
        forces = self.store.list_resources(WORKFORCE_KIND, limit=1)
        return (forces[0].data.get("CognitoConfig") or {}).get("UserPool") if forces else None

    def _worker(self, request: Request) -> Resource | None:
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        try:
            grant = tokens.check(self.key, token, SESSION, tokens.subject(token), self.clock())
        except (tokens.TokenError, ValueError):
            return None
        pool, _, username = grant.server.partition("/")
        user = w.get_user(self.store, pool, username)
        if user is None or not user.data.get("Enabled", True) or user.status != w.CONFIRMED:
            return None
        return user

    @staticmethod
    def _foreign(request: Request) -> bool:
        origin = request.headers.get("origin") or ""
        return bool(origin) and origin.split("://", 1)[-1] != request.headers.get("host")

    def _session_cookie(self, response: Response, user: Resource) -> Response:
        grant = tokens.Grant(SESSION, user.name, self.clock() + SESSION_S)
        response.set_cookie(COOKIE, tokens.issue(self.key, grant), max_age=SESSION_S, path=PORTAL_PREFIX,
                            httponly=True, samesite="strict")  # fmt: skip
        return response

    async def home(self, request: Request) -> Response:
        user = await asyncio.to_thread(self._worker, request)
        if user is None:
            return self._page("signin.html", pool=await asyncio.to_thread(self._pool))
        jobs = await asyncio.to_thread(self._jobs_for, user)
        return self._page("jobs.html", user=user.data["Username"], jobs=jobs)

    def _jobs_for(self, user: Resource) -> list[dict[str, Any]]:
        pool = user.name.split("/", 1)[0]
        groups = w.groups_of(user)
        teams = {t.arn for t in self.store.list_resources(lj.WORKTEAM_KIND) if w.team_member(t.data, pool, groups)}
        out = []
        for job in self.store.list_resources(lj.KIND, status=lj.IN_PROGRESS, sort_by="created_at", descending=False):
            if job.data["HumanTaskConfig"]["WorkteamArn"] in teams:
                counters = job.data.get("LabelCounters") or {}
                title = job.data["HumanTaskConfig"].get("TaskTitle") or job.name
                out.append({"name": job.name, "title": title, "task": tasktypes.TASK_TYPES[job.data["_TaskType"]].title,
                            "left": counters.get("Unlabeled", 0)})  # fmt: skip
        return out

    async def sign_in(self, request: Request) -> Response:
        if self._foreign(request):
            return Response("cross-site request refused", 403)
        form = await request.form()
        username, password = str(form.get("username") or ""), str(form.get("password") or "")
        pool = await asyncio.to_thread(self._pool)
        client = request.client.host if request.client else ""
        wait = self.throttle.wait_s(client, username)
        if wait > 0:
            error = f"Too many failed sign-ins: try again in {wait:.0f} s."
            return self._page("signin.html", 429, pool=pool, error=error)
        user = await asyncio.to_thread(w.get_user, self.store, pool, username) if pool else None
        ok = user is not None and await asyncio.to_thread(w.password_matches, user.data["Password"], password)
        if user is None or not ok or not user.data.get("Enabled", True):
            self.throttle.failed(client, username)
            return self._page("signin.html", 401, pool=pool, error="Incorrect user name or password.")
        self.throttle.succeeded(client, username)
        if user.status == w.FORCE_CHANGE:
            change = tokens.issue(self.key, tokens.Grant(CHANGE, user.name, self.clock() + CHANGE_S))
            return self._page("password.html", user=username, change=change)
        return self._session_cookie(RedirectResponse(PORTAL_PREFIX + "/", 303), user)

    async def new_password(self, request: Request) -> Response:
        if self._foreign(request):
            return Response("cross-site request refused", 403)
        form = await request.form()
        change, password = str(form.get("change") or ""), str(form.get("password") or "")
        try:
            grant = tokens.check(self.key, change, CHANGE, tokens.subject(change), self.clock())
        except (tokens.TokenError, ValueError):
            return self._page("signin.html", 401, pool=await asyncio.to_thread(self._pool),
                              error="That sign-in has expired: sign in again.")  # fmt: skip
        problem = w.password_problem(password)
        if problem or password != str(form.get("confirm") or ""):
            error = problem or "The two passwords differ."
            return self._page("password.html", 400, user=grant.server.split("/", 1)[1], change=change, error=error)
        hashed = await asyncio.to_thread(w.hash_password, password)
        user = await asyncio.to_thread(
            self.store.modify_resource, w.USER_KIND, grant.server,
            lambda r: ({**r.data, "Password": hashed}, w.CONFIRMED), now=dt.datetime.now(dt.UTC),
        )  # fmt: skip
        return self._session_cookie(RedirectResponse(PORTAL_PREFIX + "/", 303), user)

    async def sign_out(self, request: Request) -> Response:
        response = RedirectResponse(PORTAL_PREFIX + "/", 303)
        response.delete_cookie(COOKIE, path=PORTAL_PREFIX)
        return response

    # tasks
    def _job_for(self, user: Resource, name: str) -> Resource | None:
        job = self.store.get_resource(lj.KIND, name)
        if job is None:
            return None
        pool = user.name.split("/", 1)[0]
        teams = [
            t
            for t in self.store.list_resources(lj.WORKTEAM_KIND)
            if t.arn == job.data["HumanTaskConfig"]["WorkteamArn"]
        ]
        return job if teams and w.team_member(teams[0].data, pool, w.groups_of(user)) else None

    async def _context(self, request: Request) -> tuple[Resource, Resource] | Response:
        """The signed-in worker and the job the path names (one of their teams'), or the answer that refuses."""
        if request.method == "POST" and self._foreign(request):
            return JSONResponse({"message": "cross-site request refused"}, 403)
        user = await asyncio.to_thread(self._worker, request)
        if user is None:
            return JSONResponse({"message": "Sign in to the worker portal first."}, 401)
        job = await asyncio.to_thread(self._job_for, user, request.path_params["job"])
        if job is None:
            return JSONResponse({"message": "No such labeling job for your work teams."}, 404)
        return user, job

    async def task_page(self, request: Request) -> Response:
        found = await self._context(request)
        if isinstance(found, Response):
            return RedirectResponse(PORTAL_PREFIX + "/", 303) if found.status_code == 401 else found
        user, job = found
        task = tasktypes.TASK_TYPES[job.data["_TaskType"]]
        config = job.data["HumanTaskConfig"]
        return self._page("task.html", job=job.name, title=config.get("TaskTitle") or job.name, task=task,
                          user=user.data["Username"], description=config.get("TaskDescription") or "")  # fmt: skip

    async def task(self, request: Request) -> Response:
        found = await self._context(request)
        if isinstance(found, Response):
            return found
        user, job = found
        item = await asyncio.to_thread(self.engine.next_task, job.name, worker_id(user))
        if item is None:
            return JSONResponse({"done": True, "message": "There is no task for you in this job now."})
        task = tasktypes.TASK_TYPES[job.data["_TaskType"]]
        base = f"{PORTAL_PREFIX}/jobs/{job.name}/objects/{item.data['Order']}"
        body: dict[str, Any] = {
            "done": False, "index": item.data["Index"], "id": item.data["Order"], "answer": task.answer,
            "media": task.media, "labels": job.data["_Labels"],
            "guide": job.data.get("_Guide") or {}, "expires": max(item.data["Leases"].values()), "submit": base,
        }  # fmt: skip
        if task.media == "text":
            body["text"] = item.data["Line"]["source"]
        else:
            body["image"] = base + "/source"
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def answer(self, request: Request) -> Response:
        found = await self._context(request)
        if isinstance(found, Response):
            return found
        user, job = found
        try:
            answer = await request.json()
        except ValueError:
            return JSONResponse({"message": "The answer is a JSON object."}, 400)
        try:
            item = await asyncio.to_thread(
                self.engine.submit, job.name, request.path_params["item"], worker_id(user), answer
            )
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"message": f"This answer cannot be taken: {exc}."}, 400)
        return JSONResponse({"accepted": True, "labeled": item.status == lj.HUMAN})

    async def decline(self, request: Request) -> Response:
        found = await self._context(request)
        if isinstance(found, Response):
            return found
        user, job = found
        await asyncio.to_thread(self.engine.release_task, job.name, request.path_params["item"], worker_id(user))
        return JSONResponse({"released": True})

    async def source(self, request: Request) -> Response:
        found = await self._context(request)
        if isinstance(found, Response):
            return found
        user, job = found
        name = lj.item_name(job.name, request.path_params["item"])
        item = await asyncio.to_thread(self.store.get_resource, lj.ITEM_KIND, name)
        me = worker_id(user)
        if item is None or (
            me not in item.data["Leases"] and me not in {a["Worker"] for a in item.data["Annotations"]}
        ):
            return JSONResponse({"message": "This object is not one of your tasks."}, 403)
        try:
            bucket, key = lj.split_s3(item.data["Line"]["source-ref"])
            got = await asyncio.to_thread(self.s3.get_object, Bucket=bucket, Key=key)
            data = await asyncio.to_thread(got["Body"].read)
        except Exception as exc:  # the worker sees why the image is missing
            return Response(f"could not read {html.escape(str(item.data['Line'].get('source-ref')))}: {exc}", 404)
        kind = got.get("ContentType") or "application/octet-stream"
        if not kind.startswith("image/"):
            kind = _sniff(data)
        return Response(data, headers={"Content-Type": kind, "Cache-Control": "private, max-age=300",
                                       "X-Content-Type-Options": "nosniff"})  # fmt: skip


def worker_id(user: Resource) -> str:
    """The ``workerId`` of the worker's answers (AWS: ``private.<region>.<sub>``)."""
    pool = user.name.split("/", 1)[0]
    return f"private.{pool.split('_', 1)[0]}.{user.data['Attributes']['sub']}"


def _sniff(data: bytes) -> str:
    for magic, kind in ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"),
                        (b"RIFF", "image/webp"), (b"BM", "image/bmp")):  # fmt: skip
        if data.startswith(magic):
            return kind
    return "application/octet-stream"
