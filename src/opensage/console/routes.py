"""The console's URL map under ``/console`` and :func:`create_console`, which ``create_app`` mounts."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opensage.console import endpoints, experiments, home, lists, logs, pipelines, registry, storage, training, tuning
from opensage.console import labeling as labeling_pages
from opensage.console import mlflow as mlflow_pages
from opensage.console import notebooks as notebook_pages
from opensage.console.api import ConsoleApi, ConsoleDeps, Missing
from opensage.console.auth import PASSWORD_FILE, SessionSigner, session_key
from opensage.console.pages import BASE, Console, http_error, not_found, redirect, server_error, templates
from opensage.console.sessions import SessionRegistry, SignInThrottle

STATIC = Path(__file__).parent / "static"


def _routes() -> list[Route | Mount]:
    get, post = ["GET"], ["POST"]
    return [
        Route("/", home.home, methods=get),
        Route("/signin", home.signin, methods=["GET", "POST"]),
        Route("/signout", home.signout, methods=post),
        Route("/training-jobs", lists.list_training_jobs, methods=get),
        Route("/training-jobs/new", training.new_training_job, methods=get),
        Route("/training-jobs/new", training.create_training_job, methods=post),
        Route("/training-jobs/new/check", training.check_hyperparameters, methods=post),
        Route("/training-jobs/new/s3", training.s3_picker, methods=get),
        Route("/training-jobs/{name}", training.training_job, methods=get),
        Route("/training-jobs/{name}/log", logs.training_log, methods=get),
        Route("/training-jobs/{name}/metrics", training.training_metrics, methods=get),
        Route("/training-jobs/{name}/stop", training.stop_training_job, methods=post),
        Route("/training-jobs/{name}/deploy", training.deploy_training_job, methods=post),
        Route("/tuning-jobs", lists.list_tuning_jobs, methods=get),
        Route("/tuning-jobs/{name}", tuning.tuning_job, methods=get),
        Route("/tuning-jobs/{name}/stop", tuning.stop_tuning_job, methods=post),
        Route("/experiments", experiments.experiments, methods=get),
        Route("/experiments/{name}", experiments.experiment, methods=get),
        Route("/endpoints", lists.list_endpoints, methods=get),
        Route("/endpoints/{name}", endpoints.endpoint, methods=get),
        Route("/endpoints/{name}/metrics", endpoints.endpoint_metrics, methods=get),
        Route("/endpoints/{name}/invoke", endpoints.invoke_endpoint, methods=post),
        Route("/endpoints/{name}/weights", endpoints.update_weights, methods=post),
        Route("/endpoints/{name}/delete", endpoints.delete_endpoint, methods=post),
        Route("/models", lists.list_models, methods=get),
        Route("/models/{name}", lists.model_detail, methods=get),
        Route("/models/{name}/delete", lists.delete_model, methods=post),
        Route("/model-registry", registry.groups, methods=get),
        Route("/model-registry/{name}", registry.group, methods=get),
        Route("/model-registry/{name}/{version:int}/approval", registry.set_approval, methods=post),
        Route("/pipelines", pipelines.list_pipelines, methods=get),
        Route("/pipelines/{name}", pipelines.pipeline, methods=get),
        Route("/pipelines/{name}/start", pipelines.start_execution, methods=post),
        Route("/pipelines/{name}/executions/{execution}", pipelines.execution, methods=get),
        Route("/pipelines/{name}/executions/{execution}/steps", pipelines.execution_steps, methods=get),
        Route("/pipelines/{name}/executions/{execution}/stop", pipelines.stop_execution, methods=post),
        Route("/pipelines/{name}/executions/{execution}/retry", pipelines.retry_execution, methods=post),
        Route("/processing-jobs", lists.list_processing_jobs, methods=get),
        Route("/processing-jobs/{name}", lists.processing_job_detail, methods=get),
        Route("/processing-jobs/{name}/log", logs.processing_log, methods=get),
        Route("/transform-jobs", lists.list_transform_jobs, methods=get),
        Route("/transform-jobs/{name}", lists.transform_job_detail, methods=get),
        Route("/transform-jobs/{name}/log", logs.transform_log, methods=get),
        Route("/mlflow-tracking-servers", mlflow_pages.tracking_servers, methods=get),
        Route("/mlflow-tracking-servers/{name}/open", mlflow_pages.open_tracking_server, methods=get),
        Route("/mlflow-tracking-servers/{name}/start", mlflow_pages.start_tracking_server, methods=post),
        Route("/mlflow-tracking-servers/{name}/stop", mlflow_pages.stop_tracking_server, methods=post),
        Route("/notebook-instances", notebook_pages.notebook_instances, methods=get),
        Route("/notebook-instances/new", notebook_pages.create_notebook_instance, methods=post),
        Route("/notebook-instances/{name}/open", notebook_pages.open_notebook_instance, methods=get),
        Route("/notebook-instances/{name}/start", notebook_pages.start_notebook_instance, methods=post),
        Route("/notebook-instances/{name}/stop", notebook_pages.stop_notebook_instance, methods=post),
        Route("/notebook-instances/{name}/delete", notebook_pages.delete_notebook_instance, methods=post),
        Route("/labeling-jobs", labeling_pages.labeling_jobs, methods=get),
        Route("/labeling-jobs/{name}", labeling_pages.labeling_job, methods=get),
        Route("/labeling-jobs/{name}/stop", labeling_pages.stop_labeling_job, methods=post),
        Route("/storage", storage.buckets, methods=get),
        Route("/storage/{bucket}", storage.browse, methods=get),
        Route("/storage/{bucket}/upload", storage.upload, methods=post),
        Route("/storage/{bucket}/object", storage.download, methods=get),
        Route("/favicon.ico", _favicon, methods=get),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


# Scripts and styles come from the console's own static files (htmx injects one <style> element);
# no page may be framed; pages with account data are never stored by the browser or a proxy.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        b"connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
_CACHEABLE = (BASE + "/static/", BASE + "/favicon.ico")


class _Guard:
    """Security headers on every answer, and a server error answered as a page on a connection kept open.

    An exception left to Starlette's outermost handler is re-raised to the server after the 500 is
    sent, and the server then closes the connection; caught here, it is answered and ends here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        cacheable = str(scope.get("path", "")).startswith(_CACHEABLE)

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control" or cacheable]
                headers += SECURITY_HEADERS
                if not cacheable:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            if started:  # the answer is under way: nothing better can be sent
                raise
            response = await server_error(Request(scope, receive), exc)
            await response(scope, receive, send_with_headers)


def create_console(deps: ConsoleDeps) -> Starlette:
    """The console's ASGI app over ``deps``; it answers every path under ``/console``."""
    app = Starlette(
        routes=[Route(BASE, _to_home, methods=["GET"]), Mount(BASE, routes=_routes())],
        middleware=[Middleware(_Guard)],
        exception_handlers={HTTPException: http_error, Missing: not_found},
    )
    app.state.console = Console(
        ConsoleApi(deps),
        templates(),
        SessionSigner(session_key(deps.home)),
        deps.home,
        SessionRegistry(deps.store, deps.home, PASSWORD_FILE),
        SignInThrottle(),
    )
    return app


async def _to_home(request: Request) -> Response:
    return redirect(BASE + "/")


async def _favicon(request: Request) -> Response:
    """The icon, for a browser that asks for it by the conventional name (the pages link the SVG)."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})
