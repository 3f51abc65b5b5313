"""Ground Truth: the labeling jobs with their progress, the work teams with a link into the worker portal,
one job's page (its counters over time, its output) and Stop."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from opensage.console.pages import BASE, Page, page, redirect
from opensage.errors import ServiceError

LIST = f"{BASE}/labeling-jobs"
WIDTH, HEIGHT = 640, 180


def progress_chart(history: list[list[float]], total: int) -> dict[str, str]:
    """SVG polylines of the labeled objects over time (all, and those the machine labeled), in a WIDTH x HEIGHT box."""
    if not history or not total:
        return {}
    start, end = history[0][0], max(history[-1][0], history[0][0] + 1)

    def line(value: Any) -> str:
        points = [((t - start) / (end - start) * WIDTH, HEIGHT - value(h, m) / total * HEIGHT) for t, h, m in history]
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)

    return {"labeled": line(lambda h, m: h + m), "machine": line(lambda h, m: m), "seconds": f"{end - start:.0f}"}


def _portal(teams: list[dict[str, Any]]) -> str:
    return f"http://{teams[0]['SubDomain']}/" if teams else ""


@page
async def labeling_jobs(p: Page) -> Response:
    jobs = await p.api.listing(p.session, "ListLabelingJobs", "LabelingJobSummaryList", SortOrder="Descending")
    teams = await p.api.listing(p.session, "ListWorkteams", "Workteams")
    names = {t["WorkteamArn"]: t["WorkteamName"] for t in teams}
    return p.render("labeling.html", jobs=jobs, teams=teams, team_names=names, portal=_portal(teams),
                    error=p.request.query_params.get("error"))  # fmt: skip


@page
async def labeling_job(p: Page) -> Response:
    name = p.request.path_params["name"]
    desc = await p.api.describe(p.session, "DescribeLabelingJob", "labeling job", LabelingJobName=name)
    row = await asyncio.to_thread(p.api.store.get_resource, "labeling-job", name)
    counters = desc["LabelCounters"]
    total = counters["TotalLabeled"] + counters["Unlabeled"]
    teams = await p.api.listing(p.session, "ListWorkteams", "Workteams")
    team = next((t for t in teams if t["WorkteamArn"] == desc["HumanTaskConfig"]["WorkteamArn"]), None)
    chart = progress_chart(row.data.get("_History") or [] if row else [], total)
    return p.render("labeling_detail.html", job=desc, total=total, chart=chart, width=WIDTH, height=HEIGHT,
                    team=team, portal=_portal(teams), error=p.request.query_params.get("error"))  # fmt: skip


@page
async def stop_labeling_job(p: Page) -> Response:
    name = p.request.path_params["name"]
    try:
        await p.api.sagemaker(p.session, "StopLabelingJob", LabelingJobName=name)
    except ServiceError as exc:
        return redirect(f"{LIST}/{quote(name)}?error={quote(exc.message)}")
    return redirect(f"{LIST}/{quote(name)}")
