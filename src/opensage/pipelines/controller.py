"""Pipeline executions: the controller that runs a definition's DAG to its end.

One asyncio task per execution. Each turn it reads the execution's record, looks at its running
steps (their jobs are ordinary training, processing, transform and tuning jobs created through the
engines with ``parent_arn`` = the execution's ARN), starts every step whose dependencies have
succeeded (as many at once as ``ParallelismConfiguration`` allows), and ends the execution when
nothing runs and nothing more can start. Every step record lives in the execution's document, so a
restarted platform goes on where it was: a step whose job the restart failed runs again.

A step failure that a RetryPolicy lists is retried after its backoff; any other failure ends the
step Failed with its job's FailureReason, lets the running steps end and fails the execution.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from opensage.controller import RESTART_REASON, SHUTDOWN_REASON, Run, RunController
from opensage.pipelines import checks, policies
from opensage.pipelines import definition as pd
from opensage.pipelines import expressions as ex
from opensage.pipelines.steps import RESOURCES, RUNNING, StepLauncher, StepRejected, resource_name
from opensage.states import PipelineExecutionStatus as Status
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore
from opensage.timestamps import epoch

log = logging.getLogger(__name__)
KIND = "pipeline-execution"
CALLBACK_KIND = "pipeline-callback"
ACTIVE = (Status.EXECUTING, Status.STOPPING)
STARTING, EXECUTING, STOPPING = "Starting", "Executing", "Stopping"
LIVE = frozenset({STARTING, EXECUTING, STOPPING})
DEFAULT_PARALLELISM = 50
WAITING = "Waiting"  # a callback step's token, until SendPipelineExecutionStepSuccess/Failure
STEP_FAILURE = "Step failure: One or multiple steps failed."
_PLATFORM_REASONS = (RESTART_REASON, SHUTDOWN_REASON)


def public(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


class _View:
    """What one run keeps in memory: the parsed definition and the property files read."""

    def __init__(self, definition: pd.Definition) -> None:
        self.definition = definition
        self.files: dict[tuple[str, str], Any] = {}


class ExecutionController(RunController):
    """Runs pipeline executions; the provider calls :meth:`create`, :meth:`request_stop`, :meth:`launch`."""

    KIND = KIND

    def __init__(
        self,
        store: SqlStore,
        clock: Callable[[], dt.datetime],
        launcher: StepLauncher | None = None,
        *,
        poll_interval_s: float = 0.05,
    ) -> None:
        super().__init__(store, clock)
        self.launcher = launcher  # set by the provider that builds it (it needs the provider's operations)
        self.poll_interval_s = poll_interval_s

    async def recover(self) -> None:
        """At start-up: go on with every execution an earlier server was running or stopping."""
        for row in await self._rows(ACTIVE):
            self.launch(row.name)

    async def _end(self, name: str, status: str, reason: str | None) -> None:
        if reason == SHUTDOWN_REASON:
            return  # the platform stops: the execution stays Executing and goes on after the restart
        await self._finish(name, status, reason)

    async def _run(self, run: Run) -> None:
        name = run.name
        try:
            data = await self._describe(name)
            view = _View(pd.parse(data["_Definition"]))
            while not run.shutting_down:
                if await self._turn(run, view):
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.stop_requested.wait(), self.poll_interval_s)
        except Exception as exc:
            if run.shutting_down:
                return
            log.exception("pipeline execution %s failed inside the platform", name)
            await self._finish(name, Status.FAILED, f"InternalServerError: {type(exc).__name__}: {exc}")

    # --- one turn --------------------------------------------------------------------------------------

    async def _turn(self, run: Run, view: _View) -> bool:
        row = await asyncio.to_thread(self.store.get_resource, KIND, run.name)
        if row is None or row.status not in ACTIVE:
            return True
        data = row.data
        steps: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (data.get("_Steps") or {}).items()}
        before = repr(steps)
        stopping = row.status == Status.STOPPING or run.stop_requested.is_set()
        for rec in list(steps.values()):
            if rec["StepStatus"] in LIVE:
                await self._poll(data, view, steps, rec, stopping)
        if run.shutting_down:
            return True
        statuses = {n: r["StepStatus"] for n, r in steps.items()}
        outcomes = {n: r["_Outcome"] for n, r in steps.items() if "_Outcome" in r}
        excluded = set(data.get("_Excluded") or ())
        ready, _never = pd.plan(view.definition, statuses, outcomes)
        ready = [n for n in ready if n not in excluded]
        failed = any(s == pd.FAILED for s in statuses.values())
        live = sum(1 for s in statuses.values() if s in LIVE)
        if not stopping and not failed:
            limit = int((data.get("ParallelismConfiguration") or {}).get("MaxParallelExecutionSteps") or 0)
            room = (limit or DEFAULT_PARALLELISM) - live
            for name in ready[: max(room, 0)]:
                steps[name] = await self._start(data, view, steps, name)
                live += steps[name]["StepStatus"] in LIVE
                if steps[name]["StepStatus"] == pd.FAILED:
                    break
            statuses = {n: r["StepStatus"] for n, r in steps.items()}
            failed = any(s == pd.FAILED for s in statuses.values())
        if repr(steps) != before:
            await self._save(run.name, _Steps=steps)
        if live:
            return False
        if not stopping and not failed:
            ready, _ = pd.plan(
                view.definition, statuses, {n: r["_Outcome"] for n, r in steps.items() if "_Outcome" in r}
            )
            if [n for n in ready if n not in excluded]:
                return False
        if stopping:
            await self._finish(run.name, Status.STOPPED, None)
        elif failed:
            await self._finish(run.name, Status.FAILED, STEP_FAILURE)
        else:
            await self._finish(run.name, Status.SUCCEEDED, None)
        return True

    # --- starting a step ----------------------------------------------------------------------------

    def _scope(self, data: dict[str, Any], view: _View, steps: dict[str, dict[str, Any]], job: str = "") -> ex.Scope:
        now = epoch(self.clock())
        execution = {
            **data["_Variables"],
            "CurrentDateTime": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(),
            "TrainingJobName": job,
            "ProcessingJobName": job,
        }

        def properties(step: str) -> Any:
            rec = steps.get(step)
            if rec is None or rec["StepStatus"] != pd.SUCCEEDED:
                raise ex.ExpressionError(f"step '{step}' has not succeeded, so its properties are not known")
            if "_Output" in rec:
                return rec["_Output"]
            assert self.launcher is not None
            return self.launcher.properties(rec["_Type"], rec["_Job"])

        def property_file(step: str, name: str) -> Any:
            if (step, name) not in view.files:
                declared = {p["PropertyFileName"]: p for p in view.definition.steps[step].property_files}
                pf = declared[name]
                outputs = ex.walk(properties(step), ["ProcessingOutputConfig", "Outputs", pf["OutputName"]], step)
                uri = outputs["S3Output"]["S3Uri"].rstrip("/") + "/" + pf["FilePath"].lstrip("/")
                assert self.launcher is not None
                try:
                    view.files[(step, name)] = self.launcher.read_json(uri)
                except Exception as exc:
                    raise ex.ExpressionError(f"property file '{name}' of step '{step}' ({uri}): {exc}") from exc
            return view.files[(step, name)]

        def s3_json(uri: str) -> Any:
            assert self.launcher is not None
            try:
                return self.launcher.read_json(uri)
            except Exception as exc:
                raise ex.ExpressionError(f"JsonGet of {uri}: {exc}") from exc

        return ex.Scope(data["_Parameters"], execution, properties, property_file, s3_json)

    async def _start(
        self, data: dict[str, Any], view: _View, steps: dict[str, dict[str, Any]], name: str
    ) -> dict[str, Any]:
        step = view.definition.steps[name]
        now = epoch(self.clock())
        rec: dict[str, Any] = {
            "StepName": name,
            "StepStatus": EXECUTING,
            "StartTime": now,
            "AttemptCount": int((data.get("_Attempts") or {}).get(name, 0)) + 1,
            "_Type": step.type,
            "_FirstStart": now,
            "_PolicyList": list(step.retry_policies),
        }
        for member, key in (("DisplayName", "StepDisplayName"), ("Description", "StepDescription")):
            if step.document.get(member):
                rec[key] = step.document[member]
        try:
            if step.type == "Condition":
                scope = self._scope(data, view, steps)
                outcome = all(ex.condition(c, scope) for c in step.arguments["Conditions"])
                rec["_Outcome"] = outcome
                rec["Metadata"] = {"Condition": {"Outcome": "True" if outcome else "False"}}
                return self._step_end(rec, pd.SUCCEEDED)
            if step.type == "Fail":
                message = ex.to_text(
                    ex.evaluate((step.arguments or {}).get("ErrorMessage", ""), self._scope(data, view, steps))
                )
                rec["Metadata"] = {"Fail": {"ErrorMessage": message}}
                return self._step_end(rec, pd.FAILED, message)
            if step.type == "Callback":
                return await self._callback(data, view, steps, step, rec)
            arguments = ex.evaluate(step.arguments, self._scope(data, view, steps, "<job>"))
            if step.type == "QualityCheck":
                given = ex.evaluate(checks.fields(step.document), self._scope(data, view, steps))
                arguments, rec["_Check"] = checks.prepare(arguments, given)
        except checks.CheckRefused as exc:
            return self._step_end(rec, pd.FAILED, f"Step {name}: {exc}")
        except ex.ExpressionError as exc:
            return self._step_end(rec, pd.FAILED, f"Step {name}: {exc}.")
        except Exception as exc:  # a condition comparing what cannot be compared, and the like
            return self._step_end(rec, pd.FAILED, f"Step {name}: {type(exc).__name__}: {exc}.")
        if step.cache and step.cache.get("Enabled") and step.type in policies.CACHEABLE:
            rec["_Key"] = policies.cache_key(step.type, arguments)
            hit = await asyncio.to_thread(self._cached, data, step, rec["_Key"])
            if hit is not None:
                source_arn, source = hit
                rec.update({"_Job": source["_Job"], "Metadata": source.get("Metadata", {})})
                rec["CacheHitResult"] = {"SourcePipelineExecutionArn": source_arn}
                return self._step_end(rec, pd.SUCCEEDED)
        rec["_Arguments"] = arguments
        await self._launch_job(data, steps, rec)
        return rec

    async def _launch_job(self, data: dict[str, Any], steps: dict[str, dict[str, Any]], rec: dict[str, Any]) -> None:
        """Create the step's resource (its next attempt), recorded before it starts."""
        assert self.launcher is not None
        kind = rec["_Type"]
        member, meta = RESOURCES[kind]
        execution_id = data["_Variables"]["PipelineExecutionId"]
        arguments = dict(rec["_Arguments"])
        given = arguments.get(member) if kind in ("EndpointConfig", "Endpoint") else None
        limit = 32 if kind == "Tuning" else 63
        job = given or resource_name(execution_id, rec["StepName"], secrets.token_hex(4), limit)
        if member:
            arguments[member] = job
        arguments = _with_job_name(arguments, job)
        rec.update({"_Job": job, "StepStatus": EXECUTING})
        rec.pop("_RetryAt", None)
        steps[rec["StepName"]] = rec
        await self._save(data["_Name"], _Steps=steps)
        try:
            job, arn = await self.launcher.start(kind, job, arguments, data["_Context"], data["PipelineExecutionArn"])
        except StepRejected as exc:
            self._failed(rec, policies.classify(exc.code, exc.message), f"{exc.code}: {exc.message}")
            return
        rec["_Job"] = job
        rec["Metadata"] = {meta: {"Arn": arn}}

    async def _callback(
        self, data: dict[str, Any], view: _View, steps: dict[str, dict[str, Any]], step: pd.Step, rec: dict[str, Any]
    ) -> dict[str, Any]:
        arguments = ex.evaluate(step.arguments, self._scope(data, view, steps))
        token = secrets.token_hex(5)  # CallbackToken is at most 10 characters
        rec["_Token"] = token
        rec["Metadata"] = {
            "Callback": {
                "CallbackToken": token,
                "SqsQueueUrl": arguments.get("SqsQueueUrl", ""),
                "OutputParameters": [],
            }
        }
        now = self.clock()
        waiting = {"PipelineExecutionArn": data["PipelineExecutionArn"], "StepName": step.name}
        row = Resource(
            CALLBACK_KIND, token, f"{data['PipelineExecutionArn']}/callback/{token}", WAITING, now, now, waiting
        )
        await asyncio.to_thread(self.store.create_resource, row)
        return rec

    def _cached(self, data: dict[str, Any], step: pd.Step, key: str) -> tuple[str, dict[str, Any]] | None:
        """The most recent successful run of this step with the same key within ExpireAfter."""
        expire = step.cache.get("ExpireAfter") if step.cache else None
        oldest = epoch(self.clock() - policies.duration(expire)) if expire else 0.0
        best: tuple[float, str, dict[str, Any]] | None = None
        for row in self.store.list_resources(KIND, parent_arn=data["PipelineArn"], limit=100):
            if row.name == data["_Name"]:
                continue
            rec = (row.data.get("_Steps") or {}).get(step.name)
            if not rec or rec.get("StepStatus") != pd.SUCCEEDED or rec.get("_Key") != key:
                continue
            ended = float(rec.get("EndTime") or 0)
            if ended < oldest or (best is not None and ended <= best[0]):
                continue
            source = (rec.get("CacheHitResult") or {}).get("SourcePipelineExecutionArn") or row.arn
            best = (ended, source, rec)
        return None if best is None else (best[1], best[2])

    # --- watching a step ------------------------------------------------------------------------------

    async def _poll(
        self, data: dict[str, Any], view: _View, steps: dict[str, dict[str, Any]], rec: dict[str, Any], stopping: bool
    ) -> None:
        assert self.launcher is not None
        kind = rec["_Type"]
        if kind == "Callback":
            await self._poll_callback(rec, stopping)
            return
        if "_RetryAt" in rec:
            if stopping:
                self._step_end(rec, pd.STOPPED)
            elif epoch(self.clock()) >= rec["_RetryAt"]:
                rec["AttemptCount"] = int(rec.get("AttemptCount", 1)) + 1
                await self._launch_job(data, steps, rec)
            return
        state, reason = await asyncio.to_thread(self.launcher.state, kind, rec["_Job"])
        if state is None:  # recorded, never created (the platform stopped in between)
            await self._launch_job(data, steps, rec)
            return
        if state == RUNNING:
            if stopping and rec["StepStatus"] != STOPPING:
                await asyncio.to_thread(self.launcher.stop, kind, rec["_Job"])
                rec["StepStatus"] = STOPPING
            return
        if state == pd.FAILED and reason and reason.startswith(_PLATFORM_REASONS) and not stopping:
            log.info("pipeline execution %s: step %s runs again after a restart", data["_Name"], rec["StepName"])
            rec["AttemptCount"] = int(rec.get("AttemptCount", 1)) + 1
            await self._launch_job(data, steps, rec)
            return
        if state == pd.FAILED:
            self._failed(rec, None if stopping else policies.classify(None, reason or ""), reason or "")
            return
        if kind == "QualityCheck" and state == pd.SUCCEEDED:
            arn = rec["Metadata"]["QualityCheck"]["Arn"]
            try:
                output, rec["Metadata"], failure = await asyncio.to_thread(
                    checks.conclude, rec["_Check"], arn, self.launcher.read_json
                )
            except Exception as exc:  # the job wrote no report where it should have
                output, failure = {}, f"ClientError: the check job's report could not be read: {exc}"
            rec["_Output"] = output
            if failure:
                self._step_end(rec, pd.FAILED, failure)
                return
        self._step_end(rec, state)

    async def _poll_callback(self, rec: dict[str, Any], stopping: bool) -> None:
        row = await asyncio.to_thread(self.store.get_resource, CALLBACK_KIND, rec["_Token"])
        if row is None or row.status == WAITING:
            if stopping:
                self._step_end(rec, pd.STOPPED)
            return
        outputs = row.data.get("OutputParameters") or []
        rec["_Output"] = {"OutputParameters": {o["Name"]: o["Value"] for o in outputs}}
        rec["Metadata"]["Callback"]["OutputParameters"] = outputs
        if row.status == pd.SUCCEEDED:
            self._step_end(rec, pd.SUCCEEDED)
        else:
            self._step_end(rec, pd.FAILED, row.data.get("FailureReason") or "The callback reported a failure.")

    def _failed(self, rec: dict[str, Any], exception_type: str | None, reason: str) -> None:
        """The attempt failed: retry it when a RetryPolicy says so, else end the step Failed."""
        waited = epoch(self.clock()) - float(rec.get("_FirstStart") or 0)
        delay = policies.next_retry(
            rec.get("_PolicyList") or [], exception_type, int(rec.get("AttemptCount", 1)), waited
        )
        if delay is not None:
            rec["_RetryAt"] = epoch(self.clock()) + delay
            rec["_LastFailure"] = reason
            return
        self._step_end(rec, pd.FAILED, reason)

    def _step_end(self, rec: dict[str, Any], status: str, reason: str | None = None) -> dict[str, Any]:
        rec["StepStatus"] = status
        rec["EndTime"] = epoch(self.clock())
        rec.pop("_RetryAt", None)
        if reason:
            rec["FailureReason"] = reason[:1024]
        rec.setdefault("Metadata", {})
        return rec

    async def _finish(self, name: str, status: str, reason: str | None) -> None:
        def edit(data: dict[str, Any]) -> None:
            if reason:
                data["FailureReason"] = reason
            else:
                data.pop("FailureReason", None)

        await self._move(name, status, edit=edit, quiet_from=(Status.SUCCEEDED, Status.FAILED, Status.STOPPED))


def _with_job_name(arguments: dict[str, Any], job: str) -> dict[str, Any]:
    """Execution.TrainingJobName / ProcessingJobName were resolved as a placeholder: the job's name."""

    def fix(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("<job>", job)
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    return fix(arguments)
