"""Amazon CloudWatch Logs, the part SageMaker users touch: log groups, streams and events."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from typing import Any

from opensage.aws.context import RequestContext
from opensage.errors import AlreadyExists, ServiceError
from opensage.logfiles import EVENT_OVERHEAD, GroupInfo, GroupNotFound, InvalidRequest, StreamInfo, StreamNotFound
from opensage.logstore import LogStore

_DAY_MS = 86_400_000
_TOO_NEW_MS = 2 * 3_600_000  # AWS rejects events more than 2 hours in the future ...
_TOO_OLD_MS = 14 * _DAY_MS  # ... and older than 14 days
_MAX_BATCH_BYTES = 1_048_576


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _invalid(message: str) -> ServiceError:
    return ServiceError("InvalidParameterException", message)


def _no_group() -> ServiceError:
    return ServiceError("ResourceNotFoundException", "The specified log group does not exist.")


def _no_stream() -> ServiceError:
    return ServiceError("ResourceNotFoundException", "The specified log stream does not exist.")


def _group_name(request: dict[str, Any]) -> str:
    """``logGroupName`` or ``logGroupIdentifier`` (a name or an ARN, with or without ``:*``)."""
    name, ident = request.get("logGroupName"), request.get("logGroupIdentifier")
    if name and ident:
        raise _invalid("LogGroup name and LogGroup ARN are mutually exclusive parameters.")
    if not (name or ident):
        raise _invalid("Either logGroupName or logGroupIdentifier must be specified.")
    if name:
        return str(name)
    ident = str(ident)
    if ident.startswith("arn:"):
        resource = ident.split(":", 5)[-1]
        if not resource.startswith("log-group:"):
            raise _invalid(f"{ident} is not a log group ARN.")
        ident = resource.removeprefix("log-group:").removesuffix(":*")
    return ident


class LogsProvider:
    """CloudWatch Logs over :class:`~opensage.logstore.LogStore`.

    Operations: CreateLogGroup, DeleteLogGroup, DescribeLogGroups, CreateLogStream, DeleteLogStream,
    DescribeLogStreams, PutLogEvents, GetLogEvents, FilterLogEvents.

    LIMITATIONS against AWS:
    - No retention (PutRetentionPolicy), subscriptions, metric filters, Insights queries, KMS
      encryption, data protection, cross-account sharing (``includeLinkedAccounts`` and
      ``accountIdentifiers`` are ignored) or tag operations (tags given at CreateLogGroup are kept).
    - GetLogEvents returns events in the order they were stored, which is timestamp order as long as
      each stream is written in time order (as the platform does; AWS sorts). Tokens are byte offsets
      (``f/<offset>``, ``b/<offset>``), valid until the stream is deleted.
    - FilterLogEvents supports terms, ``"quoted phrases"``, ``?term``, ``-term`` and ``%regex%``
      (Python ``re``); JSON and space-delimited patterns answer InvalidParameterException. Names in
      ``logStreamNames`` that do not exist are ignored. ``unmask`` and ``interleaved`` are ignored.
    - PutLogEvents ignores sequence tokens and ``entity``; it rejects (``rejectedLogEventsInfo``)
      events more than 2 hours ahead or 14 days old, like AWS, but there is no retention-based expiry.
    - Events are visible to readers as soon as PutLogEvents returns (AWS: within seconds).
    """

    def __init__(self, store: LogStore, clock: Callable[[], dt.datetime] = _utc_now) -> None:
        self.store = store
        self.clock = clock

    # --- groups -----------------------------------------------------------------------------

    def create_log_group(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        try:
            self.store.create_group(
                request["logGroupName"],
                tags=request.get("tags"),
                log_group_class=request.get("logGroupClass", "STANDARD"),
            )
        except AlreadyExists as exc:
            raise ServiceError("ResourceAlreadyExistsException", "The specified log group already exists") from exc
        return {}

    def delete_log_group(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        try:
            self.store.delete_group(request["logGroupName"])
        except GroupNotFound as exc:
            raise _no_group() from exc
        return {}

    def describe_log_groups(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        prefix, pattern = request.get("logGroupNamePrefix"), request.get("logGroupNamePattern")
        idents = request.get("logGroupIdentifiers")
        if sum(x is not None for x in (prefix, pattern, idents)) > 1:
            raise _invalid(
                "logGroupNamePrefix, logGroupNamePattern and logGroupIdentifiers are mutually exclusive parameters."
            )
        groups = self.store.list_groups(prefix)
        if pattern:
            groups = [g for g in groups if pattern.lower() in g.name.lower()]
        if idents is not None:
            names = {_group_name({"logGroupIdentifier": i}) for i in idents}
            groups = [g for g in groups if g.name in names]
        if request.get("logGroupClass"):
            groups = [g for g in groups if g.log_group_class == request["logGroupClass"]]
        return {"logGroups": [self._group_view(ctx, g) for g in groups]}

    @staticmethod
    def _group_view(ctx: RequestContext, g: GroupInfo) -> dict[str, Any]:
        arn = ctx.arn("logs", f"log-group:{g.name}")
        return {
            "logGroupName": g.name,
            "creationTime": g.creation_time,
            "metricFilterCount": 0,
            "arn": arn + ":*",
            "logGroupArn": arn,
            "storedBytes": g.stored_bytes,
            "logGroupClass": g.log_group_class,
        }

    # --- streams ----------------------------------------------------------------------------

    def create_log_stream(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        try:
            self.store.create_stream(request["logGroupName"], request["logStreamName"])
        except GroupNotFound as exc:
            raise _no_group() from exc
        except AlreadyExists as exc:
            raise ServiceError("ResourceAlreadyExistsException", "The specified log stream already exists") from exc
        return {}

    def delete_log_stream(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        try:
            self.store.delete_stream(request["logGroupName"], request["logStreamName"])
        except GroupNotFound as exc:
            raise _no_group() from exc
        except StreamNotFound as exc:
            raise _no_stream() from exc
        return {}

    def describe_log_streams(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        """Every matching stream; the gateway's generic pagination pages them (``limit`` default 50)
        and sends ``nextToken`` only when more remain, which the SageMaker SDK's stream discovery
        needs (it loops while a ``nextToken`` is present)."""
        group = _group_name(request)
        prefix, order_by = request.get("logStreamNamePrefix"), request.get("orderBy", "LogStreamName")
        if prefix and order_by == "LastEventTime":
            raise _invalid("Cannot order by LastEventTime with a logStreamNamePrefix.")
        try:
            streams = self.store.list_streams(group, prefix, order_by, bool(request.get("descending")))
        except GroupNotFound as exc:
            raise _no_group() from exc
        return {"logStreams": [self._stream_view(ctx, group, s) for s in streams]}

    @staticmethod
    def _stream_view(ctx: RequestContext, group: str, s: StreamInfo) -> dict[str, Any]:
        view: dict[str, Any] = {
            "logStreamName": s.name,
            "creationTime": s.creation_time,
            "arn": ctx.arn("logs", f"log-group:{group}:log-stream:{s.name}"),
            "storedBytes": s.stored_bytes,
        }
        if s.first_event_timestamp is not None:
            view["firstEventTimestamp"] = s.first_event_timestamp
            view["lastEventTimestamp"] = s.last_event_timestamp
            view["lastIngestionTime"] = s.last_ingestion_time
        return view

    # --- events -----------------------------------------------------------------------------

    def put_log_events(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        events = [(e["timestamp"], e["message"]) for e in request["logEvents"]]
        _check_batch(events)
        now = int(self.clock().timestamp() * 1000)
        start = sum(1 for ts, _ in events if ts < now - _TOO_OLD_MS)  # chronological: a prefix ...
        stop = next((i for i, (ts, _) in enumerate(events) if ts > now + _TOO_NEW_MS), len(events))  # ... a suffix
        try:
            if start < stop:
                size = self.store.put_events(
                    request["logGroupName"], request["logStreamName"], events[start:stop], create=False
                )
            else:
                size = self.store.describe_stream(request["logGroupName"], request["logStreamName"]).stored_bytes
        except GroupNotFound as exc:
            raise _no_group() from exc
        except StreamNotFound as exc:
            raise _no_stream() from exc
        out: dict[str, Any] = {"nextSequenceToken": f"{size:056d}"}
        rejected: dict[str, int] = {}
        if start:
            rejected["tooOldLogEventEndIndex"] = start
        if stop < len(events):
            rejected["tooNewLogEventStartIndex"] = stop
        if rejected:
            out["rejectedLogEventsInfo"] = rejected
        return out

    def get_log_events(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        try:
            page = self.store.get_events(
                _group_name(request),
                request["logStreamName"],
                start_time=request.get("startTime"),
                end_time=request.get("endTime"),
                start_from_head=bool(request.get("startFromHead")),
                limit=request.get("limit"),
                token=request.get("nextToken"),
            )
        except GroupNotFound as exc:
            raise _no_group() from exc
        except StreamNotFound as exc:
            raise _no_stream() from exc
        except InvalidRequest as exc:
            raise _invalid(str(exc)) from exc
        return {
            "events": [
                {"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.ingestion_time} for e in page.events
            ],
            "nextForwardToken": page.next_forward_token,
            "nextBackwardToken": page.next_backward_token,
        }

    def filter_log_events(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        names, prefix = request.get("logStreamNames"), request.get("logStreamNamePrefix")
        if names is not None and prefix is not None:
            raise _invalid("logStreamNames and logStreamNamePrefix are mutually exclusive parameters.")
        try:
            page = self.store.filter_events(
                _group_name(request),
                stream_names=names,
                prefix=prefix,
                start_time=request.get("startTime"),
                end_time=request.get("endTime"),
                pattern=request.get("filterPattern"),
                limit=request.get("limit"),
                token=request.get("nextToken"),
            )
        except GroupNotFound as exc:
            raise _no_group() from exc
        except InvalidRequest as exc:
            raise _invalid(str(exc)) from exc
        out: dict[str, Any] = {
            "events": [
                {
                    "logStreamName": e.stream,
                    "timestamp": e.timestamp,
                    "message": e.message,
                    "ingestionTime": e.ingestion_time,
                    "eventId": e.event_id,
                }
                for e in page.events
            ],
            "searchedLogStreams": [{"logStreamName": n, "searchedCompletely": done} for n, done in page.searched],
        }
        if page.next_token:
            out["nextToken"] = page.next_token
        return out


def _check_batch(events: list[tuple[int, str]]) -> None:
    """PutLogEvents' batch rules: chronological, within 24 hours, at most 1 MiB."""
    if any(b[0] < a[0] for a, b in itertools.pairwise(events)):
        raise _invalid("Log events in a single PutLogEvents request must be in chronological order.")
    if events and events[-1][0] - events[0][0] > _DAY_MS:
        raise _invalid("The batch of log events in a single PutLogEvents request cannot span more than 24 hours.")
    size = sum(len(m.encode("utf-8", "surrogatepass")) + EVENT_OVERHEAD for _, m in events)
    if size > _MAX_BATCH_BYTES:
        raise _invalid(f"Upload too large: {size} bytes exceeds limit of {_MAX_BATCH_BYTES}")
