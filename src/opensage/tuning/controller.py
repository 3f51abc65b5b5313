"""Hyperparameter tuning jobs: the controller that runs a job's trials to its end.

One asyncio task per tuning job. Each turn it reads the job's training jobs (ordinary training
jobs created through :meth:`TrainingEngine.create` with ``parent_arn`` = the tuning job's ARN), tells
the study (:mod:`opensage.tuning.strategies`) the objective of each one that ended, feeds the
objective per round of the running ones to Hyperband or the median rule (and stops those it
condemns), writes the counters and the best job, checks the completion criteria, and asks the
study for new trials while fewer than ``MaxParallelTrainingJobs`` run. A turn follows at once when
one of its trials ends (the training controller's end listeners) or the job is asked to stop, else
after ``poll_interval_s`` while trials report per round (Hyperband, early stopping) and
``idle_interval_s`` otherwise: the next trial starts the moment a slot frees, without polling for it.

A trial whose job fails inside the platform (``InternalServerError...``, e.g. a restart) is retried
with the same hyperparameters, up to :data:`MAX_ATTEMPTS` jobs (1 + the definition's
``RetryStrategy.MaximumRetryAttempts`` when it has one); any other failure counts against
the tuning job. Unlike a training job, a tuning job that was InProgress when the platform stopped
goes on where it was after a restart: its study is durable (an Optuna journal under the home).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensage import states
from opensage.compute import cores
from opensage.controller import SHUTDOWN_REASON, Run, RunController, Spec
from opensage.errors import AlreadyExists, Conflict, NotFound
from opensage.images import registry
from opensage.jobs import rules
from opensage.jobs.specs import TrainingJobSpec
from opensage.jobs.training import LOG_GROUP, TrainingEngine, metric_definitions
from opensage.logstore import LogStore
from opensage.states import JobStatus as Status
from opensage.store import tags
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch
from opensage.tuning import strategies, summaries, warmstart
from opensage.tuning.spec import TuningJobSpec, from_request

log = logging.getLogger(__name__)
KIND = warmstart.KIND
TRAINING_KIND = warmstart.TRAINING_KIND
MAX_ATTEMPTS = 3  # jobs per trial when they fail with a retryable error
MAX_FAILURES = 3  # non-retryable failures, with no trial yet succeeded, that fail the tuning job
RUNNING = (Status.IN_PROGRESS, Status.STOPPING)


@dataclass(slots=True)
class _Tail:
    """What has been read of one running trial's log: the token, and the objective per round."""

    stream: str | None = None
    token: str | None = None
    values: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _View:
    """What one run keeps between turns: the tuning job's training jobs as last read, and log tails."""

    children: list[Resource] | None = None
    tails: dict[str, _Tail] = field(default_factory=dict)


class TuningController(RunController):
    """Runs tuning jobs; the provider calls :meth:`create`, :meth:`request_stop` and :meth:`delete_study`."""

    KIND = KIND

    def __init__(
        self,
        store: SqlStore,
        clock: Callable[[], dt.datetime],
        training: TrainingEngine,
        logs: LogStore,
        studies_dir: Path,
        *,
        poll_interval_s: float = 0.05,
        idle_interval_s: float = 1.0,
    ) -> None:
        super().__init__(store, clock)
        self.training = training
        self.logs = logs
        self.studies_dir = studies_dir
        self.poll_interval_s = poll_interval_s  # while trials report per round (Hyperband, early stopping)
        self.idle_interval_s = max(poll_interval_s, idle_interval_s)  # otherwise: the end of a trial wakes it
        self._wake: dict[str, asyncio.Event] = {}  # tuning job -> set when one of its trials ends
        training.on_end(self._trial_ended)

    def _trial_ended(self, job: str) -> None:
        """A training job ended: wake its tuning job (trials are named ``<tuning job>-<NNN>-<8 hex>``)."""
        event = self._wake.get(job.rsplit("-", 2)[0])
        if event is not None:
            event.set()

    def study_path(self, name: str) -> Path:
        return self.studies_dir / f"{name}.journal"

    async def create(self, spec: Spec, arn: str, *, parent_arn: str | None = None) -> Resource:
        """Record a new tuning job (InProgress) and start it.

        Raises:
            AlreadyExists: a tuning job of that name exists.
            InvalidTuningJob: its warm start breaks AWS's rules.
        """
        assert isinstance(spec, TuningJobSpec)
        await asyncio.to_thread(warmstart.check, self.store, spec)
        if await asyncio.to_thread(self.store.get_resource, KIND, spec.name) is None:
            self.delete_study(spec.name)  # a study left by an earlier job of that name
        return await super().create(spec, arn, parent_arn=parent_arn)

    def delete_study(self, name: str) -> None:
        self.study_path(name).unlink(missing_ok=True)
        shutil.rmtree(self.studies_dir / f"{name}.lock", ignore_errors=True)

    async def recover(self) -> None:
        """At start-up: go on with every tuning job an earlier server was running or stopping."""
        for row in await self._rows(RUNNING):
            self.launch(row.name)

    async def _end(self, name: str, status: str, reason: str | None) -> None:
        if reason == SHUTDOWN_REASON:
            return  # the platform stopped: the job stays InProgress and goes on after the restart
        await self._finish(name, status, reason, {})

    # --- the loop ------------------------------------------------------------------------------------

    async def _run(self, run: Run) -> None:
        name = run.name
        row = await asyncio.to_thread(self.store.get_resource, KIND, name)
        if row is None:
            return
        try:
            spec = from_request(row.data)
            search = await asyncio.to_thread(strategies.Search, spec, self.study_path(name))
            parents = await self._parents(spec, row)
            if parents and not row.data.get("_Seeded"):
                await asyncio.to_thread(self._seed, search, spec, parents)
                await self._save(name, _Seeded=True)
            view = _View()
            wake = self._wake.setdefault(name, asyncio.Event())
            per_round = spec.early_stopping or spec.strategy == "Hyperband"
            while not run.shutting_down:
                wake.clear()
                if await self._turn(run, spec, search, parents, view):
                    return
                await _first(run.stop_requested, wake, self.poll_interval_s if per_round else self.idle_interval_s)
        except Exception as exc:
            if run.shutting_down:
                return
            log.exception("tuning job %s failed inside the platform", name)
            await self._finish(name, Status.FAILED, f"InternalServerError: {type(exc).__name__}: {exc}", {})
        finally:
            self._wake.pop(name, None)

    async def _parents(self, spec: TuningJobSpec, row: Resource) -> list[dict[str, Any]]:
        if not spec.parents:
            return []
        rows = [await asyncio.to_thread(self.store.get_resource, KIND, p) for p in spec.parents]
        return await asyncio.to_thread(warmstart.parent_trials, self.store, [r for r in rows if r is not None])

    def _seed(self, search: strategies.Search, spec: TuningJobSpec, parents: list[dict[str, Any]]) -> None:
        for s in parents:
            if s.get("ObjectiveStatus") == "Succeeded":
                value = s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
                search.seed(s.get("TrainingJobDefinitionName"), s["TunedHyperParameters"], value)

    async def _turn(
        self,
        run: Run,
        spec: TuningJobSpec,
        search: strategies.Search,
        parents: list[dict[str, Any]],
        view: _View,
    ) -> bool:
        """One look at the job; True when it has ended. Each turn reads only the running training jobs
        and those that ended since the last turn; all of them only when one ended or started."""
        row = await asyncio.to_thread(self.store.get_resource, KIND, run.name)
        if row is None or row.status not in RUNNING:
            return True
        trials: dict[str, Any] = {k: dict(v) for k, v in (row.data.get("_Trials") or {}).items()}
        running = await asyncio.to_thread(self._running, row.arn, trials)
        names = {c.name for c in running}
        pending = [n for n, info in trials.items() if not info.get("Told") and n not in names]
        ended = await asyncio.to_thread(lambda: [(n, self.store.get_resource(TRAINING_KIND, n)) for n in pending])
        changed, retried = await self._collect(spec, search, row, ended, trials, view.tails)
        if changed or view.children is None:
            view.children = await asyncio.to_thread(self.store.list_resources, TRAINING_KIND, parent_arn=row.arn)
        children = view.children
        if spec.early_stopping or spec.strategy == "Hyperband":
            await self._early_stop(spec, search, running, trials, view.tails)
        if run.shutting_down:  # the platform stops: leave the job InProgress, to go on after the restart
            return True
        stopping = run.stop_requested.is_set() or row.status == Status.STOPPING
        ending = self._ending(spec, row, children, bool(running), trials)
        if stopping or ending is not None:
            for child in running:
                await self._stop_child(child.name)
            if running:
                if changed:
                    await self._record(spec, row, children, trials, parents)
                return False
            status, reason, details = (Status.STOPPED, None, {}) if stopping else ending  # type: ignore[misc]
            await self._record(spec, row, children, trials, parents)
            await self._finish(run.name, status, reason, details)
            return True
        launched = await self._launch(spec, search, row, trials, len(running) + retried)
        if changed or launched:
            view.children = await asyncio.to_thread(self.store.list_resources, TRAINING_KIND, parent_arn=row.arn)
            await self._record(spec, row, view.children, trials, parents)
        return False

    def _running(self, arn: str, trials: dict[str, Any]) -> list[Resource]:
        return [
            c
            for status in RUNNING
            for c in self.store.list_resources(TRAINING_KIND, parent_arn=arn, status=status)
            if c.name in trials
        ]

    async def _collect(
        self,
        spec: TuningJobSpec,
        search: strategies.Search,
        row: Resource,
        ended: list[tuple[str, Resource | None]],
        trials: dict[str, Any],
        tails: dict[str, _Tail],
    ) -> tuple[bool, int]:
        """Tell the study about every trial job that ended since the last turn (retrying platform failures);
        whether any did, and how many jobs it started again.

        A job recorded in ``_Trials`` without a row (the platform stopped between the two writes) is
        retried as a platform failure."""
        changed, retried = False, 0
        for name, child in ended:
            info = trials[name]
            if child is not None and child.status in RUNNING:
                continue
            changed = True
            info["Told"] = True
            stopping = row.status == Status.STOPPING
            attempts_left = info.get("Attempt", 1) < _attempts(spec, info) and not stopping
            if child is None:
                info["Retried"] = attempts_left
                if attempts_left:
                    await self._start_job(spec, row, trials, info, info.get("Attempt", 1) + 1)
                    retried += 1
                else:
                    await asyncio.to_thread(search.tell, info["Trial"], None)
                continue
            if summaries.retryable(child) and attempts_left:
                info["Retried"] = True
                await self._start_job(spec, row, trials, info, info.get("Attempt", 1) + 1)
                retried += 1
                continue
            early = child.status == Status.STOPPED
            per_round = spec.early_stopping or spec.strategy == "Hyperband"
            if per_round or (early and summaries.objective_value(child, info) is None):
                # the rest of its objective per round (the median rule and Hyperband compare whole
                # series), and for a job stopped before it wrote FinalMetricDataList its objective so far
                tail = tails.pop(name, None) or _Tail()
                await asyncio.to_thread(self._read_objective, child, info["Metric"], tail)
                if per_round and tail.values:
                    await asyncio.to_thread(search.report, info["Trial"], list(tail.values))
                if early and tail.values:
                    info["Objective"] = tail.values[-1]
            value = summaries.objective_value(child, info)
            await asyncio.to_thread(search.tell, info["Trial"], value, stopped_early=early)
        return changed, retried

    def _ending(
        self, spec: TuningJobSpec, row: Resource, children: list[Resource], busy: bool, trials: dict[str, Any]
    ) -> tuple[str, str | None, dict[str, Any]] | None:
        """(status, FailureReason, TuningJobCompletionDetails) when the job should end now, else None."""
        mine = summaries.summaries(children, trials, row.name)
        told = sorted((c for c in children if trials.get(c.name, {}).get("Told")), key=lambda c: c.created_at)
        scored = [s for s in sorted(mine, key=lambda s: s["CreationTime"]) if s["ObjectiveStatus"] == "Succeeded"]
        values = [s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for s in scored]
        streak = strategies.improving_streak(values, spec.maximize)
        details: dict[str, Any] = {"NumberOfTrainingJobsObjectiveNotImproving": streak}
        if values and strategies.reached(strategies_best(values, spec.maximize), spec.target, spec.maximize):
            return Status.COMPLETED, None, details
        if spec.not_improving and streak >= spec.not_improving:
            return Status.COMPLETED, None, details
        if spec.convergence and strategies.converged(values, spec.maximize):
            return Status.COMPLETED, None, {**details, "ConvergenceDetectedTime": epoch(self.clock())}
        failed = [c for c in told if c.status == Status.FAILED and not trials[c.name].get("Retried")]
        if not values and len(failed) >= min(MAX_FAILURES, spec.max_jobs):
            reason = failed[0].data.get("FailureReason", "")
            return Status.FAILED, f"The training jobs of this tuning job failed; the first: {reason}"[:1024], details
        limit = spec.max_runtime_s
        if limit and (self.clock() - row.created_at).total_seconds() > limit:
            if values:
                return Status.COMPLETED, None, details
            reason = (
                f"The tuning job reached MaxRuntimeInSeconds ({limit}) before a training job reported the objective."
            )
            return Status.FAILED, reason, details
        asked = {info["Trial"] for info in trials.values()}
        if len(asked) >= spec.max_jobs and not busy and all(i.get("Told") for i in trials.values()):
            if values:
                return Status.COMPLETED, None, details
            return Status.FAILED, "No training job of this tuning job reported the objective metric.", details
        return None

    async def _launch(
        self, spec: TuningJobSpec, search: strategies.Search, row: Resource, trials: dict[str, Any], running: int
    ) -> bool:
        asked = len({info["Trial"] for info in trials.values()})
        launched = False
        while running < spec.max_parallel and asked < spec.max_jobs:
            if spec.strategy == "Grid" and await asyncio.to_thread(search.waiting) == 0:
                break
            suggestion = await asyncio.to_thread(search.ask)
            d = spec.definition(suggestion.definition)
            info = {
                "Trial": suggestion.number,
                "Definition": d.name,
                "Tuned": suggestion.hyperparameters,
                "Metric": d.metric,
                "Type": "Maximize" if d.maximize else "Minimize",
            }
            await self._start_job(spec, row, trials, info, 1)
            running, asked, launched = running + 1, asked + 1, True
        return launched

    async def _start_job(
        self, spec: TuningJobSpec, row: Resource, trials: dict[str, Any], info: dict[str, Any], attempt: int
    ) -> None:
        """Create the training job of one trial (its ``attempt``-th); recorded before it starts."""
        sequence = int((await self._describe(row.name)).get("_Sequence", 0)) + 1
        job = f"{row.name}-{sequence:03d}-{secrets.token_hex(4)}"
        entry = {**{k: v for k, v in info.items() if k not in ("Told", "Retried")}, "Attempt": attempt}
        trials[job] = entry
        await self._save(row.name, _Sequence=sequence, _Trials=trials)
        d = spec.definition(info["Definition"])
        request = d.training_request(job, info["Tuned"])
        request["TuningJobArn"] = row.arn
        env = dict(request.get("Environment") or {})
        if spec.max_parallel > 1 and cores.SHARE_ENV not in env:
            # trials side by side share the machine, as one job's containers do: threads past a trial's
            # share of the cores only contend with the other trials
            env[cores.SHARE_ENV] = str(cores.share(cores.usable_cores(), spec.max_parallel))
            request["Environment"] = env
        arn = row.arn.split(":hyper-parameter-tuning-job/")[0] + f":training-job/{job.lower()}"
        inherited = await asyncio.to_thread(tags.get_tags, self.store, row.arn)  # AWS tags trials as their job
        if inherited:
            await asyncio.to_thread(tags.put_tags, self.store, arn, inherited, self.clock())
        try:
            await self.training.create(TrainingJobSpec.from_request(request), arn, parent_arn=row.arn)
        except AlreadyExists:
            log.warning("tuning job %s: a training job %s exists already", row.name, job)

    async def _early_stop(
        self,
        spec: TuningJobSpec,
        search: strategies.Search,
        running: list[Resource],
        trials: dict[str, Any],
        tails: dict[str, _Tail],
    ) -> None:
        """Feed each running trial's objective per round to the strategy; stop the ones it condemns."""
        for child in running:
            if child.status != Status.IN_PROGRESS:
                continue
            info = trials[child.name]
            tail = tails.setdefault(child.name, _Tail())
            grew = await asyncio.to_thread(self._read_objective, child, info["Metric"], tail)
            if grew and await asyncio.to_thread(search.report, info["Trial"], list(tail.values)):
                log.info("tuning job: trial %s (%s) stopped early", info["Trial"], child.name)
                await self._stop_child(child.name)
        for gone in set(tails) - {c.name for c in running}:
            del tails[gone]

    def _read_objective(self, child: Resource, metric: str, tail: _Tail) -> bool:
        """Read the new lines of the job's first host's log; True when new objective values came."""
        if tail.stream is None:
            streams = self.logs.list_streams(LOG_GROUP, prefix=f"{child.name}/algo-1-")
            if not streams:
                return False
            tail.stream = streams[0].name
        image = registry.resolve(child.data["AlgorithmSpecification"].get("TrainingImage", ""))
        patterns = [d for d in metric_definitions(child.data, image) if d["Name"] == metric]
        before = len(tail.values)
        while True:
            page = self.logs.get_events(LOG_GROUP, tail.stream, start_from_head=True, token=tail.token)
            tail.token = page.next_forward_token
            if not page.events:
                break
            series = rules.metric_series([e.message for e in page.events], patterns)
            tail.values.extend(series.get(metric, []))
        return len(tail.values) > before

    async def _stop_child(self, name: str) -> None:
        now = self.clock()
        change = states.transition(
            TRAINING_KIND,
            Status.STOPPING,
            now,
            secondary=states.SecondaryStatus.STOPPING,
            only_from=frozenset({Status.IN_PROGRESS}),
        )
        with contextlib.suppress(Conflict, NotFound):
            await asyncio.to_thread(self.store.modify_resource, TRAINING_KIND, name, change, now=now)
        self.training.request_stop(name)

    # --- the record ----------------------------------------------------------------------------------

    async def _record(
        self,
        spec: TuningJobSpec,
        row: Resource,
        children: list[Resource],
        trials: dict[str, Any],
        parents: list[dict[str, Any]],
    ) -> None:
        jobs, objectives = summaries.counters(children, trials)
        mine = summaries.summaries(children, trials, row.name)
        fields: dict[str, Any] = {
            "_Trials": trials,
            "TrainingJobStatusCounters": jobs,
            "ObjectiveStatusCounters": objectives,
            "ConsumedResources": {"RuntimeInSeconds": int((self.clock() - row.created_at).total_seconds())},
        }
        best = summaries.best(mine, spec.maximize)
        if best is not None:
            fields["BestTrainingJob"] = best
        overall = summaries.best([*mine, *parents], spec.maximize) if parents else None
        if overall is not None:
            fields["OverallBestTrainingJob"] = overall
        await self._save(row.name, **fields)

    async def _finish(self, name: str, status: str, reason: str | None, details: dict[str, Any]) -> None:
        now = self.clock()

        def edit(data: dict[str, Any]) -> None:
            data["HyperParameterTuningEndTime"] = epoch(now)
            created = data.get("CreationTime")
            if created is not None:
                data["ConsumedResources"] = {"RuntimeInSeconds": int(epoch(now) - created)}
            if reason:
                data["FailureReason"] = reason
            if details:
                data["TuningJobCompletionDetails"] = details

        await self._move(name, status, edit=edit, quiet_from=(Status.COMPLETED, Status.FAILED, Status.STOPPED))


async def _first(stop: asyncio.Event, wake: asyncio.Event, timeout: float) -> None:
    """Wait until ``stop`` or ``wake`` is set, or ``timeout`` seconds have passed."""
    if stop.is_set() or wake.is_set():
        return
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def strategies_best(values: list[float], maximize: bool) -> float:
    return max(values) if maximize else min(values)


def _attempts(spec: TuningJobSpec, info: dict[str, Any]) -> int:
    """The jobs a trial may take when they fail inside the platform."""
    retry = spec.definition(info.get("Definition")).document.get("RetryStrategy") or {}
    return 1 + int(retry["MaximumRetryAttempts"]) if "MaximumRetryAttempts" in retry else MAX_ATTEMPTS
