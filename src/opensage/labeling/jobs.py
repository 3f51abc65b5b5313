"""Labeling jobs: from the input manifest, through the workers' answers, to the output manifest.

One asyncio task per job. ``Initializing`` reads the input manifest, the label categories and the
worker instructions from S3 and makes one item (kind ``labeling-item``, a child of the job) per
manifest line; ``InProgress`` hands the released items to the work team's members through the
portal (:meth:`LabelingJobs.next_task`: never more than ``MaxConcurrentTaskCount`` objects out to
workers at once, each to ``NumberOfHumanWorkersPerDataObject`` different workers, each lease
``TaskTimeLimitInSeconds`` long) and consolidates an item's answers once it has them all. With
automated labeling (:mod:`.autolabel`) only a share of the items is released at first; each round
trains a model on the human labels and takes the labels it is confident about. The job ends when
every item has a label (Completed), a stopping condition is met or StopLabelingJob is called
(Stopped: the items labeled so far), or on an error (Failed, with the reason). It then writes
``<S3OutputPath>/<job>/manifests/output/output.manifest``, the workers' answers under
``annotations/worker-response/iteration-1/<index>/``, and records the output in the description.

Everything is in the store, so a restarted platform goes on where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

from opensage.controller import Controller, call_on_loop
from opensage.errors import Conflict, NotFound
from opensage.labeling import tasktypes
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

log = logging.getLogger(__name__)
KIND = "labeling-job"
ITEM_KIND = "labeling-item"
WORKTEAM_KIND = "workteam"
INITIALIZING, IN_PROGRESS, COMPLETED, FAILED, STOPPING, STOPPED = (
    "Initializing", "InProgress", "Completed", "Failed", "Stopping", "Stopped",
)  # fmt: skip
ACTIVE = (INITIALIZING, IN_PROGRESS, STOPPING)
# An item waits for workers (PENDING), or is not handed out yet (HELD: automated labeling's later batches).
PENDING, HELD, HUMAN, MACHINE = "pending", "held", "human", "machine"
PAGE = 100  # items read at a time when looking for a worker's next task
DEFAULT_MAX_CONCURRENT = 1000  # MaxConcurrentTaskCount's default
HISTORY = 500  # counter samples kept for the console's progress chart


def split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri} is not an S3 URI (s3://bucket/key)")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def item_name(job: str, position: int) -> str:
    """An item is named after its place in the order objects go to workers (the manifest's, or shuffled for
    automated labeling), so that the next task is found among the first pending items."""
    return f"{job}/{position:07d}"


class LabelingJobs(Controller):
    KIND = KIND

    def __init__(self, store: SqlStore, clock: Callable[[], dt.datetime], s3: Any, idle_interval_s: float = 2.0):
        super().__init__(store, clock)
        self.s3 = s3
        self.idle_interval_s = idle_interval_s
        self.autolabel: Any = None  # opensage.labeling.autolabel.AutoLabeler, set by the platform
        self._wake: dict[str, asyncio.Event] = {}
        self._stop: set[str] = set()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # the job's task
    def launch(self, name: str) -> None:
        self._wake[name] = asyncio.Event()
        self._spawn(self._run(name), f"{KIND}/{name}")

    async def recover(self) -> None:
        for row in await self._rows(ACTIVE):
            self.launch(row.name)

    def wake(self, name: str) -> None:
        event = self._wake.get(name)
        if event is not None:
            call_on_loop(self._loop, event.set)

    def request_stop(self, name: str) -> None:
        self._stop.add(name)
        self.wake(name)

    def stopping(self, name: str) -> bool:
        return name in self._stop

    async def _run(self, name: str) -> None:
        try:
            row = await asyncio.to_thread(self.store.get_resource, KIND, name)
            if row is None:
                return
            if row.status == INITIALIZING:
                await asyncio.to_thread(self._initialize, row)
            while True:
                row = await asyncio.to_thread(self.store.get_resource, KIND, name)
                if row is None or row.status not in ACTIVE:
                    return
                if name in self._stop or row.status == STOPPING:
                    await asyncio.to_thread(self._finish, name, STOPPED, None)
                    return
                if self.autolabel is not None and row.data.get("_Auto"):
                    await self.autolabel.turn(row)
                counters = await asyncio.to_thread(self.count, name)
                reached = _stopping_condition(row.data, counters)
                if reached or counters["Unlabeled"] == 0:
                    await asyncio.to_thread(self._finish, name, STOPPED if reached else COMPLETED, None)
                    return
                event = self._wake[name]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), self.idle_interval_s)
                event.clear()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the job fails; the reason says what went wrong
            log.exception("labeling job %s failed", name)
            reason = str(exc) if isinstance(exc, JobInputError) else f"InternalServerError: {type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._finish, name, FAILED, reason)
        finally:
            self._stop.discard(name)
            self._wake.pop(name, None)

    # Initializing
    def _read(self, uri: str, what: str) -> bytes:
        try:
            bucket, key = split_s3(uri)
            return bytes(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
            raise JobInputError(
                f"ClientError: could not read the {what} {uri} ({code}): check that it exists."
            ) from exc

    def _initialize(self, row: Resource) -> None:
        data = row.data
        task = tasktypes.TASK_TYPES[data["_TaskType"]]
        text = self._read(data["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"], "input manifest")
        lines = []
        for number, raw in enumerate(text.decode("utf-8", "replace").splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                raise JobInputError(f"ClientError: line {number} of the input manifest is not JSON.") from None
            field = "source-ref" if task.media == "image" else "source"
            if not isinstance(line, dict) or not isinstance(line.get(field), str):
                want = '"source-ref": "s3://..."' if task.media == "image" else '"source": "<the text>"'
                raise JobInputError(f"ClientError: line {number} of the input manifest has no {want} ({task.title}).")
            lines.append(line)
        if not lines:
            raise JobInputError("ClientError: the input manifest has no data objects.")
        labels: list[str] = []
        if data.get("LabelCategoryConfigS3Uri"):
            document = self._read(data["LabelCategoryConfigS3Uri"], "label category configuration")
            try:
                labels = tasktypes.categories(json.loads(document))
            except (ValueError, json.JSONDecodeError) as exc:
                raise JobInputError(f"ClientError: LabelCategoryConfigS3Uri: {exc}.") from None
        if not labels:
            raise JobInputError("ClientError: the job needs label categories (LabelCategoryConfigS3Uri).")
        guide = {"header": "", "short": "", "full": ""}
        template = (data["HumanTaskConfig"].get("UiConfig") or {}).get("UiTemplateS3Uri")
        if template:
            guide = tasktypes.instructions(self._read(template, "worker task template").decode("utf-8", "replace"))
        order = list(range(len(lines)))
        if data.get("_Auto"):  # the humans' share is a random sample
            random.Random(row.name).shuffle(order)
        released = len(lines) if not data.get("_Auto") else self.autolabel.first_release(len(lines))
        now = self.clock()
        for position, index in enumerate(order):
            item = {"Index": index, "Order": position, "Line": lines[index], "Leases": {}, "Annotations": []}
            status = PENDING if position < released else HELD
            with contextlib.suppress(Exception):  # already made by an earlier server that stopped midway
                self.store.create_resource(
                    Resource(ITEM_KIND, item_name(row.name, position), f"{row.arn}/object/{position}", status,
                             now, now, item, parent_arn=row.arn)
                )  # fmt: skip

        def ready(current: Resource) -> tuple[dict[str, Any], str]:
            if current.status != INITIALIZING:
                raise Conflict(current.status)
            return {**current.data, "_Labels": labels, "_Guide": guide, "_Total": len(lines)}, IN_PROGRESS

        with contextlib.suppress(Conflict):
            self.store.modify_resource(KIND, row.name, ready, now=self.clock())
        self.count(row.name)

    # the items
    def items(self, job: Resource, status: str | None = None) -> list[Resource]:
        """The job's items (in ``status``), in the order they go to workers."""
        return self.store.list_resources(ITEM_KIND, parent_arn=job.arn, status=status, sort_by="name", descending=False)

    def count(self, name: str) -> dict[str, int]:
        """Recompute the job's LabelCounters from its items, store them (with a sample for the chart)."""
        job = self.store.get_resource(KIND, name)
        if job is None:
            return {}
        by_status = self.store.count_resources(ITEM_KIND, parent_arn=job.arn)
        human, machine = by_status.get(HUMAN, 0), by_status.get(MACHINE, 0)
        counters = {"TotalLabeled": human + machine, "HumanLabeled": human, "MachineLabeled": machine,
                    "FailedNonRetryableError": 0, "Unlabeled": sum(by_status.values()) - human - machine}  # fmt: skip
        if job.data.get("LabelCounters") != counters:
            sample = [round(self._now(), 1), human, machine]

            def change(current: Resource) -> tuple[dict[str, Any], None]:
                history = [*(current.data.get("_History") or []), sample][-HISTORY:]
                return {**current.data, "LabelCounters": counters, "_History": history}, None

            self.store.modify_resource(KIND, name, change, now=self.clock())
        return counters

    def _now(self) -> float:
        return self.clock().timestamp()

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def next_task(self, name: str, worker: str) -> Resource | None:
        """The item ``worker`` labels next (leased to them for TaskTimeLimitInSeconds), or None."""
        with self._lock(name):
            job = self.store.get_resource(KIND, name)
            if job is None or job.status != IN_PROGRESS:
                return None
            config = job.data["HumanTaskConfig"]
            per_object = int(config.get("NumberOfHumanWorkersPerDataObject") or 1)
            limit = int(config.get("MaxConcurrentTaskCount") or DEFAULT_MAX_CONCURRENT)
            lease_s = int(config.get("TaskTimeLimitInSeconds") or 300)
            now = self._now()
            out, candidate, fresh_run = 0, None, 0
            for item in self._pending(job):
                leases = _live(item, now)
                answered = {a["Worker"] for a in item.data["Annotations"]}
                if worker in leases:
                    return item  # the worker's own task, again
                busy = bool(leases or answered)
                out += busy
                fresh_run = 0 if busy else fresh_run + 1
                room = worker not in answered and len(answered) + len(leases) < per_object
                if candidate is None and room and (busy or out < limit):
                    candidate = item
                # items go out in order, so the ones out to workers come first: past a run of PAGE items no
                # one holds, the rest are not out either
                if fresh_run >= PAGE:
                    break
            if candidate is None:
                return None

            def take(current: Resource) -> tuple[dict[str, Any], None]:
                taken = len(_live(current, now)) + len(current.data["Annotations"])
                if current.status != PENDING or taken >= per_object:
                    raise Conflict(current.status)
                return {**current.data, "Leases": {**_live(current, now), worker: now + lease_s}}, None

            try:
                return self.store.modify_resource(ITEM_KIND, candidate.name, take, now=self.clock())
            except (Conflict, NotFound):
                return None

    def _pending(self, job: Resource) -> Iterator[Resource]:
        """The job's pending items in order, read PAGE at a time."""
        after: tuple[str, str] | None = None
        while True:
            page = self.store.list_resources(ITEM_KIND, parent_arn=job.arn, status=PENDING, sort_by="name",
                                             descending=False, after=after, limit=PAGE)  # fmt: skip
            yield from page
            if len(page) < PAGE:
                return
            after = (page[-1].name, page[-1].name)

    def release_task(self, name: str, position: int, worker: str) -> None:
        """Give an item back unanswered (the worker declined it)."""

        def give_back(current: Resource) -> tuple[dict[str, Any], None] | None:
            if worker not in current.data["Leases"]:
                return None
            leases = {k: v for k, v in current.data["Leases"].items() if k != worker}
            return {**current.data, "Leases": leases}, None

        with contextlib.suppress(NotFound):
            self.store.modify_resource(ITEM_KIND, item_name(name, position), give_back, now=self.clock())

    def submit(self, name: str, position: int, worker: str, answer: Any) -> Resource:
        """Record ``worker``'s answer for the item at ``position``; consolidates once it has all its answers.

        Raises ValueError (the answer does not fit the task, the item is not the worker's)."""
        job = self.store.get_resource(KIND, name)
        if job is None or job.status != IN_PROGRESS:
            raise ValueError(f"labeling job {name} is not in progress")
        task = tasktypes.TASK_TYPES[job.data["_TaskType"]]
        labels = job.data["_Labels"]
        per_object = int(job.data["HumanTaskConfig"].get("NumberOfHumanWorkersPerDataObject") or 1)
        now = self.clock()

        def record(current: Resource) -> tuple[dict[str, Any], str]:
            if current.status != PENDING:
                raise ValueError("this object is labeled already")
            answered = {a["Worker"] for a in current.data["Annotations"]}
            if worker in answered:
                raise ValueError("you have labeled this object already")
            taken = len(answered) + len(_live(current, now.timestamp()))
            if worker not in current.data["Leases"] and taken >= per_object:
                raise ValueError("this object is no longer yours to label: its time limit passed")
            normal = tasktypes.check_answer(task, answer, labels, str(current.data["Line"].get("source", "")))
            annotations = [*current.data["Annotations"], {"Worker": worker, "Answer": normal, "At": now.isoformat()}]
            leases = {k: v for k, v in current.data["Leases"].items() if k != worker}
            data = {**current.data, "Annotations": annotations, "Leases": leases}
            if len(annotations) < per_object:
                return data, PENDING
            value, meta = tasktypes.consolidate(task, [a["Answer"] for a in annotations], labels)
            return {**data, "Label": value, "Metadata": meta, "LabeledAt": now.isoformat()}, HUMAN

        try:
            item = self.store.modify_resource(ITEM_KIND, item_name(name, position), record, now=now)
        except NotFound:
            raise ValueError(f"labeling job {name} has no object {position}") from None
        if item.status == HUMAN:
            self._write_responses(job, item)
            self.count(name)
            self.wake(name)
        return item

    def _write_responses(self, job: Resource, item: Resource) -> None:
        answers = [
            {"answerContent": a["Answer"], "submissionTime": a["At"], "workerId": a["Worker"]}
            for a in item.data["Annotations"]
        ]
        key = f"{_prefix(job)}/annotations/worker-response/iteration-1/{item.data['Index']}/{int(self._now())}.json"
        bucket, _ = split_s3(job.data["OutputConfig"]["S3OutputPath"])
        self.s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({"answers": answers}).encode())

    # the end
    def _finish(self, name: str, status: str, reason: str | None) -> None:
        job = self.store.get_resource(KIND, name)
        if job is None or job.status not in ACTIVE:
            return
        output = None
        if status != FAILED:
            output = self._write_output(job)
            self.count(name)

        def end(current: Resource) -> tuple[dict[str, Any], str]:
            if current.status not in ACTIVE:
                raise Conflict(current.status)
            data = {**current.data}
            if output:
                data["LabelingJobOutput"] = output
            if reason:
                data["FailureReason"] = reason
            return data, status

        with contextlib.suppress(Conflict, NotFound):
            self.store.modify_resource(KIND, name, end, now=self.clock())
        for item in self.items(job):  # leases end with the job
            if item.data["Leases"]:
                with contextlib.suppress(Conflict, NotFound):
                    self.store.modify_resource(ITEM_KIND, item.name, lambda c: ({**c.data, "Leases": {}}, None),
                                               now=self.clock())  # fmt: skip

    def _write_output(self, job: Resource) -> dict[str, str]:
        task = tasktypes.TASK_TYPES[job.data["_TaskType"]]
        attribute = job.data["LabelAttributeName"]
        lines = []
        for item in sorted(self.items(job), key=lambda i: i.data["Index"]):
            if item.status not in (HUMAN, MACHINE):
                continue
            when = dt.datetime.fromisoformat(item.data["LabeledAt"])
            lines.append(
                tasktypes.output_line(
                    item.data["Line"],
                    attribute,
                    item.data["Label"],
                    item.data["Metadata"],
                    task=task,
                    job_name=job.name,
                    human=item.status == HUMAN,
                    when=when,
                )  # fmt: skip
            )
        bucket, _ = split_s3(job.data["OutputConfig"]["S3OutputPath"])
        key = f"{_prefix(job)}/manifests/output/output.manifest"
        body = "".join(json.dumps(line) + "\n" for line in lines).encode()
        self.s3.put_object(Bucket=bucket, Key=key, Body=body)
        out = {"OutputDatasetS3Uri": f"s3://{bucket}/{key}"}
        if job.data.get("_FinalModelArn"):
            out["FinalActiveLearningModelArn"] = job.data["_FinalModelArn"]
        return out


class JobInputError(Exception):
    """What the job's own input got wrong: its message is the job's FailureReason."""


def _live(item: Resource, now: float) -> dict[str, float]:
    return {w: t for w, t in item.data["Leases"].items() if t > now}


def _prefix(job: Resource) -> str:
    """The key prefix of the job's output: ``<S3OutputPath's key>/<job name>``."""
    _, key = split_s3(job.data["OutputConfig"]["S3OutputPath"])
    return f"{key.rstrip('/')}/{job.name}".lstrip("/")


def _stopping_condition(data: dict[str, Any], counters: dict[str, int]) -> bool:
    conditions = data.get("StoppingConditions") or {}
    total = counters["TotalLabeled"] + counters["Unlabeled"]
    most = conditions.get("MaxHumanLabeledObjectCount")
    share = conditions.get("MaxPercentageOfInputDatasetLabeled")
    if most and counters["HumanLabeled"] >= most:
        return True
    return bool(share and total and counters["TotalLabeled"] * 100 >= share * total)
