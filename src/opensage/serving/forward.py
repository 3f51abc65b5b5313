"""One request from the router to a model server, sent again elsewhere when its instance dies first.

:func:`forward` picks the variant and instance (:func:`~opensage.serving.router.pick`) and sends
the body over the instance's kept-alive connection. When the instance cannot be reached or closes
the connection before its answer is complete (it was killed, or is being replaced), it is marked
unhealthy and the request goes to another healthy instance of the same variant, up to
:data:`ATTEMPTS` times in all: one instance's death costs its in-flight requests a retry, not an
error. A timeout or a malformed answer is not retried (the model may still be working on it). A
multi-model variant's requests go through :mod:`opensage.serving.multimodel`, which routes by the
request's TargetModel and retries the same way.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from opensage.errors import OpenSageError
from opensage.serving.fleet import Fleet, Instance, NotReady, Variant
from opensage.serving.router import pick
from opensage.serving.upstream import UpstreamError, UpstreamLost

if TYPE_CHECKING:
    from opensage.serving.multimodel import MultiModels

ATTEMPTS = 3
TIMED_OUT = b"Your invocation timed out while waiting for a response from the model."
NO_ANSWER = b"The model server did not answer."


class TargetModelError(OpenSageError):
    """The request's TargetModel does not fit the endpoint, or cannot be served; the message says what
    to fix (InvokeEndpoint's ValidationError)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    variant: str
    model_seconds: float = 0.0


async def forward(
    fleet: Fleet,
    target_variant: str | None,
    target_model: str | None,
    body: bytes,
    headers: dict[str, str],
    rng: random.Random,
    models: MultiModels,
    timeout: float,
) -> Answer:
    """The answer of an instance of ``fleet`` to one request.

    Raises:
        NoVariant, NotReady: the request cannot be routed.
        TargetModelError: ``target_model`` given to a single-model variant, missing for a multi-model one,
            or naming no usable artifact.
    """
    pool, instance = pick(fleet.variants, target_variant, rng)
    variant = cast(Variant, pool)
    if variant.template.model_prefix is not None:
        return await models.invoke(variant, target_model, body, headers, rng, timeout)
    if target_model:
        raise TargetModelError(
            f"Endpoint {variant.template.owner} is not a multi-model endpoint: leave TargetModel out, or deploy "
            "a model whose container has Mode MultiModel."
        )
    for _ in range(ATTEMPTS):
        upstream = instance.upstream or instance.connection()
        instance.outstanding += 1
        sent = time.perf_counter()
        try:
            reply = await upstream.request("POST", "/invocations", body, headers, timeout)
        except TimeoutError:
            return Answer(0, TIMED_OUT, "", variant.name)
        except UpstreamLost:
            instance.healthy = False  # the health loop replaces it, or re-admits it once it answers /ping
            retry = another(variant, rng)
            if retry is None:
                break
            instance = retry
            continue
        except UpstreamError:
            instance.healthy = False
            break
        finally:
            instance.outstanding -= 1
        content_type = reply.headers.get("content-type", "")
        return Answer(reply.status, reply.body, content_type, variant.name, time.perf_counter() - sent)
    return Answer(0, NO_ANSWER, "", variant.name)


def another(variant: Variant, rng: random.Random) -> Instance | None:
    """A healthy instance of ``variant`` for a request whose instance died, or None."""
    try:
        return pick({variant.name: variant}, variant.name, rng)[1]
    except NotReady:
        return None
