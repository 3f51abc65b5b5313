"""When an EventBridge Scheduler schedule is due: a pure function of its document and the time."""

from __future__ import annotations

import datetime as dt
from typing import Any

from opensage.events.schedules import due, finished, parameters

T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)  # a Monday


def _doc(expression: str, **fields: Any) -> dict[str, Any]:
    return {
        "Name": "s",
        "Arn": "arn:aws:scheduler:us-east-1:111122223333:schedule/default/s",
        "ScheduleExpression": expression,
        "_Since": T0.timestamp(),
        "Target": {"Arn": "arn:aws:sagemaker:us-east-1:111122223333:pipeline/p"},
        **fields,
    }


def test_rate_counts_from_the_start_date_or_the_last_change() -> None:
    doc = _doc("rate(5 minutes)")
    assert due(doc, T0 + dt.timedelta(minutes=4, seconds=59)) is None
    assert due(doc, T0 + dt.timedelta(minutes=5)) == T0 + dt.timedelta(minutes=5)
    fired = {**doc, "_LastFired": (T0 + dt.timedelta(minutes=5)).timestamp()}
    assert due(fired, T0 + dt.timedelta(minutes=9)) is None
    started = _doc("rate(5 minutes)", StartDate=(T0 + dt.timedelta(minutes=2)).timestamp())
    assert due(started, T0 + dt.timedelta(minutes=7)) == T0 + dt.timedelta(minutes=7)


def test_a_platform_that_was_down_fires_a_missed_schedule_once() -> None:
    doc = _doc("rate(1 minute)", _LastFired=(T0 + dt.timedelta(minutes=1)).timestamp())
    back = T0 + dt.timedelta(hours=2, seconds=30)
    assert due(doc, back) == T0 + dt.timedelta(hours=2)  # the last missed moment, not 119 of them
    assert due({**doc, "_LastFired": (T0 + dt.timedelta(hours=2)).timestamp()}, back) is None


def test_cron_in_its_time_zone_and_the_end_date() -> None:
    doc = _doc("cron(30 11 ? * MON-FRI *)", ScheduleExpressionTimezone="Europe/Berlin")  # 10:30 UTC in March
    assert due(doc, T0 + dt.timedelta(minutes=29)) is None
    assert due(doc, T0 + dt.timedelta(minutes=31)) == T0 + dt.timedelta(minutes=30)
    ended = {**doc, "EndDate": (T0 + dt.timedelta(minutes=20)).timestamp()}
    assert due(ended, T0 + dt.timedelta(minutes=31)) is None
    assert finished(ended, T0 + dt.timedelta(minutes=31)) and not finished(doc, T0 + dt.timedelta(minutes=31))


def test_at_fires_once_and_is_then_finished() -> None:
    doc = _doc("at(2026-03-02T10:00:30)")
    assert due(doc, T0 + dt.timedelta(seconds=29)) is None
    assert due(doc, T0 + dt.timedelta(seconds=31)) == T0 + dt.timedelta(seconds=30)
    fired = {**doc, "_LastFired": (T0 + dt.timedelta(seconds=30)).timestamp()}
    assert due(fired, T0 + dt.timedelta(minutes=5)) is None and finished(fired, T0 + dt.timedelta(minutes=5))
    assert due(_doc("at(2026-03-02T09:59:00)"), T0 + dt.timedelta(minutes=5)) is None  # before it was made


def test_context_attributes_in_pipeline_parameters() -> None:
    doc = _doc(
        "rate(1 hour)",
        Target={
            "Arn": "arn:aws:sagemaker:us-east-1:111122223333:pipeline/p",
            "SageMakerPipelineParameters": {
                "PipelineParameterList": [
                    {"Name": "When", "Value": "run-<aws.scheduler.scheduled-time>"},
                    {"Name": "Who", "Value": "<aws.scheduler.schedule-arn>"},
                    {"Name": "Id", "Value": "<aws.scheduler.execution-id>"},
                ]
            },
        },
    )
    assert parameters(doc, T0, "e-1") == [
        {"Name": "When", "Value": "run-2026-03-02T10:00:00Z"},
        {"Name": "Who", "Value": doc["Arn"]},
        {"Name": "Id", "Value": "e-1"},
    ]
