"""Target tracking's decision, one evaluation at a time, on a clock the test sets."""

from __future__ import annotations

from opensage.serving.autoscaler import PolicyState, Tracking, decide, variant_of

POLICY = Tracking(target=100.0, min_capacity=1, max_capacity=4, scale_out_cooldown_s=60, scale_in_cooldown_s=300)


def test_scales_out_at_once_to_what_the_target_needs_within_max_capacity() -> None:
    state = PolicyState()
    assert decide(POLICY, 1, 250.0, now=1000, state=state) == 3  # ceil(1 * 250 / 100)
    assert decide(POLICY, 3, 1000.0, now=1030, state=state) is None  # in the scale-out cooldown
    assert decide(POLICY, 3, 1000.0, now=1061, state=state) == 4  # capped at MaxCapacity
    assert decide(POLICY, 4, 1000.0, now=2000, state=state) is None  # already at the maximum


def test_on_target_nothing_changes() -> None:
    assert decide(POLICY, 2, 100.0, now=0, state=PolicyState()) is None
    assert decide(POLICY, 2, 60.0, now=0, state=PolicyState()) is None  # ceil(2 * 0.6) = 2


def test_scales_in_only_after_a_sustained_low_and_the_cooldown() -> None:
    state = PolicyState()
    policy = Tracking(100.0, 1, 4, scale_in_cooldown_s=300, scale_in_evaluations=3)
    assert decide(policy, 4, 10.0, now=0, state=state) is None
    assert decide(policy, 4, 10.0, now=60, state=state) is None
    assert decide(policy, 4, 10.0, now=120, state=state) == 1  # three low evaluations in a row
    for t in (180, 240, 300):  # low again, but within the cooldown of that scale-in
        assert decide(policy, 2, 10.0, now=t, state=state) is None
    assert decide(policy, 2, 10.0, now=421, state=state) == 1


def test_a_busy_evaluation_resets_the_low_count() -> None:
    state = PolicyState()
    policy = Tracking(100.0, 1, 4, scale_in_cooldown_s=0, scale_in_evaluations=2, scale_out_cooldown_s=0)
    assert decide(policy, 3, 10.0, now=0, state=state) is None
    assert decide(policy, 3, 100.0, now=60, state=state) is None
    assert decide(policy, 3, 10.0, now=120, state=state) is None  # the count started again
    assert decide(policy, 3, 10.0, now=180, state=state) == 1


def test_disable_scale_in_never_removes_instances() -> None:
    policy = Tracking(100.0, 1, 4, scale_in_cooldown_s=0, disable_scale_in=True, scale_in_evaluations=1)
    state = PolicyState()
    assert all(decide(policy, 3, 0.0, now=t, state=state) is None for t in range(0, 3600, 60))


def test_a_count_outside_new_bounds_comes_back_inside() -> None:
    assert decide(Tracking(100.0, 2, 4), 1, 0.0, now=0, state=PolicyState()) == 2
    assert decide(Tracking(100.0, 1, 2), 3, 500.0, now=0, state=PolicyState()) == 2


def test_resource_ids() -> None:
    assert variant_of("endpoint/my-ep/variant/AllTraffic") == ("my-ep", "AllTraffic")
    for bad in ("endpoint/my-ep", "table/x/variant/y", "endpoint//variant/v"):
        try:
            variant_of(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
