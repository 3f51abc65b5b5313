"""MLflow tracking servers: the list (status, artifact store, version), Start and Stop, and "Open MLflow"
(a presigned URL, followed at once: the browser lands in that server's MLflow UI, signed in)."""

from __future__ import annotations

from urllib.parse import quote

from starlette.responses import Response

from opensage.console.pages import BASE, Page, page, redirect
from opensage.errors import ServiceError

LIST = f"{BASE}/mlflow-tracking-servers"


@page
async def tracking_servers(p: Page) -> Response:
    listed = await p.api.listing(p.session, "ListMlflowTrackingServers", "TrackingServerSummaries")
    return p.render("mlflow.html", servers=listed, error=p.request.query_params.get("error"))


async def _call(p: Page, operation: str) -> Response:
    try:
        await p.api.sagemaker(p.session, operation, TrackingServerName=p.request.path_params["name"])
    except ServiceError as exc:
        return redirect(f"{LIST}?error={quote(exc.message)}")
    return redirect(LIST)


@page
async def start_tracking_server(p: Page) -> Response:
    return await _call(p, "StartMlflowTrackingServer")


@page
async def stop_tracking_server(p: Page) -> Response:
    return await _call(p, "StopMlflowTrackingServer")


@page
async def open_tracking_server(p: Page) -> Response:
    try:
        url = await p.api.sagemaker(
            p.session, "CreatePresignedMlflowTrackingServerUrl", TrackingServerName=p.request.path_params["name"]
        )
    except ServiceError as exc:
        return redirect(f"{LIST}?error={quote(exc.message)}")
    return redirect(url["AuthorizedUrl"])
