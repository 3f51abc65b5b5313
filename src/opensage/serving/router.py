"""Routing: which variant and which of its model servers takes a request. A pure function.

:func:`pick` chooses the variant named by ``TargetVariant`` (whatever its weight, as on AWS), else
one at random in proportion to the weights (a variant of weight 0 gets nothing; one lone variant
is taken without drawing). Within the variant it takes a healthy instance by power of two choices:
two drawn at random, the one with fewer requests in flight wins, and on a tie the first drawn.
With exactly two healthy instances both are compared without drawing, the first listed winning
ties, so that a light load stays on one warm server. Randomness comes from the ``rng`` passed in;
nothing here reads a clock, the network or global state, so tests step it with a seeded
``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

from opensage.serving.fleet import NotReady, NoVariant


class Candidate(Protocol):
    """An instance as the router sees it."""

    @property
    def healthy(self) -> bool: ...

    @property
    def outstanding(self) -> int: ...


C_co = TypeVar("C_co", bound=Candidate, covariant=True)
C = TypeVar("C", bound=Candidate)


class Pool(Protocol[C_co]):
    """A variant as the router sees it."""

    @property
    def name(self) -> str: ...

    @property
    def weight(self) -> float: ...

    @property
    def instances(self) -> Sequence[C_co]: ...


def pick(variants: Mapping[str, Pool[C]], target: str | None, rng: random.Random) -> tuple[Pool[C], C]:
    """The variant and instance for one request.

    Raises:
        NoVariant: ``target`` names no variant.
        NotReady: every variant has weight 0, or the chosen one has no healthy instance.
    """
    if target:
        variant = variants.get(target)
        if variant is None:
            raise NoVariant(target)
    elif len(variants) == 1:
        (variant,) = variants.values()
        if variant.weight <= 0:
            raise NotReady("every variant has weight 0")
    else:
        live = [v for v in variants.values() if v.weight > 0]
        if not live:
            raise NotReady("every variant has weight 0")
        variant = rng.choices(live, weights=[v.weight for v in live])[0]
    candidates = variant.instances
    if len(candidates) == 1 and candidates[0].healthy:
        return variant, candidates[0]
    healthy = [i for i in candidates if i.healthy]
    if not healthy:
        raise NotReady(variant.name)
    if len(healthy) == 1:
        return variant, healthy[0]
    a, b = rng.sample(healthy, 2) if len(healthy) > 2 else healthy
    return variant, b if b.outstanding < a.outstanding else a
