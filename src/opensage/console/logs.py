"""Job logs on the console: a training, processing or transform job's log streams, live over server-sent events.

Each job kind's engine writes its containers' output to the log group AWS uses for it, one stream per
instance named ``<job>/<host>`` (training and processing add ``-<epoch>``). A job's page reads them
from the head and follows them while the job runs; the stream ends once the job has ended and no new
line came for a moment (some lines are written just after the status changes).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from opensage.console.api import LOG_GROUPS, Missing
from opensage.console.pages import Console, Page, page

LOG_POLL_S = 0.5
QUIET_POLLS = 3  # polls without a new line after the job ended before the stream ends
ENDED = ("Completed", "Failed", "Stopped")
_EPOCH = re.compile(r"-\d{9,}$")


@dataclass(frozen=True, slots=True)
class JobLog:
    """One job kind's log: the store's resource kind and the Describe call that checks the job exists."""

    kind: str
    what: str
    describe_op: str
    name_field: str

    @property
    def group(self) -> str:
        return LOG_GROUPS[self.kind]


JOB_LOGS = {
    "training-jobs": JobLog("training-job", "training job", "DescribeTrainingJob", "TrainingJobName"),
    "processing-jobs": JobLog("processing-job", "processing job", "DescribeProcessingJob", "ProcessingJobName"),
    "transform-jobs": JobLog("transform-job", "transform job", "DescribeTransformJob", "TransformJobName"),
}


def host_of(stream: str) -> str:
    """The instance a stream belongs to: ``job/algo-2-1700000000`` -> ``algo-2``, ``job/AllTraffic-1`` -> itself."""
    return _EPOCH.sub("", stream.split("/", 1)[-1])


def _event(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


async def log_events(console: Console, request: Request, job: JobLog, name: str) -> AsyncIterator[str]:
    """``reset``, then ``log`` (new lines, tagged with their host when there are several) and ``status``
    (on each change) events until the job has ended and its last lines are sent, then ``end``."""
    api = console.api
    tokens: dict[str, str | None] = {}
    last_status: tuple[str, str] | None = None
    quiet = 0
    yield "retry: 2000\n" + _event("reset", {})
    while True:
        row = await asyncio.to_thread(api.store.get_resource, job.kind, name)
        streams = await asyncio.to_thread(api.log_streams, job.group, name)
        sent = 0
        for stream in streams:
            events, tokens[stream] = await asyncio.to_thread(api.read_log, job.group, stream, tokens.get(stream))
            if events:
                host = host_of(stream) if len(streams) > 1 else ""
                yield _event("log", [{"t": t, "m": f"[{host}] {m}" if host else m} for t, m in events])
                sent += len(events)
        if row is not None:
            status = (row.status, row.data.get("SecondaryStatus", ""))
            if status != last_status:
                last_status = status
                yield _event("status", {"status": status[0], "secondary": status[1]})
        quiet = quiet + 1 if row is not None and row.status in ENDED and not sent else 0
        if row is None or quiet >= QUIET_POLLS:
            yield _event("end", {})
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(LOG_POLL_S)


def log_handler(segment: str):  # type: ignore[no-untyped-def]
    """The ``/<segment>/{name}/log`` handler: the job's log as server-sent events."""
    job = JOB_LOGS[segment]

    @page
    async def handler(p: Page) -> Response:
        name = p.request.path_params["name"]
        if not p.api.serves("sagemaker", job.describe_op):
            raise Missing(f"There is no {job.what} named “{name}” (this platform does not run them yet).")
        await p.api.describe(p.session, job.describe_op, job.what, **{job.name_field: name})
        return StreamingResponse(
            log_events(p.console, p.request, job, name),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    handler.__name__ = f"{segment.replace('-', '_')}_log"
    return handler


training_log = log_handler("training-jobs")
processing_log = log_handler("processing-jobs")
transform_log = log_handler("transform-jobs")
