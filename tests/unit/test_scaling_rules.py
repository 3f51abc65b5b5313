"""Alarms, step scaling and schedules: the autoscaler's pure decisions, stepped with numbers and set times."""

from __future__ import annotations

import datetime as dt

import pytest

from opensage.serving.scaling import (
    ALARM,
    INSUFFICIENT_DATA,
    OK,
    AlarmRule,
    Step,
    StepPolicy,
    StepState,
    alarm_state,
    parse_schedule,
    step_decide,
)

UTC = dt.UTC


def test_an_alarm_needs_datapoints_to_alarm_of_the_last_evaluation_periods() -> None:
    rule = AlarmRule(10.0, "GreaterThanThreshold", evaluation_periods=3, datapoints_to_alarm=2)
    assert alarm_state(rule, [5, 11, 12]) == ALARM
    assert alarm_state(rule, [11, 5, 5]) == OK
    assert alarm_state(rule, [20, 20, 5, 5, 11]) == OK  # only the last three count
    assert alarm_state(AlarmRule(10.0, "LessThanOrEqualToThreshold"), [10]) == ALARM
    assert alarm_state(AlarmRule(10.0, "GreaterThanOrEqualToThreshold"), [9.99]) == OK


def test_missing_datapoints_are_treated_as_the_alarm_says() -> None:
    def rule(treat: str) -> AlarmRule:
        return AlarmRule(10.0, "GreaterThanThreshold", evaluation_periods=2, treat_missing=treat)

    assert alarm_state(rule("missing"), [None, None]) == INSUFFICIENT_DATA
    assert alarm_state(rule("breaching"), [None, None]) == ALARM
    assert alarm_state(rule("notBreaching"), [None]) == OK
    assert alarm_state(rule("ignore"), [None, None], current=ALARM) == ALARM
    assert alarm_state(rule("breaching"), [None, 20]) == ALARM  # one missing counted as breaching
    assert alarm_state(rule("missing"), [None, 20]) == OK  # two are needed


OUT = StepPolicy(
    "ChangeInCapacity",
    (Step(0, 50, 1), Step(50, None, 3), Step(None, 0, -1)),
    min_capacity=1,
    max_capacity=6,
    cooldown_s=120,
)


def test_a_step_policy_applies_the_step_that_holds_the_breach() -> None:
    assert step_decide(OUT, 2, 10.0, now=0, state=StepState()) == 3
    assert step_decide(OUT, 2, 50.0, now=0, state=StepState()) == 5  # the lower bound is inclusive
    assert step_decide(OUT, 5, 500.0, now=0, state=StepState()) == 6  # capped at MaxCapacity
    assert step_decide(OUT, 1, -3.0, now=0, state=StepState()) is None  # already at MinCapacity


def test_within_the_cooldown_a_scale_out_must_ask_for_more_and_no_scale_in_happens() -> None:
    state = StepState()
    assert step_decide(OUT, 1, 10.0, now=0, state=state) == 2
    assert step_decide(OUT, 2, 10.0, now=30, state=state) is None  # the same step: its capacity is there
    assert step_decide(OUT, 2, 60.0, now=40, state=state) == 4  # a bigger step: 1 + 3, not 2 + 3
    assert step_decide(OUT, 4, -1.0, now=100, state=state) is None  # no scale-in within the cooldown
    assert step_decide(OUT, 4, -1.0, now=161, state=state) == 3
    assert step_decide(OUT, 3, 10.0, now=400, state=state) == 4  # after the cooldown: from the count there


def test_percent_and_exact_adjustments() -> None:
    percent = StepPolicy("PercentChangeInCapacity", (Step(0, None, 50),), 1, 20, cooldown_s=0)
    assert step_decide(percent, 4, 1.0, now=0, state=StepState()) == 6
    assert step_decide(percent, 1, 1.0, now=0, state=StepState()) == 2  # 0.5 rounds away from zero
    magnitude = StepPolicy("PercentChangeInCapacity", (Step(0, None, 10),), 1, 20, 0, min_adjustment_magnitude=3)
    assert step_decide(magnitude, 5, 1.0, now=0, state=StepState()) == 8
    exact = StepPolicy("ExactCapacity", (Step(0, None, 4),), 1, 10, cooldown_s=0)
    assert step_decide(exact, 2, 1.0, now=0, state=StepState()) == 4
    assert step_decide(exact, 4, 1.0, now=10, state=StepState()) is None


def _at(text: str, zone: dt.tzinfo = UTC) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=zone)


def test_at_fires_once_in_its_time_zone() -> None:
    s = parse_schedule("at(2026-12-02T09:00:00)", "Europe/Berlin")  # 08:00 UTC
    anchor = _at("2026-12-01T00:00:00")
    assert s.fires(_at("2026-12-02T07:59:00"), _at("2026-12-02T08:00:00"), anchor)
    assert not s.fires(_at("2026-12-02T08:00:00"), _at("2026-12-02T08:01:00"), anchor)


def test_rate_fires_every_interval_from_its_anchor() -> None:
    s = parse_schedule("rate(5 minutes)")
    anchor = _at("2026-12-02T10:00:30")
    fired = [
        m
        for m in range(0, 16)
        if s.fires(anchor + dt.timedelta(minutes=m), anchor + dt.timedelta(minutes=m + 1), anchor)
    ]
    assert fired == [4, 9, 14]  # due at +5, +10, +15 minutes
    assert not s.fires(anchor - dt.timedelta(minutes=10), anchor, anchor)


def test_cron_has_six_fields_with_names_ranges_and_steps() -> None:
    weekdays = parse_schedule("cron(0/15 9-17 ? * MON-FRI *)")
    assert weekdays.fires(_at("2026-12-02T09:14:00"), _at("2026-12-02T09:15:00"), _at("2026-01-01T00:00:00"))  # Wed
    assert not weekdays.fires(_at("2026-12-02T09:15:00"), _at("2026-12-02T09:29:00"), _at("2026-01-01T00:00:00"))
    assert not weekdays.fires(_at("2026-12-05T09:14:00"), _at("2026-12-05T09:15:00"), _at("2026-01-01T00:00:00"))  # Sat
    monthly = parse_schedule("cron(30 2 1 JAN,JUL ? 2027)")
    assert monthly.fires(_at("2027-07-01T02:00:00"), _at("2027-07-01T03:00:00"), _at("2026-01-01T00:00:00"))
    assert not monthly.fires(_at("2026-07-01T02:00:00"), _at("2026-07-01T03:00:00"), _at("2026-01-01T00:00:00"))


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("cron(0 9 * * ? )", "six fields"),
        ("cron(0 9 * * * *)", "exactly one of day-of-month and day-of-week"),
        ("cron(0 9 L * ? *)", "not supported"),
        ("cron(61 9 * * ? *)", "outside the minutes field"),
        ("rate(1 minutes)", "say '1 minute'"),
        ("every day", r"is not at\("),
    ],
)
def test_bad_schedules_say_what_to_fix(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule(expression)
    with pytest.raises(ValueError, match="IANA"):
        parse_schedule("rate(1 day)", "Mars/Olympus")
