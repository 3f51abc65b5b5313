"""The router's pick(): variants by weight or TargetVariant, instances by power of two choices."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

from opensage.serving.fleet import NotReady, NoVariant
from opensage.serving.router import pick


@dataclass
class FakeInstance:
    host: str
    healthy: bool = True
    outstanding: int = 0


@dataclass
class FakeVariant:
    name: str
    weight: float
    instances: list[FakeInstance] = field(default_factory=list)


def _variants(*specs: tuple[str, float, int]) -> dict[str, FakeVariant]:
    return {
        name: FakeVariant(name, weight, [FakeInstance(f"{name}-{i + 1}") for i in range(count)])
        for name, weight, count in specs
    }


def test_weights_split_traffic_in_proportion() -> None:
    variants = _variants(("A", 3.0, 1), ("B", 1.0, 1))
    rng = random.Random(7)
    seen = Counter(pick(variants, None, rng)[0].name for _ in range(4000))
    assert 0.72 < seen["A"] / 4000 < 0.78
    assert seen["A"] + seen["B"] == 4000


def test_same_seed_same_choices() -> None:
    variants = _variants(("A", 1.0, 3), ("B", 1.0, 3))

    def run(seed: int) -> list[str]:
        rng = random.Random(seed)
        return [pick(variants, None, rng)[1].host for _ in range(50)]

    assert run(3) == run(3)
    assert len(set(run(3))) > 1


def test_target_variant_wins_over_weights_even_weight_zero() -> None:
    variants = _variants(("A", 1.0, 1), ("B", 0.0, 1))
    rng = random.Random(1)
    assert {pick(variants, "B", rng)[0].name for _ in range(20)} == {"B"}


def test_unknown_target_variant() -> None:
    with pytest.raises(NoVariant, match="C"):
        pick(_variants(("A", 1.0, 1)), "C", random.Random(0))


def test_weight_zero_gets_no_traffic() -> None:
    variants = _variants(("A", 1.0, 1), ("B", 0.0, 1))
    rng = random.Random(2)
    assert {pick(variants, None, rng)[0].name for _ in range(200)} == {"A"}


@pytest.mark.parametrize("specs", [(("A", 0.0, 1),), (("A", 0.0, 1), ("B", 0.0, 2))])
def test_every_weight_zero_is_not_ready(specs: tuple[tuple[str, float, int], ...]) -> None:
    with pytest.raises(NotReady, match="weight 0"):
        pick(_variants(*specs), None, random.Random(0))


def test_a_lone_variant_draws_nothing() -> None:
    rng = random.Random(5)
    state = rng.getstate()
    pick(_variants(("A", 1.0, 1)), None, rng)
    assert rng.getstate() == state


def test_unhealthy_instances_are_skipped() -> None:
    variants = _variants(("A", 1.0, 3))
    a1, a2, a3 = variants["A"].instances
    a1.healthy = a3.healthy = False
    rng = random.Random(4)
    assert {pick(variants, None, rng)[1].host for _ in range(50)} == {"A-2"}


def test_no_healthy_instance_is_not_ready_naming_the_variant() -> None:
    variants = _variants(("A", 1.0, 2))
    for instance in variants["A"].instances:
        instance.healthy = False
    with pytest.raises(NotReady, match="A"):
        pick(variants, None, random.Random(0))
    variants = _variants(("A", 1.0, 1))
    variants["A"].instances[0].healthy = False
    with pytest.raises(NotReady):
        pick(variants, None, random.Random(0))


def test_no_instances_at_all_is_not_ready() -> None:
    with pytest.raises(NotReady):
        pick(_variants(("A", 1.0, 0)), None, random.Random(0))


def test_two_healthy_fewer_outstanding_wins_and_a_tie_stays_on_the_first() -> None:
    variants = _variants(("A", 1.0, 2))
    a1, a2 = variants["A"].instances
    rng = random.Random(9)
    assert {pick(variants, None, rng)[1].host for _ in range(30)} == {"A-1"}  # tie: the first listed
    a1.outstanding = 2
    a2.outstanding = 1
    assert pick(variants, None, rng)[1] is a2
    a2.outstanding = 2
    assert pick(variants, None, rng)[1] is a1


def test_power_of_two_choices_compares_two_drawn_and_ties_go_to_the_first_drawn() -> None:
    variants = _variants(("A", 1.0, 4))
    instances = variants["A"].instances
    for i, instance in enumerate(instances):
        instance.outstanding = i  # A-1 has 0 ... A-4 has 3
    for seed in range(40):
        expect = random.Random(seed).sample(instances, 2)
        got = pick(variants, None, random.Random(seed))[1]
        assert got is min(expect, key=lambda i: i.outstanding)
    for instance in instances:
        instance.outstanding = 5  # all tied: the first of the two drawn
    for seed in range(40):
        first = random.Random(seed).sample(instances, 2)[0]
        assert pick(variants, None, random.Random(seed))[1] is first


def test_power_of_two_choices_never_picks_the_busiest_of_many() -> None:
    variants = _variants(("A", 1.0, 5))
    instances = variants["A"].instances
    instances[2].outstanding = 100
    rng = random.Random(11)
    picked = Counter(pick(variants, None, rng)[1].host for _ in range(2000))
    assert picked["A-3"] == 0
    assert set(picked) == {"A-1", "A-2", "A-4", "A-5"}


def test_the_draws_use_the_rng_passed_in_not_the_global_one() -> None:
    variants = _variants(("A", 1.0, 3), ("B", 1.0, 3))

    def run() -> list[str]:
        rng = random.Random(21)
        return [pick(variants, None, rng)[1].host for _ in range(30)]

    random.seed(0)
    first = run()
    random.seed(1)
    assert run() == first
