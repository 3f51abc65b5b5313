"""The console's instance-count step series built from scaling activities, and its links and summaries."""

from __future__ import annotations

import datetime as dt

from opensage.console.endpoint_options import capture_link, instance_steps, policy_summary

NOW = 1_800_000_000.0


def _activity(ago: float, to: int, before: int | None = None, status: str = "Successful") -> dict[str, object]:
    cause = "minimum capacity was set to 2" + (
        f"; increased the desired instance count from {before} to {to}" if before else ""
    )
    return {
        "StartTime": NOW - ago,
        "Description": f"Setting desired instance count to {to}.",
        "Cause": cause,
        "StatusCode": status,
    }


def test_no_activity_is_a_flat_line_at_the_current_count() -> None:
    assert instance_steps([], 3, NOW) == {"x": [NOW - 1800, NOW], "instances": [3, 3], "activities": [None, None]}


def test_each_change_is_a_step_marked_at_its_time() -> None:
    steps = instance_steps([_activity(600, 2, before=1), _activity(1200, 3, before=2)][::-1], 2, NOW)
    assert steps["x"] == [NOW - 1800, NOW - 1200, NOW - 600, NOW]
    assert steps["instances"] == [2, 3, 2, 2]
    assert steps["activities"] == [None, 3, 2, None]


def test_the_count_before_the_window_comes_from_an_earlier_activity_or_the_first_cause() -> None:
    older = instance_steps([_activity(3600, 4), _activity(60, 5)], 5, NOW)
    assert older["instances"] == [4, 5, 5] and older["activities"] == [None, 5, None]
    no_cause = instance_steps([_activity(60, 5)], 5, NOW)
    assert no_cause["instances"] == [5, 5, 5]  # nothing says what it was before: flat up to the change
    from_cause = instance_steps([_activity(60, 5, before=1)], 5, NOW)
    assert from_cause["instances"] == [1, 5, 5]


def test_bound_changes_are_marked_and_failures_do_not_move_the_count() -> None:
    bounds = {"StartTime": dt.datetime.fromtimestamp(NOW - 300, dt.UTC), "Description": "Setting min capacity to 2"}
    steps = instance_steps([bounds, _activity(100, 4, before=2, status="Failed")], 2, NOW)
    assert steps["x"] == [NOW - 1800, NOW - 300, NOW - 100, NOW]
    assert steps["instances"] == [2, 2, 2, 2] and steps["activities"] == [None, 2, 2, None]


def test_the_current_count_ends_the_series_while_a_change_is_under_way() -> None:
    steps = instance_steps([_activity(10, 3, before=1)], 1, NOW)
    assert steps["instances"] == [1, 3, 1] and steps["x"][-1] == NOW
    assert instance_steps([], None, NOW)["instances"] == [None, None]
    assert instance_steps([_activity(-10, 3)], 1, NOW)["x"] == [NOW - 1800, NOW]  # a clock ahead: left out


def test_capture_link_points_at_the_endpoints_prefix() -> None:
    assert capture_link("s3://b/capture", "ep") == "/console/storage/b?prefix=capture/ep/"
    assert capture_link("s3://b/a b/", "ep") == "/console/storage/b?prefix=a%20b/ep/"
    assert capture_link("s3://b", "ep") == "/console/storage/b?prefix=ep/"
    assert capture_link("file:///x", "ep") == ""


def test_policy_summary() -> None:
    tracking = {
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": 70.0,
            "CustomizedMetricSpecification": {"MetricName": "CPUUtilization"},
            "ScaleOutCooldown": 60,
            "DisableScaleIn": True,
        },
    }
    assert policy_summary(tracking) == "CPUUtilization at 70, scale-out cooldown 60 s, no scale-in"
    step = {
        "PolicyType": "StepScaling",
        "StepScalingPolicyConfiguration": {"AdjustmentType": "ChangeInCapacity", "StepAdjustments": [{}]},
    }
    assert policy_summary(step) == "ChangeInCapacity, 1 step"
