"""CloudWatch Logs over real HTTP with boto3, and the SageMaker SDK's log tailing against it."""

from __future__ import annotations

import io
import threading
import time
import types
from collections.abc import Iterator
from contextlib import redirect_stdout
from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers import ApiServer
from opensage.logstore import LogStore
from opensage.providers.logs import LogsProvider

JOBS = "/aws/sagemaker/TrainingJobs"


@pytest.fixture(scope="module")
def store(api: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogStore]:
    """A fresh log store served as the ``logs`` service of the shared in-process API server."""
    store = LogStore(tmp_path_factory.mktemp("cloudwatch"))
    gateway = api.platform.gateway
    table = gateway.table
    gateway.table = table.replaced("logs", LogsProvider(store))
    yield store
    gateway.table = table


@pytest.fixture
def logs(api: ApiServer, store: LogStore) -> Any:
    return api.client("logs")


def now_ms() -> int:
    return int(time.time() * 1000)


def error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"]


def test_log_group_lifecycle(logs: Any) -> None:
    logs.create_log_group(logGroupName="/test/groups/a", tags={"team": "ml"})
    logs.create_log_group(logGroupName="/test/groups/b")
    with pytest.raises(ClientError) as exc:
        logs.create_log_group(logGroupName="/test/groups/a")
    assert error(exc)[0] == "ResourceAlreadyExistsException"
    groups = logs.describe_log_groups(logGroupNamePrefix="/test/groups/")["logGroups"]
    assert [g["logGroupName"] for g in groups] == ["/test/groups/a", "/test/groups/b"]
    a = groups[0]
    assert a["arn"].startswith("arn:aws:logs:us-east-1:") and a["arn"].endswith(":log-group:/test/groups/a:*")
    assert a["logGroupArn"] == a["arn"][:-2]
    assert a["storedBytes"] == 0 and a["creationTime"] > 0
    pattern = logs.describe_log_groups(logGroupNamePattern="GROUPS/B")["logGroups"]
    assert [g["logGroupName"] for g in pattern] == ["/test/groups/b"]
    by_arn = logs.describe_log_groups(logGroupIdentifiers=[a["logGroupArn"]])["logGroups"]
    assert [g["logGroupName"] for g in by_arn] == ["/test/groups/a"]
    with pytest.raises(ClientError) as exc:
        logs.describe_log_groups(logGroupNamePrefix="/test", logGroupNamePattern="x")
    assert error(exc)[0] == "InvalidParameterException"
    logs.delete_log_group(logGroupName="/test/groups/b")
    with pytest.raises(ClientError) as exc:
        logs.delete_log_group(logGroupName="/test/groups/b")
    assert error(exc) == ("ResourceNotFoundException", "The specified log group does not exist.")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_log_stream_lifecycle(logs: Any) -> None:
    with pytest.raises(ClientError) as exc:
        logs.create_log_stream(logGroupName="/test/missing", logStreamName="s")
    assert error(exc) == ("ResourceNotFoundException", "The specified log group does not exist.")
    logs.create_log_group(logGroupName="/test/streams")
    for name in ("job/algo-2", "job/algo-1", "other"):
        logs.create_log_stream(logGroupName="/test/streams", logStreamName=name)
    with pytest.raises(ClientError) as exc:
        logs.create_log_stream(logGroupName="/test/streams", logStreamName="other")
    assert error(exc)[0] == "ResourceAlreadyExistsException"
    t = now_ms()
    logs.put_log_events(
        logGroupName="/test/streams", logStreamName="other", logEvents=[{"timestamp": t, "message": "x"}]
    )

    streams = logs.describe_log_streams(logGroupName="/test/streams")["logStreams"]
    assert [s["logStreamName"] for s in streams] == ["job/algo-1", "job/algo-2", "other"]
    assert "firstEventTimestamp" not in streams[0]
    other = streams[2]
    assert (other["firstEventTimestamp"], other["lastEventTimestamp"]) == (t, t)
    assert other["lastIngestionTime"] >= t - 1000 and other["storedBytes"] > 0
    assert other["arn"].endswith(":log-group:/test/streams:log-stream:other")
    desc = logs.describe_log_streams(logGroupName="/test/streams", logStreamNamePrefix="job/", descending=True)
    assert [s["logStreamName"] for s in desc["logStreams"]] == ["job/algo-2", "job/algo-1"]
    latest = logs.describe_log_streams(logGroupName="/test/streams", orderBy="LastEventTime", descending=True, limit=1)
    assert latest["logStreams"][0]["logStreamName"] == "other"
    with pytest.raises(ClientError) as exc:
        logs.describe_log_streams(logGroupName="/test/streams", logStreamNamePrefix="job/", orderBy="LastEventTime")
    assert error(exc) == ("InvalidParameterException", "Cannot order by LastEventTime with a logStreamNamePrefix.")
    with pytest.raises(ClientError) as exc:
        logs.describe_log_streams(logGroupName="/test/missing")
    assert error(exc) == ("ResourceNotFoundException", "The specified log group does not exist.")

    logs.delete_log_stream(logGroupName="/test/streams", logStreamName="other")
    with pytest.raises(ClientError) as exc:
        logs.delete_log_stream(logGroupName="/test/streams", logStreamName="other")
    assert error(exc) == ("ResourceNotFoundException", "The specified log stream does not exist.")


def test_put_and_get_log_events(logs: Any) -> None:
    logs.create_log_group(logGroupName="/test/events")
    logs.create_log_stream(logGroupName="/test/events", logStreamName="s")
    t = now_ms()
    out = logs.put_log_events(
        logGroupName="/test/events",
        logStreamName="s",
        logEvents=[{"timestamp": t + i, "message": f"line {i}"} for i in range(30)],
    )
    assert "rejectedLogEventsInfo" not in out

    head = logs.get_log_events(logGroupName="/test/events", logStreamName="s", startFromHead=True, limit=20)
    assert [e["message"] for e in head["events"]] == [f"line {i}" for i in range(20)]
    assert head["events"][0]["timestamp"] == t and head["events"][0]["ingestionTime"] >= t - 1000
    assert head["nextForwardToken"].startswith("f/") and head["nextBackwardToken"].startswith("b/")
    rest = logs.get_log_events(logGroupName="/test/events", logStreamName="s", nextToken=head["nextForwardToken"])
    assert [e["message"] for e in rest["events"]] == [f"line {i}" for i in range(20, 30)]
    end = logs.get_log_events(logGroupName="/test/events", logStreamName="s", nextToken=rest["nextForwardToken"])
    assert end["events"] == [] and end["nextForwardToken"] == rest["nextForwardToken"]

    tail = logs.get_log_events(logGroupName="/test/events", logStreamName="s", limit=5)
    assert [e["message"] for e in tail["events"]] == [f"line {i}" for i in range(25, 30)]
    back = logs.get_log_events(logGroupName="/test/events", logStreamName="s", nextToken=tail["nextBackwardToken"])
    assert [e["message"] for e in back["events"]] == [f"line {i}" for i in range(25)]
    window = logs.get_log_events(
        logGroupName="/test/events", logStreamName="s", startTime=t + 3, endTime=t + 5, startFromHead=True
    )
    assert [e["message"] for e in window["events"]] == ["line 3", "line 4"]
    group_arn = logs.describe_log_groups(logGroupNamePrefix="/test/events")["logGroups"][0]["logGroupArn"]
    by_arn = logs.get_log_events(logGroupIdentifier=group_arn, logStreamName="s", limit=1)
    assert [e["message"] for e in by_arn["events"]] == ["line 29"]


def test_put_log_events_rules(logs: Any) -> None:
    logs.create_log_group(logGroupName="/test/rules")
    logs.create_log_stream(logGroupName="/test/rules", logStreamName="s")
    t = now_ms()
    for group, stream, message in [
        ("/test/nope", "s", "The specified log group does not exist."),
        ("/test/rules", "nope", "The specified log stream does not exist."),
    ]:
        with pytest.raises(ClientError) as exc:
            logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[{"timestamp": t, "message": "m"}])
        assert error(exc) == ("ResourceNotFoundException", message)
    with pytest.raises(ClientError) as exc:
        logs.put_log_events(
            logGroupName="/test/rules",
            logStreamName="s",
            logEvents=[{"timestamp": t, "message": "b"}, {"timestamp": t - 1, "message": "a"}],
        )
    assert error(exc) == (
        "InvalidParameterException",
        "Log events in a single PutLogEvents request must be in chronological order.",
    )
    day = 86_400_000
    with pytest.raises(ClientError) as exc:
        logs.put_log_events(
            logGroupName="/test/rules",
            logStreamName="s",
            logEvents=[{"timestamp": t - 2 * day, "message": "a"}, {"timestamp": t, "message": "b"}],
        )
    assert error(exc) == (
        "InvalidParameterException",
        "The batch of log events in a single PutLogEvents request cannot span more than 24 hours.",
    )
    old = logs.put_log_events(
        logGroupName="/test/rules",
        logStreamName="s",
        logEvents=[
            {"timestamp": t - 14 * day - 10_000, "message": "too old"},
            {"timestamp": t - 14 * day - 5_000, "message": "too old too"},
            {"timestamp": t - 14 * day + 3_600_000, "message": "kept old"},
        ],
    )
    assert old["rejectedLogEventsInfo"] == {"tooOldLogEventEndIndex": 2}
    new = logs.put_log_events(
        logGroupName="/test/rules",
        logStreamName="s",
        logEvents=[{"timestamp": t, "message": "kept"}, {"timestamp": t + 3 * 3_600_000, "message": "too new"}],
    )
    assert new["rejectedLogEventsInfo"] == {"tooNewLogEventStartIndex": 1}
    got = logs.get_log_events(logGroupName="/test/rules", logStreamName="s", startFromHead=True)
    assert [e["message"] for e in got["events"]] == ["kept old", "kept"]


def test_get_log_events_errors(logs: Any) -> None:
    logs.create_log_group(logGroupName="/test/errors")
    logs.create_log_stream(logGroupName="/test/errors", logStreamName="s")
    with pytest.raises(ClientError) as exc:
        logs.get_log_events(logGroupName="/test/errors", logStreamName="missing")
    assert error(exc) == ("ResourceNotFoundException", "The specified log stream does not exist.")
    with pytest.raises(ClientError) as exc:
        logs.get_log_events(logGroupName="/test/none", logStreamName="s")
    assert error(exc) == ("ResourceNotFoundException", "The specified log group does not exist.")
    with pytest.raises(ClientError) as exc:
        logs.get_log_events(logGroupName="/test/errors", logStreamName="s", nextToken="f/12345")
    assert error(exc) == ("InvalidParameterException", "The specified nextToken is invalid.")
    with pytest.raises(ClientError) as exc:
        logs.get_log_events(logGroupName="/test/errors", logGroupIdentifier="/test/errors", logStreamName="s")
    assert error(exc)[0] == "InvalidParameterException"


def test_describe_paginators(logs: Any) -> None:
    logs.create_log_group(logGroupName="/test/paged")
    names = [f"stream-{i:02d}" for i in range(7)]
    for name in names:
        logs.create_log_stream(logGroupName="/test/paged", logStreamName=name)
    pages = list(
        logs.get_paginator("describe_log_streams").paginate(
            logGroupName="/test/paged", PaginationConfig={"PageSize": 3}
        )
    )
    assert [len(p["logStreams"]) for p in pages] == [3, 3, 1]
    assert [s["logStreamName"] for p in pages for s in p["logStreams"]] == names
    assert "nextToken" not in pages[-1]
    exact = logs.describe_log_streams(logGroupName="/test/paged", limit=7)
    assert "nextToken" not in exact  # the SDK loops for as long as a nextToken comes back
    groups = list(
        logs.get_paginator("describe_log_groups").paginate(
            logGroupNamePrefix="/test/", PaginationConfig={"PageSize": 1}
        )
    )
    assert len(groups) >= 2 and all(len(p["logGroups"]) == 1 for p in groups)


def test_filter_log_events_and_paginator(logs: Any) -> None:
    logs.create_log_group(logGroupName="/test/filter")
    t = now_ms()
    for s, offset in (("a", 0), ("b", 1)):
        logs.create_log_stream(logGroupName="/test/filter", logStreamName=s)
        logs.put_log_events(
            logGroupName="/test/filter",
            logStreamName=s,
            logEvents=[
                {"timestamp": t + 2 * i + offset, "message": f"{s} {'ERROR' if i % 3 == 0 else 'INFO'} step {i}"}
                for i in range(30)
            ],
        )
    all_errors = logs.filter_log_events(logGroupName="/test/filter", filterPattern="ERROR")
    assert len(all_errors["events"]) == 20 and "nextToken" not in all_errors
    stamps = [e["timestamp"] for e in all_errors["events"]]
    assert stamps == sorted(stamps)
    assert {e["logStreamName"] for e in all_errors["events"]} == {"a", "b"}
    assert sorted(s["logStreamName"] for s in all_errors["searchedLogStreams"]) == ["a", "b"]

    pages = list(
        logs.get_paginator("filter_log_events").paginate(
            logGroupName="/test/filter", filterPattern="ERROR", PaginationConfig={"PageSize": 6}
        )
    )
    assert [len(p["events"]) for p in pages] == [6, 6, 6, 2]
    assert [e["eventId"] for p in pages for e in p["events"]] == [e["eventId"] for e in all_errors["events"]]
    phrase = logs.filter_log_events(logGroupName="/test/filter", logStreamNames=["b"], filterPattern='"INFO step 2"')
    assert [e["message"] for e in phrase["events"]] == [f"b INFO step {i}" for i in (2, 20, 22, 23, 25, 26, 28, 29)]
    prefixed = logs.filter_log_events(logGroupName="/test/filter", logStreamNamePrefix="a", startTime=t, endTime=t + 6)
    assert [e["message"] for e in prefixed["events"]] == ["a ERROR step 0", "a INFO step 1", "a INFO step 2"]

    for kwargs in (
        {"filterPattern": '{ $.level = "ERROR" }'},
        {"logStreamNames": ["a"], "logStreamNamePrefix": "a"},
        {"nextToken": "garbage"},
    ):
        with pytest.raises(ClientError) as exc:
            logs.filter_log_events(logGroupName="/test/filter", **kwargs)
        assert error(exc)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        logs.filter_log_events(logGroupName="/test/none")
    assert error(exc) == ("ResourceNotFoundException", "The specified log group does not exist.")


# --- the SageMaker SDK's log tailing -----------------------------------------------------------


def test_sdk_multi_stream_iter_reads_everything_and_stops(
    logs: Any, store: LogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    from sagemaker.logs import Position, multi_stream_iter

    t = now_ms()
    store.put_events(JOBS, "iter-job/algo-1-1", [(t, "one a"), (t, "one b"), (t + 2, "one c")])
    store.put_events(JOBS, "iter-job/algo-2-1", [(t + 1, "two a")])
    streams = ["iter-job/algo-1-1", "iter-job/algo-2-1"]
    got = [(i, e["message"]) for i, e in multi_stream_iter(logs, JOBS, streams)]
    assert got == [(0, "one a"), (0, "one b"), (1, "two a"), (0, "one c")]
    # resuming from a (timestamp, skip) position, as _flush_log_streams does
    positions = {streams[0]: Position(timestamp=t, skip=1), streams[1]: Position(timestamp=t + 1, skip=1)}
    assert [e["message"] for _, e in multi_stream_iter(logs, JOBS, streams, positions)] == ["one b", "one c"]


def test_sdk_logs_for_job_tails_until_the_job_is_done(
    api: ApiServer, logs: Any, store: LogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs the SDK's own ``_logs_for_job`` (what ``Estimator.fit(logs=True)`` does) against the server."""
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    import sagemaker.session as sm_session

    job = "tail-job"
    t = now_ms()
    store.put_events(JOBS, f"{job}/algo-1-100", [(t, "a1 first"), (t, "a1 same ts"), (t + 5, "a1 third")])
    describes = 0

    def describe_training_job(TrainingJobName: str) -> dict[str, Any]:  # noqa: N803 - boto3's argument name
        nonlocal describes
        describes += 1
        if describes == 2:  # the job writes more while it runs, then finishes
            store.put_events(JOBS, f"{job}/algo-1-100", [(t + 5, "a1 fourth, same ts"), (t + 9, "a1 last")])
            store.put_events(JOBS, f"{job}/algo-2-100", [(t + 7, "a2 only")])
        status = "InProgress" if describes < 2 else "Completed"
        return {"TrainingJobName": job, "TrainingJobStatus": status, "ResourceConfig": {"InstanceCount": 2}}

    session = types.SimpleNamespace(
        sagemaker_client=types.SimpleNamespace(describe_training_job=describe_training_job),
        boto_session=types.SimpleNamespace(client=lambda name, config=None: api.client(name)),
    )
    # The SDK describes the job every 30 s and sleeps `poll` s: run its clock fast.
    fake = types.SimpleNamespace(calls=0)

    def fast_time() -> float:
        fake.calls += 1
        return time.time() + 31 * fake.calls

    monkeypatch.setattr(sm_session, "time", types.SimpleNamespace(time=fast_time, sleep=lambda s: time.sleep(0.01)))
    out = io.StringIO()
    result: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: result.update(desc=sm_session._logs_for_job(session, job, wait=True, poll=1)), daemon=True
    )
    with redirect_stdout(out):
        runner.start()
        runner.join(60)
    assert not runner.is_alive(), "the SDK's log tailing did not terminate"
    assert "desc" in result and describes == 2  # it returned (job Completed) after one more status check
    lines = [line for line in out.getvalue().splitlines() if line.strip(".")]
    assert lines == ["a1 first", "a1 same ts", "a1 third", "a1 fourth, same ts", "a2 only", "a1 last"]
