"""Amazon EventBridge: rules with event patterns on the default bus, their targets, PutEvents.

The platform's own events (:mod:`opensage.events.sagemaker`: training, processing, transform and
tuning jobs, endpoints, model packages, pipeline executions and their steps) and the events sent with
PutEvents are matched against the enabled rules (:mod:`opensage.events.bus`).

LIMITATIONS: one event bus, ``default`` (CreateEventBus, archives, replays, API destinations,
connections and endpoints are not served); rules need an ``EventPattern`` (``ScheduleExpression``
rules are refused: no scheduler runs them); targets are SageMaker pipelines and CloudWatch Logs log
groups (others are answered in ``FailedEntries``); ``RetryPolicy`` and ``DeadLetterConfig`` are
recorded, a failed invocation is logged (and counted in CloudWatch's ``AWS/Events`` FailedInvocations)
and not retried; ``RoleArn`` is recorded, not assumed. Events wait in memory for their delivery: a
crash of the server loses those not yet delivered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.aws.dispatch import DispatchTable
from opensage.aws.pagination import decode_token, encode_token, invalid_token
from opensage.errors import AlreadyExists, NotFound, ServiceError
from opensage.events import patterns, targets
from opensage.events.bus import DEFAULT_BUS, RULE, EventBus, rule_key
from opensage.events.sagemaker import envelope
from opensage.store import tags
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

MAX_TARGETS = 5  # per rule, as on AWS
_RULE_MEMBERS = (
    "Name",
    "Arn",
    "EventPattern",
    "ScheduleExpression",
    "State",
    "Description",
    "RoleArn",
    "ManagedBy",
    "EventBusName",
    "CreatedBy",
)


def _not_found(message: str) -> ServiceError:
    return ServiceError("ResourceNotFoundException", message)


def _invalid(message: str) -> ServiceError:
    return ServiceError("ValidationException", message)


def _bus(request: dict[str, Any]) -> str:
    name = request.get("EventBusName") or DEFAULT_BUS
    name = name.rsplit("/", 1)[-1] if name.startswith("arn:") else name
    if name != DEFAULT_BUS:
        raise _not_found(f"Event bus {name} does not exist; OpenSage has the default event bus only.")
    return name


def _page(items: list[Any], request: dict[str, Any]) -> tuple[list[Any], str | None]:
    start = 0
    if request.get("NextToken"):
        try:
            start = int(decode_token(request["NextToken"], "events"))
        except ValueError as exc:
            raise invalid_token(request["NextToken"]) from exc
    size = request.get("Limit") or 100
    more = start + size < len(items)
    return items[start : start + size], encode_token("events", str(start + size)) if more else None


class EventsProvider:
    def __init__(self, store: SqlStore, clock: Callable[[], dt.datetime], bus: EventBus) -> None:
        self.store = store
        self.clock = clock
        self.bus = bus

    def _rule(self, request: dict[str, Any], member: str = "Name") -> Resource:
        bus, name = _bus(request), request[member]
        row = self.store.get_resource(RULE, rule_key(bus, name))
        if row is None:
            raise _not_found(f"Rule {name} does not exist on EventBus {bus}.")
        return row

    # --- rules -------------------------------------------------------------------------------------------

    def put_rule(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        bus, name = _bus(request), request["Name"]
        if request.get("ScheduleExpression"):
            raise _invalid("ScheduleExpression rules are not supported in OpenSage; give an EventPattern.")
        if not request.get("EventPattern"):
            raise _invalid("Parameter(s) EventPattern or ScheduleExpression must be specified.")
        try:
            patterns.parse(request["EventPattern"])
        except patterns.InvalidPattern as exc:
            raise ServiceError("InvalidEventPatternException", f"Event pattern is not valid. Reason: {exc}") from exc
        state = request.get("State") or "ENABLED"
        if state not in ("ENABLED", "DISABLED"):
            raise _invalid(f"State {state} is not supported; use ENABLED or DISABLED.")
        arn = ctx.arn("events", f"rule/{name}")
        now = self.clock()
        fields: dict[str, Any] = {k: request[k] for k in ("EventPattern", "Description", "RoleArn") if k in request}
        fields.update(Name=name, Arn=arn, State=state, EventBusName=bus, CreatedBy=ctx.account_id)
        key = rule_key(bus, name)

        def change(row: Resource) -> tuple[dict[str, Any], str | None]:
            data = {k: v for k, v in row.data.items() if k not in ("Description", "RoleArn")}
            return {**data, **fields}, state

        try:
            self.store.create_resource(Resource(RULE, key, arn, state, now, now, {**fields, "Targets": []}))
        except AlreadyExists:
            self.store.modify_resource(RULE, key, change, now=now)
        if request.get("Tags"):
            tags.put_tags(self.store, arn, request["Tags"], now)
        return {"RuleArn": arn}

    def describe_rule(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        data = self._rule(request).data
        return {k: data[k] for k in _RULE_MEMBERS if k in data}

    def list_rules(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        bus = _bus(request)
        rows = sorted(
            (r for r in self.store.list_resources(RULE) if r.data.get("EventBusName") == bus),
            key=lambda r: r.data["Name"],
        )
        prefix = request.get("NamePrefix") or ""
        found = [r.data for r in rows if r.data["Name"].startswith(prefix)]
        page, token = _page(found, request)
        keep = ("Name", "Arn", "EventPattern", "State", "Description", "RoleArn", "ManagedBy", "EventBusName")
        return {"Rules": [{k: d[k] for k in keep if k in d} for d in page], "NextToken": token}

    def delete_rule(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        try:
            row = self._rule(request)
        except ServiceError:
            return {}  # AWS answers a missing rule's delete with success
        if row.data.get("Targets") and not request.get("Force"):
            raise _invalid("Rule can't be deleted since it has targets.")
        try:
            self.store.delete_resource(RULE, row.name)
        except NotFound:
            return {}
        tags.drop_tags(self.store, row.arn)
        return {}

    def _set_state(self, request: dict[str, Any], state: str) -> dict[str, Any]:
        row = self._rule(request)
        self.store.modify_resource(RULE, row.name, lambda r: ({**r.data, "State": state}, state), now=self.clock())
        return {}

    def enable_rule(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return self._set_state(request, "ENABLED")

    def disable_rule(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return self._set_state(request, "DISABLED")

    # --- targets -----------------------------------------------------------------------------------------

    def _check_target(self, target: dict[str, Any]) -> str | None:
        """Why ``target`` cannot be delivered to, None when it can."""
        paths = {"InputPath": target.get("InputPath")}
        for key, path in ((target.get("InputTransformer") or {}).get("InputPathsMap") or {}).items():
            paths[f"InputTransformer.InputPathsMap.{key}"] = path
        try:
            kind = targets.kind_of(target["Arn"])
            for member, path in paths.items():
                if path:
                    targets.check_path(path, member)
        except (targets.UnsupportedTarget, ValueError) as exc:
            return str(exc)
        if kind == "pipeline" and not target.get("RoleArn"):
            return "RoleArn is required for a SageMaker pipeline target."
        if kind != "pipeline" and target.get("SageMakerPipelineParameters"):
            return "SageMakerPipelineParameters are for a SageMaker pipeline target."
        if sum(1 for k in ("Input", "InputPath", "InputTransformer") if target.get(k) is not None) > 1:
            return "Give at most one of Input, InputPath and InputTransformer."
        if target.get("Input") is not None:
            try:
                json.loads(target["Input"])
            except ValueError:
                return "Input must be valid JSON text."
        return None

    def put_targets(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._rule(request, "Rule")
        failed, accepted = [], []
        for target in request["Targets"]:
            reason = self._check_target(target)
            if reason:
                failed.append({"TargetId": target["Id"], "ErrorCode": "ValidationException", "ErrorMessage": reason})
            else:
                accepted.append(target)

        def change(current: Resource) -> tuple[dict[str, Any], str | None]:
            ids = {t["Id"] for t in accepted}
            kept = [t for t in current.data.get("Targets") or [] if t["Id"] not in ids] + accepted
            if len(kept) > MAX_TARGETS:
                raise ServiceError(
                    "LimitExceededException",
                    f"The requested resource exceeds the maximum number allowed ({MAX_TARGETS} targets per rule).",
                )
            return {**current.data, "Targets": kept}, None

        self.store.modify_resource(RULE, row.name, change, now=self.clock())
        return {"FailedEntryCount": len(failed), "FailedEntries": failed}

    def remove_targets(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._rule(request, "Rule")
        ids = set(request["Ids"])
        present = {t["Id"] for t in row.data.get("Targets") or []}
        failed = [
            {"TargetId": i, "ErrorCode": "ResourceNotFoundException", "ErrorMessage": f"Target {i} does not exist."}
            for i in request["Ids"]
            if i not in present
        ]
        self.store.modify_resource(
            RULE,
            row.name,
            lambda r: ({**r.data, "Targets": [t for t in r.data.get("Targets") or [] if t["Id"] not in ids]}, None),
            now=self.clock(),
        )
        return {"FailedEntryCount": len(failed), "FailedEntries": failed}

    def list_targets_by_rule(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        page, token = _page(list(self._rule(request, "Rule").data.get("Targets") or []), request)
        return {"Targets": page, "NextToken": token}

    def list_rule_names_by_target(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        bus = _bus(request)
        names = sorted(
            r.data["Name"]
            for r in self.store.list_resources(RULE)
            if r.data.get("EventBusName") == bus
            and any(t["Arn"] == request["TargetArn"] for t in r.data.get("Targets") or [])
        )
        page, token = _page(names, request)
        return {"RuleNames": page, "NextToken": token}

    # --- events ------------------------------------------------------------------------------------------

    def test_event_pattern(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        try:
            pattern = patterns.parse(request["EventPattern"])
        except patterns.InvalidPattern as exc:
            raise ServiceError("InvalidEventPatternException", f"Event pattern is not valid. Reason: {exc}") from exc
        try:
            event = json.loads(request["Event"])
        except ValueError as exc:
            raise _invalid("Event is not valid JSON.") from exc
        missing = [k for k in ("id", "account", "source", "time", "region", "detail-type") if k not in event]
        if not isinstance(event, dict) or missing:
            raise _invalid(f"Parameter Event is not valid: it lacks {', '.join(missing) or 'an object'}.")
        return {"Result": patterns.matches(pattern, event)}

    async def put_events(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        entries, failed = [], 0
        for entry in request["Entries"]:
            error = self._entry_error(entry)
            if error:
                failed += 1
                entries.append(error)
                continue
            when = entry.get("Time") or self.clock()
            event = envelope(
                entry["DetailType"],
                entry["Source"],
                json.loads(entry["Detail"]),
                list(entry.get("Resources") or []),
                ctx.region,
                ctx.account_id,
                when,
            )
            self.bus.publish(event, _bus(entry))
            entries.append({"EventId": event["id"]})
        await asyncio.sleep(0)
        return {"FailedEntryCount": failed, "Entries": entries}

    @staticmethod
    def _entry_error(entry: dict[str, Any]) -> dict[str, str] | None:
        for member in ("Source", "DetailType", "Detail"):
            if not entry.get(member):
                return {"ErrorCode": "InvalidArgument", "ErrorMessage": f"Parameter {member} is not valid."}
        if entry["Source"].startswith("aws."):
            return {
                "ErrorCode": "NotAuthorizedForSourceException",
                "ErrorMessage": "Not authorized for the source: sources starting with aws. are AWS's own.",
            }
        try:
            detail = json.loads(entry["Detail"])
        except ValueError:
            detail = None
        if not isinstance(detail, dict):
            return {"ErrorCode": "MalformedDetail", "ErrorMessage": "Detail is malformed: it must be a JSON object."}
        if (entry.get("EventBusName") or DEFAULT_BUS).rsplit("/", 1)[-1] != DEFAULT_BUS:
            return {"ErrorCode": "InvalidArgument", "ErrorMessage": "OpenSage has the default event bus only."}
        return None

    # --- the bus and tags --------------------------------------------------------------------------------

    def describe_event_bus(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = _bus({"EventBusName": request.get("Name")})
        return {"Name": name, "Arn": ctx.arn("events", f"event-bus/{name}")}

    def list_event_buses(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        buses = (
            []
            if not DEFAULT_BUS.startswith(request.get("NamePrefix") or "")
            else [{"Name": DEFAULT_BUS, "Arn": ctx.arn("events", f"event-bus/{DEFAULT_BUS}")}]
        )
        return {"EventBuses": buses}

    def _tagged(self, arn: str) -> str:
        if not any(r.arn == arn for r in self.store.list_resources(RULE)):
            raise _not_found(f"Rule {arn.rsplit('/', 1)[-1]} does not exist on EventBus {DEFAULT_BUS}.")
        return arn

    def tag_resource(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        tags.put_tags(self.store, self._tagged(request["ResourceARN"]), request["Tags"], self.clock())
        return {}

    def untag_resource(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        tags.remove_tags(self.store, self._tagged(request["ResourceARN"]), request["TagKeys"], self.clock())
        return {}

    def list_tags_for_resource(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {"Tags": tags.get_tags(self.store, self._tagged(request["ResourceARN"]))}


def pipeline_starter(
    table: DispatchTable,
    account_id: str,
    region: str,
    principal_arn: str,
    description: str = "Started by an EventBridge rule",
    service: str = "events",
) -> targets.PipelineStarter:
    """What a rule's (or a schedule's) SageMaker pipeline target calls: StartPipelineExecution through the
    very handler the API serves (so a pipeline target works wherever the platform serves pipelines)."""

    async def start(pipeline_arn: str, parameters: list[dict[str, str]], role_arn: str | None) -> str:
        match = targets.PIPELINE_ARN.fullmatch(pipeline_arn)
        if match is None:
            raise ValueError(f"{pipeline_arn} is not a pipeline ARN")
        token = uuid.uuid4().hex
        ctx = RequestContext(
            "sagemaker", "StartPipelineExecution", region, account_id, token, service, principal_arn, service
        )
        request: dict[str, Any] = {
            "PipelineName": match.group(1),
            "ClientRequestToken": token,
            "PipelineExecutionDescription": description,
        }
        if parameters:
            request["PipelineParameters"] = parameters
        answer = await table.call("sagemaker", "StartPipelineExecution", ctx, request)
        return str(answer["PipelineExecutionArn"])

    return start
