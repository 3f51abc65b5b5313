"""Routing: which variant and which of its model servers takes a request. A pure function.

:func:`pick` chooses the variant named by ``TargetVariant`` (whatever its weight, as on AWS), else
one at random in proportion to the weights (a variant of weight 0 gets nothing; one lone variant
is taken without drawing). Within the variant it takes a healthy instance by power of two choices:
two drawn at random, the one with fewer requests in flight wins, and on a tie the first drawn.
With exactly two healthy instances both are compared without drawing, the first listed winning
ties, so that a light load stays on one warm server. Randomness comes from the ``rng`` passed in;
nothing here reads a clock, the network or global state, so tests step it with a seeded
``random.Random``.

:func:`pick_for_model` chooses, within a multi-model variant, the instance for a ``TargetModel``
(Ray Serve's model multiplexing): among the healthy instances that hold the model (loaded or being
loaded) the one with fewer requests in flight of two, so a model once loaded keeps being served
where it is; when none holds it, the instance its name hashes to (rendezvous hashing over the
instances' names), so that every router, and the same router after a restart, loads it in the
same place, and a variant's models spread evenly over its instances.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
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


def pick_for_model(
    candidates: Sequence[C], target: str, holds: Callable[[C], bool], key: Callable[[C], str], rng: random.Random
) -> C:
    """The instance of a multi-model variant that serves ``target``.

    ``holds`` says whether an instance has the model (loaded or loading), ``key`` names an
    instance stably (its host name).

    Raises:
        NotReady: no instance is healthy.
    """
    healthy = [c for c in candidates if c.healthy]
    if not healthy:
        raise NotReady("no instance of the variant is healthy")
    holders = [c for c in healthy if holds(c)]
    if len(holders) == 1:
        return holders[0]
    if holders:
        a, b = rng.sample(holders, 2) if len(holders) > 2 else holders
        return b if b.outstanding < a.outstanding else a
    return max(healthy, key=lambda c: _rendezvous(target, key(c)))


def _rendezvous(target: str, instance: str) -> bytes:
    return hashlib.blake2b(f"{target}\0{instance}".encode(), digest_size=8).digest()
